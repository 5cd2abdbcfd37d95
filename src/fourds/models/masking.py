"""Random tubelet masking for SimpleMAE: per-sample noise, argsort, gather (no tube masking)."""

from __future__ import annotations

import torch
from torch import Tensor


def num_kept(num_tokens: int, mask_ratio: float) -> int:
    """Tokens kept visible: ``int(N * (1 - ratio))``, at least one (78 of 1568 at 95%)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, int(num_tokens * (1.0 - mask_ratio) + 1e-9))


def random_masking(tokens: Tensor, keep: int, noise: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keep the ``keep`` tokens of each sample with the smallest noise.

    Args:
        tokens: ``(B, N, D)``.
        keep: number of tokens kept per sample (the same for every sample, so batches stay dense).
        noise: ``(B, N)`` i.i.d. uniform noise; pass it explicitly (from a seeded generator) so that a
            resumed or distributed run masks exactly like an uninterrupted one.

    Returns:
        kept: ``(B, keep, D)`` visible tokens, in increasing-noise order.
        mask: ``(B, N)`` bool, True where the token was removed.
        ids_keep: ``(B, keep)`` indices of the kept tokens in the full sequence.
        ids_restore: ``(B, N)`` permutation that undoes the shuffle (MAE convention).
    """
    b, n, d = tokens.shape
    if noise.shape != (b, n):
        raise ValueError(f"noise must be (B, N) = {(b, n)}, got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(b, keep, d))
    mask = torch.ones(b, n, dtype=torch.bool, device=tokens.device)
    mask.scatter_(1, ids_keep, False)
    return kept, mask, ids_keep, ids_restore


def _signed(value: int) -> int:
    """A 64-bit pattern as the signed int64 that holds the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_MASK64 = (1 << 64) - 1
_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic on signed integers)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """The SplitMix64 finaliser on int64 tensors (bit patterns, wrapping arithmetic), elementwise.

    Pure integer operations, so the result is bit-identical on every device and for every batch layout.
    """
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def masking_keys(seed: int, sample_ids: Tensor | list[int]) -> Tensor:
    """One 64-bit masking stream key per sample: ``splitmix64(splitmix64(seed) ^ sample_id)``, ``(B,)``
    int64 on the device of ``sample_ids``; computed on the device (no host round trip per step)."""
    ids = sample_ids if isinstance(sample_ids, Tensor) else torch.tensor(sample_ids, dtype=torch.int64)
    return splitmix64(ids.to(torch.int64) ^ _signed(_splitmix64_int(seed)))


def _splitmix64_int(x: int) -> int:
    """:func:`splitmix64` on one Python integer (no tensor, so no host-device copy)."""
    x = (x + _GOLDEN) & _MASK64
    x = ((x ^ (x >> 30)) * _MIX1) & _MASK64
    x = ((x ^ (x >> 27)) * _MIX2) & _MASK64
    return x ^ (x >> 31)


def masking_noise(sample_seeds: list[int] | Tensor, num_tokens: int, device: torch.device | str | None = None) -> Tensor:
    """Deterministic ``(B, N)`` uniform noise in [0, 1) (float64), one independent stream per sample seed.

    A counter-based hash: token ``j`` of the sample with key ``s`` gets the top 53 bits of
    ``splitmix64(splitmix64(s) + j * golden)``, computed with integer operations on ``device`` (default:
    the device of ``sample_seeds`` when it is a tensor, else the CPU). The noise, and so the mask, is
    bit-identical on CPU and CUDA and independent of the batch layout: one process and two ranks with
    the same global batch mask identically. (Before 2026-12 the stream came from one CPU
    ``torch.Generator`` per sample, copied to the device every step; the masks of a given seed changed.)
    """
    seeds = sample_seeds if isinstance(sample_seeds, Tensor) else torch.tensor(
        [_signed(int(s)) for s in sample_seeds], dtype=torch.int64)
    if device is not None:
        seeds = seeds.to(device, non_blocking=True)
    seeds = seeds.to(torch.int64)
    counters = torch.arange(num_tokens, dtype=torch.int64, device=seeds.device) * _GOLDEN
    bits = splitmix64(splitmix64(seeds)[:, None] + counters[None, :])
    return _shift_right(bits, 11).to(torch.float64) * (1.0 / (1 << 53))
