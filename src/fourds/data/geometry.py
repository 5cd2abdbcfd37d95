"""Label-aware geometric transforms: resize, crop and horizontal flip of a clip *and* its labels.

Every op maps continuous raster coordinates exactly (pixel (i, j) covers [j, j+1) x [i, i+1)):

- ``Resize(h, w)``: ``x' = x * w / W``, ``y' = y * h / H`` (half-pixel-centre resampling, the
  ``align_corners=False`` convention), video antialiased bilinear, depth/segmentation nearest.
- ``Crop(y0, x0, h, w)``: integer window, ``x' = x - x0``.
- ``HFlip()``: ``x' = W - x``; boxes swap their x ends; intrinsics ``cx' = W - cx``; camera poses are
  mirrored so that they stay proper rotations (``c2w' = M c2w M`` with ``M = diag(-1, 1, 1, 1)``;
  the flipped image is exactly what the mirrored camera sees of the mirrored world, and a relative pose
  ``P`` becomes ``M P M``).

A pipeline is a list of ops. :func:`apply_geometry` applies it to a sample dict with any of the keys
``video`` ``(T, H, W, C)``, ``depth`` ``(T, H, W)``, ``segmentation`` ``(T, H, W)``, ``tracks``
``(P, T, 2)`` (+ ``visible`` ``(P, T)``), ``boxes`` ``(O, T, 4)`` (+ ``box_valid`` ``(O, T)``),
``intrinsics`` ``(3, 3)``, ``cam_to_world`` ``(T, 4, 4)``; other keys pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_video(video: Tensor, size: tuple[int, int], antialias: bool = True) -> Tensor:
    """Bilinear (antialiased) resize of ``(T, H, W, C)`` or ``(B, T, H, W, C)`` frames to ``size`` (h, w).

    uint8 in → uint8 out (rounded); float in → float out.
    """
    h, w = size
    if tuple(video.shape[-3:-1]) == (h, w):
        return video
    lead = video.shape[:-3]
    x = video.reshape(-1, *video.shape[-3:]).permute(0, 3, 1, 2)
    was_uint8 = x.dtype == torch.uint8
    x = x.float() if was_uint8 or not x.is_floating_point() else x
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias)
    if was_uint8:
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).reshape(*lead, h, w, video.shape[-1])


def resize_nearest(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of ``(..., H, W)`` maps (depth, segmentation) to ``size`` (h, w).

    Uses ``nearest-exact`` (half-pixel centres) so it agrees with the coordinate maps of :class:`Resize`.
    """
    h, w = size
    if tuple(maps.shape[-2:]) == (h, w):
        return maps
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:])
    dtype = x.dtype
    x = F.interpolate(x.double() if not dtype.is_floating_point else x, size=(h, w), mode="nearest-exact")
    return x.to(dtype).reshape(*lead, h, w)


@dataclass(frozen=True)
class Resize:
    """Resize to ``(height, width)`` pixels."""

    height: int
    width: int


@dataclass(frozen=True)
class Crop:
    """Keep the integer window rows ``y0 .. y0+height-1``, columns ``x0 .. x0+width-1``."""

    y0: int
    x0: int
    height: int
    width: int


@dataclass(frozen=True)
class HFlip:
    """Mirror left-right."""


GeometricOp = Resize | Crop | HFlip

_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def _apply_op_to_points(op: GeometricOp, pts: Tensor, size: tuple[int, int]) -> Tensor:
    h, w = size
    out = pts.clone()
    if isinstance(op, Resize):
        out[..., 0] *= op.width / w
        out[..., 1] *= op.height / h
    elif isinstance(op, Crop):
        out[..., 0] -= op.x0
        out[..., 1] -= op.y0
    else:
        out[..., 0] = w - out[..., 0]
    return out


def _out_size(op: GeometricOp, size: tuple[int, int]) -> tuple[int, int]:
    if isinstance(op, Resize):
        return (op.height, op.width)
    if isinstance(op, Crop):
        h, w = size
        if op.y0 < 0 or op.x0 < 0 or op.y0 + op.height > h or op.x0 + op.width > w:
            raise ValueError(f"{op} does not fit in a frame of {h}x{w}")
        return (op.height, op.width)
    return size


