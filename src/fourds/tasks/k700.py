"""Kinetics-700-2020 action classification (paper Appendix A.2.2).

16 frames at stride 2, 224x224; readout 1024 channels, 16 heads, one learned query, 700 classes
(12,281,532 parameters on a 1024-wide backbone, Table 6); readout at 75% depth, frozen and finetuned.
Training: the SSv2 recipe (short side to 239, random 224 crop, colour augmentation and grayscale: the
paper states no separate K700 recipe and the readout is "the same", so we keep its augmentation too).
Evaluation: loop the video until it has 250 frames (10 s at 25 fps), take 7 evenly spaced 16-frame
clips at stride 2, central 224 crops, and average their softmax. Metric: top-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fourds.data.clips import eval_clips
from fourds.tasks.base import Sample, num_frames_of
from fourds.tasks.classification import ClassificationTask
from fourds.tasks.registry import register


@register
@dataclass
class K700Task(ClassificationTask):
    """K700 (see the module docstring).

    Attributes:
        eval_num_clips: evaluation clips per video whose softmax is averaged.
        eval_loop_to: the video is looped to at least this many frames before spacing the clips.
    """

    name: ClassVar[str] = "k700"
    data_sources: ClassVar[dict[str, str]] = {"train": "k700", "eval": "k700"}

    channels: int = 1024
    num_heads: int = 16
    num_classes: int = 700
    layer_fraction: float = 0.75
    finetune_layer_fraction: float | None = 0.75
    eval_num_clips: int = 7
    eval_loop_to: int = 250

    def eval_windows(self, sample: Sample) -> list[list[int]]:
        return eval_clips(num_frames_of(sample), self.num_frames, self.frame_stride, self.eval_num_clips,
                          policy="loop", loop_to=self.eval_loop_to)
