"""The synthetic tasks: the real tasks' readouts, losses, metrics and augmentations on procedural scenes.

Each synthetic task is its real counterpart (a subclass) at the scenes' size, with built-in data from
:class:`fourds.data.synthetic.SyntheticScenes` (exact ground truth, no download):

============== ================= ===========================================================
task           real counterpart  labels read from the scenes
============== ================= ===========================================================
synth_tracking perception_test   ``tracks`` / ``visible`` (queried at frame 0)
synth_boxes    waymo             ``boxes`` / ``box_valid`` (given at frame 0)
synth_pose     re10k             ``cam_to_world`` (relative pose first → last camera)
synth_depth    scannet           ``depth`` (z-depth, metres)
synth_motion   ssv2              ``label`` (motion class)
============== ================= ===========================================================

Readouts: the point and box readouts take ``query_residual`` (default True, the paper's design). The
demo sets it False: the learnability ladder (``docs/ladder.md``) found that with the residual a readout
does not learn, in hundreds of steps, to attend to the token under its query (it fits training targets
from the query alone instead, which also makes it memorise a fixed batch faster).

Defaults: 16 frames at stride 1, 64x64 (``height`` / ``width`` or ``input_size`` override it, and the
scenes are generated at that size), the paper's readout widths (``channels`` / ``num_heads`` /
``embed_dim`` override them), ``num_samples`` training scenes and ``num_eval_samples`` scenes for each
evaluation split. Splits ``train``, ``val`` and ``test`` draw from different seeds derived from ``seed``.
Tracking metrics are in the pixels of a 256x256 frame, as for the real task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fourds.seeding import derive_seed
from fourds.tasks.base import Sample
from fourds.tasks.perception_test import PerceptionTestTask
from fourds.tasks.re10k import RE10kTask
from fourds.tasks.registry import register
from fourds.tasks.scannet import ScanNetTask
from fourds.tasks.ssv2 import SSv2Task
from fourds.tasks.waymo import WaymoTask

SPLITS = ("train", "val", "test")


def _scenes_class() -> Any:
    try:
        from fourds.data.synthetic import SyntheticScenes
    except ImportError as err:  # pragma: no cover - the package ships it
        raise RuntimeError("the synthetic tasks need fourds.data.synthetic.SyntheticScenes") from err
    return SyntheticScenes


@dataclass
class SyntheticData:
    """Built-in data for a synthetic task, mixed in before the real task class (a plain dataclass, not a
    :class:`Task`, so that it overrides only the fields it declares and not the real task's defaults).

    Attributes:
        height, width: frame size of the scenes and clips (aliases of ``input_size``).
        num_samples: scenes in the ``train`` split.
        num_eval_samples: scenes in each of the ``val`` and ``test`` splits.
        seed: base seed of the scenes (each split derives its own).
    """

    num_frames: int = 16
    frame_stride: int = 1
    input_size: tuple[int, int] = (64, 64)
    height: int | None = None
    width: int | None = None
    num_samples: int = 64
    num_eval_samples: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.input_size)
        self.input_size = (int(self.height or h), int(self.width or w))  # type: ignore[assignment]
        super().__post_init__()  # type: ignore[misc]  # the real task's validation
        self.height, self.width = self.input_size
        for field in ("num_samples", "num_eval_samples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task {self.name}: {field} must be a positive integer, got {value!r}")

    sample_keys: ClassVar[tuple[str, ...]] = ()
    """The scene fields this task uses; transforms drop the others (less to batch, and the probe's
    qualitative figures draw this task's labels)."""

    def task_fields(self, sample: Sample) -> Sample:
        """``sample`` restricted to ``video`` and :attr:`sample_keys`."""
        return {k: v for k, v in sample.items() if k == "video" or k in self.sample_keys}

    def train_transform(self, sample: Sample, generator: torch.Generator) -> Sample:
        return super().train_transform(self.task_fields(sample), generator)

    def eval_transform(self, sample: Sample) -> Sample:
        return super().eval_transform(self.task_fields(sample))

    def evaluate_clips(self, sample: Sample) -> list[Sample]:
        return super().evaluate_clips(self.task_fields(sample))

    def split_seed(self, split: str) -> int:
        """The scenes' seed of ``split`` (distinct per split, stable across runs)."""
        if split not in SPLITS:
            raise ValueError(f"task {self.name}: unknown split {split!r}; synthetic splits are {', '.join(SPLITS)}")
        return derive_seed(self.seed, "synthetic-scenes", split) % (2**31)

    def scene_kwargs(self) -> dict[str, Any]:
        """Scene options this task needs beyond size and count (e.g. enough tracks)."""
        return {}

    def dataset(self, split: str, **kwargs: Any) -> Any:  # type: ignore[override]
        """``SyntheticScenes`` of ``split`` at the task's clip size; ``kwargs`` override scene options."""
        seed = self.split_seed(split)
        options = {
            "num_frames": self.num_frames * self.frame_stride - (self.frame_stride - 1),
            "height": self.input_size[0],
            "width": self.input_size[1],
            "seed": seed,
            "num_samples": self.num_samples if split == "train" else self.num_eval_samples,
            **self.scene_kwargs(),
            **kwargs,
        }
        return _scenes_class()(**options)


@register
@dataclass
class SynthTrackingTask(SyntheticData, PerceptionTestTask):
    """Point tracking on the scenes (the ``perception_test`` readout, loss and metrics)."""

    name: ClassVar[str] = "synth_tracking"
    sample_keys: ClassVar[tuple[str, ...]] = ("tracks", "visible", "track_object")
    data_sources: ClassVar[dict[str, str]] = {"train": "synthetic", "eval": "synthetic"}
    channels: int = 256
    embed_dim: int = 128
    frame_stride: int = 1
    train_stride: int = 1


@register
@dataclass
class SynthBoxesTask(SyntheticData, WaymoTask):
    """Box tracking on the scenes (the ``waymo`` readout, loss and metric)."""

    name: ClassVar[str] = "synth_boxes"
    sample_keys: ClassVar[tuple[str, ...]] = ("boxes", "box_valid")
    data_sources: ClassVar[dict[str, str]] = {"train": "synthetic", "eval": "synthetic"}
    channels: int = 256
    embed_dim: int = 128


@register
@dataclass
class SynthPoseTask(SyntheticData, RE10kTask):
    """Relative camera pose on the scenes (the ``re10k`` readout, loss and metric)."""

    name: ClassVar[str] = "synth_pose"
    sample_keys: ClassVar[tuple[str, ...]] = ("cam_to_world", "intrinsics")
    data_sources: ClassVar[dict[str, str]] = {"train": "synthetic", "eval": "synthetic"}
    channels: int = 64


@register
@dataclass
class SynthDepthTask(SyntheticData, ScanNetTask):
    """Video depth on the scenes (the ``scannet`` readout, loss and metric)."""

    name: ClassVar[str] = "synth_depth"
    sample_keys: ClassVar[tuple[str, ...]] = ("depth",)
    data_sources: ClassVar[dict[str, str]] = {"train": "synthetic", "eval": "synthetic"}
    channels: int = 256
    max_depth: float = 100.0  # the scenes' ground plane reaches ~50 m; ScanNet's 10 m cap would drop it


@register
@dataclass
class SynthMotionTask(SyntheticData, SSv2Task):
    """Motion classification on the scenes (the ``ssv2`` readout, loss, metric and augmentation)."""

    name: ClassVar[str] = "synth_motion"
    sample_keys: ClassVar[tuple[str, ...]] = ("label",)
    data_sources: ClassVar[dict[str, str]] = {"train": "synthetic", "eval": "synthetic"}
    channels: int = 192
    num_classes: int = 8

    def scene_kwargs(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}  # the scenes draw labels in [0, num_classes)
