"""How long a checkpoint save stalls the training loop, blocking vs background, and what
``finalize_checkpoints`` frees: ``python scripts/measure_checkpoint_save.py [MODEL ...]`` (default 4ds-s 4ds-b).

A SimpleMAE of each size (16x224x224) with one AdamW step of state is checkpointed twice blocking and
twice in the background; ``save()`` returning is the stall the loop sees (the first background save also
allocates its reusable snapshot buffers). Writes under a temporary folder in /tmp and removes it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import fourds.models as fm
from fourds.models.io import tensor_checksum
from fourds.train.checkpoint import Checkpointer, finalize_checkpoints
from fourds.train.distributed import DistInfo


def measure(name: str) -> None:
    mae = fm.simple_mae(name, input_size=(16, 224, 224))
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-4)
    for p in mae.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    n = sum(p.numel() for p in mae.parameters())
    t = time.perf_counter()
    tensor_checksum(mae.state_dict())
    tc = time.perf_counter() - t
    print(f"{name}: {n / 1e6:.1f}M params, weights {n * 4 / 1e6:.0f} MB; tensor_checksum {tc:.2f} s "
          f"({n * 4 / 1e9 / tc:.2f} GB/s)")
    root = Path(tempfile.mkdtemp(prefix="fourds-ckpt-"))
    try:
        ckpt = Checkpointer(root, DistInfo(0, 1, 0, torch.device("cpu")), keep=2)
        for rep in range(2):
            for background in (False, True):
                t = time.perf_counter()
                ckpt.save(10 * rep + 1 + background, mae, opt, {}, background=background)
                stall = time.perf_counter() - t
                t = time.perf_counter()
                ckpt.wait()
                print(f"  {'background' if background else 'blocking  '}: save() returned after {stall:.2f} s, "
                      f"writing went on {time.perf_counter() - t:.2f} s more")
        latest = ckpt.latest()
        size = sum(p.stat().st_size for p in latest.rglob("*") if p.is_file())
        state = (latest / "train_state.pt").stat().st_size
        freed = finalize_checkpoints(root)
        after = sum(p.stat().st_size for p in latest.rglob("*") if p.is_file())
        print(f"  one checkpoint {size / 1e6:.0f} MB (train_state.pt {state / 1e6:.0f} MB); finalize_checkpoints "
              f"freed {freed / 1e6:.0f} MB over {len(ckpt.step_dirs())} checkpoints, one is now {after / 1e6:.0f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for model in sys.argv[1:] or ["4ds-s", "4ds-b"]:
        measure(model)
