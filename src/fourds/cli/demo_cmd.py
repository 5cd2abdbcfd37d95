"""``fourds demo``: pretraining, the 4D evaluation suite and the baselines in miniature (``docs/demo.md``)."""

from __future__ import annotations

import argparse

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", formatter_class=HelpFormatter,
        help="the paper in miniature: procedural scenes, tiny SimpleMAE pretraining, frozen probes vs baselines",
        description="Generates procedural 4D scenes, pretrains SimpleMAE at two tiny sizes, runs the frozen probe "
        "protocol on every synthetic task for each pretrained model, the same architectures at random init and a "
        "per-frame baseline (3 readout seeds, mean ± std), and writes results.md/results.json, plots and "
        "pictures to --out. 13 min 48 s measured on 2 CPU cores (--quick: 13 s). Interrupted? Run the same "
        "command again: finished stages are skipped and pretraining resumes from its checkpoint.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--quick", action="store_true", help="the quick recipe: 13 s on 2 CPU cores (tiny scenes and models; CI)")
    p.add_argument("--distill", action="store_true",
                   help="also distil the larger pretrained model into the smaller architecture and probe it")
    p.add_argument("--keep-cache", action="store_true", help="keep the backbone feature cache (<out>/cache)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from fourds.demo import default_recipe, quick_recipe, run_demo

    recipe = quick_recipe() if args.quick else default_recipe()
    recipe.distill = recipe.distill or args.distill
    recipe.threads = args.threads
    # The library's per-run INFO lines would bury the demo's own progress lines; warnings still show.
    for name in ("fourds.train", "fourds.models", "fourds.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    run_demo(args.out, recipe=recipe, keep_cache=args.keep_cache)
    return 0
