"""The readout learnability ladder at full size (issue 17): every rung of every synthetic task.

    python benchmarks/bench_ladder.py [--quick] [--tasks synth_boxes,...] [--rungs blank,overfit,...]
                                      [--steps N] [--train-scenes N] [--test-scenes N] [--out FILE.json]

Renders the scenes once (the synthetic tasks' own ``train`` / ``test`` seeds, 16x64x64), then trains
each task's readout (the demo's widths and settings) on constant features (``blank``), on 8 clips
(``overfit``), on ground-truth channels at the right tokens (``oracle``) and on raw tubelet pixels
(``pixels``), and prints one markdown row per task: each rung's metric, the fraction of the floor →
perfect gap it closes, and the verdict of the rungs that have a threshold (see
``fourds.diagnostics.ladder``). ``--quick`` is a smoke run (tiny sizes; the numbers mean nothing).
Run it with ``OMP_NUM_THREADS=1`` or 2 on a shared machine; the full run takes tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    from fourds.diagnostics.ladder import RUNGS, TASKS, LadderConfig, markdown_table, run_ladder, to_dict

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (numbers mean nothing)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--rungs", default=",".join(RUNGS))
    p.add_argument("--steps", type=int, default=None, help="readout steps on the training scenes (300)")
    p.add_argument("--train-scenes", type=int, default=None)
    p.add_argument("--test-scenes", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write every rung (with curves) as JSON")
    args = p.parse_args(argv)
    kw: dict = {"tasks": tuple(args.tasks.split(",")), "rungs": tuple(args.rungs.split(","))}
    if args.quick:
        kw.update(frames=4, size=32, train_scenes=8, test_scenes=4, steps=4, overfit_clips=2, overfit_steps=4,
                  pixel_patch=(2, 8, 8), label_tracks=8, oracle_tracks=32)
    for name in ("steps", "train_scenes", "test_scenes", "lr"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    cfg = LadderConfig(**kw)
    t0 = time.perf_counter()
    results = run_ladder(cfg)
    print(markdown_table(results))
    print(f"total {time.perf_counter() - t0:.0f} s, torch threads {torch.get_num_threads()}")
    if args.out is not None:
        args.out.write_text(json.dumps({"config": {k: v for k, v in vars(cfg).items() if k != "task_overrides"},
                                        "results": to_dict(results)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
