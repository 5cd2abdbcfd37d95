"""The probe: K independent readouts on one backbone pass, exact resume, finetuning, feature cache."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fourds.models import create
from fourds.probe.protocol import run_probe
from fourds.probe.config import ProbeConfig

sys.path.insert(0, str(Path(__file__).parent))
from probe_toy import ToyTask  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
TOY = str(Path(__file__).resolve().parent / "probe_toy.py")
TINY = {"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64}


def cfg(tmp_path, name="run", **kw) -> ProbeConfig:
    base = dict(backbone="4ds-tiny", backbone_overrides=TINY, out=str(tmp_path / name), steps=6, batch_size=4,
                warmup_steps=2, lrs=[1e-3], layers=[2], save_every=3, log_every=1, tensorboard=False)
    return ProbeConfig(**{**base, **kw})


def head_weights(run, name=None) -> dict:
    heads = Path(run) / "heads"
    names = [name] if name else sorted(p.name for p in heads.iterdir())
    return {f"{n}/{k}": v for n in names for k, v in load_file(str(heads / n / "model.safetensors")).items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class CountingBackbone(torch.nn.Module):
    """Counts ``features`` calls independently of the probe's own counter."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0
        for attr in ("num_layers", "dim", "patch_size", "input_size", "grid"):
            setattr(self, attr, getattr(inner, attr))

    def token_grid(self, shape):
        return self.inner.token_grid(shape)

    def features(self, video, layers=None):
        self.calls += 1
        return self.inner.features(video, layers)


def test_sweep_trains_independent_readouts_in_one_backbone_pass(tmp_path):
    task = ToyTask()
    backbone = CountingBackbone(create("4ds-tiny", input_size=(4, 32, 32), **TINY))
    backbone.inner.init_weights(seed=0)
    sweep = run_probe(cfg(tmp_path, "sweep", lrs=[1e-3, 3e-3], layers=[1, 2]), backbone=backbone, task=task)
    assert len(sweep["configs"]) == 4
    # One backbone pass per batch for all 4 readouts: 6 training steps + 2 eval batches (4 test, 1 val sample).
    assert sweep["backbone_forward_calls"] == {"train": 6, "eval": 2, "cache": 0}
    assert backbone.calls == 8
    solo = run_probe(cfg(tmp_path, "solo", lrs=[3e-3], layers=[1]), task=task)
    name = "L01_lr0.003_wd0.0001"
    assert_same(head_weights(tmp_path / "sweep", name), head_weights(tmp_path / "solo", name))
    by_name = {c["name"]: c for c in sweep["configs"]}
    assert by_name[name]["test"] == solo["configs"][0]["test"]
    chosen = sweep["configs"][sweep["chosen_index"]]
    assert all(chosen["val"]["toy_mse"] <= c["val"]["toy_mse"] for c in sweep["configs"])
    assert sweep["select_on"] == "train-holdout" and "held-out" in sweep["selection"]
    saved = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert saved["chosen"] == chosen["name"] and saved["config"]["lrs"] == [1e-3, 3e-3]


