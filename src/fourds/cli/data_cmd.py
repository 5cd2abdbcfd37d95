"""``fourds data``: build WebDataset shards, check that every video of a source decodes.

Sub-commands live in :data:`SUBCOMMANDS` (name → register function) so more can be added without
touching the others; ``data check`` keeps its arguments in :func:`add_check_args` for the same reason.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data", formatter_class=HelpFormatter,
        help="prepare and check video data (shards, decode checks)",
        description="Video data tools. SRC is a folder of videos (searched recursively), a CSV/JSONL "
        "manifest with a 'path' column, or WebDataset .tar shards (a file, a folder or a brace pattern).",
    )
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    for add in SUBCOMMANDS.values():
        add(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# ------------------------------------------------------------------------------------------- shard
def _register_shard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shard", formatter_class=HelpFormatter,
        help="write WebDataset tar shards from a folder or manifest",
        description="Copy every video (bytes unchanged) with its labels into tar shards "
        "OUT/shard-000000.tar, ... plus OUT/index.json (byte offsets, for fast random access). Videos that "
        "do not open are left out and listed.",
    )
    p.add_argument("src", metavar="SRC", help="folder of videos, manifest, or shards")
    p.add_argument("out", metavar="OUT", help="output folder (must not hold shards yet)")
    p.add_argument("--shard-size", type=int, default=1000, help="videos per shard (default 1000)")
    p.add_argument("--no-verify", action="store_true", help="do not open each video first (faster; keeps bad files)")
    p.set_defaults(func=run_shard)


def run_shard(args: argparse.Namespace) -> int:
    from fourds.data.shards import write_shards
    from fourds.data.sources import open_collection

    collection = open_collection(args.src)
    result = write_shards(collection, args.out, shard_size=args.shard_size, verify=not args.no_verify)
    print(f"wrote {result['samples']} videos into {len(result['shards'])} shards in {args.out}")
    if result["skipped"]:
        print(f"left out {len(result['skipped'])} unreadable videos:")
        for key, reason in result["skipped"].items():
            print(f"  {key}: {reason}")
    return 0


# ------------------------------------------------------------------------------------------- check
def add_check_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``data check`` (kept separate so other sources of videos can add theirs)."""
    p.add_argument("src", metavar="SRC", nargs="?", help="folder of videos, manifest, or shards; with --dataset: "
                   "the dataset root")
    p.add_argument("--limit", type=int, default=None, help="check only the first N videos (per split with --dataset)")
    p.add_argument("--quick", action="store_true", help="open and index each video without decoding its frames")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="check a copy of a real dataset (ssv2, k700, re10k, perception_test, tapvid_davis, "
                   "tapvid_kinetics, movi_e, waymo, scannet): counts per split, missing and unreadable files, "
                   "label coverage (layouts: docs/datasets.md)")
    p.add_argument("--split", dest="splits", action="append", default=None, metavar="SPLIT",
                   help="with --dataset: check only this split (repeatable; default: every split of the dataset)")
    p.add_argument("--strict", action="store_true",
                   help="with --dataset: also fail (exit 1) when files the annotations list are missing")


def _register_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", formatter_class=HelpFormatter,
        help="decode every video once and report the unreadable ones",
        description="Decodes every frame of every video once (with --quick: only opens and indexes it) and "
        "lists those that fail. Exit status 1 when any failed. With --dataset NAME, SRC is the root of a real "
        "dataset: per split, the item counts, files the annotations list but the disk lacks, unreadable files "
        "and label coverage.",
    )
    add_check_args(p)
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from fourds.data.sources import open_collection

    if getattr(args, "dataset", None):
        return run_dataset_check(args)
    if args.src is None:
        raise ValueError("fourds data check needs SRC (a folder of videos, a manifest or shards)")
    collection = open_collection(args.src)
    report = check_collection(collection, limit=args.limit, quick=args.quick)
    print(f"{report['ok']} of {report['checked']} videos decode ({report['frames']} frames) in {collection.describe()}")
    if report["bad"]:
        print(f"{len(report['bad'])} unreadable:")
        for key, reason in report["bad"].items():
            print(f"  {key}: {reason}")
        return 1
    return 0


def run_dataset_check(args: argparse.Namespace) -> int:
    """``fourds data check ROOT --dataset NAME``: exit 1 when a split is unreadable or has unreadable items."""
    from fourds.data.datasets.check import check_dataset, format_report

    if args.src is None:
        raise ValueError(f"fourds data check --dataset {args.dataset} needs ROOT (the folder holding the dataset)")
    report = check_dataset(args.src, args.dataset, splits=args.splits, quick=args.quick, limit=args.limit)
    print("\n".join(format_report(args.dataset, args.src, report)))
    present = [r for r in report.values() if r["present"]]
    if not present:
        print(f"no split of {args.dataset} found at {args.src}; the expected layout:")
        print(next(iter(report.values()))["error"])
        return 1
    failed = any(r.get("bad") or ("error" in r and "items" not in r) for r in present)
    failed |= args.strict and any(r.get("missing") for r in present)
    return 1 if failed else 0


def check_collection(collection, limit: int | None = None, quick: bool = False, progress: bool = True) -> dict:  # type: ignore[no-untyped-def]
    """Decode (or with ``quick`` only index) every video; ``{"checked", "ok", "frames", "bad": {key: reason}}``."""
    from tqdm import tqdm

    from fourds.data.video import VideoDecodeError, num_frames, verify

    n = len(collection) if limit is None else min(limit, len(collection))
    bad: dict[str, str] = {}
    frames = 0
    for i in tqdm(range(n), desc="checking videos", unit="video", disable=not progress):
        key = collection.entry(i).key
        try:
            frames += (num_frames if quick else verify)(collection.source(i))
        except (VideoDecodeError, OSError) as err:
            bad[key] = str(err)
    return {"checked": n, "ok": n - len(bad), "frames": frames, "bad": bad}


# ------------------------------------------------------------------------------------- waymo-slim
def _register_waymo_slim(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "waymo-slim", formatter_class=HelpFormatter,
        help="rewrite Waymo v2 camera_image files for streaming (one camera, sorted, small row groups)",
        description="One-time preparation for the Waymo reader: DST/<split>/camera_image/<segment>.parquet holds "
        "only CAMERA's rows, sorted by timestamp, in row groups of a few frames, so a clip reads little more "
        "than its own frames; camera_box and camera_calibration are copied. Read DST like the original.",
    )
    p.add_argument("src", metavar="SRC", help="Waymo v2 root (with <split>/camera_image/) or one split folder")
    p.add_argument("dst", metavar="DST", help="output root")
    p.add_argument("--split", dest="splits", action="append", default=None, metavar="SPLIT",
                   help="split(s) to rewrite (default: training and validation)")
    p.add_argument("--camera", default="FRONT", help="camera to keep (default FRONT)")
    p.add_argument("--row-group-size", type=int, default=4, help="frames per row group (default 4)")
    p.set_defaults(func=run_waymo_slim)


def run_waymo_slim(args: argparse.Namespace) -> int:
    from fourds.data.datasets.waymo import slim_segments

    for split in args.splits or ["training", "validation"]:
        done = slim_segments(args.src, args.dst, split, camera=args.camera, row_group_size=args.row_group_size)
        print(f"{split}: rewrote {len(done)} segments into {args.dst}")
    return 0


SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "shard": _register_shard,
    "check": _register_check,
    "waymo-slim": _register_waymo_slim,
}
