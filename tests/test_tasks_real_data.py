"""The six real tasks on the dataset readers' on-disk fixtures: task.dataset → train/eval transforms →
collate → readout → loss and metrics, through the protocol each task records (fourds.data.datasets)."""

from __future__ import annotations

import pytest
import torch
from _dataset_fixtures import (
    write_k700,
    write_movi_e,
    write_perception_test,
    write_re10k,
    write_scannet,
    write_ssv2,
    write_waymo,
)

from fourds.data import to_float
from fourds.data.collate import collate_samples
from fourds.tasks import get_task

pytest.importorskip("fourds.data.datasets")

SMALL = dict(num_frames=4, input_size=(32, 32), channels=16, num_heads=2)
EXTRA = {"ssv2": dict(num_classes=3), "k700": dict(num_classes=3, eval_num_clips=2),
         "perception_test": dict(embed_dim=16), "waymo": dict(embed_dim=16)}


def write(name: str, root) -> None:
    """Fixture data for the task's train and evaluation datasets under ``root``."""
    if name == "ssv2":
        write_ssv2(root, frames=40)
    elif name == "k700":
        write_k700(root, frames=24)
    elif name == "re10k":
        write_re10k(root, "train", "seqA", 40, 100)
        write_re10k(root, "test", "seqB", 40, 300)
    elif name == "perception_test":
        write_movi_e(root / "movi_e")
        write_perception_test(root / "perception_test", n_frames=70)
    elif name == "waymo":
        write_waymo(root, "training", "seg_b", n=40)
        write_waymo(root, "validation", "seg_a", n=40, seed=1)
    elif name == "scannet":
        write_scannet(root)


@pytest.mark.parametrize("name", ["ssv2", "k700", "re10k", "perception_test", "waymo", "scannet"])
def test_task_runs_on_its_reader(name: str, tmp_path) -> None:
    task = get_task(name, **{**SMALL, **EXTRA.get(name, {})})
    write(name, tmp_path)
    train = task.dataset("train", data_root=str(tmp_path))
    evaluation = task.dataset("test", data_root=str(tmp_path))
    assert len(train) > 0 and len(evaluation) > 0
    g = torch.Generator().manual_seed(0)
    samples = [task.train_transform(train[i % len(train)], g) for i in range(2)]
    clips = [task.eval_transform(c) for c in task.evaluate_clips(evaluation[0])]
    if name == "k700":
        assert len(clips) == 2
    for batch in (collate_samples(samples), collate_samples(clips)):
        assert batch["video"].shape[1:4] == (4, 32, 32), name
        b = batch["video"].shape[0]
        features = torch.randn(b, 2, 4, 8)
        outputs = task.build_readout(8, (2, 2, 2))(features, batch)
        loss = task.loss(outputs, batch)
        assert torch.isfinite(loss), name
        metrics = task.metrics(outputs, batch)
        assert metrics[task.primary_metric].shape == (b,)
    assert to_float(batch["video"]).max() <= 1.0
