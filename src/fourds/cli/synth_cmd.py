"""``fourds synth``: look at and export the procedural 4D scenes (``fourds.data.synthetic``).

- ``fourds synth preview --out DIR -n N``: ``DIR/synth_000000.mp4`` ... with RGB, point tracks, boxes,
  depth and segmentation side by side.
- ``fourds synth export --out DIR -n N``: ``DIR/{split}/000000.npz`` ... in the point-track export
  format (``docs/synthetic.md``), the format the Kubric MOVi-E reader reads.
"""

from __future__ import annotations

import argparse

from fourds.cli.config_args import HelpFormatter


def _scene_args(p: argparse.ArgumentParser, frames: int, size: int, tracks: str) -> None:
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("-n", "--num-videos", type=int, default=4, help="how many scenes (default 4)")
    p.add_argument("--start", type=int, default=0, help="first sample index (default 0)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--frames", type=int, default=frames, help=f"frames per clip (default {frames})")
    p.add_argument("--size", type=int, default=size, help=f"square frame size in pixels (default {size})")
    p.add_argument("--height", type=int, default=None, help="frame height (overrides --size)")
    p.add_argument("--width", type=int, default=None, help="frame width (overrides --size)")
    p.add_argument("--num-tracks", type=int, default=None, help=f"point tracks per clip (default: {tracks})")
    p.add_argument("--max-objects", type=int, default=10, help="object slots / most objects (default 10)")
    p.add_argument("--num-classes", type=int, default=8, help="motion directions of the label (default 8)")
    p.add_argument("--no-shadows", action="store_true", help="render without cast shadows")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth", formatter_class=HelpFormatter,
        help="preview or export procedural 4D scenes with exact ground truth",
        description="Procedural 4D scenes (ray-cast spheres and boxes on a textured ground, moving camera) "
        "with depth, camera poses, point tracks, boxes and a motion class. See docs/synthetic.md.",
    )
    sub = p.add_subparsers(dest="synth_command", metavar="SYNTH_COMMAND")

    pv = sub.add_parser(
        "preview", formatter_class=HelpFormatter,
        help="write preview videos (RGB | tracks | boxes | depth | segmentation)",
        description="Render N scenes and write each as one video OUT/synth_<index>.mp4 (or .gif) of five "
        "panels side by side: RGB with the motion label (the main object's direction, as an arrow and its "
        "class number), the ground-truth point tracks (hollow when occluded), the object boxes, depth and the "
        "object segmentation. A scene is fixed by --seed and its index. "
        "Prints one line per video (path, motion direction, objects, share of visible track points).",
    )
    _scene_args(pv, frames=16, size=128, tracks="--preview-tracks")
    pv.add_argument("--fps", type=int, default=8, help="frames per second of the preview (default 8)")
    pv.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="container (default mp4)")
    pv.add_argument("--preview-tracks", type=int, default=48, help="tracks drawn per clip (default 48)")
    pv.set_defaults(func=run_preview)

    ex = sub.add_parser(
        "export", formatter_class=HelpFormatter,
        help="write .npz point-track files (video, target_points, occluded, query_points)",
        description="Render N scenes and write OUT/<split>/<index>.npz in the point-track export format "
        "(video uint8 (T, H, W, 3), target_points (P, T, 2) pixel (x, y), occluded (P, T), query_points "
        "(P, 3) as (t, y, x)) plus OUT/<split>/meta.json describing it: the files the Kubric MOVi-E reader "
        "reads (docs/synthetic.md). --extras adds the other ground truth (depth, cameras, boxes, "
        "segmentation, motion label).",
    )
    _scene_args(ex, frames=16, size=128, tracks="256")
    ex.add_argument("--split", default="train", help="sub-folder name (default train)")
    ex.add_argument("--extras", action="store_true",
                    help="also store depth, intrinsics, cam_to_world, boxes, box_valid, track_object, segmentation, label")
    ex.add_argument("--no-compress", action="store_true", help="np.savez instead of np.savez_compressed")
    ex.set_defaults(func=run_export)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _dataset(args: argparse.Namespace, num_tracks: int):
    from fourds.data.synthetic import SyntheticScenes

    if args.num_videos < 1 or args.start < 0:
        raise ValueError(f"-n {args.num_videos} / --start {args.start}: need n >= 1 and start >= 0")
    height = args.height or args.size
    width = args.width or args.size
    return SyntheticScenes(
        num_frames=args.frames, height=height, width=width, seed=args.seed,
        num_samples=args.start + args.num_videos, num_tracks=min(num_tracks, height * width),
        max_objects=args.max_objects, num_classes=args.num_classes, shadows=not args.no_shadows,
        min_objects=min(3, args.max_objects),
    )


def run_preview(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from fourds.data.synthetic.preview import write_preview
    from fourds.probe.visualize import motion_class_name

    ds = _dataset(args, args.num_tracks or args.preview_tracks)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in tqdm(range(args.start, args.start + args.num_videos), desc="preview", unit="clip"):
        sample = ds[i]
        path = write_preview(sample, out / f"synth_{i:06d}.{args.format}", ds.num_classes, fps=args.fps)
        label = int(sample["label"])
        tqdm.write(f"{path}  motion {motion_class_name(label, ds.num_classes)} (class {label})  "
                   f"objects {int(sample['num_objects'])}  visible track points "
                   f"{float(sample['visible'].float().mean()):.0%}")
        written.append(path)
    print(f"wrote {len(written)} preview video(s) to {out} ({ds.num_frames} frames of {ds.height}x{ds.width} "
          f"at {args.fps} fps; panels: RGB + motion | tracks | boxes | depth | segmentation)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from fourds.data.synthetic.export import export_point_tracks

    ds = _dataset(args, args.num_tracks or 256)
    paths = export_point_tracks(ds, args.out, split=args.split, indices=range(args.start, args.start + args.num_videos),
                                extras=args.extras, compress=not args.no_compress)
    print(f"wrote {len(paths)} files to {paths[0].parent} (format: {paths[0].parent / 'meta.json'})")
    return 0
