"""Data for probe runs: the held-out slice, step-deterministic training draws, evaluation clips, batching.

Exact resume: the samples of step ``s`` and their augmentation are pure functions of ``(seed, s)``.
Global step ``s`` owns draw ids ``[s*G, (s+1)*G)`` (:class:`fourds.data.pretrain.StepBatchSampler`);
draw ``n`` reads position ``n mod S`` of epoch ``n // S``'s permutation of the ``S`` training samples
(as many epochs as the step budget needs, as in the paper) and augments it with a generator seeded by
``(seed, n)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from fourds.data.collate import collate_samples
from fourds.seeding import derive_seed, generator
from fourds.probe.config import ProbeConfig
from fourds.tasks.base import TaskContract, clip_merger, evaluation_clips, has_dataset

Sample = dict[str, Any]


def holdout_split(num_samples: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(num_samples)`` into (train, held-out) index lists; the held-out slice is a seeded
    random ``fraction`` of the set (at least one sample, and at least one left to train on)."""
    if num_samples < 2:
        raise ValueError(
            f"the training split has {num_samples} sample(s); --select-on train-holdout needs at least 2 "
            "(use a larger training set or --select-on eval)"
        )
    n_hold = min(num_samples - 1, max(1, round(fraction * num_samples)))
    perm = torch.randperm(num_samples, generator=generator(seed, "probe-holdout")).tolist()
    return sorted(perm[n_hold:]), sorted(perm[:n_hold])


def _window_sampler(load: Callable[[int], Sample]) -> Callable[[int, torch.Generator], Sample] | None:
    """The ``sample(index, generator)`` method of the dataset behind ``load``, if it has one that takes a
    generator (``SyntheticScenes.sample(index)``, for instance, does not: it is then not used)."""
    owner = getattr(load, "__self__", load)
    method = getattr(owner, "sample", None)
    if not callable(method):
        return None
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return method


class TrainDraws(Dataset):
    """Map draw id ``n`` → an augmented training sample (see the module docstring).

    When ``load`` is a dataset's ``__getitem__`` (or the dataset itself) and that dataset has a method
    ``sample(index, generator)`` (the real-data readers: a random temporal window, decoding only that
    window), draw ``n`` calls it with a generator seeded by ``(seed, "probe-window", n)`` instead of
    ``load(index)``; the augmentation generator ``(seed, "probe-aug", n)`` is unchanged.

    Args:
        load: ``index → sample`` (the task's dataset or its ``__getitem__``, or the feature cache).
        indices: dataset indices to train on.
        transform: ``(sample, generator) → sample`` (the task's ``train_transform``), or None.
        seed: run seed.
    """

    def __init__(self, load: Callable[[int], Sample], indices: Sequence[int],
                 transform: Callable[[Sample, torch.Generator], Sample] | None, seed: int) -> None:
        if not indices:
            raise ValueError("no training samples: the training split is empty")
        self.load, self.indices, self.transform, self.seed = load, list(indices), transform, seed
        self.window = _window_sampler(load)
        self._epoch, self._perm = -1, None

    def __len__(self) -> int:  # draw ids are unbounded; the sampler decides what is read
        return 1 << 62

    def index_of(self, draw: int) -> int:
        """Dataset index read by draw ``draw``."""
        epoch, pos = divmod(int(draw), len(self.indices))
        if epoch != self._epoch:
            self._perm = torch.randperm(len(self.indices), generator=generator(self.seed, "probe-epoch", epoch))
            self._epoch = epoch
        return self.indices[int(self._perm[pos])]  # type: ignore[index]

    def __getitem__(self, draw: int) -> Sample:
        index = self.index_of(draw)
        if self.window is not None:
            sample = self.window(index, torch.Generator().manual_seed(derive_seed(self.seed, "probe-window", int(draw))))
        else:
            sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample, torch.Generator().manual_seed(derive_seed(self.seed, "probe-aug", int(draw))))
        return sample


class EvalClips(Dataset):
    """Item ``i`` → the list of evaluation clips of sample ``indices[i]`` (``task.evaluate_clips`` of the
    sample, each through ``task.eval_transform``), or the cached clips."""

    def __init__(self, load: Callable[[int], list[Sample]], indices: Sequence[int]) -> None:
        self.load, self.indices = load, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> list[Sample]:
        return self.load(self.indices[i])


def task_clips(task: TaskContract, dataset: Any) -> Callable[[int], list[Sample]]:
    """``index → [eval_transform(clip) for clip in task.evaluate_clips(dataset[index])]``."""
    def load(index: int) -> list[Sample]:
        sample = dataset[index]
        clips = evaluation_clips(task, sample)
        return [task.eval_transform(clip) for clip in clips]
    return load


