"""What every task shares: its configuration (overridable fields), clip windows, metric naming, data.

A task is a small dataclass whose fields are its settings (frames, stride, input size, readout width,
augmentation switches); ``fourds.tasks.get_task(name, **overrides)`` builds it and rejects unknown
keys. Its methods are the Task contract (``docs/tasks.md``) that the probe (``fourds.probe``) drives:

- ``build_readout(dim, grid)``: a module whose ``forward(features, batch)`` takes one layer
  ``(B, T', N, D)`` and the batch;
- ``loss(outputs, batch)`` (float32 scalar), ``metrics(outputs, batch)`` (``{key: (B,)}``, keys
  prefixed ``"<task>/"``; weighted metrics add ``"<key>_weight"`` per-sample weights);
  ``metric_specs`` (key → :class:`fourds.metrics.MetricSpec`) and ``primary_metric``;
- ``train_transform(sample, generator)``: a random temporal window of ``num_frames`` frames
  ``frame_stride`` apart (any sample longer than the clip), then the task's label-aware spatial
  augmentation (``fourds.data.geometry``) and colour augmentation (``fourds.data.transforms``);
- ``evaluate_clips(sample)``: the evaluation windows (one centred clip unless the task says otherwise);
  ``eval_transform(clip)``: the deterministic spatial evaluation geometry;
- ``predictions(outputs, batch)``: the outputs in sample conventions for qualitative figures;
- ``dataset(split, ...)``: synthetic tasks build :class:`fourds.data.synthetic.SyntheticScenes`; real
  tasks hand over to the dataset readers (``fourds.data.datasets.task_dataset``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from fourds.data.clips import eval_clips, random_clip
from fourds.metrics import MetricSpec

Sample = dict[str, Any]

TIME_AXIS: dict[str, int] = {
    "video": 0,
    "depth": 0,
    "segmentation": 0,
    "cam_to_world": 0,
    "timestamps": 0,
    "tracks": 1,
    "tracks_3d": 1,
    "visible": 1,
    "object_to_world": 1,
    "boxes": 1,
    "box_valid": 1,
}
"""Sample keys that are indexed by frame, and which of their dimensions is time."""

QUERY_KEYS = ("query_points", "query_frames")


def num_frames_of(sample: Sample) -> int:
    """Frames in a sample (``video`` ``(T, H, W, 3)``)."""
    if "video" not in sample:
        raise ValueError(f"a sample needs 'video' (T, H, W, 3); got keys {sorted(sample)}")
    return int(sample["video"].shape[0])


def frame_size_of(sample: Sample) -> tuple[int, int]:
    """``(H, W)`` of a sample's frames."""
    video = sample["video"]
    return int(video.shape[-3]), int(video.shape[-2])


def select_frames(sample: Sample, indices: Sequence[int]) -> Sample:
    """The sample restricted to frames ``indices`` (in that order; repeats allowed).

    Every key of :data:`TIME_AXIS` is indexed along its time dimension; other keys pass through.
    Reader query points (``query_points`` / ``query_frames``) refer to the old time axis and are
    dropped: fourds' tracking tasks query every track at the clip's first frame (the paper's protocol).
    """
    index = torch.as_tensor(list(indices), dtype=torch.long)
    total = num_frames_of(sample)
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= total:
        raise ValueError(f"select_frames: indices {list(indices)[:8]}... must lie in [0, {total})")
    out = {}
    for key, value in sample.items():
        if key in QUERY_KEYS:
            continue
        axis = TIME_AXIS.get(key)
        if axis is not None and isinstance(value, Tensor) and value.ndim > axis:
            if value.shape[axis] != total:
                raise ValueError(
                    f"select_frames: {key!r} has {value.shape[axis]} frames on axis {axis}, the video {total}"
                )
            value = value.index_select(axis, index.to(value.device))
        out[key] = value
    return out


def prefixed(task: str, specs: Sequence[MetricSpec]) -> dict[str, MetricSpec]:
    """``{"<task>/<name>": spec renamed}`` for a task's metrics."""
    return {f"{task}/{s.name}": dataclasses.replace(s, name=f"{task}/{s.name}") for s in specs}


