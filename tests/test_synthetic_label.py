"""The motion label needs time: a classifier that sees one frame stays near chance, one that sees the
clip does well (slow: trains two small CNNs on raw pixels; ``pytest -m slow``).

``label_readout_check`` is also run, larger, by ``benchmarks/bench_synthetic.py --label-check``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fourds.data.synthetic import SyntheticScenes


def _clips(seed: int, n: int, frames: int, size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm import tqdm

    ds = SyntheticScenes(frames, size, size, seed=seed, num_samples=n, num_tracks=1)
    video = torch.stack([ds.render_video(i) for i in tqdm(range(n), desc=f"clips (seed {seed})", disable=not progress)])
    labels = torch.tensor([ds.label(i) for i in range(n)])
    return video.permute(0, 1, 4, 2, 3).contiguous(), labels  # (N, T, 3, H, W)


def _cnn(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, view, epochs: int, batch: int = 64) -> nn.Module:
    steps = epochs * (len(x) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            loss = F.cross_entropy(model(view(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def label_readout_check(num_train: int = 1200, num_test: int = 400, epochs: int = 12, frames: int = 16,
                        size: int = 32, progress: bool = False) -> dict:
    """Train a CNN on all frames (stacked as channels) and one on single frames (a random frame per
    sample and step) to predict ``label``; top-1 on held-out scenes (another seed), the per-frame model
    evaluated on every frame index."""
    torch.manual_seed(0)
    xtr, ytr = _clips(100, num_train, frames, size, progress)
    xte, yte = _clips(200, num_test, frames, size, progress)
    num_classes = SyntheticScenes().num_classes
    temporal = _train(_cnn(3 * frames, num_classes), xtr, ytr, lambda x, g: x.flatten(1, 2), epochs)

    def one_frame(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return x[torch.arange(len(x)), torch.randint(0, x.shape[1], (len(x),), generator=gen)]

    per_frame = _train(_cnn(3, num_classes), xtr, ytr, one_frame, epochs)
    with torch.no_grad():
        acc_t = float((temporal(xte.flatten(1, 2)).argmax(-1) == yte).float().mean())
        acc_f = [float((per_frame(xte[:, t]).argmax(-1) == yte).float().mean()) for t in range(frames)]
    best = max(range(frames), key=lambda t: acc_f[t])
    return {"num_classes": num_classes, "chance": 1.0 / num_classes, "num_train": num_train, "num_test": num_test,
            "temporal": acc_t, "per_frame": acc_f, "per_frame_mean": sum(acc_f) / frames,
            "per_frame_max": acc_f[best], "per_frame_argmax": best}


@pytest.mark.slow
def test_label_needs_time():
    r = label_readout_check()
    print(r)
    assert abs(r["per_frame_mean"] - r["chance"]) <= 0.10 and r["per_frame_max"] <= r["chance"] + 0.10
    assert r["temporal"] >= r["chance"] + 0.30
