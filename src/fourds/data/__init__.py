"""Data: decoding, clip sampling, label-aware transforms, dataset readers, synthetic 4D scenes."""

from __future__ import annotations

import torch
from torch import Tensor


def to_float(video: Tensor) -> Tensor:
    """uint8 ``(..., H, W, 3)`` in [0, 255] → float32 in [0, 1]; float input is cast to float32.

    Call it on the accelerator after the transfer: loaders carry uint8 to save bandwidth.
    """
    if video.dtype == torch.uint8:
        return video.to(torch.float32).div_(255.0)
    return video.to(torch.float32)


__all__ = ["to_float"]
