"""Run folders where model folders are expected, and errors inside the adapters package, are reported
for what they are."""

import importlib
import json
import sys

import numpy as np
import pytest

import fourds.models
from fourds.cli import main
from fourds.models import create, load, save_model
from fourds.train import PretrainConfig
from fourds.probe.protocol import resolve_backbone


@pytest.fixture
def run_dir(tmp_path):
    """A pretraining run folder as `fourds pretrain` leaves it mid-run: config.json + a checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**PretrainConfig(out=str(run)).to_dict(), "world_size": 1}))
    save_model(create("4ds-tiny"), run / "checkpoints" / "step_00000004")
    return run


def test_a_pretraining_run_folder_names_its_model_folders(run_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"is a pretraining run folder .*use .*checkpoints/step_00000004"):
        load(run_dir)
    assert load(run_dir / "checkpoints" / "step_00000004").num_layers == 4  # what the message proposes works
    save_model(create("4ds-tiny"), run_dir / "model")
    with pytest.raises(ValueError, match=r"use .*run/model or .*step_00000004"):
        resolve_backbone(str(run_dir))  # fourds probe --backbone RUN_DIR
    np.save(tmp_path / "v.npy", np.zeros((4, 64, 64, 3), np.uint8))
    assert main(["extract", str(run_dir), str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "is a pretraining run folder" in capsys.readouterr().err


def test_a_probe_run_folder_is_named(tmp_path):
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "config.json").write_text(json.dumps({"backbone": "4ds-tiny", "task": "synth_depth"}))
    with pytest.raises(ValueError, match=r"is a probe run folder"):
        load(tmp_path / "probe")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(ValueError, match=r"has kind=None; known kinds"):
        load(tmp_path / "other")


def test_a_dependency_missing_inside_the_adapters_is_shown(tmp_path, monkeypatch):
    # The adapters package is always there; one that fails to import (a dependency missing inside it)
    # shows that error rather than a vague "unknown backbone".
    monkeypatch.delitem(sys.modules, "fourds.models.adapters", raising=False)
    fake = tmp_path / "pkgs" / "adapters"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import a_dependency_that_is_not_installed_xyz\n")
    monkeypatch.setattr(fourds.models, "__path__", [str(tmp_path / "pkgs"), *fourds.models.__path__])
    importlib.invalidate_caches()
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed_xyz"):
        resolve_backbone("hf:some/model")
    monkeypatch.delitem(sys.modules, "fourds.models.adapters", raising=False)
