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
    except (ValueError, OSError, RuntimeError) as err:
        # User errors carry their fix in the message; show it without a traceback unless -v. OSError: the
        # environment (a full disk, a permission, a missing file), which the message names.
        if args.verbose:
            raise
        print(f"fourds {args.command}: error: {error_message(err)}", file=sys.stderr)
        return 1
    return int(result or 0)


MAX_ERROR_CHARS = 1000


def error_message(err: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """``str(err)`` for the one-line CLI error, cut to about ``limit`` characters.

    Messages are written to be short; the cut is a safety net for one that quotes too much (a library's
    message embedding file contents), so that a damaged file can never flood the terminal. The head and
    the tail are kept: the file is usually named first and the fix last.
    """
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-(limit // 4):]
    return f"{head} [... {len(text) - len(head) - len(tail)} more characters cut] {tail}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
