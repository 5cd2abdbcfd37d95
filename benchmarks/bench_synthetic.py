"""Throughput of the procedural 4D scene generator on ONE CPU core (``torch.set_num_threads(1)``).

Times ``SyntheticScenes(16, 128, 128)[i]`` (the full sample: render + tracks + boxes) and the
video-only path of pretraining (``SyntheticVideos.clip``), at 16x128x128 (the target: >= 10 clips/s)
and at the demo's 16x64x64 / 16x74x74, after one warm-up sample. Reports CPU time of this process
(``time.process_time``: robust to other jobs on a shared machine) and wall time.

    python benchmarks/bench_synthetic.py [--quick] [--samples N]

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


def _time(fn, n: int) -> tuple[float, float]:
    fn(0)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(1, n + 1):
        fn(i)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--samples", type=int, default=None, help="timed samples per setting (default 40, quick 10)")
    parser.add_argument("--label-check", action="store_true", help="also run the per-frame vs temporal label check")
    args = parser.parse_args()
    n = args.samples or (10 if args.quick else 40)
    torch.set_num_threads(1)

    from fourds.data.synthetic import SyntheticScenes, SyntheticVideos

    print(f"procedural 4D scenes, one core, {n} samples per row (after one warm-up)")
    print(f"{'setting':44s} {'clips/s (cpu)':>14s} {'clips/s (wall)':>15s}")
    for frames, side in ((16, 128), (16, 64), (32, 128)):
        ds = SyntheticScenes(frames, side, side, seed=0, num_samples=n + 1)
        wall, cpu = _time(lambda i, ds=ds: ds[i], n)
        print(f"{f'SyntheticScenes {frames}x{side}x{side} (all ground truth)':44s} {cpu:14.1f} {wall:15.1f}")
    for side in (148, 74):
        src = SyntheticVideos((side, side), seed=0)
        gen = torch.Generator()
        wall, cpu = _time(lambda i, src=src, gen=gen: src.clip(i, 16, 2, gen), n)
        print(f"{f'SyntheticVideos 16x{side}x{side} (video only, uint8)':44s} {cpu:14.1f} {wall:15.1f}")

    if args.label_check:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_synthetic_label import label_readout_check

        torch.set_num_threads(2)
        sizes = dict(num_train=300, num_test=100, epochs=2) if args.quick else dict(num_train=2000, num_test=800, epochs=10)
        result = label_readout_check(**sizes, progress=True)
        print(f"motion label ({result['num_classes']} classes, chance {result['chance']:.3f}), "
              f"{result['num_train']} train / {result['num_test']} test clips of 16x32x32:")
        print(f"  temporal CNN (all frames)   top-1 {result['temporal']:.3f}")
        print(f"  per-frame CNN (one frame)   top-1 mean over frames {result['per_frame_mean']:.3f}, "
              f"max {result['per_frame_max']:.3f} (frame {result['per_frame_argmax']})")


if __name__ == "__main__":
    main()