@runtime_checkable
class TaskContract(Protocol):
    """The typed contract the probe drives (structural: :class:`Task` and any object with these members,
    e.g. a test's toy task).

    Required: ``name``; ``layer_fraction`` (frozen readout depth); ``num_frames`` and ``input_size``
    ``(H, W)`` of the clips; ``primary_metric`` (a key of ``metrics``); ``build_readout(dim, grid)``;
    ``loss(outputs, batch)``; ``metrics(outputs, batch)`` (``{key: (B,)}``); ``train_transform(sample,
    generator)``; ``eval_transform(clip)``.

    Optional, each read through one function of this module with its default:
    ``evaluate_clips(sample)`` (:func:`evaluation_clips`: the sample itself),
    ``merge_clip_outputs(outputs, counts)`` (:func:`clip_merger`: the probe's per-sample mean),
    ``finetune_layer_fraction`` (:func:`finetune_fraction`: 0.95, 0.75 for Kinetics),
    ``metric_specs`` (:func:`declared_metric_specs`), ``options()`` (:func:`task_options`),
    ``dataset(split, ...)`` (:func:`has_dataset`: the task's built-in data), ``predictions(outputs,
    batch)`` (:func:`prediction_fn`) and ``class_names`` (:func:`class_names`).
    """

    name: str
    layer_fraction: float
    num_frames: int
    input_size: tuple[int, int]

    @property
    def primary_metric(self) -> str: ...

    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module: ...

    def loss(self, outputs: Any, batch: Sample) -> Tensor: ...

    def metrics(self, outputs: Any, batch: Sample) -> dict[str, Tensor]: ...

    def train_transform(self, sample: Sample, generator: torch.Generator) -> Sample: ...

    def eval_transform(self, sample: Sample) -> Sample: ...


def evaluation_clips(task: TaskContract, sample: Sample) -> list[Sample]:
    """``task.evaluate_clips(sample)``, or ``[sample]`` for a task without multi-clip evaluation."""
    fn = getattr(task, "evaluate_clips", None)
    return list(fn(sample)) if callable(fn) else [sample]


def clip_merger(task: TaskContract) -> Callable[[Any, list[int]], Any] | None:
    """``task.merge_clip_outputs`` (several clips' outputs → one per sample), or ``None`` for the default."""
    fn = getattr(task, "merge_clip_outputs", None)
    return fn if callable(fn) else None


def finetune_fraction(task: TaskContract) -> float:
    """The readout depth when finetuning: ``task.finetune_layer_fraction``, else 0.95 (0.75 for K700)."""
    frac = getattr(task, "finetune_layer_fraction", None)
    if frac is None:
        frac = 0.75 if any(k in task.name.lower() for k in ("k700", "kinetics")) else 0.95
    return float(frac)


def declared_metric_specs(task: TaskContract) -> Mapping[str, MetricSpec] | Sequence[MetricSpec] | None:
    """``task.metric_specs`` (a mapping key → spec, or a sequence of specs), ``None`` when undeclared."""
    return getattr(task, "metric_specs", None)


def task_options(task: TaskContract) -> dict[str, Any]:
    """``task.options()`` (its settings, enough for ``get_task(task.name, **options)``), else ``{}``."""
    fn = getattr(task, "options", None)
    return dict(fn()) if callable(fn) else {}


def has_dataset(task: TaskContract) -> bool:
    """Whether the task builds its own data (``task.dataset(split, ...)``)."""
    return hasattr(task, "dataset")


def prediction_fn(task: TaskContract) -> Callable[[Any, Sample], dict[str, Tensor]] | None:
    """``task.predictions`` (outputs → predictions in sample conventions), ``None`` without one."""
    fn = getattr(task, "predictions", None)
    return fn if callable(fn) else None


def class_names(task: TaskContract) -> Sequence[str] | None:
    """``task.class_names`` when the task names its classes."""
    return getattr(task, "class_names", None)


def _positive(task: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"task {task}: {name} must be a positive integer, got {value!r}")


