"""The ``fourds`` command.

Thin by design: each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a handler that calls the library.
Heavy imports (torch, data, models) happen inside handlers so ``fourds --help`` stays instant.
Adding a command = one module + one line in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES: tuple[str, ...] = (
    "fourds.cli.models_cmd",
    "fourds.cli.pretrain_cmd",
    "fourds.cli.convert_cmd",
    "fourds.cli.extract_cmd",
    "fourds.cli.depth_cmd",
    "fourds.cli.data_cmd",
    "fourds.cli.probe_cmd",
    "fourds.cli.report_cmd",
    "fourds.cli.distill_cmd",
    "fourds.cli.synth_cmd",
    "fourds.cli.bench_cmd",
    "fourds.cli.demo_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fourds",
        description="4D video representations: pretrain, evaluate, convert and use 4DS video ViTs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # User errors carry their fix in the message; show it without a traceback unless -v.
        if args.verbose:
            raise
        print(f"fourds {args.command}: error: {err}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
