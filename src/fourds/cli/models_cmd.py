"""``fourds models``: every registered size with parameter counts and FLOPs, built on the meta device."""

from __future__ import annotations

import argparse

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", formatter_class=HelpFormatter,
        help="list model sizes with parameter counts and GFLOPs (no memory needed)",
        description="Parameter counts (encoder, latent grid, pixel decoder) and forward GFLOPs per clip, "
        "counted on the meta device with torch.utils.flop_counter. The encoder, latent, decoder and total "
        "columns are at --clip (the positional embedding grows with the clip); the encoder column is what "
        "`fourds probe` and the demo's results count for a backbone at that input; enc+lat (encoder and "
        "latent tokens) is at each model's own input size, the count of the paper's Table 1.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these sizes (default: all registered)")
    p.add_argument("--clip", default="16x224x224", help="clip size TxHxW for the FLOP count (default 16x224x224)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def parse_clip(spec: str) -> tuple[int, int, int]:
    """``"16x224x224"`` → ``(16, 224, 224)``; a clear error otherwise."""
    parts = spec.lower().split("x")
    try:
        clip = tuple(int(v) for v in parts)
    except ValueError:
        clip = ()
    if len(clip) != 3 or min(clip) < 1:
        raise ValueError(f"--clip {spec!r}: expected TxHxW with three positive integers, e.g. 16x224x224")
    return clip  # type: ignore[return-value]


def model_table(clip: tuple[int, int, int], names: list[str] | None = None) -> list[dict]:
    """One row per registered size (or per name of ``names``); FLOPs of the full encoder forward (no
    masking, feature extraction) and of the SimpleMAE training forward (95% masked), per clip."""
    import torch

    from fourds.models import get_preset, list_models, simple_mae
    from fourds.train.device_step import count_forward_flops

    for name in names or []:
        get_preset(name)  # unknown names fail with the registered list
    rows = []
    for name in names or list_models():
        with torch.device("meta"):
            try:
                mae = simple_mae(name, input_size=clip)
            except ValueError as err:
                raise ValueError(f"--clip {'x'.join(map(str, clip))} does not fit {name}: {err}") from None
            enc = sum(p.numel() for p in mae.encoder.parameters())
            latent = mae.latent_tokens.numel()
            decoder = sum(p.numel() for p in mae.decoder.parameters())
            video = torch.empty(1, *clip, 3)
            enc_flops = count_forward_flops(mae.encoder, video)
            mae_flops = count_forward_flops(mae, video, noise=torch.empty(1, mae.num_tokens(video.shape)))
        # Table 1 counts the grid the model is trained for (4DS-j: 256x256), so count that separately.
        with torch.device("meta"):
            native = simple_mae(name)
            native_p = sum(p.numel() for p in native.encoder.parameters()) + native.latent_tokens.numel()
        table = get_preset(name).table1_params_m
        c = native.encoder.cfg
        rows.append({
            "name": name, "dim": c.dim, "depth": c.depth, "heads": c.num_heads, "mlp": c.mlp_dim,
            "input": "x".join(map(str, c.input_size)),
            "encoder_params": enc, "latent_params": latent, "decoder_params": decoder,
            "total_params": enc + latent + decoder,
            "enc_plus_latent_native_m": native_p / 1e6,
            "table1_m": table,
            "table1_delta_pct": None if table is None else 100 * (native_p / 1e6 / table - 1),
            "encoder_gflops": enc_flops / 1e9, "mae_forward_gflops": mae_flops / 1e9,
        })
    return rows


def _m(n: float) -> str:
    return f"{n / 1e6:,.2f}M"


def run(args: argparse.Namespace) -> int:
    import json

    rows = model_table(parse_clip(args.clip), args.names or None)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = (f"{'model':<10} {'D':>5} {'L':>3} {'heads':>5} {'MLP':>6} {'encoder':>12} {'latent':>9} {'decoder':>9} "
            f"{'total':>12} {'enc+lat':>11} {'Table 1':>8} {'delta':>7} {'enc GFLOPs':>11} {'MAE fwd GFLOPs':>14}")
    print(f"parameters counted on the meta device; GFLOPs per {args.clip} clip (torch.utils.flop_counter)")
    print(f"  encoder: the backbone at --clip {args.clip}, what probes and results tables count (its positional "
          "embedding grows with the clip)")
    print("  latent, decoder: SimpleMAE's latent tokens and pixel decoder at --clip (pretraining only); "
          "total = encoder + latent + decoder")
    print("  enc+lat: encoder + latent tokens at each model's own input size (4DS-j: 16x256x256), the paper's "
          "Table 1 count")
    print(head)
    print("-" * len(head))
    for r in rows:
        table = f"{r['table1_m']:,.0f}M" if r["table1_m"] else "-"
        delta = f"{r['table1_delta_pct']:+.2f}%" if r["table1_delta_pct"] is not None else "-"
        print(f"{r['name']:<10} {r['dim']:>5} {r['depth']:>3} {r['heads']:>5} {r['mlp']:>6} {_m(r['encoder_params']):>12} "
              f"{_m(r['latent_params']):>9} {_m(r['decoder_params']):>9} {_m(r['total_params']):>12} "
              f"{r['enc_plus_latent_native_m']:>10,.1f}M {table:>8} {delta:>7} {r['encoder_gflops']:>11,.1f} "
              f"{r['mae_forward_gflops']:>14,.1f}")
    return 0
