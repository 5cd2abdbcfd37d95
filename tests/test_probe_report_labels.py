"""``fourds report`` keeps different backbones apart even when their folders share a basename."""

import csv
import json

from fourds.cli import main
from fourds.probe.report import backbone_labels, layer_curves


def result(backbone: str, params: int, value: float, mode: str = "frozen", depths=(0.5, 1.0)) -> dict:
    configs = [{"name": f"L{d}", "depth": d, "lr": 1e-3, "weight_decay": 1e-4, "val": {"acc": value + d},
                "test": {"acc": value + d}, "diverged": False} for d in depths]
    return {"task": "toy", "backbone": backbone, "backbone_params": params, "mode": mode, "primary_metric": "acc",
            "direction": "higher", "primary_units": "fraction", "select_on": "eval", "configs": configs,
            "chosen": configs[-1]["name"], "test": configs[-1]["test"], "train_steps": 10}


def write(tmp_path, name: str, res: dict):
    folder = tmp_path / "probes" / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(res))
    return folder


def test_labels_use_the_shortest_distinguishing_suffix_then_the_size():
    runs = [result("runs/small/model", 23_000_000, 0.1), result("runs/base/model", 88_000_000, 0.2),
            result("runs/base/model/", 88_000_000, 0.3, mode="finetune"),  # same folder, other mode
            result("4ds-tiny", 400_000, 0.1), result("4ds-tiny", 800_000, 0.1),  # same name, other overrides
            result("/data/a/x/model", 1, 0.1), result("/data/b/x/model", 2, 0.1), result("hf:org/model", 3, 0.1)]
    assert backbone_labels(runs) == ["small", "base", "base", "4ds-tiny (0.4M)",
                                     "4ds-tiny (0.8M)", "a/x", "b/x", "hf:org/model"]


def test_report_keeps_two_model_folders_with_the_same_basename_apart(tmp_path, capsys):
    small = write(tmp_path, "small", result("runs/small/model", 23_000_000, 0.10))
    base = write(tmp_path, "base", result("runs/base/model", 88_000_000, 0.20))
    assert main(["report", str(small), str(base), "--out", str(tmp_path / "report")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "report" / "results.csv")))
    assert {(r["backbone"], round(float(r["display_value"]), 6)) for r in rows} == {("small", 110.0),
                                                                                   ("base", 120.0)}
    md = (tmp_path / "report" / "results.md").read_text()
    assert "| small | 23 | 110.0 |" in md and "| base | 88 | 120.0 |" in md
    runs = [json.loads((f / "results.json").read_text()) for f in (small, base)]
    assert set(layer_curves(runs)["toy"]) == {"small", "base"}  # Fig. 6 has both lines


def test_a_model_folder_is_named_after_its_run_and_architecture_not_model(tmp_path, capsys):
    model = tmp_path / "runs" / "tiny" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"kind": "simple_mae", "name": "4ds-tiny"}))
    probe = write(tmp_path, "p", result(str(model), 400_000, 0.1))
    assert main(["report", str(probe), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "results.md").read_text()
    assert "| tiny (4ds-tiny) | 0.4 |" in md and "| model |" not in md
    # Moved or deleted folder: the run name alone; a folder not called model keeps its own name.
    assert backbone_labels([result("gone/b/model", 1, 0.1), result("models/4ds-b-dist", 2, 0.1)]) == ["b", "4ds-b-dist"]
