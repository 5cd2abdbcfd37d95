"""The motion label needs time: a classifier that sees one frame stays near chance, one that sees the
clip does well (slow: trains two small CNNs on raw 32x32 pixels, minutes; ``pytest -m slow``).

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


def _cnn(in_channels: int, num_classes: int, size: int) -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(in_channels, 48), *block(48, 64), *block(64, 64), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(64 * (size // 8) ** 2, num_classes))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, view, epochs: int, num_classes: int,
           batch: int = 64) -> nn.Module:
    """AdamW + one-cycle; augmentation: left-right flips, which map class k to (C/2 - k) mod C exactly
    (the label is an image direction, its sectors are symmetric about the horizontal axis)."""
    steps = epochs * (len(x) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            xb, yb = x[idx], y[idx].clone()
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb[flip] = xb[flip].flip(-1)
            yb[flip] = (num_classes // 2 - yb[flip]) % num_classes
            loss = F.cross_entropy(model(view(xb, gen)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _all_frames(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """``(N, T, 3, H, W)`` → the first frame and every frame's difference to it, as channels."""
    return torch.cat([x[:, :1] - 0.5, (x[:, 1:] - x[:, :1]) * 4], dim=1).flatten(1, 2)


def label_readout_check(num_train: int = 1500, num_test: int = 500, epochs: int = 8, frames: int = 16,
                        size: int = 32, progress: bool = False) -> dict:
    """Train a CNN on all frames (the first frame and the differences to it, stacked as channels)
    and the same CNN on single frames (a random frame per sample and step) to predict ``label``;
    top-1 on held-out scenes (another seed), the per-frame model evaluated on every frame index."""
    torch.manual_seed(0)
    xtr, ytr = _clips(100, num_train, frames, size, progress)
    xte, yte = _clips(200, num_test, frames, size, progress)
    num_classes = SyntheticScenes().num_classes
    temporal = _train(_cnn(3 * frames, num_classes, size), xtr, ytr, _all_frames, epochs, num_classes)

    def one_frame(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return x[torch.arange(len(x)), torch.randint(0, x.shape[1], (len(x),), generator=gen)] - 0.5

    per_frame = _train(_cnn(3, num_classes, size), xtr, ytr, one_frame, epochs, num_classes)
    with torch.no_grad():
        acc_t = float((temporal(_all_frames(xte)).argmax(-1) == yte).float().mean())
        acc_f = [float((per_frame(xte[:, t] - 0.5).argmax(-1) == yte).float().mean()) for t in range(frames)]
    best = max(range(frames), key=lambda t: acc_f[t])
    return {"num_classes": num_classes, "chance": 1.0 / num_classes, "num_train": num_train, "num_test": num_test,
            "temporal": acc_t, "per_frame": acc_f, "per_frame_mean": sum(acc_f) / frames,
            "per_frame_max": acc_f[best], "per_frame_argmax": best}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_label_needs_time():
    r = label_readout_check()
    print(r)
    assert abs(r["per_frame_mean"] - r["chance"]) <= 0.10 and r["per_frame_max"] <= r["chance"] + 0.10
    assert r["temporal"] >= r["chance"] + 0.15
