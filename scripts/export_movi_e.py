#!/usr/bin/env python
"""Export Kubric MOVi-E point tracks to the fourds point-track format (one ``.npz`` per video).

Needs TensorFlow, TensorFlow Datasets and Kubric's point-tracking code (not fourds dependencies; this script
is not run in CI)::

    pip install tensorflow tensorflow-datasets tensorflow-graphics
    git clone https://github.com/google-research/kubric && export PYTHONPATH=$PWD/kubric:$PYTHONPATH
    python scripts/export_movi_e.py --out /data/movi_e --split train --tracks 2048
    python scripts/export_movi_e.py --out /data/movi_e --split validation --tracks 2048

Output: ``OUT/<split>/<index:06d>.npz`` with ``video`` uint8 (T, H, W, 3) (TFDS's frames, unchanged),
``target_points`` float32 (P, T, 2) (x, y) raster pixels (pixel (i, j) covers [j, j+1) x [i, i+1)),
``occluded`` bool (P, T) and ``query_points`` float32 (P, 3) (t, y, x) with t a frame index. Tracks come
from Kubric's own ``add_tracks`` (``challenges/point_tracking/dataset.py``) without its random crop, so
its coordinates are those of the stored 256x256 frames; fourds crops, subsamples tracks (64 per clip)
and chooses first-frame queries at training time. Read it with
``fourds.data.datasets.open_dataset("movi_e", OUT, "train")``.

Re-running skips files that exist (resume); ``--shard i --num-shards n`` exports every n-th video so that
several processes can share the work. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def _kubric_add_tracks():  # noqa: ANN202
    try:
        from kubric.challenges.point_tracking import dataset  # as tapnet imports it
    except ImportError:
        try:
            from challenges.point_tracking import dataset  # a kubric checkout on PYTHONPATH
        except ImportError as err:
            raise SystemExit(
                "Kubric's point-tracking code is not importable. Clone https://github.com/google-research/kubric "
                "and put it on PYTHONPATH (the script imports challenges/point_tracking/dataset.py)."
            ) from err
    return dataset.add_tracks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output root (OUT/<split>/<index>.npz)")
    p.add_argument("--split", default="train", help="TFDS split: train, validation or test (default train)")
    p.add_argument("--tracks", type=int, default=2048, help="point tracks per video (default 2048)")
    p.add_argument("--data-dir", default="gs://kubric-public/tfds", help="TFDS data_dir holding movi_e/256x256")
    p.add_argument("--dataset", default="movi_e/256x256", help="TFDS name (default movi_e/256x256)")
    p.add_argument("--limit", type=int, default=None, help="export at most N videos")
    p.add_argument("--shard", type=int, default=0, help="this process exports videos shard, shard + n, ...")
    p.add_argument("--num-shards", type=int, default=1, help="number of processes sharing the export")
    p.add_argument("--compress", action=argparse.BooleanOptionalAction, default=True, help="np.savez_compressed")
    args = p.parse_args(argv)
    if not 0 <= args.shard < args.num_shards:
        p.error("--shard must be in [0, --num-shards)")

    import tensorflow as tf
    import tensorflow_datasets as tfds

    add_tracks = _kubric_add_tracks()
    out = Path(args.out) / args.split
    out.mkdir(parents=True, exist_ok=True)

    def with_tracks(data):  # noqa: ANN001, ANN202
        # No random crop: the tracks are in the pixel frame of the stored video, which is kept as uint8 (the
        # resampled float video add_tracks returns would only add interpolation).
        size = tuple(data["video"].shape[1:3].as_list())
        res = add_tracks(data, train_size=size, random_crop=False, tracks_to_sample=args.tracks)
        return {"video": data["video"], "target_points": res["target_points"], "occluded": res["occluded"],
                "query_points": res["query_points"]}

    ds = tfds.load(args.dataset, data_dir=args.data_dir, split=args.split, shuffle_files=False)
    ds = ds.enumerate().filter(lambda i, _: i % args.num_shards == args.shard)
    ds = ds.map(lambda i, d: (i, with_tracks(d)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    save = np.savez_compressed if args.compress else np.savez
    written = skipped = 0
    for n, (index, data) in enumerate(tfds.as_numpy(ds)):
        if args.limit is not None and n >= args.limit:
            break
        path = out / f"{int(index):06d}.npz"
        if path.exists():
            skipped += 1
            continue
        video = np.asarray(data["video"], np.uint8)
        target = np.asarray(data["target_points"], np.float32)
        occluded = np.asarray(data["occluded"], bool)
        query = np.asarray(data["query_points"], np.float32)
        assert target.shape == (args.tracks, video.shape[0], 2) and occluded.shape == target.shape[:2], target.shape
        tmp = path.with_suffix(".tmp.npz")
        save(tmp, video=video, target_points=target, occluded=occluded, query_points=query)
        os.replace(tmp, path)
        written += 1
        if written % 100 == 0:
            print(f"{args.split}: wrote {written} (skipped {skipped} existing) under {out}", flush=True)
    print(f"{args.split}: wrote {written} videos, skipped {skipped} existing, in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
