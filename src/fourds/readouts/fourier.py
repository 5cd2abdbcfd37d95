"""Fourier-feature embedding of query coordinates (points, boxes) for the attention readout.

Each normalised coordinate ``u`` (pixel coordinate divided by the frame width or height, so in [0, 1]
inside the frame) is mapped to ``sin(2π f_k u)`` and ``cos(2π f_k u)`` for 16 frequencies ``f_k``
spaced geometrically from 1 to 128 cycles per frame (``f_k = 128 ** (k / 15)``): the lowest
frequency tells the halves of the frame apart, the highest resolves about 1/256 of it, i.e. one pixel
of the 256x256 frames of the tracking benchmarks. Raw coordinates are not included (as in the paper).
The features go through an MLP (``2·16·K → 512 → 512`` with tanh GELU); the readout then projects the
512-d output to its width.

For the paper's Table 6 counts: points (2 coordinates) give ``2·2·16 = 64`` features, boxes (4
coordinates) ``128``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fourds.readouts.attention import init_dense_


def fourier_frequencies(num_frequencies: int = 16, max_frequency: float = 128.0) -> Tensor:
    """``(num_frequencies,)`` float32 cycles per unit, geometric from 1 to ``max_frequency``."""
    if num_frequencies < 1 or max_frequency < 1.0:
        raise ValueError(
            f"fourier_frequencies: need num_frequencies >= 1 and max_frequency >= 1, got "
            f"{num_frequencies}, {max_frequency}"
        )
    if num_frequencies == 1:
        return torch.ones(1)
    exponents = torch.arange(num_frequencies, dtype=torch.float64) / (num_frequencies - 1)
    return (max_frequency**exponents).to(torch.float32)


def fourier_features(coords: Tensor, frequencies: Tensor) -> Tensor:
    """``(..., K)`` coordinates → ``(..., K · 2F)`` features ``[sin(2π f u), cos(2π f u)]`` per coordinate."""
    angles = 2.0 * math.pi * coords.unsqueeze(-1) * frequencies.to(coords)  # (..., K, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class FourierQueryEmbedding(nn.Module):
    """Normalised coordinates ``(B, Q, K)`` → query embeddings ``(B, Q, out_dim)``.

    Args:
        num_coords: K, coordinates per query (2 for a point (x, y), 4 for a box (x0, y0, x1, y1)).
        num_frequencies: frequencies per coordinate (16 in the paper).
        hidden_dim, out_dim: MLP widths (512 and 512 in the paper).
        max_frequency: highest frequency in cycles per frame.
        init: dense-layer initialisation, as :class:`fourds.readouts.AttentionReadout`'s (``lecun``:
            flax ``nn.Dense``'s default, as the official code's MLP).
    """

    def __init__(
        self,
        num_coords: int,
        num_frequencies: int = 16,
        hidden_dim: int = 512,
        out_dim: int = 512,
        max_frequency: float = 128.0,
        init: str = "lecun",
    ) -> None:
        super().__init__()
        self.num_coords = num_coords
        self.register_buffer("frequencies", fourier_frequencies(num_frequencies, max_frequency), persistent=False)
        self.fc1 = nn.Linear(num_coords * 2 * num_frequencies, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.out_dim = out_dim
        init_dense_(self, init)

    def forward(self, coords: Tensor) -> Tensor:
        if coords.shape[-1] != self.num_coords:
            raise ValueError(
                f"FourierQueryEmbedding expects (..., {self.num_coords}) normalised coordinates, "
                f"got {tuple(coords.shape)}"
            )
        feats = fourier_features(coords.float(), self.frequencies)
        return self.fc2(F.gelu(self.fc1(feats), approximate="tanh"))
