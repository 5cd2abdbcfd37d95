"""``fourds distill``: distil a large frozen teacher into a small 4DS student (one process or torchrun)."""

from __future__ import annotations

import argparse
import os

from fourds.cli.config_args import HelpFormatter, add_dataclass_args, dataclass_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from fourds.models.registry import PAPER_TRAIN_DEFAULTS
    from fourds.train.config import DEVICES, PRECISIONS, STRATEGIES
    from fourds.train.distill import PAPER_DISTILL_DEFAULTS, TEACHER_PRECISIONS, DistillConfig

    p = subparsers.add_parser(
        "distill", formatter_class=HelpFormatter,
        help="distil a large frozen teacher (e.g. 4DS-e) into a small 4DS student",
        description="The paper's distillation: the same clip to a random-init student and a frozen teacher, L1 "
        "between linear adapters on the student's last layer and the teacher's layers (default: 36 and 51 of "
        "4DS-e, as fractions 36/56 and 51/56 of the teacher's depth). Adapters are dropped at export: <out>/model "
        "is a plain 4DS model folder. Unset flags take the paper's schedule (100k steps, batch 1024) for paper "
        "sizes, otherwise the student preset's. Several GPUs: `torchrun --nproc-per-node 8 -m fourds distill "
        "--student 4ds-b --teacher FOLDER --strategy fsdp ...`.",
    )
    unset = {k: "the --student preset's" for k in PAPER_TRAIN_DEFAULTS}
    unset.update({k: f"{v} for the 4DS sizes (the paper's), else the --student preset's"
                  for k, v in PAPER_DISTILL_DEFAULTS.items()})
    add_dataclass_args(p, DistillConfig, skip={"teacher_layers"}, unset=unset,
                       choices={"strategy": STRATEGIES, "precision": PRECISIONS, "device": DEVICES,
                                "teacher_precision": TEACHER_PRECISIONS})
    p.add_argument("--teacher-layers", dest="teacher_layers", nargs="+", default=None, metavar="L",
                   help="teacher layers to regress: integers are indices (k = output of block k), decimals "
                   "fractional depths; default: the paper's layers 36 and 51 of 4DS-e's 56, applied as the "
                   "exact fractions 36/56 and 51/56 of the teacher's depth (pass integers for other teachers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fourds.models.backbone import parse_layer_spec
    from fourds.train.distill import distill
    from fourds.train.distill import DistillConfig
    from fourds.train.distributed import shutdown_distributed

    cfg = dataclass_from_args(DistillConfig, args)
    if args.teacher_layers is not None:
        cfg.teacher_layers = parse_layer_spec(",".join(args.teacher_layers))
    try:
        final = distill(cfg)
    finally:
        shutdown_distributed()
    if os.environ.get("RANK", "0") == "0":
        print(f"model: {final}")
    return 0
