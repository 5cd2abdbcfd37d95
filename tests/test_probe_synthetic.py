"""``fourds probe`` / ``fourds report`` end to end on the synthetic tasks with a tiny backbone (CPU, CI-sized)."""

import json
from pathlib import Path

import pytest
import torch

from fourds import tasks
from fourds.probe.metrics import primary_spec
from fourds.cli import main

SYNTH = [name for name in tasks.list_tasks() if name.startswith("synth_")]
COMMON = ["--backbone", "4ds-tiny", "--backbone-overrides", "depth=2", "--steps", "2", "--batch-size", "2",
          "--warmup-steps", "1", "--lrs", "1e-3", "--max-eval-samples", "2", "--save-every", "2", "--no-tensorboard"]


def assert_samples_reduce_to_the_figure(res: dict, name: str) -> None:
    """``test_samples`` holds one primary value per evaluation sample (and its weight for a weighted
    metric); reduced with the metric's own reducer they give the reported figure."""
    samples, key = res["test_samples"], res["primary_metric"]
    assert samples["metric"] == key and len(samples["values"]) == len(samples["indices"]) == 2, name
    spec = primary_spec(tasks.get_task(name))[0]
    figure = spec.reduce(torch.tensor(samples["values"], dtype=torch.float64),
                         torch.tensor(samples["weights"], dtype=torch.float64) if "weights" in samples else None)
    assert float(figure) == pytest.approx(res["test"][key], rel=1e-9, nan_ok=True), name
    assert ("weights" in samples) == (spec.reducer == "weighted"), name


def test_frozen_on_every_synthetic_task_then_finetune_and_report(tmp_path):
    assert SYNTH, "the tasks registry lists no synthetic task"
    runs = []
    for name in SYNTH:
        out = tmp_path / name
        assert main(["probe", *COMMON, "--task", name, "--layers", "0.5", "1.0", "--visualize", "1",
                     "--out", str(out)]) == 0, name
        res = json.loads((out / "results.json").read_text())
        assert res["chosen"] is not None and res["backbone_forward_calls"]["train"] == 2, name
        assert res["primary_metric"] in res["test"], name
        assert_samples_reduce_to_the_figure(res, name)
        runs.append(out)
    ft = tmp_path / "finetune"
    assert main(["probe", *COMMON, "--task", SYNTH[0], "--finetune", "--weight-decays", "1e-4",
                 "--out", str(ft)]) == 0
    ft_res = json.loads((ft / "results.json").read_text())
    assert ft_res["mode"] == "finetune"
    assert_samples_reduce_to_the_figure(ft_res, SYNTH[0])
    assert main(["report", *map(str, runs), str(ft), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "results.md").read_text()
    assert all(name in md for name in SYNTH)
    assert (tmp_path / "report" / "layer_depth.svg").is_file() and (tmp_path / "report" / "size_scaling.png").is_file()
    drawn = [p for run in runs for p in (Path(run) / "visualizations").glob("*.png")] if runs else []
    assert drawn, "no qualitative figure was written for any synthetic task"
