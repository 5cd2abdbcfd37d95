"""Throughput of the procedural 4D scene generator on ONE CPU core (``torch.set_num_threads(1)``).

Times ``SyntheticScenes(16, 128, 128)[i]`` (the full sample: render + tracks + boxes; the goal of
issue 4 is >= 10 clips/s) and the video-only path of pretraining (``SyntheticVideos.clip``), also at
the demo's 16x64x64 / 16x74x74 and at 32 frames, each after one warm-up sample. Reports the CPU time of
this process (``time.process_time``: robust to other jobs on a shared machine) and the wall time.

    python benchmarks/bench_synthetic.py [--quick] [--samples N] [--label-check]

With ``--label-check`` it also runs the per-frame vs temporal readout check of the motion label
(``tests/test_synthetic_label.py``'s experiment, larger: two small CNNs on raw 32x32 pixels, one that
sees one frame at a time and one that sees all 16; 2000 training clips, tens of minutes on 2 cores;
``--quick`` shrinks it to a smoke run whose accuracies mean nothing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from benchmarks._report import figure, result

GOAL = 10.0  # clips/s of the full sample at 16x128x128 on one core


def _time(fn, n: int) -> tuple[float, float]:
    """(wall, cpu) clips/s of ``fn(1..n)`` after ``fn(0)``."""
    fn(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(1, n + 1):
        fn(i)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def measure(samples: int) -> list[dict]:
    """One row per setting: ``{"setting", "cpu", "wall"}`` clips/s on one thread."""
    from fourds.data.synthetic import SyntheticScenes, SyntheticVideos

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for frames, side in ((16, 128), (16, 64), (32, 128)):
            ds = SyntheticScenes(frames, side, side, seed=0, num_samples=samples + 1)
            wall, cpu = _time(lambda i, ds=ds: ds[i], samples)
            rows.append({"setting": f"SyntheticScenes {frames}x{side}x{side} (all ground truth)", "cpu": cpu, "wall": wall})
        for side in (148, 74):
            src, gen = SyntheticVideos((side, side), seed=0), torch.Generator()
            wall, cpu = _time(lambda i, src=src, gen=gen: src.clip(i, 16, 2, gen), samples)
            rows.append({"setting": f"SyntheticVideos 16x{side}x{side} (video only, uint8)", "cpu": cpu, "wall": wall})
    finally:
        torch.set_num_threads(threads)
    return rows


def run(quick: bool = False, context: dict | None = None) -> dict:
    """The benchmark-suite entry: :func:`measure` in the uniform result schema."""
    samples = 10 if quick else 40
    rows = measure(samples)
    figs = []
    for i, row in enumerate(rows):
        goal = {"goal": f">= {GOAL:g} clips/s (issue 4)", "met": row["cpu"] >= GOAL} if i == 0 else {}
        figs.append(figure(f"{row['setting']}, one core", row["cpu"], "clips/s",
                           note=f"wall {row['wall']:.1f} clips/s", **goal))
    notes = [(f"one thread; {samples} timed samples per setting after one warm-up; clips/s from this process's "
              "CPU time (wall time in the notes)")]
    return result("synthetic", "Procedural 4D scenes: clips/s on one core", figs, notes, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--samples", type=int, default=None, help="timed samples per setting (default 40, quick 10)")
    parser.add_argument("--label-check", action="store_true", help="also run the per-frame vs temporal label check")
    args = parser.parse_args()
    n = args.samples or (10 if args.quick else 40)
    print(f"procedural 4D scenes, one core, {n} samples per row (after one warm-up)")
    print(f"{'setting':52s} {'clips/s (cpu)':>14s} {'clips/s (wall)':>15s}")
    rows = measure(n)
    for row in rows:
        print(f"{row['setting']:52s} {row['cpu']:14.1f} {row['wall']:15.1f}")
    print(f"goal >= {GOAL:g} clips/s at 16x128x128: {'met' if rows[0]['cpu'] >= GOAL else 'NOT met'}")

    if args.label_check:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_synthetic_label import label_readout_check

        torch.set_num_threads(2)
        sizes = ({"num_train": 300, "num_test": 100, "epochs": 2} if args.quick
                 else {"num_train": 2000, "num_test": 800, "epochs": 10})
        r = label_readout_check(**sizes, progress=True)
        print(f"motion label ({r['num_classes']} classes, chance {r['chance']:.3f}), "
              f"{r['num_train']} train / {r['num_test']} test clips of 16x32x32:")
        print(f"  temporal CNN (all frames)   top-1 {r['temporal']:.3f}")
        print(f"  per-frame CNN (one frame)   top-1 mean over frames {r['per_frame_mean']:.3f}, "
              f"max {r['per_frame_max']:.3f} (frame {r['per_frame_argmax']})")


if __name__ == "__main__":
    main()
