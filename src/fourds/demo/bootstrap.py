"""Paired bootstrap over test scenes: is one row's figure better than another's beyond sampling noise?

Each probe run stores its primary metric per test scene (``results.json``'s ``test_samples``: values,
and weights for a weighted metric such as AbsRel). A row's figure on a set of scenes is the mean over
its readout seeds of the metric's own reduction over those scenes (``sum(v * w) / sum(w)`` weighted, a
mean otherwise, NaN-skipping for the TAP-Vid keys) — the figure the table reports when the set is the
whole split. The bootstrap draws the same scene indices for both rows (paired: the rows are scored on
the same scenes) ``resamples`` times and reports the percentile interval of the difference of figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fourds.metrics import MetricSpec


@dataclass(frozen=True)
class Interval:
    """The bootstrap's ``level`` percentile interval ``[low, high]`` of ``figure(a) - figure(b)``."""

    low: float
    high: float
    level: float
    resamples: int

    def excludes_zero_towards(self, direction: str) -> bool:
        """True when the whole interval lies on the better side of zero for ``a`` (above zero when higher
        is better, below when lower is)."""
        return self.low > 0 if direction == "higher" else self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "level": self.level, "resamples": self.resamples}


def _matrix(runs: Sequence[dict[str, Any]], key: str) -> Tensor | None:
    if not runs or key not in runs[0]:
        return None
    return torch.tensor([run[key] for run in runs], dtype=torch.float64)  # (S seeds, N scenes)


def _check(runs: Sequence[dict[str, Any]], name: str) -> list[int]:
    if not runs:
        raise ValueError(f"bootstrap: row {name} has no per-scene samples")
    indices = list(runs[0]["indices"])
    for run in runs:
        if list(run["indices"]) != indices:
            raise ValueError(f"bootstrap: the seeds of row {name} were scored on different scenes")
    return indices


def figures(runs: Sequence[dict[str, Any]], spec: MetricSpec, draws: Tensor) -> Tensor:
    """``(R,)`` figures of one row (mean over seeds) on each row of scene positions ``draws`` ``(R, N)``."""
    values = _matrix(runs, "values")
    assert values is not None
    picked = values[:, draws]  # (S, R, N)
    if spec.reducer == "weighted":
        weights = _matrix(runs, "weights")
        if weights is None:
            raise ValueError(f"bootstrap: metric {spec.name} is weighted but the samples carry no weights")
        w = weights[:, draws]
        per_seed = torch.where(w > 0, picked, 0.0).mul(w).sum(-1) / w.sum(-1)
    elif spec.skip_nan:
        per_seed = picked.nanmean(-1)
    else:
        per_seed = picked.mean(-1)
    return per_seed.mean(0)


def paired_bootstrap(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], spec: MetricSpec,
                     resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile interval of ``figure(a) - figure(b)`` over scene resamples drawn with replacement.

    Args:
        a, b: one ``test_samples`` dict per readout seed of each row (``values`` ``[N]``, ``indices``
            ``[N]``, ``weights`` ``[N]`` for a weighted metric); both rows on the same scenes. A row
            without seeds (e.g. the trivial answer) passes its one samples dict.
        spec: the metric (its reducer).
        resamples, level, seed: the bootstrap's size, interval level and generator seed.
    """
    ia, ib = _check(a, "a"), _check(b, "b")
    if ia != ib:
        raise ValueError("bootstrap: the two rows were scored on different scenes; a paired bootstrap needs the same")
    n = len(ia)
    draws = torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    diff = figures(a, spec, draws) - figures(b, spec, draws)
    diff = diff[torch.isfinite(diff)]
    if diff.numel() == 0:
        return Interval(float("nan"), float("nan"), level, resamples)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(diff, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return Interval(float(low), float(high), level, resamples)
