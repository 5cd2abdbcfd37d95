"""Analytic ray-surface intersections, vectorised, components first.

Rays are given as origins ``(3, T, 1, 1)`` (or per-ray ``(3, ...)``) and directions ``(3, ...)`` that
broadcast together; each function returns the ray parameter ``lam`` of the first hit in front of the
origin (``lam > near``), ``inf`` where there is none. With camera rays of camera-z component 1
(:func:`fourds.data.synthetic.camera.camera_rays`) ``lam`` is the z-depth of the hit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

INF = math.inf


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def sphere(origins: Tensor, directions: Tensor, centre: Tensor, radius: float, near: float = 1e-4,
           dd: Tensor | None = None) -> Tensor:
    """First hit of rays with the sphere (``centre`` ``(3, ...)`` broadcasting like ``origins``) from
    outside; ``dd`` is ``|direction|^2`` if already known."""
    oc = origins - centre
    dd = _dot(directions, directions) if dd is None else dd
    b = _dot(directions, oc)
    disc = b * b - dd * (_dot(oc, oc) - radius * radius)
    lam = (-b - torch.sqrt(disc.clamp_min(0.0))) / dd
    return torch.where((disc > 0) & (lam > near), lam, INF)


def sphere_any(origins: Tensor, directions: Tensor, centre: Tensor, radius: float, near: float = 1e-4) -> Tensor:
    """Whether rays (unit or not) hit the sphere anywhere ahead of their origin (shadow test)."""
    oc = origins - centre
    dd = _dot(directions, directions)
    b = _dot(directions, oc)
    disc = b * b - dd * (_dot(oc, oc) - radius * radius)
    far = (-b + torch.sqrt(disc.clamp_min(0.0))) / dd
    return (disc > 0) & (far > near)


def box(origins_local: Tensor, directions_local: Tensor, half: Tensor, near: float = 1e-4) -> Tensor:
    """First hit of rays with the axis-aligned box ``[-half, half]`` (slab method), all in the box's
    local frame; ``half`` is ``(3,)``."""
    t_near = torch.full_like(directions_local[0], -INF)
    t_far = torch.full_like(directions_local[0], INF)
    # A zero direction component gives inf, or nan for an origin exactly on the slab plane (a set of
    # measure zero); nan propagates through maximum/minimum and the ray then misses.
    for k in range(3):
        inv = 1.0 / directions_local[k]
        h = float(half[k])
        t1 = (-h - origins_local[k]) * inv
        t2 = (h - origins_local[k]) * inv
        t_near = torch.maximum(t_near, torch.minimum(t1, t2))
        t_far = torch.minimum(t_far, torch.maximum(t1, t2))
    return torch.where((t_near <= t_far) & (t_near > near), t_near, INF)


def box_any(origins_local: Tensor, directions_local: Tensor, half: Tensor, near: float = 1e-4) -> Tensor:
    """Whether rays hit the box anywhere ahead of their origin (shadow test), local frame."""
    t_near = torch.full_like(origins_local[0] * directions_local[0], -INF)
    t_far = torch.full_like(t_near, INF)
    # A zero direction component gives inf, or nan for an origin exactly on the slab plane (a set of
    # measure zero); nan propagates through maximum/minimum and the ray then misses.
    for k in range(3):
        inv = 1.0 / directions_local[k]
        h = float(half[k])
        t1 = (-h - origins_local[k]) * inv
        t2 = (h - origins_local[k]) * inv
        t_near = torch.maximum(t_near, torch.minimum(t1, t2))
        t_far = torch.minimum(t_far, torch.maximum(t1, t2))
    return (t_near <= t_far) & (t_far > near)


def ground(origins: Tensor, directions: Tensor, near: float = 1e-4) -> Tensor:
    """Hit with the plane z = 0 from above."""
    lam = -origins[2] / torch.where(directions[2] < -1e-12, directions[2], -1e-12)
    return torch.where((directions[2] < -1e-12) & (lam > near), lam, INF)


def backdrop(origins: Tensor, directions: Tensor, radius: float, dd: Tensor | None = None) -> Tensor:
    """Exit point of rays from inside the origin-centred sphere of ``radius`` (always hit)."""
    dd = _dot(directions, directions) if dd is None else dd
    b = _dot(directions, origins)
    disc = b * b - dd * (_dot(origins, origins) - radius * radius)
    return (-b + torch.sqrt(disc.clamp_min(0.0))) / dd


def box_normal(points_local: Tensor, half: Tensor) -> Tensor:
    """Outward unit normals ``(3, N)`` of the faces that local points ``(3, N)`` lie on."""
    hx, hy, hz = half.tolist()
    a, b, c = points_local[0].abs() / hx, points_local[1].abs() / hy, points_local[2].abs() / hz
    on_x = (a >= b) & (a >= c)
    on_y = ~on_x & (b >= c)
    on_z = ~on_x & ~on_y
    return torch.stack([torch.sign(points_local[0]) * on_x, torch.sign(points_local[1]) * on_y,
                        torch.sign(points_local[2]) * on_z])
