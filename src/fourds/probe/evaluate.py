"""Evaluation and selection: every head's metrics on a split (gathered over ranks, per-sample values for the
bootstrap), and the choice of the best configuration on validation by the task's primary metric."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from fourds.probe.data import (
    EvalClips,
    ShardSampler,
    collate_clips,
    collate_fn,
    first_clip_batch,
    make_loader,
    merge_clip_outputs,
    to_device,
    tree_map,
)
from fourds.probe.metrics import MetricAccumulator, primary_spec
from fourds.tasks.base import TaskContract
from fourds.train.distributed import DistInfo


def float_outputs(outputs: Any) -> Any:
    """Losses and metrics in float32 (outputs may be bf16 under autocast)."""
    return tree_map(lambda t: t.float() if t.is_floating_point() else t, outputs)



@torch.no_grad()
def evaluate(task: TaskContract, outputs_of: Callable[[dict], list[Any]], loader: Any, num_heads: int,
             info: DistInfo) -> list[dict[str, float]]:
    """Every head's data-set metrics on one split (each rank evaluates its shard; gathered)."""
    return [acc.reduce() for acc in _accumulate(task, outputs_of, loader, num_heads, info)]


@torch.no_grad()
def evaluate_with_samples(task: TaskContract, outputs_of: Callable[[dict], list[Any]], loader: Any, num_heads: int,
                          info: DistInfo, indices: list[int]) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    """:func:`evaluate`, and every head's primary metric per evaluated sample in ``indices`` order
    (``{"metric", "indices", "values"[, "weights"]}``: what a paired bootstrap over the split resamples)."""
    _, key = primary_spec(task)
    accs = _accumulate(task, outputs_of, loader, num_heads, info)
    order = [j for r in range(info.world_size) for j in range(r, len(indices), info.world_size)]  # gathered order
    samples = []
    for acc in accs:
        raw = acc.samples(key)
        placed = {name: [0.0] * len(indices) for name in raw}
        for pos, j in enumerate(order):
            for name, vals in raw.items():
                placed[name][j] = vals[pos]
        samples.append({"metric": key, "indices": list(indices), **placed})
    return [acc.reduce() for acc in accs], samples


def _accumulate(task: TaskContract, outputs_of: Callable[[dict], list[Any]], loader: Any, num_heads: int,
                info: DistInfo) -> list[MetricAccumulator]:
    accs = [MetricAccumulator(task) for _ in range(num_heads)]
    for batch, counts in loader:
        batch = to_device(batch, info.device)
        outputs = outputs_of(batch)
        labels = first_clip_batch(batch, counts)
        for acc, out in zip(accs, outputs):
            acc.add(merge_clip_outputs(task, float_outputs(out), counts), labels)
    return accs


def eval_loader(load_clips: Callable[[int], list[dict]], indices: list[int], batch_size: int, info: DistInfo,
                num_workers: int) -> Any:
    """This rank's evaluation batches: ``(clip batch, clips per sample)``."""
    return make_loader(EvalClips(load_clips, indices), ShardSampler(len(indices), batch_size, info.rank, info.world_size),
                       collate_clips(collate_fn()), num_workers, info.device.type == "cuda")


def select(task: TaskContract, configs: list[dict[str, Any]]) -> int | None:
    """Index of the best non-diverged configuration on ``val`` by the task's primary metric."""
    spec, key = primary_spec(task)
    best = None
    for k, r in enumerate(configs):
        value = r["val"].get(key, float("nan"))
        if r.get("diverged") or not math.isfinite(value):
            continue
        if best is None or spec.better(value, configs[best]["val"][key]):
            best = k
    return best
