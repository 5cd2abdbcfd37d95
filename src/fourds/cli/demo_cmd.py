"""``fourds demo``: pretraining, the 4D evaluation suite and the baselines in miniature (``docs/demo.md``)."""

from __future__ import annotations

import argparse

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", formatter_class=HelpFormatter,
        help="the paper in miniature: procedural scenes, tiny SimpleMAE pretraining, frozen probes vs baselines",
        description="Generates procedural 4D scenes, pretrains SimpleMAE at two tiny sizes, runs the frozen probe "
        "protocol on every synthetic task for each pretrained model, the same architectures at random init, a "
        "per-frame baseline and a blank readout (3 readout seeds, mean ± std), counts the tasks where the larger "
        "model beats its random init and the task's floor (seeds' spread and a paired bootstrap over test scenes), "
        "and writes results.md/results.json, plots and pictures to --out. Recipe 'default': 13 min 38 s measured "
        "on 2 CPU cores; the others in docs/demo.md. Interrupted? Run the same command again: finished stages are "
        "skipped and pretraining resumes from its checkpoint.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--recipe", choices=("quick", "default", "long", "gpu"), default=None,
                   help="'quick': the pipeline shrunk for CI; 'default': the main job on 2 CPU cores; 'long': the "
                   "longer CPU job; 'gpu': one H100/H200-class GPU (bf16). Default: 'gpu' where CUDA is "
                   "available, else 'default'")
    p.add_argument("--quick", action="store_true", help="the same as --recipe quick")
    p.add_argument("--distill", action="store_true",
                   help="also distil the larger pretrained model into the smaller architecture and probe it")
    p.add_argument("--keep-cache", action="store_true", help="keep the backbone feature cache (<out>/cache)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from fourds.demo import get_recipe, run_demo
    from fourds.demo.config import default_recipe_name

    if args.quick and args.recipe not in (None, "quick"):
        raise SystemExit(f"fourds demo: --quick is --recipe quick; it cannot be combined with --recipe {args.recipe}")
    recipe = get_recipe("quick" if args.quick else (args.recipe or default_recipe_name()))
    recipe.distill = recipe.distill or args.distill
    recipe.threads = args.threads
    # The library's per-run INFO lines would bury the demo's own progress lines; warnings still show.
    for name in ("fourds.train", "fourds.models", "fourds.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    run_demo(args.out, recipe=recipe, keep_cache=args.keep_cache)
    return 0