def output_size(ops: Sequence[GeometricOp], size: tuple[int, int]) -> tuple[int, int]:
    """Frame size ``(h, w)`` after ``ops``."""
    for op in ops:
        size = _out_size(op, size)
    return size


def transform_points(ops: Sequence[GeometricOp], points: Tensor, size: tuple[int, int]) -> Tensor:
    """Map ``(..., 2)`` (x, y) raster points through ``ops`` starting from a ``size`` (h, w) frame."""
    for op in ops:
        points = _apply_op_to_points(op, points, size)
        size = _out_size(op, size)
    return points


def transform_boxes(ops: Sequence[GeometricOp], boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Map ``(..., 4)`` (x0, y0, x1, y1) boxes through ``ops`` (x ends swap under a flip)."""
    corners = boxes.reshape(*boxes.shape[:-1], 2, 2)
    corners = transform_points(ops, corners, size)
    x = corners[..., 0].sort(dim=-1).values
    y = corners[..., 1].sort(dim=-1).values
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def transform_intrinsics(ops: Sequence[GeometricOp], k: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel intrinsics ``(..., 3, 3)`` of the transformed frames (the flip keeps fx > 0, see module doc)."""
    k = k.clone()
    for op in ops:
        h, w = size
        if isinstance(op, Resize):
            k[..., 0, :] *= op.width / w
            k[..., 1, :] *= op.height / h
        elif isinstance(op, Crop):
            k[..., 0, 2] -= op.x0
            k[..., 1, 2] -= op.y0
        else:
            k[..., 0, 2] = w - k[..., 0, 2]
            k[..., 0, 1] = -k[..., 0, 1]
        size = _out_size(op, size)
    return k


def transform_cam_to_world(ops: Sequence[GeometricOp], c2w: Tensor) -> Tensor:
    """Camera poses ``(..., 4, 4)`` after ``ops``: only flips change them (mirrored world and camera)."""
    flips = sum(isinstance(op, HFlip) for op in ops)
    if flips % 2 == 0:
        return c2w
    m = _MIRROR.to(c2w)
    return m @ c2w @ m


def _apply_op_to_frames(op: GeometricOp, frames: Tensor, nearest: bool) -> Tensor:
    """``(..., H, W, C)`` video (nearest=False) or ``(..., H, W)`` maps (nearest=True)."""
    if isinstance(op, Resize):
        return resize_nearest(frames, (op.height, op.width)) if nearest else resize_video(frames, (op.height, op.width))
    axis_h = -2 if nearest else -3
    if isinstance(op, Crop):
        frames = frames.narrow(axis_h, op.y0, op.height)
        return frames.narrow(axis_h + 1, op.x0, op.width)
    return frames.flip(axis_h + 1)


def apply_geometry(
    ops: Sequence[GeometricOp], sample: dict, out_of_frame_invisible: bool = True, clip_boxes: bool = True
) -> dict:
    """Apply ``ops`` to a sample dict (see module docstring); returns a new dict.

    Args:
        ops: the pipeline.
        sample: must hold ``video`` ``(T, H, W, C)`` (uint8 or float) to define the frame size.
        out_of_frame_invisible: tracks that leave the new frame become not ``visible`` (their (x, y)
            stay finite and keep following the point).
        clip_boxes: clip boxes to the new frame; boxes left with no area become invalid in ``box_valid``.
    """
    if "video" not in sample:
        raise ValueError("apply_geometry needs sample['video'] (T, H, W, C) to know the frame size")
    size = tuple(sample["video"].shape[-3:-1])
    new_h, new_w = output_size(ops, size)  # type: ignore[arg-type]  # validates every crop first
    out = dict(sample)
    for key in ("video", "depth", "segmentation"):
        if key in sample:
            frames = sample[key]
            for op in ops:
                frames = _apply_op_to_frames(op, frames, nearest=key != "video")
            out[key] = frames.contiguous()
    if "tracks" in sample:
        tracks = transform_points(ops, sample["tracks"], size)  # type: ignore[arg-type]
        out["tracks"] = tracks
        if out_of_frame_invisible and "visible" in sample:
            inside = (tracks[..., 0] >= 0) & (tracks[..., 0] < new_w) & (tracks[..., 1] >= 0) & (tracks[..., 1] < new_h)
            out["visible"] = sample["visible"] & inside
    if "boxes" in sample:
        boxes = transform_boxes(ops, sample["boxes"], size)  # type: ignore[arg-type]
        if clip_boxes:
            boxes = torch.stack(
                [boxes[..., 0].clamp(0, new_w), boxes[..., 1].clamp(0, new_h),
                 boxes[..., 2].clamp(0, new_w), boxes[..., 3].clamp(0, new_h)], dim=-1,
            )
            if "box_valid" in sample:
                has_area = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
                out["box_valid"] = sample["box_valid"] & has_area
        out["boxes"] = boxes
    if "intrinsics" in sample:
        out["intrinsics"] = transform_intrinsics(ops, sample["intrinsics"], size)  # type: ignore[arg-type]
    if "cam_to_world" in sample:
        out["cam_to_world"] = transform_cam_to_world(ops, sample["cam_to_world"])
    return out


# ------------------------------------------------------------------------------------------- recipes
def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def resize_short_side_crop(
    size: tuple[int, int],
    crop: int | tuple[int, int],
    resize_factor: float = 1.15,
    max_resize_factor: float | None = None,
    random: bool = True,
    flip: bool = False,
    generator: torch.Generator | None = None,
) -> list[GeometricOp]:
    """The paper's clip geometry: resize the short side to ``factor x crop``, crop, maybe flip.

    Args:
        size: input frame (h, w).
        crop: output (h, w), or one int for a square crop (224 in the paper).
        resize_factor: short side becomes ``factor * crop`` (1.15, Section 3.2; SSv2 uses 239/224).
        max_resize_factor: when set, the factor is drawn uniformly in [resize_factor, max] (random only).
        random: random crop position (training) vs centre crop (evaluation).
        flip: random left-right flip with probability 0.5 (training).
        generator: the source of randomness (seed it per sample for reproducibility).
    """
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    h, w = size
    factor = resize_factor
    if random and max_resize_factor is not None and max_resize_factor > resize_factor:
        u = float(torch.rand((), generator=generator))
        factor = resize_factor + u * (max_resize_factor - resize_factor)
    short = max(ch, cw) * factor
    scale = short / min(h, w)
    rh, rw = max(ch, round(h * scale)), max(cw, round(w * scale))
    if random:
        y0, x0 = _randint(0, rh - ch, generator), _randint(0, rw - cw, generator)
    else:
        y0, x0 = (rh - ch) // 2, (rw - cw) // 2
    ops: list[GeometricOp] = [Resize(rh, rw), Crop(y0, x0, ch, cw)]
    if flip and random and float(torch.rand((), generator=generator)) < 0.5:
        ops.append(HFlip())
    return ops


def random_resized_crop(
    size: tuple[int, int],
    out: tuple[int, int],
    area: tuple[float, float] = (0.3, 1.0),
    aspect: tuple[float, float] = (0.5, 2.0),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> list[GeometricOp]:
    """Inception-style crop (area fraction and log-uniform aspect w/h), then resize to ``out`` (h, w).

    Falls back to the whole frame when no sampled window fits (the point-tracking recipe of the paper,
    area (0.3, 1.0), aspect (0.5, 2.0)).
    """
    h, w = size
    log_lo, log_hi = torch.log(torch.tensor(aspect[0])), torch.log(torch.tensor(aspect[1]))
    for _ in range(attempts):
        a = area[0] + float(torch.rand((), generator=generator)) * (area[1] - area[0])
        r = float(torch.exp(log_lo + torch.rand((), generator=generator) * (log_hi - log_lo)))
        cw = round((a * h * w * r) ** 0.5)
        ch = round((a * h * w / r) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            y0, x0 = _randint(0, h - ch, generator), _randint(0, w - cw, generator)
            return [Crop(y0, x0, ch, cw), Resize(*out)]
    return [Resize(*out)]
