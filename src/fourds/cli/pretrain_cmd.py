"""``fourds pretrain``: SimpleMAE pretraining on one process or under torchrun."""

from __future__ import annotations

import argparse

from fourds.cli.config_args import add_dataclass_args, dataclass_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from fourds.train.config import PretrainConfig

    p = subparsers.add_parser(
        "pretrain",
        help="pretrain a 4DS model with SimpleMAE",
        description="SimpleMAE pretraining. Unset flags take the model preset's defaults (paper Table 5 for "
        "the 4DS sizes). Several GPUs/machines: launch the same command with torchrun, e.g. "
        "`torchrun --nproc-per-node 8 -m fourds pretrain --model 4ds-b --strategy fsdp ...`.",
    )
    add_dataclass_args(p, PretrainConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fourds.train.config import PretrainConfig
    from fourds.train.distributed import shutdown_distributed
    from fourds.train.pretrain import pretrain

    cfg = dataclass_from_args(PretrainConfig, args)
    try:
        final = pretrain(cfg)
    finally:
        shutdown_distributed()
    import os

    if os.environ.get("RANK", "0") == "0":
        print(f"model: {final}")
    return 0
