"""Per-sample metric values gathered over a split and reduced with each metric's declared reducer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from fourds.metrics import MetricSpec, metric_spec, reduce
from fourds.tasks.base import TaskContract, declared_metric_specs

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = ("/weight", "_weight")


def spec_for(task: TaskContract, key: str) -> MetricSpec | None:
    """The task's declared spec of metric ``key`` (``task.metric_specs`` as a mapping or a sequence of
    :class:`MetricSpec`), else the library's by suffix (:func:`fourds.metrics.metric_spec`), else None."""
    specs = declared_metric_specs(task)
    if isinstance(specs, Mapping) and key in specs:
        return specs[key]
    if isinstance(specs, (list, tuple)):
        for s in specs:
            if s.name == key:
                return s
    try:
        return metric_spec(key)
    except ValueError:
        return None


def primary_spec(task: TaskContract) -> tuple[MetricSpec, str]:
    key = task.primary_metric
    spec = spec_for(task, key)
    if spec is None:
        raise ValueError(
            f"task {task.name!r}: primary metric {key!r} has no MetricSpec (declare it in task.metric_specs) "
            "so the probe cannot tell whether higher or lower is better"
        )
    return spec, key


def _weight_base(key: str) -> str | None:
    for suffix in _WEIGHT_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return None


class MetricAccumulator:
    """Collects ``task.metrics(outputs, batch)`` per batch and reduces them per metric.

    Weighted metrics (e.g. AbsRel by valid-pixel count) take their per-sample weights from
    ``task.metric_weights(outputs, batch)`` when the task has it, or from ``<key>_weight`` /
    ``<key>/weight`` entries of the metrics dict.
    """

    def __init__(self, task: TaskContract) -> None:
        self.task = task
        self.values: dict[str, list[Tensor]] = {}
        self.weights: dict[str, list[Tensor]] = {}

    def add(self, outputs: Any, batch: dict[str, Any]) -> None:
        metrics = dict(self.task.metrics(outputs, batch))
        weights = {}
        if hasattr(self.task, "metric_weights"):
            weights.update(self.task.metric_weights(outputs, batch))
        for key in list(metrics):
            base = _weight_base(key)
            if base is not None and base in metrics:
                weights[base] = metrics.pop(key)
        for key, value in metrics.items():
            self.values.setdefault(key, []).append(value.detach().reshape(-1).to("cpu", torch.float64))
        for key, value in weights.items():
            self.weights.setdefault(key, []).append(value.detach().reshape(-1).to("cpu", torch.float64))

    def _gathered(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        local = ({k: torch.cat(v) for k, v in self.values.items()}, {k: torch.cat(v) for k, v in self.weights.items()})
        if not (dist.is_available() and dist.is_initialized()):
            return local
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        values: dict[str, list[Tensor]] = {}
        weights: dict[str, list[Tensor]] = {}
        for v, w in parts:
            for k, t in v.items():
                values.setdefault(k, []).append(t)
            for k, t in w.items():
                weights.setdefault(k, []).append(t)
        return {k: torch.cat(v) for k, v in values.items()}, {k: torch.cat(v) for k, v in weights.items()}

    def samples(self, key: str) -> dict[str, list[float]]:
        """Metric ``key`` per sample, in the order the samples were added (rank by rank under torchrun):
        ``{"values": [...]}`` plus ``"weights"`` for a weighted metric. What a bootstrap over the data set
        resamples (``spec.reduce(values[idx], weights[idx])`` is the figure of a resample). Collective under
        torchrun, like :meth:`reduce`."""
        values, weights = self._gathered()
        if key not in values:
            raise KeyError(f"metric {key!r} was not computed; computed: {sorted(values)}")
        out = {"values": values[key].tolist()}
        if key in weights:
            out["weights"] = weights[key].tolist()
        return out

    def reduce(self) -> dict[str, float]:
        """Data-set figure per metric (collective under torchrun: every rank must call it)."""
        values, weights = self._gathered()
        out = {}
        for key, v in values.items():
            spec = spec_for(self.task, key)
            if spec is None:
                out[key] = reduce(v)
            elif spec.reducer == "weighted":
                if key in weights:
                    out[key] = spec.reduce(v, weights[key])
                else:
                    log.warning("metric %s is declared weighted by %s but the task gave no weights; using the "
                                "plain mean over samples", key, spec.weight)
                    out[key] = reduce(v, skip_nan=True)
            else:
                out[key] = spec.reduce(v)
        out["num_samples"] = float(max((len(v) for v in values.values()), default=0))
        return out
