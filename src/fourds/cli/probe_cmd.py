"""``fourds probe``: the evaluation protocol (frozen readout sweep in one backbone pass, or finetuning)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from fourds.cli.config_args import HelpFormatter, add_dataclass_args, dataclass_from_args

_LISTS = {
    "lrs": ("peak learning rates to sweep (default: 1e-4 3e-4 1e-3 frozen, 1e-4 3e-4 finetuned)", float),
    "layers": ("readout layers: decimals are fractional depths (0.95), integers layer indices (12, -1); "
               "default: the task's layer. The paper's layer study: 0.25 0.5 0.75 0.85 0.95 1.0", None),
    "weight_decays": ("AdamW weight decays to sweep (default: 1e-4 frozen, 1e-4 5e-2 finetuned)", float),
    "steps": ("optimiser steps (default: 40000 frozen, 20000 finetuned); with --finetune several lengths, e.g. "
              "20000 40000 80000 (the paper's schedules), run every configuration once per length", int),
}


def _split(values: list[str] | None) -> list[str] | None:
    """Accept both ``--lrs 1e-4 3e-4`` and ``--lrs 1e-4,3e-4``."""
    if values is None:
        return None
    return [part for v in values for part in v.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    from fourds.probe.config import DEVICES, PRECISIONS, SELECT_ON, ProbeConfig

    p = subparsers.add_parser(
        "probe", formatter_class=HelpFormatter,
        help="evaluate a backbone on a task: frozen readout sweep or finetuning",
        description="The paper's evaluation protocol (Appendix A.2). Frozen (default): every learning rate x "
        "layer readout trains on ONE backbone pass per batch; the configuration is chosen on a held-out slice "
        "of the training set (--select-on eval: the paper's practice) and reported on the evaluation split. "
        "--finetune: one run per learning rate x weight decay with the backbone trained at 0.003x the "
        "readout's rate. Several GPUs: `torchrun --nproc-per-node N -m fourds probe ...`. "
        "Writes <out>/results.json, per-readout metrics.jsonl/TensorBoard, heads/ and checkpoints/.",
    )
    add_dataclass_args(p, ProbeConfig, skip=set(_LISTS),
                       unset={"warmup_steps": "", "max_eval_samples": "all", "feature_cache": "no cache"},
                       choices={"select_on": SELECT_ON, "precision": PRECISIONS, "device": DEVICES},
                       examples={"task_overrides": ("num_frames", 8), "data_kwargs": ("num_samples", 64)})
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder of the task's real dataset (passed to the task as data_kwargs['data_root']; "
                   "layouts: docs/datasets.md; check it first with `fourds data check DIR --dataset NAME`)")
    for name, (help_, _) in _LISTS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, nargs="+", default=None, metavar="V", help=help_)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fourds.models.backbone import parse_layer_spec
    from fourds.train.distributed import shutdown_distributed
    from fourds.probe.protocol import run_probe
    from fourds.probe.config import ProbeConfig

    cfg = dataclass_from_args(ProbeConfig, args)
    # --resume continues the saved run: only the flags given here may override it (see run_probe()).
    given = {f.name for f in dataclasses.fields(ProbeConfig) if getattr(args, f.name, None) is not None}
    if args.data_root is not None:
        given.add("data_kwargs")
    if args.data_root is not None:
        if not os.path.isdir(args.data_root):
            raise FileNotFoundError(f"--data-root {args.data_root}: no such folder")
        cfg.data_kwargs = {**cfg.data_kwargs, "data_root": args.data_root}
    for name in ("lrs", "weight_decays"):
        values = _split(getattr(args, name))
        if values is not None:
            try:
                setattr(cfg, name, [float(v) for v in values])
            except ValueError as err:
                raise ValueError(f"--{name.replace('_', '-')} {values}: expected numbers, e.g. 1e-4 3e-4") from err
    steps = _split(args.steps)
    if steps is not None:
        try:
            values = [int(v) for v in steps]
        except ValueError as err:
            raise ValueError(f"--steps {steps}: expected integers, e.g. 20000 40000 80000") from err
        cfg.steps = values[0] if len(values) == 1 else values
    layers = _split(args.layers)
    if layers is not None:
        cfg.layers = parse_layer_spec(",".join(layers))
    try:
        results = run_probe(cfg, explicit=given)
    finally:
        shutdown_distributed()
    if os.environ.get("RANK", "0") == "0":
        key = results["primary_metric"]
        for c in results["configs"]:
            mark = "*" if c["name"] == results["chosen"] else " "
            print(f"{mark} {c['name']:<28} val {key} {c['val'].get(key, float('nan')):.4g}   "
                  f"test {c['test'].get(key, float('nan')):.4g}{'   (diverged)' if c['diverged'] else ''}")
        print(f"results: {os.path.join(cfg.out, 'results.json')}")
    return 0
