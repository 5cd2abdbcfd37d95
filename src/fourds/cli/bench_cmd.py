"""``fourds bench``: the benchmark suite of a source checkout (``python -m benchmarks``), one report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", formatter_class=HelpFormatter,
        help="run the benchmark suite and write report.md + report.json",
        description="Runs every benchmarks/bench_*.py of the source checkout, each in its own process, and "
        "writes one markdown + JSON report with machine information (same as `python -m benchmarks`). "
        "The full run takes about 10 minutes on 2 CPU cores; on a CUDA machine it adds bf16 throughput "
        "and MFU. See docs/benchmarks.md.",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings (~1-2 min): plumbing only, figures not meaningful")
    p.add_argument("--only", nargs="+", metavar="NAME", default=None, help="run only these benchmarks")
    p.add_argument("--out", default=None, help="report folder (default runs/bench/<UTC date-time>)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default 1800)")
    p.add_argument("--bf16-peak-tflops", type=float, default=None,
                   help="CUDA: nominal dense bf16 peak for MFU, overriding the table by device name")
    p.set_defaults(func=run)


def find_checkout() -> Path:
    """The source checkout holding ``benchmarks/``: the working directory, else the one this package
    was installed from (editable install)."""
    import fourds

    candidates = [Path.cwd(), Path(fourds.__file__).resolve().parents[2]]
    for root in candidates:
        if (root / "benchmarks" / "_suite.py").is_file():
            return root
    raise FileNotFoundError(
        "fourds bench runs the benchmarks/ folder of a fourds source checkout, and none was found in "
        f"{' or '.join(str(c) for c in candidates)}; run it from a clone of the repository "
        "(or use `python -m benchmarks` there)")


def run(args: argparse.Namespace) -> int:
    root = find_checkout()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks._suite import main

    argv = ["--quick"] if args.quick else []
    if args.only:
        argv += ["--only", *args.only]
    if args.out:
        argv += ["--out", str(Path(args.out).resolve())]
    if args.list:
        argv.append("--list")
    if args.timeout is not None:
        argv += ["--timeout", str(args.timeout)]
    if args.bf16_peak_tflops is not None:
        argv += ["--bf16-peak-tflops", str(args.bf16_peak_tflops)]
    return main(argv, prog="fourds bench")