@dataclass
class Task:
    """Settings shared by every task (each field can be overridden through ``get_task``).

    Attributes:
        num_frames: frames per clip fed to the backbone.
        frame_stride: distance between the clip's frames, in frames of the samples the dataset yields.
        input_size: ``(H, W)`` of the clips after the spatial transform.
        layer_fraction: fractional depth of the backbone layer the frozen readout reads.
        finetune_layer_fraction: the same when finetuning.
        channels: readout width C.
        num_heads: readout attention heads.
        augment: apply the training augmentation; False makes ``train_transform`` the deterministic
            evaluation geometry on the centred window (e.g. to use the probe's feature cache).
    """

    name: ClassVar[str] = "task"
    metric_names: ClassVar[tuple[MetricSpec, ...]] = ()
    primary_metric_name: ClassVar[str] = ""
    data_sources: ClassVar[dict[str, str]] = {}
    """Which reader data set backs each split (real tasks), e.g. ``{"train": "movi_e", ...}``."""

    num_frames: int = 16
    frame_stride: int = 2
    input_size: tuple[int, int] = (224, 224)
    layer_fraction: float = 0.95
    finetune_layer_fraction: float | None = 0.95
    channels: int = 1024
    num_heads: int = 16
    augment: bool = True

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"task {self.name}: input_size must be (H, W) positive, got {self.input_size!r}")
        self.input_size = size  # type: ignore[assignment]
        for field in ("num_frames", "frame_stride", "channels", "num_heads"):
            _positive(self.name, field, getattr(self, field))
        if self.channels % self.num_heads:
            raise ValueError(
                f"task {self.name}: channels={self.channels} must be divisible by num_heads={self.num_heads}"
            )
        for field in ("layer_fraction", "finetune_layer_fraction"):
            value = getattr(self, field)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"task {self.name}: {field} must be in [0, 1], got {value!r}")

    # ------------------------------------------------------------------ configuration
    @classmethod
    def option_names(cls) -> list[str]:
        """The keys ``get_task`` accepts as overrides."""
        return [f.name for f in dataclasses.fields(cls)]

    def options(self) -> dict[str, Any]:
        """The task's settings as a plain dict (e.g. for results files)."""
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ metrics
    @property
    def metric_specs(self) -> dict[str, MetricSpec]:
        """Every metric key this task returns → its direction and data-set reducer."""
        return prefixed(self.name, self.metric_names)

    @property
    def primary_metric(self) -> str:
        return f"{self.name}/{self.primary_metric_name}"

    def key(self, metric: str) -> str:
        return f"{self.name}/{metric}"

    # ------------------------------------------------------------------ clips
    @property
    def train_frame_stride(self) -> int:
        """Stride of training clips (the evaluation stride unless a task trains on other data)."""
        return self.frame_stride

    def train_window(self, sample: Sample, generator: torch.Generator) -> Sample:
        """A random ``num_frames``-frame window at the training stride (short samples repeat their last
        frame, :func:`fourds.data.clips.clip_indices`)."""
        indices = random_clip(num_frames_of(sample), self.num_frames, self.train_frame_stride, generator)
        return select_frames(sample, indices)

    def eval_windows(self, sample: Sample) -> list[list[int]]:
        """Frame indices of the evaluation clips of a sample: one centred clip."""
        return eval_clips(num_frames_of(sample), self.num_frames, self.frame_stride, 1)

    def evaluate_clips(self, sample: Sample) -> list[Sample]:
        """The evaluation clips of a sample (each then goes through :meth:`eval_transform`)."""
        return [select_frames(sample, idx) for idx in self.eval_windows(sample)]

    def _as_clip(self, sample: Sample) -> Sample:
        """A sample that is not yet a clip (more or fewer frames) → its centred evaluation window."""
        if num_frames_of(sample) == self.num_frames:
            return sample
        return select_frames(sample, self.eval_windows(sample)[0])

    # ------------------------------------------------------------------ transforms
    def train_transform(self, sample: Sample, generator: torch.Generator) -> Sample:
        """Random temporal window, then :meth:`train_geometry` (or the evaluation geometry when
        ``augment`` is False)."""
        if not self.augment:
            return self.eval_transform(sample)
        return self.train_geometry(self.train_window(sample, generator), generator)

    def eval_transform(self, sample: Sample) -> Sample:
        """Deterministic: centred window if the sample is not a clip yet, then :meth:`eval_geometry`."""
        return self.eval_geometry(self._as_clip(sample))

    def train_geometry(self, clip: Sample, generator: torch.Generator) -> Sample:
        """The task's random spatial (and colour) augmentation of a clip."""
        raise NotImplementedError

    def eval_geometry(self, clip: Sample) -> Sample:
        """The task's deterministic spatial evaluation transform of a clip."""
        raise NotImplementedError

    # ------------------------------------------------------------------ model side
    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module:
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Sample) -> Tensor:
        raise NotImplementedError

    def metrics(self, outputs: Any, batch: Sample) -> dict[str, Tensor]:
        raise NotImplementedError

    def predictions(self, outputs: Any, batch: Sample) -> dict[str, Tensor]:
        return {}

    # ------------------------------------------------------------------ data
    def dataset(self, split: str, data_root: str | None = None, **kwargs: Any) -> Any:
        """The map-style dataset of samples of ``split``, read by ``fourds.data.datasets``.

        Args:
            split: ``"train"`` or an evaluation split name of the reader.
            data_root: folder holding the data set (``docs/datasets.md``); required unless ``kwargs``
                gives ``<dataset>_root``.
            kwargs: protocol and reader options of ``fourds.data.datasets.task_dataset``.
        """
        from fourds.data import datasets

        # A missing data_root raises DatasetLayoutError (a ValueError) naming the flag to pass.
        return datasets.task_dataset(self.name, split, data_root, **kwargs)


def count_readout_params(task: Any, dim: int, grid: tuple[int, int, int] = (8, 14, 14)) -> int:
    """Parameters of ``task.build_readout(dim, grid)``, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        return int(sum(p.numel() for p in task.build_readout(dim, grid).parameters()))


__all__ = [
    "QUERY_KEYS",
    "TIME_AXIS",
    "Sample",
    "Task",
    "TaskContract",
    "class_names",
    "clip_merger",
    "count_readout_params",
    "declared_metric_specs",
    "evaluation_clips",
    "finetune_fraction",
    "frame_size_of",
    "has_dataset",
    "num_frames_of",
    "prediction_fn",
    "prefixed",
    "select_frames",
    "task_options",
]
