"""Video classification tasks (SSv2, Kinetics-700, synthetic motion): one learned query → class logits.

Readout: :class:`fourds.readouts.AttentionReadout` with one learned query and ``num_classes`` outputs,
features resampled to ``readout_steps`` (16) steps. Loss: cross-entropy. Metric: top-1 (plain mean).
Training geometry: short side to ``short_side_factor x crop`` (239/224 in the paper), random crop,
no flip (a flip turns "left to right" into "right to left"), then the colour augmentation of Table 7
(p = 0.8 brightness/saturation/contrast/hue, p = 0.1 grayscale). Evaluation: the same resize and a
centred crop, no colour change. Several evaluation clips (K700) are merged by averaging their softmax
(:meth:`ClassificationTask.merge_clip_outputs` returns the log of the mean probabilities, so merged
outputs are still logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fourds.data.geometry import apply_geometry, resize_short_side_crop
from fourds.data.transforms import ColourJitter
from fourds.metrics import METRIC_SPECS, top1
from fourds.readouts import AttentionReadout
from fourds.tasks.base import Sample, Task, frame_size_of


class ClassificationReadout(nn.Module):
    """One learned query → ``(B, num_classes)`` logits.

    Args:
        dim: backbone width D.
        channels, num_heads: readout width and heads.
        num_classes: outputs.
        steps: time steps the features are resampled to.
    """

    def __init__(self, dim: int, channels: int, num_heads: int, num_classes: int, steps: int = 16) -> None:
        super().__init__()
        self.readout = AttentionReadout(dim, channels, num_heads, num_classes, num_queries=1, steps=steps)

    def forward(self, features: Tensor, batch: Sample | None = None) -> Tensor:
        """``(B, T', N, D)`` → logits ``(B, num_classes)``."""
        return self.readout(features)[:, 0]


@dataclass
class ClassificationTask(Task):
    """Clip classification (shared by ``ssv2``, ``k700`` and ``synth_motion``).

    Attributes:
        num_classes: number of classes K (labels in ``[0, K)``).
        readout_steps: time steps the readout resamples features to.
        short_side_factor: training and evaluation resize the short side to this times the crop.
        colour_augment: apply the colour augmentation of the paper's Table 7 in training.
    """

    name: ClassVar[str] = "classification"
    metric_names: ClassVar[tuple] = (METRIC_SPECS["top1"],)
    primary_metric_name: ClassVar[str] = "top1"

    layer_fraction: float = 0.75
    num_classes: int = 174
    readout_steps: int = 16
    short_side_factor: float = 239 / 224
    colour_augment: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 2 or self.readout_steps < 1:
            raise ValueError(
                f"task {self.name}: need num_classes >= 2 and readout_steps >= 1, got "
                f"{self.num_classes}, {self.readout_steps}"
            )
        if self.short_side_factor < 1.0:
            raise ValueError(f"task {self.name}: short_side_factor must be >= 1, got {self.short_side_factor}")

    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module:
        return ClassificationReadout(dim, self.channels, self.num_heads, self.num_classes, self.readout_steps)

    # ------------------------------------------------------------------ transforms
    def train_geometry(self, clip: Sample, generator: torch.Generator) -> Sample:
        ops = resize_short_side_crop(frame_size_of(clip), self.input_size, self.short_side_factor, random=True,
                                     flip=False, generator=generator)
        out = apply_geometry(ops, clip)
        if self.colour_augment:
            out["video"] = ColourJitter()(out["video"], generator)
        return out

    def eval_geometry(self, clip: Sample) -> Sample:
        ops = resize_short_side_crop(frame_size_of(clip), self.input_size, self.short_side_factor, random=False)
        return apply_geometry(ops, clip)

    # ------------------------------------------------------------------ loss and metrics
    def loss(self, outputs: Tensor, batch: Sample) -> Tensor:
        return F.cross_entropy(outputs.float(), batch["label"].long())

    def metrics(self, outputs: Tensor, batch: Sample) -> dict[str, Tensor]:
        return {self.key("top1"): top1(outputs, batch["label"].long())}

    def merge_clip_outputs(self, outputs: Tensor, counts: list[int]) -> Tensor:
        """Average the softmax of each sample's clips; returns ``log(mean probability)`` ``(B, K)``."""
        probs = torch.softmax(outputs.float(), dim=-1)
        means = torch.stack([p.mean(0) for p in torch.split(probs, counts)])
        return means.clamp_min(torch.finfo(means.dtype).tiny).log()

    def predictions(self, outputs: Tensor, batch: Sample) -> dict[str, Tensor]:
        return {"logits": outputs, "label": outputs.argmax(-1)}
