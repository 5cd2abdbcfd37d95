"""Small constant tensors on an accelerator without a host round trip per use.

``torch.tensor([...], device="cuda")`` copies from pageable host memory, and CUDA synchronises the
stream before such a copy: in a per-step readout or metric that is one stall of the GPU per call. These
helpers build each distinct constant once per (values, dtype, device) and reuse it.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.lru_cache(maxsize=256)
def _cached(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def constant(values: tuple[float, ...] | list[float], dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """The 1-D tensor of ``values`` on ``device`` (cached; treat it as read-only)."""
    return _cached(tuple(float(v) for v in values), dtype, torch.device(device))


@functools.lru_cache(maxsize=256)
def _cached_long(values: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def index_constant(values: tuple[int, ...] | list[int], device: torch.device | str) -> Tensor:
    """The 1-D int64 tensor of ``values`` on ``device`` (cached; treat it as read-only)."""
    return _cached_long(tuple(int(v) for v in values), torch.device(device))
