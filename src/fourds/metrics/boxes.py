"""Box IoU for object tracking (the paper's Waymo Open metric).

The readout is given each box in frame 0 and predicts it in every frame; the metric is the IoU
averaged over valid (box, frame) pairs *excluding frame 0*. A data set's figure is the mean over all
its valid pairs, i.e. per-sample values weighted by :func:`box_valid_pair_counts`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of two sets of boxes.

    Args:
        a: ``(..., 4)`` boxes ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive).
        b: ``(..., 4)`` boxes, broadcastable with ``a``.

    Returns:
        ``(...)`` IoU in [0, 1]. A box with ``x1 <= x0`` or ``y1 <= y0`` is empty (area 0, it overlaps
        nothing); the IoU of two empty boxes is defined as 0 (no overlapping area), never NaN.
    """
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(
            f"box_iou: boxes must be (..., 4) (x0, y0, x1, y1), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    union = area_a + area_b - inter
    return torch.where(
        union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), torch.zeros_like(union)
    )


def _pairs_mask(valid: Tensor) -> Tensor:
    """``(B, O, T)`` bool: valid pairs in frames ``t >= 1`` (frame 0 holds the given query boxes)."""
    if valid.ndim != 3:
        raise ValueError(f"box_iou_tracking: valid must be (B, O, T), got {tuple(valid.shape)}")
    mask = valid.bool().clone()
    mask[..., 0] = False
    return mask


def box_valid_pair_counts(valid: Tensor) -> Tensor:
    """``(B,)`` int64 number of valid (box, frame >= 1) pairs per sample: the box-IoU reducer's weights."""
    return _pairs_mask(valid).sum(dim=(1, 2))


def box_iou_tracking(pred: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """Per-sample mean IoU over valid (box, frame) pairs with frame >= 1.

    Args:
        pred: ``(B, O, T, 4)`` predicted boxes ``(x0, y0, x1, y1)``, pixels (any consistent frame).
        gt: ``(B, O, T, 4)`` ground-truth boxes.
        valid: ``(B, O, T)`` bool, True where the ground-truth box exists (and is not padding).

    Returns:
        ``(B,)`` float32 (float64 for float64 inputs) in [0, 1]; NaN for a sample with no valid pair
        (weight 0 in :func:`box_valid_pair_counts`, so the reducer ignores it). Degenerate boxes
        follow :func:`box_iou` (IoU 0).
    """
    if pred.ndim != 4 or pred.shape[-1] != 4:
        raise ValueError(f"box_iou_tracking: pred must be (B, O, T, 4), got {tuple(pred.shape)}")
    if gt.shape != pred.shape:
        raise ValueError(f"box_iou_tracking: gt {tuple(gt.shape)} must match pred {tuple(pred.shape)}")
    if tuple(valid.shape) != tuple(pred.shape[:3]):
        raise ValueError(
            f"box_iou_tracking: valid must be (B, O, T) = {tuple(pred.shape[:3])}, got {tuple(valid.shape)}"
        )
    mask = _pairs_mask(valid)
    iou = box_iou(pred, gt)
    total = torch.where(mask, iou, torch.zeros_like(iou)).sum(dim=(1, 2))
    count = mask.sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
