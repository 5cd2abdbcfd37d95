"""RealEstate10K relative camera pose (paper Appendix A.2.3).

Target: the clip's relative pose ``inv(cam_to_world[-1]) @ cam_to_world[0]`` (first camera → last
camera, ``docs/conventions.md``), as the 12 numbers of its row-major ``[R | t]``.

Readout (:class:`PoseReadout`): the features resampled to 16 steps, their first and last step
concatenated along channels (tokens ``2D`` wide, one time step), one learned query, 256 channels, 8
heads, 12 outputs (1,650,444 parameters on a 1024-wide backbone, Table 6). Loss: mean squared error on
the 12 numbers (the paper's L2). Metric: ``pose_epe`` (the predicted rotation projected to SO(3) with
Procrustes, then the mean end-point error of the 8 corners of the cube {-1, 1}² x {1, 3} in front of the
first camera; plain mean over samples). Translations are in the units of the poses: RE10k's SfM units
unless the reader applies a metric scale (the paper rescales with 4DiM's technique), so say which in
results. Augmentation (the paper states none for this task): short side to 1.15 x the crop, random
crop, random left-right flip (label-aware: the poses are mirrored, ``P -> M P M``); evaluation: centre
crop. 16 frames at stride 2 (the paper does not give the stride).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fourds.data.geometry import apply_geometry, resize_short_side_crop
from fourds.metrics import METRIC_SPECS, pose_epe, procrustes_rotation
from fourds.readouts import AttentionReadout, resample_time
from fourds.tasks.base import Sample, Task, frame_size_of
from fourds.tasks.registry import register


def relative_pose(cam_to_world: Tensor) -> Tensor:
    """``(B, T, 4, 4)`` camera-to-world poses → ``(B, 3, 4)`` ``[R | t]`` of
    ``inv(cam_to_world[:, -1]) @ cam_to_world[:, 0]`` (computed in float64, returned in float32)."""
    if cam_to_world.ndim != 4 or tuple(cam_to_world.shape[-2:]) != (4, 4):
        raise ValueError(f"relative_pose: cam_to_world must be (B, T, 4, 4), got {tuple(cam_to_world.shape)}")
    c2w = cam_to_world.to(torch.float64)
    # The rigid inverse in closed form (R^T, -R^T t): no linalg.inv, whose error check syncs a GPU.
    rot_last, t_last = c2w[:, -1, :3, :3], c2w[:, -1, :3, 3:]
    rot = rot_last.transpose(-1, -2) @ c2w[:, 0, :3, :3]
    trans = rot_last.transpose(-1, -2) @ (c2w[:, 0, :3, 3:] - t_last)
    return torch.cat([rot, trans], dim=-1).to(torch.float32)


class PoseReadout(nn.Module):
    """First and last time step of the features, concatenated → one learned query → 12 numbers.

    Args:
        dim: backbone width D (the attention reads ``2D``-wide tokens).
        channels, num_heads: readout width and heads (256 and 8 in the paper).
        steps: time steps the features are resampled to before the first and last are taken.
    """

    def __init__(self, dim: int, channels: int = 256, num_heads: int = 8, steps: int = 16) -> None:
        super().__init__()
        self.steps = steps
        self.readout = AttentionReadout(2 * dim, channels, num_heads, 12, num_queries=1, steps=1)

    def forward(self, features: Tensor, batch: Sample | None = None) -> Tensor:
        """``(B, T', N, D)`` → ``(B, 12)`` row-major ``[R | t]`` (rotation not yet projected)."""
        if features.ndim != 4:
            raise ValueError(f"PoseReadout expects features (B, T', N, D), got {tuple(features.shape)}")
        x = resample_time(features, self.steps)
        pair = torch.cat([x[:, :1], x[:, -1:]], dim=-1)  # (B, 1, N, 2D)
        return self.readout(pair)[:, 0]


@register
@dataclass
class RE10kTask(Task):
    """RE10k relative pose (see the module docstring).

    Attributes:
        readout_steps: time steps the features are resampled to before the first and last are paired.
        short_side_factor: the short side is resized to this times the crop.
        flip: random left-right flip in training (poses mirrored with the pixels).
    """

    name: ClassVar[str] = "re10k"
    metric_names: ClassVar[tuple] = (METRIC_SPECS["pose_epe"],)
    primary_metric_name: ClassVar[str] = "pose_epe"
    data_sources: ClassVar[dict[str, str]] = {"train": "re10k", "eval": "re10k"}

    channels: int = 256
    num_heads: int = 8
    readout_steps: int = 16
    short_side_factor: float = 1.15
    flip: bool = True

    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module:
        return PoseReadout(dim, self.channels, self.num_heads, self.readout_steps)

    def train_geometry(self, clip: Sample, generator: torch.Generator) -> Sample:
        ops = resize_short_side_crop(frame_size_of(clip), self.input_size, self.short_side_factor, random=True,
                                     flip=self.flip, generator=generator)
        return apply_geometry(ops, clip)

    def eval_geometry(self, clip: Sample) -> Sample:
        ops = resize_short_side_crop(frame_size_of(clip), self.input_size, self.short_side_factor, random=False)
        return apply_geometry(ops, clip)

    def target(self, batch: Sample) -> Tensor:
        """``(B, 3, 4)`` ground-truth relative pose of the batch's clips."""
        return relative_pose(batch["cam_to_world"])

    def loss(self, outputs: Tensor, batch: Sample) -> Tensor:
        return F.mse_loss(outputs.float(), self.target(batch).flatten(1).to(outputs.device))

    def metrics(self, outputs: Tensor, batch: Sample) -> dict[str, Tensor]:
        pred = outputs.float().unflatten(-1, (3, 4))
        return {self.key("pose_epe"): pose_epe(pred, self.target(batch).to(pred.device))}

    def predictions(self, outputs: Tensor, batch: Sample) -> dict[str, Tensor]:
        """``relative_pose`` ``(B, 4, 4)`` with the rotation projected to SO(3)."""
        pred = outputs.float().unflatten(-1, (3, 4))
        pose = torch.eye(4, device=pred.device).repeat(pred.shape[0], 1, 1)
        pose[:, :3, :3] = procrustes_rotation(pred[:, :, :3])
        pose[:, :3, 3] = pred[:, :, 3]
        return {"relative_pose": pose}
