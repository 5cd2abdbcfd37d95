"""How per-sample metric values become one data-set figure.

Every metric in :mod:`fourds.metrics` returns one value per sample. A data set's figure is *not*
always the plain mean of those values, so each metric declares its reducer in :data:`METRIC_SPECS`:

========================= ========= ======== ==============================================
metric                    direction reducer  weight of a sample
========================= ========= ======== ==============================================
``top1``                  higher    mean     (none): the fraction of correct samples
``average_jaccard`` & co. higher    mean     (none): TAP-Vid averages per video, then videos
``pose_epe``              lower     mean     (none)
``abs_rel``               lower     weighted valid-pixel count, ``abs_rel_valid_counts``
``box_iou``               higher    weighted valid (box, frame >= 1) pairs,
                                             ``box_valid_pair_counts``
========================= ========= ======== ==============================================

The weighted reducer makes the figure exact: ``sum_i value_i * w_i / sum_i w_i`` equals the mean over
*all* valid pixels (AbsRel) or all valid pairs (box IoU) of the data set, however the samples were
batched. Reductions run in float64.

Undefined samples. A metric marks a sample it cannot score with NaN (no valid pixel, no valid box
pair, no visible point, no evaluated frame). Under the ``weighted`` reducer such samples have weight 0
and drop out. Under the ``mean`` reducer only the TAP-Vid keys skip NaN (``skip_nan=True``: there NaN
only ever means "nothing to evaluate in this video"); for ``top1`` and ``pose_epe`` a NaN can only come
from a NaN prediction, so it propagates to the figure instead of silently improving it. A NaN value
with a positive weight propagates too. A data set where no sample contributes reduces to NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Direction = Literal["higher", "lower"]
Reducer = Literal["mean", "weighted"]


def _as_1d(values: Tensor | Sequence[Tensor] | Sequence[float], name: str) -> Tensor:
    """Concatenate per-batch ``(B,)`` tensors (or a list of floats) into one float64 CPU vector."""
    if isinstance(values, Tensor):
        out = values
    elif len(values) > 0 and all(isinstance(v, Tensor) for v in values):
        parts = [v.detach().reshape(-1).to("cpu", torch.float64) for v in values]  # type: ignore[union-attr]
        out = torch.cat(parts)
    else:
        out = torch.as_tensor(list(values), dtype=torch.float64)
    if out.ndim != 1:
        raise ValueError(f"reduce: {name} must be one value per sample (S,), got shape {tuple(out.shape)}")
    return out.detach().to("cpu", torch.float64)


def reduce(
    values: Tensor | Sequence[Tensor] | Sequence[float],
    weights: Tensor | Sequence[Tensor] | Sequence[float] | None = None,
    *,
    skip_nan: bool = False,
) -> float:
    """Reduce per-sample values to a data-set figure.

    Args:
        values: ``(S,)`` per-sample metric values, or a list of per-batch ``(B,)`` tensors.
        weights: ``None`` for the plain mean over samples, or ``(S,)`` non-negative per-sample
            weights (e.g. valid-pixel counts) for the weighted mean ``sum(v * w) / sum(w)``; samples
            with weight 0 are ignored even when their value is NaN.
        skip_nan: for the plain mean, leave NaN samples out instead of returning NaN.

    Returns:
        The figure as a Python float; NaN when no sample contributes.
    """
    v = _as_1d(values, "values")
    if weights is None:
        if skip_nan:
            v = v[~torch.isnan(v)]
        return float(v.mean()) if v.numel() else float("nan")
    w = _as_1d(weights, "weights")
    if w.shape != v.shape:
        raise ValueError(
            f"reduce: weights must match values, got {tuple(w.shape)} weights for {tuple(v.shape)} values"
        )
    if bool((w < 0).any()) or bool(torch.isnan(w).any()):
        raise ValueError("reduce: weights must be non-negative counts (got a negative or NaN weight)")
    used = w > 0
    if not bool(used.any()):
        return float("nan")
    return float((v[used] * w[used]).sum() / w[used].sum())


@dataclass(frozen=True)
class MetricSpec:
    """What a metric means for model selection and how a data set's figure is formed.

    Attributes:
        name: the key the metric function returns (tasks prefix it with their name).
        direction: ``"higher"`` or ``"lower"`` is better.
        reducer: ``"mean"`` over samples, or ``"weighted"`` by a per-sample weight.
        weight: for ``"weighted"``, the public function that gives the per-sample weights.
        skip_nan: for ``"mean"``, whether NaN samples mean "undefined" and are left out.
        units: what the value measures, for tables.
    """

    name: str
    direction: Direction
    reducer: Reducer
    weight: str | None = None
    skip_nan: bool = False
    units: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(
                f"MetricSpec {self.name}: direction must be 'higher' or 'lower', got {self.direction!r}"
            )
        if self.reducer not in ("mean", "weighted"):
            raise ValueError(
                f"MetricSpec {self.name}: reducer must be 'mean' or 'weighted', got {self.reducer!r}"
            )
        if (self.reducer == "weighted") != (self.weight is not None):
            raise ValueError(
                f"MetricSpec {self.name}: a 'weighted' reducer needs a weight function, 'mean' none"
            )

    def reduce(
        self, values: Tensor | Sequence[Tensor], weights: Tensor | Sequence[Tensor] | None = None
    ) -> float:
        """:func:`reduce` with this metric's reducer; weights are required iff it is ``"weighted"``."""
        if self.reducer == "weighted" and weights is None:
            raise ValueError(f"metric {self.name} is reduced weighted by {self.weight}(...); pass weights=")
        if self.reducer == "mean" and weights is not None:
            raise ValueError(f"metric {self.name} is a plain mean over samples; do not pass weights")
        return reduce(values, weights, skip_nan=self.skip_nan)

    def better(self, a: float, b: float) -> bool:
        """True when figure ``a`` is strictly better than ``b`` (NaN is never better)."""
        return a > b if self.direction == "higher" else a < b


TAPVID_THRESHOLDS = (1, 2, 4, 8, 16)

_SPECS: list[MetricSpec] = [
    MetricSpec("top1", "higher", "mean", units="fraction correct"),
    MetricSpec("pose_epe", "lower", "mean", units="metres"),
    MetricSpec("abs_rel", "lower", "weighted", weight="abs_rel_valid_counts", units="relative error"),
    MetricSpec("box_iou", "higher", "weighted", weight="box_valid_pair_counts", units="IoU"),
    *[
        MetricSpec(name, "higher", "mean", skip_nan=True, units="fraction")
        for name in (
            "occlusion_accuracy",
            "average_jaccard",
            "average_pts_within_thresh",
            *[f"pts_within_{t}" for t in TAPVID_THRESHOLDS],
            *[f"jaccard_{t}" for t in TAPVID_THRESHOLDS],
        )
    ],
]

METRIC_SPECS: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
"""Every metric key returned by :mod:`fourds.metrics`, by name."""


def metric_spec(name: str) -> MetricSpec:
    """The spec of metric ``name``.

    A task-prefixed name resolves by its longest known suffix after a ``/``, ``_``, ``.`` or ``:``
    separator: ``"scannet/abs_rel"``, ``"ssv2_top1"`` and ``"perception_test.jaccard_16"`` all work.
    """
    if name in METRIC_SPECS:
        return METRIC_SPECS[name]
    for key in sorted(METRIC_SPECS, key=len, reverse=True):
        if any(name.endswith(sep + key) for sep in "/_.:"):
            return METRIC_SPECS[key]
    raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRIC_SPECS))}")
