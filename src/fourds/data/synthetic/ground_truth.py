"""Exact ground truth of a rendered scene: point tracks with visibility, and visible-extent boxes.

**Tracks.** Query points are pixel centres of the first frame, drawn without replacement with half of
the probability mass (``object_fraction``) on object pixels and the rest on background pixels (uniform
within each group; all on one group when the other is empty). Each query's 3-D surface point is fixed in
its surface's local frame (an object's frame, or the world for the static ground and backdrop) and moved
with it. In every frame it is projected with the camera; it is **visible** when

1. it is in front of the camera and inside the image (``0 <= x < W``, ``0 <= y < H``),
2. its surface faces the camera (``n . (camera - p) > 0``),
3. the rendered surface id at its pixel is its own surface, and
4. the depth buffer agrees: the rendered depth at its pixel equals, within the relative tolerance
   ``tolerance``, the point's own depth or — for planar surfaces (ground, box faces, the backdrop)
   not seen at grazing incidence (``|cos| >= 0.1``) — the depth at that pixel's centre of the point's
   plane (slope-aware, so sloped surfaces such as the ground are not flagged occluded by the pixel
   quantisation).

Queries are kept only if visible in frame 0: candidates are drawn in random order and the first
``num_tracks`` visible ones are kept (the rest of the frame's pixels are tried when the first
``2 * num_tracks`` do not hold enough; only a frame with fewer qualifying pixels than ``num_tracks``
keeps some invisible queries).

**Boxes** are the *visible extent* of each object: the tight pixel rectangle ``(x0, y0, x1, y1)``
(``x1``, ``y1`` exclusive) of the object's pixels in the rendered id buffer, so clipped to the image and
to occluders. ``box_valid`` is False when the object covers fewer than ``min_pixels`` pixels in that
frame (absent, out of view, fully occluded or a sliver), and the box is then zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fourds.data.synthetic.camera import project, rays_through, world_to_camera
from fourds.data.synthetic.renderer import BACKDROP, FIRST_OBJECT, GROUND, Rendering
from fourds.data.synthetic.scene import SPHERE, Scene

_MIN_PLANE_COS = 0.1


@dataclass
class Tracks:
    """Point tracks of ``P`` query points over ``T`` frames.

    Attributes:
        tracks: ``(P, T, 2)`` float32 (x, y) raster pixels (projected also when not visible).
        visible: ``(P, T)`` bool.
        track_object: ``(P,)`` int64 object index, ``-1`` for the static background.
        points_3d: ``(P, T, 3)`` float32 world coordinates of the surface points (metres).
        query_points: ``(P, 3)`` float32 ``(t, y, x)``: frame index 0 and the query pixel centre.
    """

    tracks: Tensor
    visible: Tensor
    track_object: Tensor
    points_3d: Tensor
    query_points: Tensor


def _query_keys(gen: torch.Generator, surface0: Tensor, object_fraction: float) -> Tensor:
    """Random keys ``(H * W,)`` of the frame-0 pixels: taking them in decreasing order draws pixels
    without replacement with weights that put ``object_fraction`` of the mass on object pixels
    (Efraimidis-Spirakis)."""
    flat = surface0.reshape(-1)
    on_object = flat >= FIRST_OBJECT
    n_obj = int(on_object.sum())
    n_bg = flat.numel() - n_obj
    frac = object_fraction if n_obj and n_bg else (1.0 if n_obj else 0.0)
    weight = torch.where(on_object, frac / max(n_obj, 1), (1.0 - frac) / max(n_bg, 1))
    u = torch.rand(flat.numel(), generator=gen, dtype=torch.float64).clamp_min(1e-300)
    return torch.where(weight > 0, u.log() / weight.to(torch.float64), -torch.inf)


def _rotate(rot: Tensor, v: Tensor) -> Tensor:
    """``rot @ v`` for ``rot`` ``(..., 3, 3)`` and ``v`` ``(..., 3)`` (broadcasting), written out."""
    return torch.stack([rot[..., k, 0] * v[..., 0] + rot[..., k, 1] * v[..., 1] + rot[..., k, 2] * v[..., 2]
                        for k in range(3)], dim=-1)


def _dot3(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _local_normals(scene: Scene, obj: Tensor, local: Tensor, surface: Tensor) -> Tensor:
    """Unit normals ``(P, 3)`` in each point's local frame (world for the background)."""
    normal = torch.zeros_like(local)
    normal[surface == GROUND] = torch.tensor([0.0, 0.0, 1.0])
    back = surface == BACKDROP
    normal[back] = -local[back] / local[back].norm(dim=-1, keepdim=True)
    on = obj >= 0
    if bool(on.any()):
        o = obj[on]
        pts = local[on]
        sph = scene.shape[o] == SPHERE
        half = scene.size[o]
        n_sphere = pts / pts.norm(dim=-1, keepdim=True)
        face = (pts.abs() / half).argmax(dim=-1, keepdim=True)
        n_box = torch.zeros_like(pts).scatter_(1, face, torch.sign(pts.gather(1, face)))
        normal[on] = torch.where(sph[:, None], n_sphere, n_box)
    return normal


