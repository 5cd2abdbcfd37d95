"""Pinhole camera of the procedural scenes: intrinsics, the look-at pose, rays and projection.

Conventions (``docs/conventions.md``): the world is z-up (the ground is the plane z = 0); cameras use
OpenCV axes (x right, y down, z forward); ``cam_to_world`` maps camera coordinates to world
coordinates; pixel (row i, column j) covers [j, j+1) x [i, i+1), its centre is (j + 0.5, i + 0.5), and
the intrinsics map camera coordinates to these raster coordinates.

Every product here is written out component by component (no ``matmul`` on large tensors), so results
are bit-identical whatever the number of threads.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def intrinsics_from_fov(fov_x: float, height: int, width: int) -> Tensor:
    """``(3, 3)`` float32 pinhole intrinsics with horizontal field of view ``fov_x`` (radians), square
    pixels and the principal point at the image centre ``(W / 2, H / 2)`` (raster coordinates)."""
    if not 0.0 < fov_x < math.pi:
        raise ValueError(f"field of view {fov_x} rad must lie in (0, pi)")
    f = 0.5 * width / math.tan(0.5 * fov_x)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def look_at(positions: Tensor, target: Tensor, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Tensor:
    """Camera-to-world poses ``(T, 4, 4)`` of cameras at ``positions`` ``(T, 3)`` looking at ``target``
    ``(3,)``, with no roll: the camera x axis is horizontal (perpendicular to ``up``), y points down.

    Raises:
        ValueError: a camera looks straight along ``up`` (its roll is undefined).
    """
    up_t = torch.tensor(up, dtype=positions.dtype)
    z = target - positions
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(z, up_t.expand_as(z), dim=-1)
    norm = x.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-6).any()):
        raise ValueError("look_at: a camera looks straight up or down; its roll is undefined")
    x = x / norm
    y = torch.linalg.cross(z, x, dim=-1)
    pose = torch.zeros(positions.shape[0], 4, 4, dtype=positions.dtype)
    pose[:, :3, 0], pose[:, :3, 1], pose[:, :3, 2], pose[:, :3, 3] = x, y, z, positions
    pose[:, 3, 3] = 1.0
    return pose


def camera_rays(intrinsics: Tensor, cam_to_world: Tensor, height: int, width: int) -> Tensor:
    """World directions ``(3, T, H, W)`` (components first) of the rays through every pixel centre.

    Directions are *not* normalised: each has camera-z component 1, so the point at ray parameter
    ``lam`` (``origin + lam * direction``) has z-depth ``lam`` in that camera.
    """
    dtype = cam_to_world.dtype
    fx, fy, cx, cy = (float(intrinsics[0, 0]), float(intrinsics[1, 1]), float(intrinsics[0, 2]), float(intrinsics[1, 2]))
    u = (torch.arange(width, dtype=dtype) + 0.5 - cx) / fx
    v = (torch.arange(height, dtype=dtype) + 0.5 - cy) / fy
    u, v = u[None, None, :], v[None, :, None]
    rot = cam_to_world[:, :3, :3, None, None]  # (T, 3, 3, 1, 1)
    return torch.stack([rot[:, k, 0] * u + rot[:, k, 1] * v + rot[:, k, 2] for k in range(3)])


def rays_through(points_xy: Tensor, intrinsics: Tensor, cam_to_world: Tensor) -> Tensor:
    """World directions ``(N, 3)`` (camera-z component 1) of rays through raster points ``(N, 2)``
    (x, y) of frames whose poses are ``cam_to_world`` ``(N, 4, 4)``."""
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    u = (points_xy[:, 0] - cx) / fx
    v = (points_xy[:, 1] - cy) / fy
    rot = cam_to_world[:, :3, :3]
    return torch.stack([rot[:, k, 0] * u + rot[:, k, 1] * v + rot[:, k, 2] for k in range(3)], dim=-1)


def world_to_camera(points: Tensor, cam_to_world: Tensor) -> Tensor:
    """Camera coordinates ``(..., 3)`` of world points ``(..., 3)``; ``cam_to_world`` ``(..., 4, 4)``
    broadcasts against the points' leading dimensions."""
    rot, origin = cam_to_world[..., :3, :3], cam_to_world[..., :3, 3]
    rel = points - origin
    return torch.stack([rot[..., 0, k] * rel[..., 0] + rot[..., 1, k] * rel[..., 1] + rot[..., 2, k] * rel[..., 2]
                        for k in range(3)], dim=-1)


def project(points_cam: Tensor, intrinsics: Tensor) -> Tensor:
    """Raster pixel coordinates ``(..., 2)`` (x, y) of camera-frame points ``(..., 3)`` (z > 0)."""
    z = points_cam[..., 2]
    x = intrinsics[0, 0] * points_cam[..., 0] / z + intrinsics[0, 2]
    y = intrinsics[1, 1] * points_cam[..., 1] / z + intrinsics[1, 2]
    return torch.stack([x, y], dim=-1)


def sphere_screen_windows(
    centres_cam: Tensor, radius: Tensor, intrinsics: Tensor, height: int, width: int, near: float = 1e-3
) -> list[tuple[int, int, int, int]]:
    """Integer pixel windows ``(y0, y1, x0, x1)`` (exclusive ends), one per sphere, each holding that
    sphere's image in every frame (the union over frames; culling for the ray caster).

    ``centres_cam`` ``(n, T, 3)`` camera-frame centres, ``radius`` ``(n,)``. Exact silhouette tangents
    per axis, widened by one pixel; a sphere that reaches behind the camera gets the whole image.
    """
    x, y, z = centres_cam.unbind(-1)
    r = radius.to(centres_cam.dtype)[:, None]
    behind = (z - r <= near).any(dim=1)

    def axis(a: Tensor, f: Tensor, c: Tensor, size: int) -> tuple[Tensor, Tensor]:
        dist = torch.sqrt(a * a + z * z)
        centre, half = torch.atan2(a, z), torch.asin((r / dist).clamp(max=1.0))
        lo = torch.tan((centre - half).clamp(min=-1.5)) * f + c
        hi = torch.tan((centre + half).clamp(max=1.5)) * f + c
        lo = torch.where(behind, 0, (lo.amin(dim=1).floor() - 1).clamp(0, size))
        hi = torch.where(behind, size, (hi.amax(dim=1).ceil() + 1).clamp(0, size))
        return lo, torch.maximum(lo, hi)

    x0, x1 = axis(x, intrinsics[0, 0], intrinsics[0, 2], width)
    y0, y1 = axis(y, intrinsics[1, 1], intrinsics[1, 2], height)
    return [tuple(int(v) for v in row) for row in torch.stack([y0, y1, x0, x1], dim=-1).tolist()]