class ShardSampler(Sampler[list[int]]):
    """Evaluation batches of this rank: items ``rank, rank + world, ...`` in batches of ``batch_size``."""

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.items = list(range(rank, num_items, world_size))
        self.batch_size = batch_size

    def __iter__(self):
        for i in range(0, len(self.items), self.batch_size):
            yield self.items[i:i + self.batch_size]

    def __len__(self) -> int:
        return (len(self.items) + self.batch_size - 1) // self.batch_size


def collate_fn() -> Callable[[list[Sample]], Sample]:
    """The probe's collate function: :func:`fourds.data.collate.collate_samples` (stacks equal shapes and
    pads variable track/box counts with validity masks)."""
    return collate_samples


def collate_clips(collate: Callable[[list[Sample]], Sample]) -> Callable[[list[list[Sample]]], tuple[Sample, list[int]]]:
    """Batch of per-sample clip lists → (one batch of all clips, clips per sample)."""
    def fn(items: list[list[Sample]]) -> tuple[Sample, list[int]]:
        counts = [len(clips) for clips in items]
        return collate([clip for clips in items for clip in clips]), counts
    return fn


def make_loader(dataset: Dataset, batch_sampler: Sampler, collate: Callable, num_workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers, pin_memory=pin,
        persistent_workers=False, prefetch_factor=2 if num_workers > 0 else None,
    )


def tree_map(fn: Callable[[Tensor], Tensor], obj: Any) -> Any:
    """Apply ``fn`` to every tensor inside nested dicts / lists / tuples."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: tree_map(fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tree_map(fn, v) for v in obj)
    return obj


def to_device(batch: Sample, device: torch.device) -> Sample:
    return tree_map(lambda t: t.to(device, non_blocking=True), batch)


def first_clip_batch(batch: Sample, counts: list[int]) -> Sample:
    """The rows of a clip batch that are each sample's first clip (the per-sample labels)."""
    if all(c == 1 for c in counts):
        return batch
    starts = torch.tensor([0, *counts[:-1]]).cumsum(0)
    return tree_map(lambda t: t[starts.to(t.device)] if t.ndim and t.shape[0] == sum(counts) else t, batch)


def merge_clip_outputs(task: TaskContract, outputs: Any, counts: list[int]) -> Any:
    """Combine the outputs of several clips per sample into one per sample.

    Uses ``task.merge_clip_outputs(outputs, counts)`` when the task defines it (K700: softmax average);
    otherwise averages every tensor over each sample's clips.
    """
    if all(c == 1 for c in counts):
        return outputs
    merge = clip_merger(task)
    if merge is not None:
        return merge(outputs, counts)

    def mean(t: Tensor) -> Tensor:
        return torch.stack([part.mean(0) for part in torch.split(t, counts)])
    return tree_map(mean, outputs)


class ProbeData:
    """The datasets and index lists of a run: training indices, validation and evaluation clips."""

    def __init__(self, task: TaskContract, cfg: ProbeConfig, datasets: dict[str, Any] | None = None) -> None:
        datasets = datasets or {}
        if not has_dataset(task) and not {"train", "eval"} <= set(datasets):
            raise ValueError(
                f"task {task.name!r} has no built-in data (only synthetic tasks do); pass "
                "run_probe(..., datasets={'train': ..., 'eval': ...}) with map-style datasets of samples"
            )
        self.train_set = datasets["train"] if "train" in datasets else task.dataset(cfg.train_split, **cfg.data_kwargs)
        self.eval_set = datasets["eval"] if "eval" in datasets else task.dataset(cfg.eval_split, **cfg.data_kwargs)
        n_train, n_eval = len(self.train_set), len(self.eval_set)
        if n_eval == 0:
            raise ValueError(f"the evaluation split {cfg.eval_split!r} of task {task.name!r} is empty")
        if cfg.select_on == "train-holdout":
            self.train_idx, val = holdout_split(n_train, cfg.holdout_fraction, cfg.seed)
        else:
            self.train_idx, val = list(range(n_train)), None
        cap = cfg.max_eval_samples
        self.eval_idx = list(range(n_eval))[:cap]
        self.val_idx = None if val is None else val[:cap]


def clip_size(task: TaskContract) -> tuple[int, int, int]:
    return (int(task.num_frames), *(int(s) for s in task.input_size))  # type: ignore[return-value]
