"""``fourds convert official SRC.npz OUT_DIR``: an official 4DS checkpoint → a fourds model folder."""

from __future__ import annotations

import argparse

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", formatter_class=HelpFormatter,
        help="convert checkpoints from other formats into fourds model folders",
        description="Convert checkpoints into fourds model folders (config.json + model.safetensors).",
    )
    sub = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    o = sub.add_parser(
        "official", formatter_class=HelpFormatter,
        help="an official 4DS .npz (scaling4d_dist_b.npz, scaling4d_e.npz, scaling4d_dist_b_depth.npz)",
        description="Import a released 4DS .npz (google-deepmind/representations4d) exactly: every size is read "
        "from the arrays; the depth readout (if present) goes to OUT_DIR/heads/depth/. The result loads with "
        "fourds.models.load(OUT_DIR) and works with `fourds extract` and `fourds depth`.",
    )
    o.add_argument("src", metavar="SRC.npz", help="the official checkpoint")
    o.add_argument("out", metavar="OUT_DIR", help="model folder to write")
    o.add_argument("--readout-depth", type=float, default=0.95,
                   help="the official EncoderToReadout readout_depth (default 0.95, as in the depth demo)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing model folder (its heads/ are removed too)")
    o.set_defaults(func=run_official)


def run_official(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fourds.convert import convert_official, load_heads
    from fourds.models import count_parameters, load

    out = Path(args.out)
    convert_official(args.src, out, overwrite=args.overwrite, readout_depth=args.readout_depth)
    backbone = load(out)
    c = backbone.cfg
    print(f"wrote {out}: video ViT D={c.dim} L={c.depth} heads={c.num_heads} MLP={c.mlp_dim} "
          f"patch={c.patch_size} input={c.input_size} ({count_parameters(backbone) / 1e6:,.2f}M parameters)")
    for name, head in load_heads(out).items():
        print(f"  head {name!r}: reads feature layer {head.layer}, output {getattr(head, 'output_size', '?')} "
              f"({count_parameters(head) / 1e6:,.2f}M parameters)")
    return 0
