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


def masking_noise(sample_seeds: list[int] | Tensor, num_tokens: int, device: torch.device | str = "cpu") -> Tensor:
    """Deterministic ``(B, N)`` uniform noise, one independent stream per sample seed.

    Seeding per *sample* (not per step or rank) makes the mask of a clip independent of batch layout:
    one process and two ranks with the same global batch mask identically.
    """
    rows = []
    for seed in (sample_seeds.tolist() if isinstance(sample_seeds, Tensor) else sample_seeds):
        gen = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        rows.append(torch.rand(num_tokens, generator=gen))
    return torch.stack(rows).to(device)
