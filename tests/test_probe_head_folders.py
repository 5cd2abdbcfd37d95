"""A saved probe readout rebuilds through the task registry with the settings it was trained with."""

import torch

from fourds.models import load_module
from fourds.tasks import get_task
from fourds.probe.sweep import save_head
from fourds.probe.sweep import HeadSpec


def test_head_trained_with_task_overrides_reloads_with_them(tmp_path):
    task = get_task("synth_motion", channels=32, num_heads=4)
    grid = (4, 2, 2)
    head = task.build_readout(16, grid)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    save_head(head, tmp_path / "head", task, HeadSpec(layer=2, depth=1.0, lr=1e-3, weight_decay=1e-4), 16, grid)

    loaded = load_module(tmp_path / "head")
    features = torch.randn(2, *grid[:1], grid[1] * grid[2], 16)
    torch.testing.assert_close(loaded(features, {}), head.eval()(features, {}))
    default_width = get_task("synth_motion").build_readout(16, grid)
    assert sum(p.numel() for p in loaded.parameters()) != sum(p.numel() for p in default_width.parameters())
