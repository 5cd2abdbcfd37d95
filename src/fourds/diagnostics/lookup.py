"""The smallest question a positional-query readout must answer: read the token under the query.

Tokens of a ``grid x grid`` frame carry fixed position channels
(:func:`fourds.diagnostics.features.position_channels`) and 4 random values in [0, 1]; each query is a
box inside one token's cell (pixels of a ``8·grid`` frame); the target is that token's 4 values. A
:class:`fourds.tasks.waymo.BoxTrackReadout` (direct output, one frame) is trained with an L1 loss.
Answering the mean (0.5) everywhere scores an L1 of about 0.25; a readout that attends to the query's
own token scores near 0. This is the mechanism point and box tracking rely on, without any backbone,
scene or label in the way (``docs/ladder.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fourds.diagnostics.features import position_channels
from fourds.train.optim import warmup_cosine


@dataclass
class LookupResult:
    """Test L1 of the trained readout, of the mean answer, and the ratio of the two (0: perfect)."""

    test_l1: float
    mean_l1: float

    @property
    def ratio(self) -> float:
        return self.test_l1 / self.mean_l1


def _make(n_scenes: int, grid: int, steps: int, queries: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    n = grid * grid
    pos = position_channels(grid, grid)
    vals = torch.rand(n_scenes, n, 4, generator=gen)
    feats = torch.cat([pos.expand(n_scenes, n, -1), vals], -1)[:, None].expand(-1, steps, -1, -1).contiguous()
    cell = torch.randint(0, n, (n_scenes, queries), generator=gen)
    x0, y0 = (cell % grid) * 8.0 + 1, (cell // grid) * 8.0 + 1
    boxes = torch.stack([x0, y0, x0 + 6, y0 + 6], -1)[:, :, None].contiguous()  # (S, Q, 1, 4)
    target = torch.gather(vals, 1, cell[..., None].expand(-1, -1, 4))
    return feats, boxes, target


def lookup_probe(*, query_residual: bool, init: str = "lecun", train_steps: int = 300, lr: float = 1e-2,
                 grid: int = 8, time_steps: int = 1, scenes: int = 256, channels: int = 64, num_heads: int = 4,
                 max_frequency: float = 8.0, batch_size: int = 16, seed: int = 0) -> LookupResult:
    """Train a box readout on the look-up problem and score it on 64 fresh scenes (see the module doc)."""
    from fourds.tasks.waymo import BoxTrackReadout

    gen = torch.Generator().manual_seed(seed)
    ftr, btr, ytr = _make(scenes, grid, time_steps, 4, gen)
    fte, bte, yte = _make(64, grid, time_steps, 4, gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = BoxTrackReadout(ftr.shape[-1], channels, num_heads, 1, (8 * grid, 8 * grid), 64,
                               max_frequency=max_frequency, query_residual=query_residual)
        if init != "lecun":
            from fourds.readouts.attention import init_dense_

            init_dense_(head.readout, init)
            init_dense_(head.embed, init)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    for step in range(train_steps):
        idx = torch.randint(0, scenes, (batch_size,), generator=gen)
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, train_steps, max(1, train_steps // 10), lr, 1e-7)
        opt.zero_grad(set_to_none=True)
        loss = (head(ftr[idx], {"boxes": btr[idx]})[:, :, 0] - ytr[idx]).abs().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        test = (head(fte, {"boxes": bte})[:, :, 0] - yte).abs().mean()
    return LookupResult(float(test), float((yte - 0.5).abs().mean()))
