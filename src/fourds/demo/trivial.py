"""Each synthetic task's trivial answer, measured on the test scenes with the task's own metric.

A readout that learned nothing from its features still scores something; these are the scores of
answers that use no features at all, so the demo table shows how far each row gets beyond them:

- ``synth_tracking``: every point stays at its query position and is predicted visible;
- ``synth_boxes``: every box stays where it is in the first frame;
- ``synth_pose``: the mean relative pose of the training scenes;
- ``synth_depth``: the median training depth everywhere;
- ``synth_motion``: the most frequent training class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fourds.data.collate import collate_samples
from fourds.probe.metrics import MetricAccumulator, primary_spec

TRIVIAL_ANSWERS = {
    "synth_tracking": "points stay at their query, all visible",
    "synth_boxes": "boxes stay at their first-frame box",
    "synth_pose": "the training scenes' mean relative pose",
    "synth_depth": "the training scenes' median depth everywhere",
    "synth_motion": "the most frequent training class",
}


def _batch(task: Any, pool: Any) -> dict[str, Tensor]:
    return collate_samples([task.eval_transform(pool[i]) for i in range(len(pool))])


def trivial_outputs(task: Any, train: Any, batch: dict[str, Tensor]) -> Any:
    """The trivial answer of ``task`` (by name) for ``batch``, in the readout's output format."""
    h, w = task.input_size
    if task.name == "synth_tracking":
        tracks = batch["tracks"].float()
        points = (tracks[:, :, :1] / torch.tensor([w, h])).expand_as(tracks).clone()
        visible = torch.full(tracks.shape[:3], -10.0)
        return {"points": points, "occlusion_logit": visible, "uncertainty_logit": visible.clone()}
    if task.name == "synth_boxes":
        boxes = batch["boxes"].float()
        return (boxes[:, :, :1] / torch.tensor([w, h, w, h])).expand_as(boxes).clone()
    if task.name == "synth_pose":
        mean = task.target(_batch(task, train)).flatten(1).mean(0)
        return mean.expand(batch["cam_to_world"].shape[0], -1).clone()
    if task.name == "synth_depth":
        depth = _batch(task, train)["depth"].float()
        valid = (depth > task.min_depth) & (depth < task.max_depth)
        return torch.full_like(batch["depth"].float(), float(depth[valid].median()))
    if task.name == "synth_motion":
        labels = torch.stack([torch.as_tensor(train[i]["label"]) for i in range(len(train))]).long()
        logits = torch.zeros(batch["label"].shape[0], task.num_classes)
        logits[:, int(torch.bincount(labels, minlength=task.num_classes).argmax())] = 1.0
        return logits
    raise ValueError(f"no trivial answer for task {task.name!r}; known: {sorted(TRIVIAL_ANSWERS)}")


def trivial_metrics(task: Any, train: Any, test: Any) -> dict[str, float]:
    """The task's metrics (reduced as the probe reduces them) of its trivial answer on ``test``."""
    return trivial_scores(task, train, test)[0]


def trivial_scores(task: Any, train: Any, test: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`trivial_metrics`, and the primary metric per test scene in the probe's ``test_samples``
    form (``metric``, ``indices``, ``values``, ``weights`` for a weighted metric), for paired bootstraps."""
    batch = _batch(task, test)
    acc = MetricAccumulator(task)
    acc.add(trivial_outputs(task, train, batch), batch)
    key = primary_spec(task)[1]
    samples = {"metric": key, "indices": list(range(len(test))), **acc.samples(key)}
    return {k: float(v) for k, v in acc.reduce().items()}, samples
