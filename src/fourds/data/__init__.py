"""Data: decoding, clip sampling, label-aware transforms, dataset readers, synthetic 4D scenes."""

from __future__ import annotations

import torch
from torch import Tensor


def _full_255(device: torch.device) -> Tensor:
    return torch.full((), 255.0, dtype=torch.float32, device=device)


def to_float(video: Tensor) -> Tensor:
    """uint8 ``(..., H, W, 3)`` in [0, 255] → float32 in [0, 1]; float input is cast to float32.

    Call it on the accelerator after the transfer: loaders carry uint8 to save bandwidth. The divisor
    is a 0-dim tensor on the video's device, not a Python number: CUDA turns division by a CPU scalar
    into a multiplication by its reciprocal, which differs from the CPU's true division in the last bit
    for 126 of the 256 values; with a device tensor both divide exactly, so pixels are bit-identical on
    every device (feature memo keys, CPU/CUDA parity).
    """
    if video.dtype == torch.uint8:
        return video.to(torch.float32).div_(_full_255(video.device))
    return video.to(torch.float32)


__all__ = ["to_float"]