def _follow(scene: Scene, rendering: Rendering, pixels: Tensor, tolerance: float) -> Tracks:
    """Tracks of the surface points seen at frame-0 pixels ``pixels`` (flat indices)."""
    t_, h, w = scene.num_frames, scene.height, scene.width
    k, c2w = scene.intrinsics, scene.cam_to_world
    row, col = pixels // w, pixels % w
    xy0 = torch.stack([col, row], dim=-1).to(torch.float32) + 0.5
    surface = rendering.surface[0].reshape(-1)[pixels]
    depth0 = rendering.depth[0].reshape(-1)[pixels]
    p0 = c2w[0, :3, 3] + depth0[:, None] * rays_through(xy0, k, c2w[0].expand(len(pixels), 4, 4))
    obj = torch.where(surface >= FIRST_OBJECT, surface - FIRST_OBJECT, -1)

    # Poses of each point's frame over time; identity for the background (index n).
    n = scene.num_objects
    poses = torch.cat([scene.object_to_world, torch.eye(4).expand(1, t_, 4, 4)], dim=0)[torch.where(obj >= 0, obj, n)]
    rel = p0 - poses[:, 0, :3, 3]
    local = _rotate(poses[:, 0, :3, :3].transpose(1, 2), rel)
    normal_local = _local_normals(scene, obj, local, surface)
    world = _rotate(poses[:, :, :3, :3], local[:, None]) + poses[:, :, :3, 3]  # (P, T, 3)
    normal = _rotate(poses[:, :, :3, :3], normal_local[:, None])

    cam = world_to_camera(world, c2w[None])
    z = cam[..., 2]
    xy = project(torch.cat([cam[..., :2], z.clamp_min(1e-2)[..., None]], dim=-1), k)
    xy[:, 0] = xy0  # exact: the point was defined by the ray through this pixel centre
    in_view = (z > 1e-3) & (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)
    to_camera = c2w[None, :, :3, 3] - world
    facing = _dot3(normal, to_camera) > 0
    col_t = xy[..., 0].floor().clamp(0, w - 1).long()
    row_t = xy[..., 1].floor().clamp(0, h - 1).long()
    frame = torch.arange(t_)[None].expand_as(col_t)
    seen_surface = rendering.surface[frame, row_t, col_t]
    seen_depth = rendering.depth[frame, row_t, col_t]
    centre = torch.stack([col_t, row_t], dim=-1).to(torch.float32) + 0.5
    ray = rays_through(centre.reshape(-1, 2), k, c2w[frame.reshape(-1)]).reshape(*centre.shape[:2], 3)
    denom = _dot3(normal, ray)
    plane_depth = -_dot3(normal, to_camera) / torch.where(denom.abs() < 1e-6, -1e-6, denom)
    # The tangent plane is the surface itself for the ground, the box faces and (nearly) the backdrop;
    # it is trusted away from grazing incidence, where it cannot swing across a pixel.
    planar = torch.ones_like(surface, dtype=torch.bool)
    planar[obj >= 0] = scene.shape[obj[obj >= 0]] != SPHERE
    head_on = planar[:, None] & (denom.abs() >= _MIN_PLANE_COS * ray.norm(dim=-1))
    agrees = ((seen_depth - z).abs() <= tolerance * z) | (
        head_on & ((seen_depth - plane_depth).abs() <= tolerance * plane_depth.abs()))
    visible = in_view & facing & (seen_surface == surface[:, None]) & agrees
    query = torch.cat([torch.zeros(len(pixels), 1), xy0.flip(-1)], dim=-1)
    return Tracks(tracks=xy, visible=visible, track_object=obj, points_3d=world, query_points=query)


def point_tracks(scene: Scene, rendering: Rendering, gen: torch.Generator, num_tracks: int,
                 object_fraction: float = 0.5, tolerance: float = 0.02) -> Tracks:
    """``num_tracks`` point tracks queried in frame 0 (see the module docstring).

    Raises:
        ValueError: more tracks than pixels.
    """
    h, w = scene.height, scene.width
    if num_tracks > h * w:
        raise ValueError(f"num_tracks={num_tracks} exceeds the {h}x{w} = {h * w} pixels of a frame; lower it")
    keys = _query_keys(gen, rendering.surface[0], object_fraction)
    tracks = _follow(scene, rendering, torch.topk(keys, min(h * w, 2 * num_tracks)).indices, tolerance)
    ok = tracks.visible[:, 0]
    if int(ok.sum()) < num_tracks < h * w:  # rare: many grazing pixels; try them all (same order)
        tracks = _follow(scene, rendering, torch.topk(keys, h * w).indices, tolerance)
        ok = tracks.visible[:, 0]
    order = torch.cat([torch.nonzero(ok).flatten(), torch.nonzero(~ok).flatten()])[:num_tracks]
    return Tracks(*(getattr(tracks, f)[order] for f in Tracks.__dataclass_fields__))


def visible_boxes(surface: Tensor, max_objects: int, min_pixels: int = 4) -> tuple[Tensor, Tensor]:
    """Visible-extent boxes ``(O, T, 4)`` float32 (x0, y0, x1, y1) and ``box_valid`` ``(O, T)`` from a
    surface-id buffer ``(T, H, W)`` (ids ``>= 2`` are objects ``id - 2``), ``O = max_objects``."""
    t_, h, w = surface.shape
    on = surface >= FIRST_OBJECT
    frame, row, col = torch.nonzero(on, as_tuple=True)
    key = (surface[frame, row, col] - FIRST_OBJECT) * t_ + frame  # object-major (O, T) slots
    slots = max_objects * t_
    count = torch.bincount(key, minlength=slots)

    def reduce(values: Tensor, init: int, how: str) -> Tensor:
        return torch.full((slots,), init, dtype=torch.int64).scatter_reduce_(0, key, values, how)

    boxes = torch.stack([reduce(col, w, "amin"), reduce(row, h, "amin"),
                         reduce(col, -1, "amax") + 1, reduce(row, -1, "amax") + 1], dim=-1).to(torch.float32)
    valid = count >= max(min_pixels, 1)
    boxes[~valid] = 0.0
    return boxes.reshape(max_objects, t_, 4), valid.reshape(max_objects, t_)

