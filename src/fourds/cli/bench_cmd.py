"""``fourds bench``: the benchmark suite of a source checkout (``benchmarks/_suite.py``), one report.

The suite runs as a script in its own process: the installed package never imports the checkout's
``benchmarks`` folder (which is not part of the package), and ``benchmarks/*.py`` stay the entry points.
"""

from __future__ import annotations

import argparse
import os
import subprocess
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


def suite_command(root: Path, args: argparse.Namespace) -> list[str]:
    """The command line that runs ``root/benchmarks/_suite.py`` with the options of ``args``."""
    argv = [sys.executable, str(root / "benchmarks" / "_suite.py"), "--prog", "fourds bench"]
    if args.quick:
        argv.append("--quick")
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
    return argv


def run(args: argparse.Namespace) -> int:
    root = find_checkout()
    # The suite's own process finds the checkout's benchmarks (and its src/, as its children do).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), str(root / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run(suite_command(root, args), env=env, check=False).returncode
