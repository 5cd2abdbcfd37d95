"""Vectorised ray caster for :class:`~fourds.data.synthetic.scene.Scene` (CPU, PyTorch, float32).

One primary ray per pixel centre and frame. The backdrop and the ground are intersected for every ray;
each object only inside the pixel window that bounds its silhouette over the whole clip
(:func:`~fourds.data.synthetic.camera.sphere_screen_bounds` of its bounding sphere), which keeps the
cost close to "background + the pixels objects cover". Surfaces are shaded with their procedural
texture (:mod:`fourds.data.synthetic.textures`, prefiltered by the pixel footprint), Lambertian
diffuse light from one directional light plus ambient, and hard cast shadows from every object onto the
ground and the other objects (shadow rays tested inside each object's shadow-capsule window). The
backdrop is unlit (a uniformly bright dome).

Surface ids: ``0`` backdrop, ``1`` ground, ``2 + o`` object ``o``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fourds.data.synthetic import intersect
from fourds.data.synthetic.camera import camera_rays, sphere_screen_windows, world_to_camera
from fourds.data.synthetic.scene import SPHERE, Scene
from fourds.data.synthetic.textures import albedo, to_dtype

BACKDROP, GROUND, FIRST_OBJECT = 0, 1, 2
BACKDROP_BRIGHTNESS = 0.9
_MIN_COS = 0.15  # footprint growth is capped at grazing incidence


@dataclass
class Rendering:
    """Output of :func:`render` (``T`` frames of ``H x W``).

    Attributes:
        video: ``(T, H, W, 3)`` float32 in [0, 1].
        depth: ``(T, H, W)`` float32 z-depth in metres (every ray hits the backdrop, so it is finite).
        surface: ``(T, H, W)`` int64 surface id (``0`` backdrop, ``1`` ground, ``2 + o`` object ``o``).
    """

    video: Tensor
    depth: Tensor
    surface: Tensor


def _components(v: Tensor) -> Tensor:
    """``(T, 3)`` → ``(3, T, 1, 1)`` (broadcasts against ``(3, T, h, w)`` ray tensors)."""
    return v.t()[:, :, None, None]


def _rotate_inverse(rot: Tensor, v: Tensor) -> Tensor:
    """``R^T v`` per frame: ``rot`` ``(T, 3, 3)``, ``v`` ``(3, T, ...)`` → ``(3, T, ...)``."""
    r = rot.transpose(1, 2).reshape(rot.shape[0], 9).t().reshape(9, rot.shape[0], *([1] * (v.dim() - 2))).unbind(0)
    return torch.stack([torch.addcmul(torch.addcmul(r[3 * k] * v[0], r[3 * k + 1], v[1]), r[3 * k + 2], v[2])
                        for k in range(3)])


def bounding_radii(scene: Scene) -> Tensor:
    """``(n,)`` radius of the sphere around each object's centre that holds it."""
    return torch.where(scene.shape == SPHERE, scene.size[:, 0], scene.size.norm(dim=-1))


def cast(scene: Scene, origins: Tensor, directions: Tensor, dd: Tensor | None = None,
         windows: bool = True) -> tuple[Tensor, Tensor]:
    """Nearest hits of rays ``(3, T, h, w)`` from per-frame ``origins`` ``(T, 3)``.

    Returns ``(lam, surface)``, both ``(T, h, w)``: the ray parameter (z-depth for camera rays) and the
    surface id. ``dd`` is ``|direction|^2`` (broadcastable) if known. ``windows`` culls objects to their
    silhouette windows (only valid for the full image grid of
    :func:`~fourds.data.synthetic.camera.camera_rays`).
    """
    org = _components(origins)
    dd = intersect._dot(directions, directions) if dd is None else dd
    best = intersect.backdrop(org, directions, scene.backdrop_radius, dd)
    surface = torch.zeros(best.shape, dtype=torch.int64)
    lam = intersect.ground(org, directions)
    closer = lam < best
    best = torch.where(closer, lam, best)
    surface.masked_fill_(closer, GROUND)
    h, w = directions.shape[-2:]
    n = scene.num_objects
    radii = bounding_radii(scene)
    if windows and n:
        centres_cam = world_to_camera(scene.object_to_world[:, :, :3, 3], scene.cam_to_world[None])
        boxes = sphere_screen_windows(centres_cam, radii, scene.intrinsics, h, w)
    else:
        boxes = [(0, h, 0, w)] * n
    dd = dd.expand(best.shape)
    for o, (y0, y1, x0, x1) in enumerate(boxes):
        if y1 <= y0 or x1 <= x0:
            continue
        pose = scene.object_to_world[o]
        d = directions[:, :, y0:y1, x0:x1]
        centre = _components(pose[:, :3, 3])
        if int(scene.shape[o]) == SPHERE:
            hit = intersect.sphere(org, d, centre, float(radii[o]), dd=dd[:, y0:y1, x0:x1])
        else:
            rot = pose[:, :3, :3]
            hit = intersect.box(_rotate_inverse(rot, org - centre), _rotate_inverse(rot, d), scene.size[o])
        view_best, view_surface = best[:, y0:y1, x0:x1], surface[:, y0:y1, x0:x1]
        closer = hit < view_best
        view_best.copy_(torch.where(closer, hit, view_best))
        view_surface.masked_fill_(closer, FIRST_OBJECT + o)
    return best, surface


