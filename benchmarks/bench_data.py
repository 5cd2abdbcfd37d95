"""Decode + augment throughput of the pretraining loader vs the rate at which 4DS-S consumes clips.

Generates H.264 files (720p and 360p, 30 fps, B-frames, a stated key-frame interval: 32 and x264's
default 250), then times the real pretraining path (:class:`fourds.data.sources.FileVideos` +
:class:`fourds.data.pretrain.PretrainClips`: random start, 16 frames at stride 2, resize while decoding
to short side 258 = ceil(1.15 x 224), random 224 crop, flip; uint8 out):

- per worker: one process, ``ds[n]`` in a loop (decoder single-threaded, as in a DataLoader worker);
- all cores: a DataLoader with one worker per core (batch 8, persistent workers, after warm-up);
- for reference, decoding at full size and resizing with torch after (the slower alternative).

The 4DS-S step rate (fp32, 16x224x224, 95 % masking, batch 4, all threads) comes from
``benchmarks/bench_pretrain.py``'s worker in a subprocess, or from ``--step-rate`` (clips/s).

    python benchmarks/bench_data.py [--quick] [--step-rate CLIPS_PER_S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks._report import figure, result  # noqa: E402

CROP = 224
SHORT_SIDE = math.ceil(1.15 * CROP)


def make_video(path: Path, height: int, width: int, frames: int, keyint: int | None) -> Path:
    """Smooth moving gradients plus moving squares: compresses like ordinary footage."""
    from fourds.data.video import write_video

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        r = 127 + 100 * np.sin((xx + 3 * t) / 60.0)
        g = 127 + 100 * np.cos((yy - 2 * t) / 45.0)
        b = 127 + 100 * np.sin((xx + yy + 4 * t) / 80.0)
        frame = np.stack([r, g, b], -1)
        for k in range(4):
            cx = (width * (0.2 + 0.2 * k) + 5 * t * (k + 1)) % width
            cy = height * (0.3 + 0.1 * k) + 20 * math.sin(t / 10 + k)
            s = height // 10
            frame[int(max(0, cy - s)):int(cy + s), int(max(0, cx - s)):int(cx + s)] = (60 * k, 255 - 60 * k, 128)
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
    write_video(path, video, fps=30, codec="libx264", keyint=keyint, bframes=3, crf=23)
    return path


def _dataset(folder: Path, decode_short_side: int | None):
    from fourds.data.pretrain import ClipSpec, PretrainClips
    from fourds.data.sources import FileList, FileVideos

    source = FileVideos(FileList.from_folder(folder), seed=0, decode_short_side=decode_short_side)
    return PretrainClips(source, ClipSpec(num_frames=16, frame_stride=2, image_size=CROP), seed=0)


def per_worker(folder: Path, clips: int, decode_short_side: int | None = SHORT_SIDE) -> float:
    """clips/s of one process (single-threaded decoder and torch)."""
    torch.set_num_threads(1)
    ds = _dataset(folder, decode_short_side)
    ds[10_000]  # warm-up (index cache, imports)
    t0 = time.perf_counter()
    for n in range(clips):
        sample = ds[n]
        assert sample["video"].shape == (16, CROP, CROP, 3)
    return clips / (time.perf_counter() - t0)


def all_cores(folder: Path, batches: int, workers: int, batch: int = 8) -> float:
    """clips/s of a DataLoader with ``workers`` processes (the pretraining loader)."""
    from fourds.data.pretrain import StepBatchSampler, make_loader

    torch.set_num_threads(1)
    ds = _dataset(folder, SHORT_SIDE)
    loader = make_loader(ds, StepBatchSampler(0, batches + 2, batch), num_workers=workers)
    it = iter(loader)
    for _ in range(2):  # warm-up: workers started, first prefetches done
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - t0)
    del it, loader
    return rate


def step_rate_4ds_s(batch: int = 4, steps: int = 2) -> float:
    """4DS-S SimpleMAE clips/s on this CPU (bench_pretrain's worker, fp32, all threads)."""
    from benchmarks import bench_pretrain

    saved = {k: os.environ.pop(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    try:  # the model gets every core, as in bench_pretrain
        return float(bench_pretrain._spawn("fourds", "4ds-s", batch, steps, 0)["clips_per_s"])
    finally:
        os.environ.update(saved)


def measure(quick: bool = False, step_rate: float | None = None, step_rate_source: str | None = None) -> dict:
    """Measure everything; returns the raw figures. Without ``step_rate`` the 4DS-S rate is measured here
    (batch 4, 2 steps; with ``quick`` batch 1, 1 step)."""
    os.environ.setdefault("FOURDS_DECODE_THREADS", "1")
    frames = 90 if quick else 150
    clips = 6 if quick else 16
    configs = [("360p", 360, 640, 32)] if quick else [("720p", 720, 1280, 32), ("720p", 720, 1280, None),
                                                      ("360p", 360, 640, 32), ("360p", 360, 640, None)]
    workers = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, h, w, keyint in configs:
            folder = Path(tmp) / f"{name}_k{keyint}"
            folder.mkdir()
            for i in range(2):
                make_video(folder / f"v{i}.mp4", h, w, frames, keyint)
            row = {"video": f"{name} H.264 {w}x{h}", "keyint": keyint or "x264 default (250)", "frames": frames,
                   "per_worker": per_worker(folder, clips)}
            if not quick:
                row["per_worker_full_size_decode"] = per_worker(folder, max(4, clips // 4), decode_short_side=None)
            row["all_cores"] = all_cores(folder, 2 if quick else 6, workers)
            rows.append(row)
    if step_rate is None:
        batch = 1 if quick else 4
        rate = step_rate_4ds_s(batch, 1 if quick else 2)
        source = f"bench_pretrain 4ds-s worker run by this benchmark, batch {batch}, fp32"
    else:
        rate, source = step_rate, step_rate_source or "--step-rate"
    return {
        "clip": f"16 frames, stride 2, -> {CROP}x{CROP} (decode at short side {SHORT_SIDE}, random crop, flip)",
        "workers": workers, "rows": rows, "4ds_s_clips_per_s": rate, "step_rate_source": source,
        "keeps_up": all(r["all_cores"] >= 2 * rate for r in rows),
    }


def run(quick: bool = False, context: dict | None = None) -> dict:
    """The benchmark-suite entry: the model's step rate comes from this run's pretrain benchmark when it ran
    (4DS-S at batch 4; in a quick run its tiny model), else it is measured here."""
    earlier = ((context or {}).get("results", {}).get("pretrain", {}).get("exports", {}).get("step_rate"))
    raw = measure(quick, earlier["clips_per_s"] if earlier else None, earlier["source"] if earlier else None)
    rate = raw["4ds_s_clips_per_s"]
    model = earlier["model"].upper() if earlier else "4DS-S"
    figs = [figure(f"{model} consumption (pretraining step rate)", rate, "clips/s", note=raw["step_rate_source"])]
    for r in raw["rows"]:
        tag = f"{r['video']}, keyint {r['keyint']}"
        figs.append(figure(f"{tag}: clips/s per worker", r["per_worker"], "clips/s"))
        if "per_worker_full_size_decode" in r:
            figs.append(figure(f"{tag}: clips/s per worker, full-size decode then resize",
                               r["per_worker_full_size_decode"], "clips/s"))
        figs.append(figure(f"{tag}: clips/s with {raw['workers']} workers", r["all_cores"], "clips/s",
                           peer=rate, peer_name=f"{model} consumption", goal=">= 2x consumption",
                           met=r["all_cores"] >= 2 * rate))
    notes = [f"Loader: {raw['clip']}; uint8 out; one DataLoader worker per core for 'workers'.",
             f"Ratio = loader clips/s / {model} clips/s on the same CPU; the loader and the model would share "
             "these cores in a real CPU run, so this is an upper bound on headroom."]
    if quick:
        notes.insert(0, "QUICK smoke run: one 360p file pair, few clips; compared with the quick run's tiny model.")
    return result("data", f"Data loader (decode + augment) vs {model} consumption", figs, notes, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--step-rate", type=float, default=None, help="4DS-S clips/s to compare with (skip measuring)")
    args = parser.parse_args()
    res = measure(args.quick, args.step_rate)
    print(f"loader: {res['clip']}; {res['workers']} workers for 'all cores'")
    print(f"{'video':<24} {'keyint':<20} {'clips/s/worker':>15} {'(full-size decode)':>19} {'clips/s all cores':>18}")
    for r in res["rows"]:
        full = r.get("per_worker_full_size_decode")
        print(f"{r['video']:<24} {r['keyint']!s:<20} {r['per_worker']:>15.2f} "
              f"{(f'{full:.2f}' if full else '-'):>19} {r['all_cores']:>18.2f}")
    print(f"4DS-S consumes {res['4ds_s_clips_per_s']:.2f} clips/s ({res['step_rate_source']}); loader >= 2x that: "
          f"{'yes' if res['keeps_up'] else 'NO'}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
