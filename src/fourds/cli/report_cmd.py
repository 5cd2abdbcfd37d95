"""``fourds report``: probe results as the paper's Table 2, layer-depth plot (Fig. 6), size plot (Fig. 7)."""

from __future__ import annotations

import argparse

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", formatter_class=HelpFormatter,
        help="tables and plots from probe runs",
        description="Gather the results.json of `fourds probe` runs (run folders, or folders searched "
        "recursively) into results.md / results.csv (backbones x tasks, direction arrows), layer_depth.png/.svg "
        "(metric vs readout depth, Fig. 6) and size_scaling.png/.svg (metric vs parameters, Fig. 7).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="probe run folders (with results.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fourds.probe.report import write_report

    written = write_report(args.runs, args.out)
    print(f"{written['runs']} run(s) → {written['markdown']}, {written['csv']}, "
          f"{', '.join(p.name for p in written['figures'])}")
    return 0
