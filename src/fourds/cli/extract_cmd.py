"""``fourds extract MODEL VIDEO_OR_FOLDER... --layers 0.95,0.75 --out OUT``: features of whole videos."""

from __future__ import annotations

import argparse

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract", formatter_class=HelpFormatter,
        help="extract features of any layers for whole videos (sliding windows)",
        description="Cut each video into windows of the model's clip length, run the backbone and save the "
        "features of the requested layers as OUT/<video>.safetensors (or OUT/<video>/*.npy), with frame "
        "indices, token pixel boxes and metadata that map every token back to frames and pixels. Unreadable "
        "videos are skipped and listed at the end (exit status 1 if any failed).",
    )
    p.add_argument("model", help="fourds model folder, or an official 4DS .npz")
    p.add_argument("videos", nargs="+", metavar="VIDEO_OR_FOLDER",
                   help="video files (.mp4, ...; or .npy (T, H, W, 3) arrays) or folders searched recursively")
    p.add_argument("--layers", default="0.95",
                   help="comma-separated layer indices (0 = embedding, k = block k, -1 = last) or depth "
                   "fractions such as 0.95,0.75 (default 0.95)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=("safetensors", "npy"), default="safetensors",
                   help="safetensors (one file per video) or npy (one folder per video, streamed to disk)")
    p.add_argument("--frame-step", type=int, default=1, help="take every n-th frame inside a window (default 1)")
    p.add_argument("--window-stride", type=int, default=None,
                   help="frames between window starts (default: clip length x frame step, windows back to back)")
    p.add_argument("--size", default=None,
                   help="HxW the frames are resized to (default: the model's trained size, e.g. 224x224; "
                   "aspect ratio not kept, as in the official demo)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--half", action="store_true", help="store features as float16")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_size(spec: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if spec is None:
        return default
    try:
        h, w = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {spec!r}: expected HxW, e.g. 224x224") from None
    if h < 1 or w < 1:
        raise ValueError(f"--size {spec!r}: sizes must be positive")
    return h, w


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    import time
    from pathlib import Path

    import numpy as np
    import torch

    from fourds.inference.extract import describe_tokens, extract_features, save_extraction, token_boxes
    from fourds.inference.models import open_model
    from fourds.inference.video_io import UNREADABLE, find_videos, read_video
    from fourds.models.backbone import parse_layer_spec

    log = logging.getLogger("fourds.extract")
    layers = parse_layer_spec(args.layers)
    videos = find_videos(args.videos)
    backbone, _ = open_model(args.model)
    size = parse_size(args.size, tuple(int(v) for v in backbone.input_size[1:]))  # type: ignore[arg-type]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dtype = np.dtype(np.float16 if args.half else np.float32)
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[Path, str]] = []
    for path, stem in videos:
        start = time.perf_counter()
        try:
            frames, info = read_video(path, size)
        except UNREADABLE as err:  # skip it, go on with the next video, list it at the end
            failed.append((path, str(err)))
            log.warning("skipping %s: %s", path, err)
            continue
        allocate = None
        if args.format == "npy":
            folder = out_root / stem
            folder.mkdir(parents=True, exist_ok=True)

            def allocate(name, shape, dtype, folder=folder):  # noqa: ANN001 - streams features to disk
                return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

        result = extract_features(
            backbone, frames, layers, frame_step=args.frame_step, window_stride=args.window_stride,
            batch_size=args.batch_size, device=device, out_dtype=out_dtype, progress=not args.no_progress,
            **({"allocate": allocate} if allocate else {}),
        )
        result.meta.update({
            "video": str(path), "num_video_frames": info.num_frames, "fps": info.fps,
            "video_size": [info.height, info.width], "resize": "PIL Lanczos to input_size[1:], aspect ratio not kept",
            "model": str(args.model), "model_name": getattr(backbone, "name", type(backbone).__name__),
            "token_boxes": token_boxes(size, tuple(backbone.patch_size[1:]), (info.height, info.width)),
        })
        result.meta["tokens"] = describe_tokens(result.meta)
        written = save_extraction(result, out_root / stem, args.format)
        windows = len(result.frame_indices)
        log.info("%s: %d frames -> %d windows, layers %s, %.1f s -> %s", path, info.num_frames, windows,
                 result.meta["layers"], time.perf_counter() - start, written)
        print(written)
    if failed:
        print(f"{len(failed)} of {len(videos)} videos could not be read and were skipped:", file=sys.stderr)
        for path, reason in failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0
