"""Absolute relative depth error (AbsRel), the paper's ScanNet metric.

Per sample it is the mean of ``|pred - gt| / gt`` over that sample's valid pixels, those with
``min_depth < gt < max_depth`` (strict; zeros mark missing depth in ScanNet). A data set's figure is
the mean over *all* valid pixels of the data set, i.e. the per-sample values weighted by their
valid-pixel counts: ``reduce(values, abs_rel_valid_counts(gt))``, or directly
``sum(abs_rel_sums(...)[0]) / sum(abs_rel_sums(...)[1])``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(gt: Tensor, min_depth: float, max_depth: float) -> None:
    if gt.ndim < 1:
        raise ValueError(f"abs_rel: depth must be (B, ...), got a scalar of shape {tuple(gt.shape)}")
    if not 0.0 <= min_depth < max_depth:
        raise ValueError(
            f"abs_rel: need 0 <= min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}"
        )


def abs_rel_valid_mask(gt: Tensor, min_depth: float = 1e-3, max_depth: float = 10.0) -> Tensor:
    """``(B, ...)`` bool: pixels whose ground truth is in the open range ``(min_depth, max_depth)`` metres."""
    _check(gt, min_depth, max_depth)
    return (gt > min_depth) & (gt < max_depth)  # NaN compares False, so NaN depth is invalid too


def abs_rel_valid_counts(gt: Tensor, min_depth: float = 1e-3, max_depth: float = 10.0) -> Tensor:
    """``(B,)`` int64 valid-pixel count of each sample: the weights of the AbsRel data-set reducer."""
    return abs_rel_valid_mask(gt, min_depth, max_depth).flatten(1).sum(dim=1)


def abs_rel_sums(
    pred: Tensor, gt: Tensor, min_depth: float = 1e-3, max_depth: float = 10.0
) -> tuple[Tensor, Tensor]:
    """Per-sample sum of ``|pred - gt| / gt`` over valid pixels and the valid-pixel count.

    Args:
        pred: ``(B, ...)`` predicted depth, metres.
        gt: ``(B, ...)`` ground-truth depth, metres, same shape.

    Returns:
        ``(sum, count)``: ``(B,)`` float32 (float64 for float64 inputs) and ``(B,)`` int64.
    """
    if pred.shape != gt.shape:
        raise ValueError(
            f"abs_rel: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape"
        )
    valid = abs_rel_valid_mask(gt, min_depth, max_depth)
    dtype = torch.promote_types(torch.promote_types(pred.dtype, gt.dtype), torch.float32)
    pred, gt = pred.to(dtype), gt.to(dtype)
    # torch.where keeps invalid pixels (gt = 0 -> inf/NaN ratio) out of the sum entirely.
    rel = torch.where(
        valid, (pred - gt).abs() / torch.where(valid, gt, torch.ones_like(gt)), torch.zeros_like(gt)
    )
    return rel.flatten(1).sum(dim=1), valid.flatten(1).sum(dim=1)


def abs_rel(pred: Tensor, gt: Tensor, min_depth: float = 1e-3, max_depth: float = 10.0) -> Tensor:
    """Per-sample AbsRel.

    Args:
        pred: ``(B, ...)`` predicted depth, metres (e.g. ``(B, T, H, W)``).
        gt: ``(B, ...)`` ground-truth depth, metres, same shape.
        min_depth: pixels need ``gt > min_depth`` to count.
        max_depth: pixels need ``gt < max_depth`` to count.

    Returns:
        ``(B,)`` float32 (float64 for float64 inputs), >= 0; NaN for a sample without any valid pixel
        (its weight :func:`abs_rel_valid_counts` is 0, so the weighted reducer ignores it).
    """
    total, count = abs_rel_sums(pred, gt, min_depth, max_depth)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
