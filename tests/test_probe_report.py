"""``fourds report``: Table-2-shaped markdown/CSV, Fig. 6 layer-depth and Fig. 7 size-scaling plots."""

import csv
import sys
from pathlib import Path

import pytest

from fourds.cli import main
from fourds.probe.protocol import run_probe
from fourds.probe.config import ProbeConfig
from fourds.probe.protocol import resolve_backbone

sys.path.insert(0, str(Path(__file__).parent))
from probe_toy import ToyTask  # noqa: E402


def toy_run(tmp_path, name, depth, **kw):
    base = dict(backbone="4ds-tiny", backbone_overrides={"depth": depth, "dim": 32, "num_heads": 2, "mlp_dim": 64},
                out=str(tmp_path / name), steps=2, batch_size=2, warmup_steps=1, lrs=[1e-3], tensorboard=False,
                max_eval_samples=2)
    cfg = ProbeConfig(**{**base, **kw})
    backbone = resolve_backbone("4ds-tiny", cfg.backbone_overrides, 0, (4, 32, 32))
    cfg.backbone = f"toy-depth{depth}"  # with a given backbone object, cfg.backbone only labels the results
    run_probe(cfg, backbone=backbone, task=ToyTask(n_train=4, n_eval=2))
    return tmp_path / name


def test_report_writes_table_csv_and_both_figures(tmp_path, capsys):
    runs = [toy_run(tmp_path, "a", 2, layers=[0.5, 1.0]), toy_run(tmp_path, "b", 3, layers=[0.5, 1.0]),
            toy_run(tmp_path, "c", 2, finetune=True, weight_decays=[1e-4])]
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    md = (out / "results.md").read_text()
    assert "### Frozen evaluation" in md and "### Finetuned evaluation" in md
    assert "| toy-depth2 |" in md and "toy_colour toy_mse ↓" in md
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["mode"], r["backbone"]) for r in rows} == {("frozen", "toy-depth2"), ("frozen", "toy-depth3"),
                                                          ("finetune", "toy-depth2")}
    for stem in ("layer_depth", "size_scaling"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    assert "3 run(s)" in capsys.readouterr().out


def test_report_names_a_folder_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 1
    assert "no results.json" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no results.json under"):
        from fourds.probe.report import write_report
        write_report([tmp_path / "empty"], tmp_path / "r")


def test_probe_command_parses_sweeps_and_prints_the_choice(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run_probe(cfg, **kwargs):
        seen["cfg"] = cfg
        return {"primary_metric": "m", "chosen": "b", "configs": [
            {"name": "a", "val": {"m": 1.0}, "test": {"m": 2.0}, "diverged": False},
            {"name": "b", "val": {"m": 0.5}, "test": {"m": 0.7}, "diverged": False}]}

    monkeypatch.setattr("fourds.probe.protocol.run_probe", fake_run_probe)
    code = main(["probe", "--backbone", "4ds-tiny", "--task", "synth_depth", "--lrs", "1e-4,3e-4", "1e-3",
                 "--layers", "0.5", "-1", "--finetune", "--backbone-overrides", "depth=2", "--out", str(tmp_path)])
    assert code == 0
    cfg = seen["cfg"]
    assert cfg.lrs == [1e-4, 3e-4, 1e-3] and cfg.layers == [0.5, -1] and cfg.finetune
    assert cfg.backbone_overrides == {"depth": 2} and cfg.weight_decays is None
    assert "* b" in capsys.readouterr().out
    assert main(["probe", "--lrs", "fast", "--out", str(tmp_path)]) == 1
    assert "--lrs ['fast']: expected numbers" in capsys.readouterr().err