def object_frames(scene: Scene, o: int, frames: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Local coordinates and world unit normals ``(3, N)`` (components first) of world ``points``
    ``(3, N)`` on the surface of object ``o`` at ``frames`` ``(N,)``."""
    # Per-point pose entries, row-major [R | t]: (12, N), gathered from the object's per-frame poses.
    pose = scene.object_to_world[o, :, :3, :].reshape(-1, 12).index_select(0, frames).t()
    rel = [points[k] - pose[4 * k + 3] for k in range(3)]
    local = torch.stack([torch.addcmul(torch.addcmul(pose[j] * rel[0], pose[4 + j], rel[1]), pose[8 + j], rel[2])
                         for j in range(3)])
    if int(scene.shape[o]) == SPHERE:
        n_local = local / float(scene.size[o, 0])  # on the sphere |local| = r
    else:
        n_local = intersect.box_normal(local, scene.size[o])
    normal = torch.stack([torch.addcmul(torch.addcmul(pose[4 * i] * n_local[0], pose[4 * i + 1], n_local[1]),
                                        pose[4 * i + 2], n_local[2]) for i in range(3)])
    return local, normal


def _shadows(scene: Scene, points: Tensor, surface: Tensor) -> Tensor:
    """``(T, H, W)`` bool: the light reaches the point (no object blocks the shadow ray)."""
    lit = torch.ones(surface.shape, dtype=torch.bool)
    n = scene.num_objects
    if n == 0:
        return lit
    light = scene.light
    lz = max(float(light[2]), 1e-3)
    h, w = surface.shape[-2:]
    radii = bounding_radii(scene)
    centres = scene.object_to_world[:, :, :3, 3]  # (n, T, 3)
    # Receivers lie in the capsule swept from the object towards -light down to the ground.
    reach = (centres[..., 2] + radii[:, None]) / lz
    mid = centres - 0.5 * reach[..., None] * light
    capsule = 0.5 * reach.amax(dim=1) + radii
    windows = sphere_screen_windows(world_to_camera(mid, scene.cam_to_world[None]), capsule, scene.intrinsics, h, w)
    for o, (y0, y1, x0, x1) in enumerate(windows):
        if y1 <= y0 or x1 <= x0:
            continue
        pose = scene.object_to_world[o]
        p = points[:, :, y0:y1, x0:x1]
        c = _components(pose[:, :3, 3])
        if int(scene.shape[o]) == SPHERE:
            blocked = intersect.sphere_any(p, light[:, None, None, None], c, float(radii[o]), near=1e-3)
        else:
            rot = pose[:, :3, :3]
            towards = _rotate_inverse(rot, light[:, None].expand(3, rot.shape[0]))[..., None, None]
            blocked = intersect.box_any(_rotate_inverse(rot, p - c), towards, scene.size[o], near=1e-3)
        s = surface[:, y0:y1, x0:x1]
        blocked &= (s != BACKDROP) & (s != FIRST_OBJECT + o)
        lit[:, y0:y1, x0:x1] &= ~blocked
    return lit


def render(scene: Scene, shadows: bool = True) -> Rendering:
    """Ray-cast every frame of ``scene`` at ``(scene.height, scene.width)``."""
    t_, h, w = scene.num_frames, scene.height, scene.width
    origins = scene.cam_to_world[:, :3, 3]
    directions = camera_rays(scene.intrinsics, scene.cam_to_world, h, w)
    # |direction|^2 = |camera direction|^2 (rotations keep lengths): one (H, W) map for all frames.
    k = scene.intrinsics
    u = (torch.arange(w, dtype=torch.float32) + 0.5 - float(k[0, 2])) / float(k[0, 0])
    v = (torch.arange(h, dtype=torch.float32) + 0.5 - float(k[1, 2])) / float(k[1, 1])
    dd = (u[None, :] ** 2 + v[:, None] ** 2 + 1.0)[None]
    depth, surface = cast(scene, origins, directions, dd)
    points = _components(origins) + depth * directions  # (3, T, H, W) world hit points
    lit = _shadows(scene, points, surface).reshape(-1) if shadows else None

    bank = to_dtype(scene.textures, torch.float32)
    footprint = 0.4 / float(scene.intrinsics[0, 0])  # footprint std per metre of depth, fronto-parallel
    flat_points = points.reshape(3, -1)
    flat_depth = depth.reshape(-1)
    light = scene.light
    ambient = scene.ambient
    video = torch.empty(t_ * h * w, 3)
    ids = surface.reshape(-1).numpy()
    for group in (BACKDROP, GROUND, FIRST_OBJECT):
        idx_np = np.flatnonzero(ids >= FIRST_OBJECT if group == FIRST_OBJECT else ids == group)
        if idx_np.size == 0:
            continue
        if group == FIRST_OBJECT:  # sorted by object (stable: frame-major within each): a slice per object
            idx_np = idx_np[np.argsort(ids[idx_np], kind="stable")]
        idx = torch.from_numpy(idx_np)
        sigma = flat_depth.index_select(0, idx).mul_(footprint)
        p = flat_points.index_select(1, idx)
        if group == BACKDROP:  # seen nearly head-on from inside (the camera stays near the centre)
            colour = albedo(bank, BACKDROP, p, sigma).mul_(BACKDROP_BRIGHTNESS)
        elif group == GROUND:
            cos = torch.rsqrt(dd.reshape(-1).index_select(0, idx % (h * w)))
            cos.mul_(directions[2].reshape(-1).index_select(0, idx).abs_())
            colour = albedo(bank, GROUND, p, sigma.div_(cos.clamp_min_(_MIN_COS)))
            diffuse = max(float(light[2]), 0.0) * (1.0 - ambient)
            shade = (lit.index_select(0, idx).to(torch.float32).mul_(diffuse).add_(ambient) if lit is not None
                     else torch.full_like(sigma, ambient + diffuse))
            colour.mul_(shade[:, None])
        else:
            inv_len = torch.rsqrt(dd.reshape(-1).index_select(0, idx % (h * w)))
            d = directions.reshape(3, -1).index_select(1, idx)
            frames = torch.div(idx, h * w, rounding_mode="floor")
            counts = np.bincount(ids[idx_np] - FIRST_OBJECT, minlength=scene.num_objects).tolist()
            colour = torch.empty(len(idx), 3)
            lit_o = lit.index_select(0, idx) if lit is not None else None
            start = 0
            for o, count in enumerate(counts):
                if count == 0:
                    continue
                seg = slice(start, start + count)
                start += count
                local, normal = object_frames(scene, o, frames[seg], p[:, seg])
                cos = intersect._dot(normal, d[:, seg]).abs_().mul_(inv_len[seg])
                c = albedo(bank, FIRST_OBJECT + o, local, sigma[seg].div_(cos.clamp_min_(_MIN_COS)))
                diffuse = (normal[0] * float(light[0])).add_(normal[1], alpha=float(light[1]))
                diffuse = diffuse.add_(normal[2], alpha=float(light[2])).clamp_min_(0.0)
                if lit_o is not None:
                    diffuse.mul_(lit_o[seg])
                colour[seg] = c.mul_(diffuse.mul_(1.0 - ambient).add_(ambient)[:, None])
        video.index_copy_(0, idx, colour)
    return Rendering(video=video.reshape(t_, h, w, 3), depth=depth, surface=surface)
