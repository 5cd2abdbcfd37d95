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
_NOISE_GAIN = 2.5 / math.sqrt(NUM_WAVES)  # the noise pattern's sum of K sines: a softer mix


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


def sample_textures(
    gen: torch.Generator,
    cell: Tensor,
    value: Tensor,
    flat: Tensor,
    saturation: tuple[float, float] = (0.35, 0.95),
    contrast: tuple[float, float] = (0.25, 0.6),
    kinds: tuple[int, ...] = (CHECKER, STRIPES, NOISE),
) -> TextureBank:
    """Random textures for ``S`` surfaces, one draw for all of them.

    Args:
        cell: ``(S, 2)`` range of each surface's pattern cell size (metres).
        value: ``(S, 2)`` HSV value range of each surface's first colour.
        flat: ``(S,)`` bool, the surface is a plane z = const (the ground): its patterns vary in x and
            y only (wave vectors without z component), so local z may hold anything.
        saturation: HSV saturation range of the first colour.
        contrast: the second colour's value is the first's times a factor in this range, with a hue
            shift, so the two always differ.
        kinds: the pattern kinds to draw from (uniformly).
    """
    n, k = flat.shape[0], NUM_WAVES
    u = torch.rand(n, 12 + 4 * k, generator=gen, dtype=torch.float64)
    r = torch.randn(n, 2 * k + 1, 3, generator=gen, dtype=torch.float64)
    hue, sat, val, shift, sat2, con, kind_u, cell_u, amp = u[:, :9].unbind(1)
    first = torch.stack([hue, saturation[0] + (saturation[1] - saturation[0]) * sat,
                         value[:, 0] + (value[:, 1] - value[:, 0]) * val], dim=-1)
    second = torch.stack([(hue + 0.5 * shift - 0.25) % 1.0, 0.1 + 0.8 * sat2,
                          first[:, 2] * (contrast[0] + (contrast[1] - contrast[0]) * con)], dim=-1)
    colours = hsv_to_rgb(torch.stack([first, second], dim=1))
    kind = torch.tensor(kinds, dtype=torch.int64)[(kind_u * len(kinds)).long().clamp(max=len(kinds) - 1)]
    cells = cell[:, 0] + (cell[:, 1] - cell[:, 0]) * cell_u
    phase = 2 * math.pi * u[:, 9:12]
    r[flat, :, 2] = 0.0
    unit = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-9)  # (S, 2K + 1, 3) random directions
    # Noise: wavelengths of 1-3 cells; detail: 0.2-0.6 cells (fine, but prefiltered when far).
    lengths = u[:, 12:12 + 2 * k]
    wavelength = cells[:, None] * torch.cat([1.0 + 2.0 * lengths[:, :k], 0.2 + 0.4 * lengths[:, k:]], dim=1)
    vectors = unit[:, 1:] * (2 * math.pi / wavelength)[..., None]
    phases = 2 * math.pi * u[:, 12 + 2 * k:12 + 4 * k]
    return TextureBank(
        colours=colours, kind=kind, cell=cells, phase=phase, axis=unit[:, 0],
        waves=vectors[:, :k], wave_phase=phases[:, :k], detail=vectors[:, k:], detail_phase=phases[:, k:],
        detail_amp=0.15 + 0.2 * amp, flat=flat.clone(),
    )


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


def albedo(bank: TextureBank, s: int, points: Tensor, sigma: Tensor) -> Tensor:
    """RGB albedo ``(N, 3)`` in [0, 1] of surface ``s`` at local points ``(3, N)`` (metres, components
    first), prefiltered by a Gaussian pixel footprint of std ``sigma`` ``(N,)`` (metres)."""
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
        mix = _tanh_(signal.mul_(_NOISE_GAIN))
    # mix in [-1, 1]: colour = mean + half-difference * mix, times the detail factor.
    c0, c1 = bank.colours[s, 0], bank.colours[s, 1]
    mean, diff = 0.5 * (c0 + c1), 0.5 * (c1 - c0)
    detail = _waves(points, s2, bank.detail[s], bank.detail_phase[s]).mul_(float(bank.detail_amp[s]) / NUM_WAVES).add_(1.0)
    return torch.addcmul(mean, mix[:, None], diff[None]).mul_(detail[:, None]).clamp_(0.0, 1.0)