def run_script(out, args, env_extra=None, check=True, launcher=()):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run([sys.executable, *launcher, TOY, str(out), *args], env=env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_sigkill_then_resume_ends_with_identical_readouts(tmp_path):
    args = ['backbone_overrides={"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64}', "steps=6", "batch_size=4",
            "warmup_steps=2", "lrs=[0.001, 0.003]", "layers=[1, 2]", "save_every=2", "tensorboard=false"]
    run_script(tmp_path / "whole", args)
    killed = run_script(tmp_path / "cut", args, env_extra={"FOURDS_FAULT_AT_STEP": "5"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    run_script(tmp_path / "cut", [*args, "resume=true"])
    assert_same(head_weights(tmp_path / "whole"), head_weights(tmp_path / "cut"))
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "cut"))
    assert a["configs"] == b["configs"] and b["backbone_forward_calls"]["train"] == 6


def test_finetune_trains_the_backbone_up_to_the_readout_layer(tmp_path):
    task = ToyTask()
    res = run_probe(cfg(tmp_path, finetune=True, steps=3, lrs=[1e-3], weight_decays=[1e-4, 5e-2], layers=[1]), task=task)
    assert [c["name"] for c in res["configs"]] == ["L01_lr0.001_wd0.0001", "L01_lr0.001_wd0.05"]
    assert res["mode"] == "finetune" and res["config"]["warmup_steps"] == 2
    before = create("4ds-tiny", input_size=(4, 32, 32), **TINY)
    before.init_weights(seed=0)
    after = load_file(str(tmp_path / "run" / "runs" / "L01_lr0.001_wd0.0001" / "model" / "model.safetensors"))
    initial = before.state_dict()
    assert not torch.equal(after["blocks.0.mlp.fc1.weight"], initial["blocks.0.mlp.fc1.weight"])
    for key in after:  # the block after the readout layer never runs and stays as initialised
        if key.startswith("blocks.1."):
            assert torch.equal(after[key], initial[key]), key
    assert res["backbone_forward_calls"]["train"] == 2 * 3


def test_feature_cache_skips_the_backbone_and_refuses_random_augmentation(tmp_path):
    task = ToyTask(augment=False)
    cache = str(tmp_path / "cache")
    first = run_probe(cfg(tmp_path, "a", feature_cache=cache), task=task)
    calls = first["backbone_forward_calls"]
    assert calls["train"] == 0 and calls["eval"] == 0 and calls["cache"] > 0
    second = run_probe(cfg(tmp_path, "b", feature_cache=cache), task=task)
    assert second["backbone_forward_calls"] == {"train": 0, "eval": 0, "cache": 0}
    plain = run_probe(cfg(tmp_path, "c"), task=task)
    for x, y in zip(second["configs"], plain["configs"]):
        assert x["test"]["toy_mse"] == pytest.approx(y["test"]["toy_mse"], rel=1e-5)
    with pytest.raises(ValueError, match="random augmentation"):
        run_probe(cfg(tmp_path, "d", feature_cache=cache), task=ToyTask(augment=True))


def test_select_on_eval_and_config_errors(tmp_path):
    res = run_probe(cfg(tmp_path, select_on="eval", steps=2), task=ToyTask())
    assert res["configs"][0]["val"] == res["configs"][0]["test"] and "paper" in res["selection"]
    with pytest.raises(ValueError, match="--select-on 'best'"):
        run_probe(cfg(tmp_path, "x", select_on="best"), task=ToyTask())
    with pytest.raises(ValueError, match="--resume"):
        run_probe(cfg(tmp_path, select_on="eval", steps=2), task=ToyTask())
    with pytest.raises(ValueError, match="layer index 7 out of range"):
        run_probe(cfg(tmp_path, "y", layers=[7]), task=ToyTask())


def test_two_ranks_train_the_same_readouts_as_one_process(tmp_path):
    args = ['backbone_overrides={"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64}', "steps=3", "batch_size=4",
            "warmup_steps=1", "lrs=[0.001, 0.003]", "layers=[1, 2]", "save_every=3", "tensorboard=false"]
    run_script(tmp_path / "ddp", args, launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"))
    run_script(tmp_path / "one", args)
    a, b = head_weights(tmp_path / "one"), head_weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    ra, rb = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "ddp"))
    assert rb["config"]["world_size"] == 2
    for x, y in zip(ra["configs"], rb["configs"]):  # evaluation gathered over both ranks' shards
        assert x["test"]["num_samples"] == y["test"]["num_samples"] == 4
        assert x["test"]["toy_mse"] == pytest.approx(y["test"]["toy_mse"], rel=1e-4)
        # per-sample values come back in the split's order, whatever rank evaluated them
        assert x["test_samples"]["indices"] == y["test_samples"]["indices"]
        assert len(set(x["test_samples"]["values"])) == 4
        assert x["test_samples"]["values"] == pytest.approx(y["test_samples"]["values"], rel=1e-4)


def test_resume_takes_the_saved_settings_and_refuses_changes(tmp_path):
    first = run_probe(cfg(tmp_path, steps=4, save_every=2), task=ToyTask())
    # Only out + resume given: everything else comes from the run's config.json (steps 4, lr 1e-3, ...).
    again = run_probe(ProbeConfig(out=str(tmp_path / "run"), resume=True, tensorboard=False), task=ToyTask())
    assert again["config"]["steps"] == 4 and again["config"]["lrs"] == [1e-3]
    assert again["test"] == first["test"]
    with pytest.raises(ValueError, match=r"--lrs \[0\.01\] \(saved: \[0\.001\]\)"):
        run_probe(ProbeConfig(out=str(tmp_path / "run"), resume=True, lrs=[1e-2]), task=ToyTask())
