"""Monocular video depth on ScanNet (paper Appendix A.2.6).

Readout (:class:`DepthReadout`): one learned query per 2x8x8 spatio-temporal patch of the output video
(``(16/2)(224/8)(224/8) = 6272`` queries for 16x224x224), 1024 channels, 16 heads, 128 outputs per query
(its patch's depth values, ordered ``(t, y, x)``), no output activation: depth in metres
(18,116,736 parameters on a 1024-wide backbone, Table 6). It is the one dense patch readout
(:class:`fourds.readouts.PatchReadout`) that the official 4DS depth head
(:class:`fourds.convert.heads.VideoPatchReadout`) also is, so an imported head's ``state_dict`` loads into it.

Loss: mean squared error over the batch's valid pixels (ground truth in ``(min_depth, max_depth)``,
0.001–10 m). Metric: AbsRel over the same pixels; the data set's figure weights clips by their
valid-pixel counts (``scannet/abs_rel_weight``).

Data: 16 frames at stride 2 (the paper does not give the stride); depth maps whose size differs from
the RGB frames (ScanNet: 640x480 vs 1296x968) are first resized to the RGB size with nearest neighbour,
then move with the pixels. Training: short side to 1.15 x the crop, random crop, random left-right flip;
evaluation: the same resize and a centre crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from fourds.data.geometry import apply_geometry, resize_nearest, resize_short_side_crop
from fourds.metrics import METRIC_SPECS, abs_rel, abs_rel_valid_counts, abs_rel_valid_mask
from fourds.readouts import PatchReadout
from fourds.tasks.base import Sample, Task, frame_size_of
from fourds.tasks.registry import register


class DepthReadout(PatchReadout):
    """The dense patch readout (:class:`fourds.readouts.PatchReadout`) with one depth value per pixel.

    Args:
        dim: backbone width D.
        channels, num_heads: readout width and heads.
        output_size: ``(T, H, W)`` of the predicted depth video (T is also the readout's time steps).
        patch_size: ``(pt, ph, pw)`` decoding patch (2, 8, 8).

    Shapes:
        ``forward(features, batch=None)``: ``(B, T', N, D)`` → depth ``(B, T, H, W)``. Query ``q``
        covers patch ``(q // (h w), (q // w) % h, q % w)`` of the ``(T/pt, h=H/ph, w=W/pw)`` grid.
    """

    def __init__(self, dim: int, channels: int, num_heads: int, output_size: tuple[int, int, int],
                 patch_size: tuple[int, int, int] = (2, 8, 8)) -> None:
        super().__init__(dim, channels, num_heads, output_size=output_size, patch_size=patch_size, who="DepthReadout")

    def forward(self, features: Tensor, batch: Sample | None = None) -> Tensor:  # type: ignore[override]
        return self.patch_video(features)[..., 0]


def depth_to_frames(sample: Sample) -> Sample:
    """Resize ``depth`` ``(T, h, w)`` to the RGB frame size with nearest neighbour (no-op if equal)."""
    size = frame_size_of(sample)
    if "depth" in sample and tuple(sample["depth"].shape[-2:]) != size:
        return {**sample, "depth": resize_nearest(sample["depth"], size)}
    return sample


@register
@dataclass
class ScanNetTask(Task):
    """Video depth (see the module docstring).

    Attributes:
        patch_size: ``(pt, ph, pw)`` decoding patch of the readout's queries.
        min_depth, max_depth: ground truth counts (loss and metric) inside this open range, metres.
        short_side_factor: the short side is resized to this times the crop.
        flip: random left-right flip in training.
    """

    name: ClassVar[str] = "scannet"
    metric_names: ClassVar[tuple] = (METRIC_SPECS["abs_rel"],)
    primary_metric_name: ClassVar[str] = "abs_rel"
    data_sources: ClassVar[dict[str, str]] = {"train": "scannet", "eval": "scannet"}

    channels: int = 1024
    num_heads: int = 16
    patch_size: tuple[int, int, int] = (2, 8, 8)
    min_depth: float = 1e-3
    max_depth: float = 10.0
    short_side_factor: float = 1.15
    flip: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.patch_size = tuple(int(v) for v in self.patch_size)  # type: ignore[assignment]
        for axis, size, p in zip("THW", (self.num_frames, *self.input_size), self.patch_size):
            if p < 1 or size % p:
                raise ValueError(
                    f"task {self.name}: clip {axis}={size} must be a multiple of the readout patch {p} "
                    f"(patch_size={self.patch_size})"
                )

    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module:
        return DepthReadout(dim, self.channels, self.num_heads, (self.num_frames, *self.input_size), self.patch_size)

    # ------------------------------------------------------------------ transforms
    def train_geometry(self, clip: Sample, generator: torch.Generator) -> Sample:
        clip = depth_to_frames(clip)
        ops = resize_short_side_crop(frame_size_of(clip), self.input_size, self.short_side_factor, random=True,
                                     flip=self.flip, generator=generator)
        return apply_geometry(ops, clip)

    def eval_geometry(self, clip: Sample) -> Sample:
        clip = depth_to_frames(clip)
        ops = resize_short_side_crop(frame_size_of(clip), self.input_size, self.short_side_factor, random=False)
        return apply_geometry(ops, clip)

    # ------------------------------------------------------------------ loss and metrics
    def loss(self, outputs: Tensor, batch: Sample) -> Tensor:
        gt = batch["depth"].float()
        mask = abs_rel_valid_mask(gt, self.min_depth, self.max_depth)
        err = torch.where(mask, outputs.float() - torch.where(mask, gt, torch.zeros_like(gt)), torch.zeros_like(gt))
        return err.square().sum() / mask.sum().clamp_min(1)

    def metrics(self, outputs: Tensor, batch: Sample) -> dict[str, Tensor]:
        gt = batch["depth"].float()
        key = self.key("abs_rel")
        return {key: abs_rel(outputs.float(), gt, self.min_depth, self.max_depth),
                f"{key}_weight": abs_rel_valid_counts(gt, self.min_depth, self.max_depth)}

    def predictions(self, outputs: Tensor, batch: Sample) -> dict[str, Tensor]:
        """``depth`` ``(B, T, H, W)`` metres."""
        return {"depth": outputs.float()}
