"""Top-1 accuracy (the paper's SSv2 and Kinetics-700 metric)."""

from __future__ import annotations

import torch
from torch import Tensor


def top1(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample top-1 correctness.

    Args:
        logits: ``(B, K)`` class scores (logits or probabilities, e.g. softmax averaged over clips).
        labels: ``(B,)`` int class indices in ``[0, K)``.

    Returns:
        ``(B,)`` float32, 1.0 where the highest score is the label, else 0.0 (ties go to the lowest
        class index, ``argmax``'s rule). Data-set reducer: plain mean over samples.
    """
    if logits.ndim != 2:
        raise ValueError(f"top1: logits must be (B, K), got {tuple(logits.shape)}")
    if tuple(labels.shape) != (logits.shape[0],):
        raise ValueError(f"top1: labels must be (B,) = ({logits.shape[0]},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"top1: labels must be integer class indices, got {labels.dtype}")
    k = logits.shape[1]
    if labels.numel() and bool(((labels < 0) | (labels >= k)).any()):
        raise ValueError(
            f"top1: labels must lie in [0, {k}), got values {labels.min().item()}..{labels.max().item()}"
        )
    return (logits.argmax(dim=1) == labels).to(torch.float32)
