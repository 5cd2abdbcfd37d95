"""Temporal resampling of backbone features to a readout's number of time steps.

The official 4DS readouts call ``jax.image.resize(x, shape, method="cubic")`` on ``(B, T', N, C)``
features, changing only the time axis. This module reproduces that call exactly in PyTorch, as a
``(steps, T')`` weight matrix built once per size pair and applied with one einsum.

What ``jax.image.resize`` does along one axis (``jax/_src/image/scale.py``, ``compute_weight_mat``,
with its defaults ``antialias=True`` and no edge padding):

* half-pixel centres: output step ``i`` samples input position ``s_i = (i + 0.5) * in / out - 0.5``;
* the Keys cubic kernel with ``a = -0.5`` (support 2), evaluated at ``|s_i - j| / k`` for every input
  step ``j``, where ``k = max(in / out, 1)``: when *down*sampling the kernel is widened by the scale
  factor (antialiasing, a low-pass filter); when upsampling it is not;
* taps that fall outside ``[0, in)`` simply do not exist (no edge replication) and the remaining
  weights are renormalised to sum to one (a column whose weight sum is below ``1000 * eps_float32``
  becomes zero, which cannot happen for a plain resize).

This is *not* ``torch.nn.functional.interpolate(mode="bicubic")``: PyTorch's default bicubic uses
``a = -0.75`` (the OpenCV kernel), clamps out-of-range taps to the edge sample instead of dropping
them, and never widens the kernel when downsampling, so its values differ everywhere near the ends
and, for downsampling, everywhere.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

# jax's renormalisation guard: columns whose weights sum to (almost) zero are zeroed, not divided.
_WEIGHT_SUM_EPS = 1000.0 * float(np.finfo(np.float32).eps)


def _keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys (1981) cubic convolution kernel with a = -0.5, for ``x >= 0``."""
    inner = ((1.5 * x - 2.5) * x) * x + 1.0
    outer = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, outer, inner))


def _weights_np(in_size: int, out_size: int) -> np.ndarray:
    """The ``(out, in)`` float64 weight matrix of jax's antialiased cubic resize."""
    inv_scale = in_size / out_size
    kernel_scale = max(inv_scale, 1.0)
    sample = (np.arange(out_size, dtype=np.float64) + 0.5) * inv_scale - 0.5  # (out,)
    taps = np.arange(in_size, dtype=np.float64)  # (in,)
    w = _keys_cubic(np.abs(sample[:, None] - taps[None, :]) / kernel_scale)  # (out, in)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(np.abs(total) > _WEIGHT_SUM_EPS, w / np.where(total != 0, total, 1.0), 0.0)
    inside = (sample >= -0.5) & (sample <= in_size - 0.5)
    return np.where(inside[:, None], w, 0.0)


def _check_sizes(in_size: int, out_size: int) -> None:
    for name, value in (("input size", in_size), ("output size", out_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"resample: {name} must be a positive int, got {value!r}")


def resize_weights(in_size: int, out_size: int) -> Tensor:
    """Weights of ``jax.image.resize(..., method="cubic")`` along one axis.

    Args:
        in_size: number of input time steps ``T'`` (>= 1).
        out_size: number of output time steps (>= 1).

    Returns:
        ``(out_size, in_size)`` float32 on the CPU; row ``i`` holds the weights that output step ``i``
        gives each input step (each row sums to 1). ``in_size == out_size`` gives the identity.
    """
    _check_sizes(in_size, out_size)
    return torch.from_numpy(_weights_np(in_size, out_size)).to(torch.float32)


@functools.lru_cache(maxsize=64)
def _cached_weights(in_size: int, out_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return resize_weights(in_size, out_size).to(device=device, dtype=dtype)


def resample_time(features: Tensor, steps: int) -> Tensor:
    """Resample features along time with the official 4DS cubic resize (see the module docstring).

    Args:
        features: ``(B, T', N, C)`` tokens (any float dtype, any device).
        steps: number of output time steps (>= 1), e.g. a readout's 16.

    Returns:
        ``(B, steps, N, C)`` in the input's dtype. The arithmetic runs in float32 (autocast is
        disabled for the einsum) and is cast back. When ``T' == steps`` the input is returned as is,
        as jax does (the cubic kernel is interpolating, so the identity resize is exact).
    """
    if features.ndim != 4:
        raise ValueError(
            f"resample_time: features must be (B, T', N, C), got shape {tuple(features.shape)}; "
            "flatten the spatial grid into N first"
        )
    _check_sizes(int(features.shape[1]), steps)
    t_in = int(features.shape[1])
    if t_in == steps:
        return features
    if not features.is_floating_point():
        raise ValueError(f"resample_time: features must be floating point, got {features.dtype}")
    weights = _cached_weights(t_in, steps, torch.float32, features.device)
    with torch.autocast(device_type=features.device.type, enabled=False):
        out = torch.einsum("st,btnc->bsnc", weights, features.to(torch.float32))
    return out.to(features.dtype)
