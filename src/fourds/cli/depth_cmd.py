"""``fourds depth VIDEO --model DIR --out OUT``: depth over a whole video with a model's depth head."""

from __future__ import annotations

import argparse

from fourds.cli.config_args import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "depth", formatter_class=HelpFormatter,
        help="run a depth readout over a whole video: colourised side-by-side mp4 + raw depth .npy",
        description="Resize the video to the depth head's trained size, run it window by window, resize the "
        "depth back to the video's size and write OUT/<video>_depth.mp4 (input | colourised depth) and "
        "OUT/<video>_depth.npy ((F, H, W) float32, raw head output: the official head's units). "
        "An OUT ending in .mp4 names the video directly.",
    )
    p.add_argument("video", help="video file (or a .npy (T, H, W, 3) array)")
    p.add_argument("--model", required=True, help="model folder with heads/depth/, or the official depth .npz")
    p.add_argument("--out", required=True, help="output folder, or a .mp4 path")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--cmap", default="turbo", help="matplotlib colour map (default turbo)")
    p.add_argument("--range", default=None, metavar="LO,HI",
                   help="depth range of the colour map (default: the 2nd and 98th percentiles of the video)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from fourds.inference.depth import (
        find_depth_head,
        head_input_size,
        output_paths,
        predict_depth,
        resize_depth,
        side_by_side,
    )
    from fourds.inference.models import open_model
    from fourds.inference.video_io import iter_frames, read_video, write_video

    video = Path(args.video)
    if not video.is_file():
        raise FileNotFoundError(f"video {video} does not exist")
    backbone, heads = open_model(args.model)
    head = find_depth_head(heads, str(args.model))
    _, h, w = head_input_size(head)
    frames, info = read_video(video, (h, w))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    depth = predict_depth(backbone, head, frames, batch_size=args.batch_size, device=device,
                          progress=not args.no_progress)
    if args.range:
        try:
            lo, hi = (float(v) for v in args.range.split(","))
        except ValueError:
            raise ValueError(f"--range {args.range!r}: expected LO,HI, e.g. 0.5,6") from None
    else:
        lo, hi = (float(v) for v in np.percentile(depth, [2, 98]))
    mp4, npy = output_paths(args.out, video.stem)
    npy.parent.mkdir(parents=True, exist_ok=True)
    raw = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(len(depth), info.height, info.width))
    for lo_f in range(0, len(depth), 64):  # resize back in chunks: bounded memory for long videos
        raw[lo_f : lo_f + 64] = resize_depth(depth[lo_f : lo_f + 64], (info.height, info.width))
    raw.flush()
    del raw
    count = write_video(mp4, side_by_side(iter_frames(video), depth, lo, hi, args.cmap), info.fps)
    print(f"{mp4} ({count} frames, depth colour range {lo:.3g}..{hi:.3g})")
    print(npy)
    return 0
