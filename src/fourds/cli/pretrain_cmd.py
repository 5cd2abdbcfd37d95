"""``fourds pretrain``: SimpleMAE pretraining on one process or under torchrun."""

from __future__ import annotations

import argparse
import dataclasses

from fourds.cli.config_args import HelpFormatter, add_dataclass_args, dataclass_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from fourds.models.registry import PAPER_TRAIN_DEFAULTS
    from fourds.train.config import DEVICES, PRECISIONS, STRATEGIES, PretrainConfig

    p = subparsers.add_parser(
        "pretrain", formatter_class=HelpFormatter,
        help="pretrain a 4DS model with SimpleMAE",
        description="SimpleMAE pretraining. Unset flags take the model preset's defaults (paper Table 5 for "
        "the 4DS sizes). Several GPUs/machines: launch the same command with torchrun, e.g. "
        "`torchrun --nproc-per-node 8 -m fourds pretrain --model 4ds-b --strategy fsdp ...`. "
        "--resume continues the run in --out with its saved settings; only --steps, logging, checkpointing, "
        "workers and compute switches (device, precision, strategy, grad accumulation, activation "
        "checkpointing, compile) may be given again with new values.",
    )
    add_dataclass_args(p, PretrainConfig, unset={k: "the --model preset's" for k in PAPER_TRAIN_DEFAULTS},
                       choices={"strategy": STRATEGIES, "precision": PRECISIONS, "device": DEVICES})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fourds.train.config import PretrainConfig
    from fourds.train.distributed import shutdown_distributed
    from fourds.train.pretrain import pretrain

    cfg = dataclass_from_args(PretrainConfig, args)
    # --resume continues the saved run: only the flags given here may override it (see pretrain()).
    given = [f.name for f in dataclasses.fields(PretrainConfig) if getattr(args, f.name, None) is not None]
    try:
        final = pretrain(cfg, explicit=given)
    finally:
        shutdown_distributed()
    import os

    if os.environ.get("RANK", "0") == "0":
        print(f"model: {final}")
    return 0
