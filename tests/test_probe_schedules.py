"""Finetuning schedules: ``--steps 20000 40000 80000`` runs every configuration once per length, each with
its own warm-up and cosine over its own length."""

import json
import sys
from pathlib import Path

import pytest

from fourds.cli import main
from fourds.train.optim import warmup_cosine
from fourds.probe.protocol import run_probe
from fourds.probe.config import ProbeConfig

sys.path.insert(0, str(Path(__file__).parent))
from probe_toy import ToyTask  # noqa: E402

TINY = {"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64}


def test_one_finetune_run_per_schedule_length_with_its_own_schedule(tmp_path):
    cfg = ProbeConfig(backbone="4ds-tiny", backbone_overrides=TINY, out=str(tmp_path / "ft"), finetune=True,
                      steps=[2, 4], warmup_steps=1, lrs=[1e-3], weight_decays=[1e-4], layers=[1], batch_size=4,
                      log_every=1, save_every=10, tensorboard=False)
    res = run_probe(cfg, task=ToyTask(n_train=8, n_eval=2))
    names = [c["name"] for c in res["configs"]]
    assert names == ["L01_lr0.001_wd0.0001_s2", "L01_lr0.001_wd0.0001_s4"]
    assert [c["steps"] for c in res["configs"]] == [2, 4] and res["train_steps"] == [2, 4]
    assert res["chosen"] in names and res["backbone_forward_calls"]["train"] == 2 + 4
    for name, steps in zip(names, (2, 4)):
        rows = [json.loads(x) for x in (tmp_path / "ft" / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        lrs = [r[f"{name}/lr"] for r in rows]
        assert lrs == pytest.approx([warmup_cosine(s, steps, 1, 1e-3, 1e-7) for s in range(steps)])
        assert (tmp_path / "ft" / "runs" / name / "model" / "model.safetensors").is_file()


def test_several_lengths_need_finetune_and_the_cli_parses_them(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"--steps 2 4: a frozen probe trains every readout side by side"):
        ProbeConfig(steps=[2, 4]).resolved()
    assert ProbeConfig(steps=[3, 3], finetune=True).resolved().steps == 3  # one distinct length: a plain int
    with pytest.raises(ValueError, match="--steps must be positive integers"):
        ProbeConfig(steps=[2, 0], finetune=True).resolved()
    seen = {}

    def fake_run_probe(cfg, **kwargs):
        seen["cfg"] = cfg
        return {"primary_metric": "m", "chosen": None, "configs": []}

    monkeypatch.setattr("fourds.probe.protocol.run_probe", fake_run_probe)
    assert main(["probe", "--finetune", "--steps", "20000", "40000,80000", "--out", str(tmp_path)]) == 0
    assert seen["cfg"].steps == [20000, 40000, 80000]
    assert main(["probe", "--steps", "500", "--out", str(tmp_path)]) == 0 and seen["cfg"].steps == 500
    assert main(["probe", "--steps", "many", "--out", str(tmp_path)]) == 1
    assert "--steps ['many']: expected integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["probe", "--select-on", "test", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "invalid choice: 'test'" in err and "train-holdout" in err and "eval" in err
