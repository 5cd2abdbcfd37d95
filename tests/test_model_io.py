"""Model folders: config.json + model.safetensors round-trips and clear errors."""

import json

import pytest
import torch

import fourds.models as fm


def test_simple_mae_folder_round_trip(tmp_path):
    mae = fm.simple_mae("4ds-tiny", input_size=(4, 32, 32), depth=3, num_latent_layers=1)
    fm.save_model(mae, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["kind"] == "simple_mae" and config["vit"]["depth"] == 3 and config["mae"]["num_latent_layers"] == 1
    again = fm.load_simple_mae(tmp_path / "m")
    for (n, p), (_, q) in zip(mae.state_dict().items(), again.state_dict().items()):
        assert torch.equal(p, q), n
    backbone = fm.load(tmp_path / "m")  # a SimpleMAE folder loads as its encoder
    assert isinstance(backbone, fm.VideoViT) and not backbone.training
    video = torch.rand(1, 4, 32, 32, 3)
    torch.testing.assert_close(backbone.features(video)[-1], mae.encoder.features(video)[-1])


def test_vit_folder_and_kind_checks(tmp_path):
    vit = fm.create("4ds-tiny", input_size=(4, 32, 32))
    fm.save_model(vit, tmp_path / "v")
    assert isinstance(fm.load(tmp_path / "v"), fm.VideoViT)
    with pytest.raises(ValueError, match="not a SimpleMAE"):
        fm.load_simple_mae(tmp_path / "v")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fm.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        fm.load(tmp_path / "empty")
    vit = fm.create("4ds-tiny", input_size=(4, 32, 32))
    fm.save_model(vit, tmp_path / "v")
    (tmp_path / "v" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a safetensors file: it looks like a text file"):
        fm.load(tmp_path / "v")
    fm.save_model(vit, tmp_path / "w")
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    cfg["vit"]["dim"] = 32
    cfg["vit"]["num_heads"] = 4
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape mismatches"):
        fm.load(tmp_path / "w")
    cfg["kind"] = "mystery"
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="kind='mystery'"):
        fm.load(tmp_path / "w")
