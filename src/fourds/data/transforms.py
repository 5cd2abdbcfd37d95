"""The paper's clip transforms as label-aware pipelines over sample dicts, colour augmentation, and
batched antialiased resizing on tensors.

- Training (Section 3.2 / Appendix A): resize the short side to ``1.15 x crop``, random ``crop x crop``
  window, random left-right flip (p = 0.5). Evaluation: the same resize, centre crop, no flip.
  Both go through :func:`fourds.data.geometry.apply_geometry`, so tracks, boxes, depth, segmentation,
  intrinsics and camera poses move with the pixels.
- Colour (SSv2 readout training, Appendix A.2.1, Table 7): with probability 0.8 adjust brightness
  (delta in [-0.125, 0.125]), saturation and contrast (factors in [0.6, 1.4]) and hue (delta in
  [-0.2, 0.2] of a full turn) in a random order, then with probability 0.1 convert to grayscale. The same
  parameters apply to every frame of a clip. Hue is a rotation of the chroma plane in YIQ space (a
  linear stand-in for the HSV hue shift: identical at 0, smooth, cheap on batches).

Dtypes: the geometric pipelines keep the input dtype (uint8 stays uint8, so loaders can carry uint8);
colour augmentation works on float ``[0, 1]`` and returns float32 (convert with
:func:`fourds.data.to_float` first, ideally on the accelerator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fourds.data import to_float
from fourds.data.geometry import apply_geometry, resize_short_side_crop, resize_video


def train_transform(
    sample: dict,
    generator: torch.Generator | None = None,
    crop: int | tuple[int, int] = 224,
    resize_factor: float = 1.15,
    max_resize_factor: float | None = None,
    flip: bool = True,
) -> dict:
    """Random short-side-resize crop and flip of ``sample['video']`` ``(T, H, W, 3)`` and its labels."""
    size = tuple(sample["video"].shape[-3:-1])
    ops = resize_short_side_crop(size, crop, resize_factor, max_resize_factor, random=True, flip=flip, generator=generator)  # type: ignore[arg-type]
    return apply_geometry(ops, sample)


def eval_transform(sample: dict, crop: int | tuple[int, int] = 224, resize_factor: float = 1.15) -> dict:
    """Short-side resize to ``resize_factor x crop`` and centre crop of a sample and its labels."""
    size = tuple(sample["video"].shape[-3:-1])
    ops = resize_short_side_crop(size, crop, resize_factor, random=False)  # type: ignore[arg-type]
    return apply_geometry(ops, sample)


# ---------------------------------------------------------------------------------------- colour
@dataclass(frozen=True)
class ColourJitter:
    """Colour augmentation of Table 7 (paper values by default); see the module docstring."""

    p: float = 0.8
    brightness: float = 0.125
    saturation: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.6, 1.4)
    hue: float = 0.2
    grayscale_p: float = 0.1

    def __call__(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(..., T, H, W, 3)`` clip (uint8 or float) → float32 in [0, 1], one draw for the whole clip."""
        x = to_float(video)

        def u(lo: float, hi: float) -> float:
            return lo + float(torch.rand((), generator=generator)) * (hi - lo)

        if float(torch.rand((), generator=generator)) < self.p:
            order = torch.randperm(4, generator=generator).tolist()
            draws = [u(-self.brightness, self.brightness), u(*self.saturation), u(*self.contrast), u(-self.hue, self.hue)]
            for i in order:
                if i == 0:
                    x = adjust_brightness(x, draws[0])
                elif i == 1:
                    x = adjust_saturation(x, draws[1])
                elif i == 2:
                    x = adjust_contrast(x, draws[2])
                else:
                    x = adjust_hue(x, draws[3])
        if float(torch.rand((), generator=generator)) < self.grayscale_p:
            x = grayscale(x).expand_as(x)
        return x.clamp(0.0, 1.0)


_LUMA = torch.tensor([0.299, 0.587, 0.114])
# RGB -> YIQ (NTSC) and back; hue rotates the (I, Q) plane.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def grayscale(x: Tensor) -> Tensor:
    """``(..., 3)`` float → ``(..., 1)`` luma (ITU-R 601 weights)."""
    return (x * _LUMA.to(x)).sum(-1, keepdim=True)


def adjust_brightness(x: Tensor, delta: float) -> Tensor:
    """Add ``delta`` to every channel (TF ``adjust_brightness``)."""
    return (x + delta).clamp(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: float) -> Tensor:
    """Scale each frame's deviation from its per-channel mean by ``factor`` (TF ``adjust_contrast``)."""
    mean = x.mean(dim=(-3, -2), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: float) -> Tensor:
    """Blend with the grayscale image: 0 = gray, 1 = unchanged."""
    return (grayscale(x) + (x - grayscale(x)) * factor).clamp(0.0, 1.0)


def adjust_hue(x: Tensor, delta: float) -> Tensor:
    """Rotate chroma by ``delta`` of a full turn (``delta`` in [-0.5, 0.5]); luma is unchanged."""
    yiq_m = _YIQ.to(x)
    yiq = x @ yiq_m.T
    angle = torch.tensor(2 * torch.pi * delta, dtype=x.dtype, device=x.device)
    c, s = torch.cos(angle), torch.sin(angle)
    i, q = yiq[..., 1], yiq[..., 2]
    yiq = torch.stack([yiq[..., 0], c * i - s * q, s * i + c * q], dim=-1)
    return (yiq @ torch.linalg.inv(yiq_m).T).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------- batched resize
def resize_batch(video: Tensor, size: tuple[int, int], antialias: bool = True) -> Tensor:
    """Antialiased bilinear resize of a batch ``(B, T, H, W, 3)`` (or ``(T, H, W, 3)``) to ``size`` (h, w).

    Runs on whatever device the tensor is on (one ``interpolate`` call for the whole batch); uint8
    stays uint8 (rounded), float stays float.
    """
    return resize_video(video, size, antialias=antialias)


def center_crop_batch(video: Tensor, crop: int | tuple[int, int], resize_factor: float = 1.15) -> Tensor:
    """Evaluation geometry for a batch ``(B, T, H, W, 3)``: short side to ``factor x crop``, centre crop.

    The same ops as :func:`eval_transform` (one batch, one interpolate), for video-only batches that
    are resized on the accelerator after transfer.
    """
    from fourds.data.geometry import Crop, Resize

    ops = resize_short_side_crop(tuple(video.shape[-3:-1]), crop, resize_factor, random=False)  # type: ignore[arg-type]
    resize, window = ops[0], ops[1]
    assert isinstance(resize, Resize) and isinstance(window, Crop)
    out = resize_batch(video, (resize.height, resize.width))
    return out[..., window.y0:window.y0 + window.height, window.x0:window.x0 + window.width, :].contiguous()
