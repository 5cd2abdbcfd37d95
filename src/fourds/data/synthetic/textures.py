"""Procedural solid textures: albedo as a function of a surface's local 3-D coordinates (metres).

A texture mixes two colours by a pattern (checker, stripes or smooth noise) and multiplies fine detail
on top, so that every surface point has a locally distinctive neighbourhood (what makes points
trackable). Every pattern is built from sinusoids, which lets us *prefilter* it exactly: a sinusoid of
wave vector ``w`` averaged by a Gaussian pixel footprint of std ``sigma`` keeps the amplitude
``exp(-|w|^2 sigma^2 / 2)``. Far or grazing surfaces therefore fade to their mean colour instead of
aliasing and flickering from frame to frame.

A :class:`TextureBank` holds the parameters of ``S`` surfaces as stacked tensors; :func:`albedo`
evaluates surface ``s`` at ``N`` points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CHECKER, STRIPES, NOISE = 0, 1, 2
KINDS = ("checker", "stripes", "noise")
NUM_WAVES = 4
_GAIN = 5.0  # tanh gain that turns the (filtered) pattern signal into a near-binary mix


@dataclass
class TextureBank:
    """Parameters of ``S`` textures.

    Attributes:
        colours: ``(S, 2, 3)`` the two RGB albedos in [0, 1].
        kind: ``(S,)`` int64, :data:`CHECKER`, :data:`STRIPES` or :data:`NOISE`.
        cell: ``(S,)`` pattern cell size (metres in local coordinates).
        phase: ``(S, 3)`` per-axis phase of the checker (radians).
        axis: ``(S, 3)`` unit normal of the stripes.
        waves: ``(S, K, 3)`` wave vectors of the noise pattern (rad / m); ``wave_phase`` ``(S, K)``.
        detail: ``(S, K, 3)`` wave vectors of the multiplicative detail; ``detail_phase`` ``(S, K)``.
        detail_amp: ``(S,)`` relative amplitude of the detail.
        flat: ``(S,)`` bool, the pattern ignores the local z coordinate (planes z = const).
    """

    colours: Tensor
    kind: Tensor
    cell: Tensor
    phase: Tensor
    axis: Tensor
    waves: Tensor
    wave_phase: Tensor
    detail: Tensor
    detail_phase: Tensor
    detail_amp: Tensor
    flat: Tensor

    def __len__(self) -> int:
        return self.kind.shape[0]


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """``(..., 3)`` HSV in [0, 1] → RGB in [0, 1]."""
    h, s, v = hsv.unbind(-1)
    k = torch.stack([(5 + 6 * h) % 6, (3 + 6 * h) % 6, (1 + 6 * h) % 6], dim=-1)
    return v[..., None] - v[..., None] * s[..., None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def _unit(gen: torch.Generator, n: int, k: int = 1, flat: bool = False) -> Tensor:
    """``(n, k, 3)`` random unit vectors (in the xy plane when ``flat``)."""
    v = torch.randn(n, k, 3, generator=gen, dtype=torch.float64)
    if flat:
        v[..., 2] = 0.0
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def sample_textures(
    gen: torch.Generator,
    n: int,
    cell: tuple[float, float],
    flat: bool = False,
    saturation: tuple[float, float] = (0.35, 0.95),
    value: tuple[float, float] = (0.55, 1.0),
    contrast: tuple[float, float] = (0.25, 0.6),
    kinds: tuple[int, ...] = (CHECKER, STRIPES, NOISE),
) -> TextureBank:
    """Random textures for ``n`` surfaces.

    Args:
        cell: range of the pattern cell size (metres).
        flat: the surfaces are planes z = const (the ground): patterns vary in x and y only (their
            wave vectors have no z component), so local z may hold anything.
        saturation, value: HSV ranges of the first colour.
        contrast: the second colour's value is the first's times a factor in this range, with a hue
            shift, so the two always differ.
        kinds: the pattern kinds to draw from (uniformly).
    """

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float64)

    hue = torch.rand(n, generator=gen, dtype=torch.float64)
    first = torch.stack([hue, uniform(*saturation, n), uniform(*value, n)], dim=-1)
    second = torch.stack([(hue + uniform(-0.25, 0.25, n)) % 1.0, uniform(0.1, 0.9, n), first[:, 2] * uniform(*contrast, n)], -1)
    colours = hsv_to_rgb(torch.stack([first, second], dim=1))
    choice = torch.randint(0, len(kinds), (n,), generator=gen)
    kind = torch.tensor(kinds, dtype=torch.int64)[choice]
    cells = uniform(*cell, n)
    phase = uniform(0.0, 2 * math.pi, n, 3)
    axis = _unit(gen, n, 1, flat)[:, 0]
    # Noise: wavelengths of 1-3 cells; detail: 0.2-0.6 cells (fine, but prefiltered when far).
    waves = _unit(gen, n, NUM_WAVES, flat) * (2 * math.pi / (cells[:, None, None] * uniform(1.0, 3.0, n, NUM_WAVES, 1)))
    detail = _unit(gen, n, NUM_WAVES, flat) * (2 * math.pi / (cells[:, None, None] * uniform(0.2, 0.6, n, NUM_WAVES, 1)))
    return TextureBank(
        colours=colours, kind=kind, cell=cells, phase=phase, axis=axis,
        waves=waves, wave_phase=uniform(0.0, 2 * math.pi, n, NUM_WAVES),
        detail=detail, detail_phase=uniform(0.0, 2 * math.pi, n, NUM_WAVES),
        detail_amp=uniform(0.15, 0.35, n), flat=torch.full((n,), flat),
    )


def concat(banks: list[TextureBank]) -> TextureBank:
    """Stack several banks into one (surface order kept)."""
    fields = TextureBank.__dataclass_fields__
    return TextureBank(**{k: torch.cat([getattr(b, k) for b in banks]) for k in fields})


def to_dtype(bank: TextureBank, dtype: torch.dtype) -> TextureBank:
    """The bank with its float tensors cast to ``dtype``."""
    fields = TextureBank.__dataclass_fields__
    return TextureBank(**{k: (v.to(dtype) if v.is_floating_point() else v) for k in fields for v in [getattr(bank, k)]})


# Transcendentals through NumPy, in place on the tensors' memory: its float32 sin/exp/tanh kernels are
# several times faster than ATen's on one CPU thread, and texture evaluation is the renderer's main cost.
def _sin_(x: Tensor) -> Tensor:
    a = x.numpy()
    np.sin(a, out=a)
    return x


def _exp_(x: Tensor) -> Tensor:
    a = x.numpy()
    np.exp(a, out=a)
    return x


def _tanh_(x: Tensor) -> Tensor:
    a = x.numpy()
    np.tanh(a, out=a)
    return x


def _linear(points: Tensor, w: list[float], offset: float) -> Tensor:
    """``w . p + offset`` for points ``(3, N)`` (zero coefficients skipped: flat surfaces are 2-D)."""
    out = torch.full_like(points[0], offset)
    for k in range(3):
        if w[k] != 0.0:
            out.add_(points[k], alpha=w[k])
    return out


def _waves(points: Tensor, s2: Tensor, vectors: Tensor, phases: Tensor) -> Tensor:
    """Sum over ``k`` of prefiltered ``sin(w_k . p + phi_k)``: ``points`` ``(3, N)``, ``s2`` ``(N,)`` the
    footprint variance, ``vectors`` ``(K, 3)``, ``phases`` ``(K,)`` → ``(N,)``.

    One attenuation for the group, at its mean ``|w|^2`` (the wavelengths of a group lie within a
    factor of 3): one ``exp`` instead of ``K``.
    """
    total = torch.zeros_like(s2)
    for w, phase in zip(vectors.tolist(), phases.tolist()):
        total.add_(_sin_(_linear(points, w, phase)))
    return total.mul_(_exp_(s2 * (-0.5 * float(vectors.square().sum(-1).mean()))))


def albedo(bank: TextureBank, s: int, points: Tensor, sigma: Tensor) -> list[Tensor]:
    """RGB albedo of surface ``s`` at local points ``(3, N)`` (metres, components first), prefiltered
    by a Gaussian pixel footprint of std ``sigma`` ``(N,)`` (metres): three ``(N,)`` channels in [0, 1]."""
    kind, cell = int(bank.kind[s]), float(bank.cell[s])
    s2 = sigma * sigma
    if kind == CHECKER:
        f = math.pi / cell
        ph = bank.phase[s].tolist()
        signal = _exp_(s2 * (-1.5 * f * f))
        for k in range(2 if bool(bank.flat[s]) else 3):
            signal.mul_(_sin_(points[k] * f + ph[k]))
        mix = _tanh_(signal.mul_(_GAIN))
    elif kind == STRIPES:
        f = math.pi / cell
        a = [f * c for c in bank.axis[s].tolist()]
        mix = _tanh_(_sin_(_linear(points, a, float(bank.phase[s, 0]))).mul_(_exp_(s2 * (-0.5 * f * f))).mul_(_GAIN))
    else:
        signal = _waves(points, s2, bank.waves[s], bank.wave_phase[s])
        mix = _tanh_(signal.mul_(2.5 / math.sqrt(NUM_WAVES)))
    # mix in [-1, 1]: colour = mean + half-difference * mix, times the detail factor.
    c0, c1 = bank.colours[s, 0], bank.colours[s, 1]
    mean, diff = (0.5 * (c0 + c1)).tolist(), (0.5 * (c1 - c0)).tolist()
    detail = _waves(points, s2, bank.detail[s], bank.detail_phase[s]).mul_(float(bank.detail_amp[s]) / NUM_WAVES).add_(1.0)
    return [(mix * diff[k]).add_(mean[k]).mul_(detail).clamp_(0.0, 1.0) for k in range(3)]
