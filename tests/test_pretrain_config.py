"""Pretraining configuration: resume takes the saved config, explicit changes are refused, config.json is
written only after a successful start, and configuration errors name the flags to change."""

import json
import logging
import re
from pathlib import Path

import pytest

from fourds.cli import main
from fourds.train import PretrainConfig, pretrain
from fourds.train.config import RESUMABLE_KEYS, resume_config
from fourds.train.optim import warmup_cosine

FIRST = ["pretrain", "--model", "4ds-tiny", "--data", "random", "--num-frames", "4", "--image-size", "32",
         "--batch-size", "2", "--steps", "3", "--warmup-steps", "2", "--save-every", "3", "--log-every", "1"]


def lrs(run: Path) -> list[float]:
    return [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_uses_the_saved_config_and_refuses_other_changes(tmp_path, capsys):
    run = tmp_path / "r1"
    assert main([*FIRST, "--out", str(run)]) == 0
    # Only --out, --resume and --steps: the saved warm-up (2, not the preset's 20), clip size and batch apply.
    assert main(["pretrain", "--out", str(run), "--resume", "--steps", "5"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["steps"], saved["warmup_steps"], saved["image_size"], saved["num_frames"], saved["batch_size"]) == (5, 2, 32, 4, 2)
    assert saved["resume"] is True
    curve = lrs(run)
    assert len(curve) == 5
    assert curve[3:] == pytest.approx([warmup_cosine(s, 5, 2, 1e-3) for s in (3, 4)])  # the resumed steps
    # A resumable flag with a new value and a non-resumable one equal to its saved value are both fine.
    assert main(["pretrain", "--out", str(run), "--resume", "--steps", "6", "--image-size", "32", "--log-every", "2"]) == 0
    before = (run / "config.json").read_bytes()
    capsys.readouterr()
    # Changing the clip size or the warm-up is refused, naming each flag with its saved value; nothing is rewritten.
    assert main(["pretrain", "--out", str(run), "--resume", "--steps", "8", "--image-size", "64",
                 "--warmup-steps", "5"]) == 1
    err = capsys.readouterr().err
    assert "--image-size 64 (saved: 32)" in err and "--warmup-steps 5 (saved: 2)" in err and "--steps" in err
    assert (run / "config.json").read_bytes() == before
    assert not (run / "checkpoints" / "step_00000008").exists()
    # Fewer steps than the checkpoint holds is an error, not a silent no-op.
    assert main(["pretrain", "--out", str(run), "--resume", "--steps", "4"]) == 1
    assert "--steps 4 is below the step of the checkpoint" in capsys.readouterr().err


def test_library_resume_treats_non_default_fields_as_explicit(tmp_path):
    base = dict(model="4ds-tiny", data="random", out=str(tmp_path / "lib"), num_frames=4, image_size=32,
                batch_size=2, steps=2, warmup_steps=1, save_every=2, log_every=1)
    pretrain(PretrainConfig(**base))
    pretrain(PretrainConfig(out=base["out"], resume=True, steps=3))  # everything else from config.json
    assert json.loads((tmp_path / "lib" / "config.json").read_text())["image_size"] == 32
    with pytest.raises(ValueError, match=r"--lr 0.5 \(saved: 0.001\)"):
        pretrain(PretrainConfig(out=base["out"], resume=True, steps=4, lr=0.5))


def test_resume_config_merges_only_resumable_keys():
    saved = {**PretrainConfig(steps=10, warmup_steps=5, image_size=32).to_dict(), "world_size": 2,
             "strategy_resolved": "ddp"}
    cfg = resume_config(saved, PretrainConfig(out="elsewhere", steps=20, num_workers=3), {"steps", "num_workers"}, "x")
    assert (cfg.out, cfg.steps, cfg.num_workers, cfg.warmup_steps, cfg.image_size, cfg.resume) == ("elsewhere", 20, 3, 5, 32, True)
    assert {"steps", "save_every", "num_workers", "log_every"} <= RESUMABLE_KEYS
    assert not {"model", "lr", "warmup_steps", "image_size", "seed", "data", "batch_size"} & RESUMABLE_KEYS
    with pytest.raises(ValueError, match=r"--model-overrides \{\"depth\": 2\} \(saved: \{\}\)"):
        resume_config(saved, PretrainConfig(model_overrides={"depth": 2}), {"model_overrides"}, "x")


@pytest.mark.parametrize("flags, message", [
    (["--data", "nowhere"], "--data 'nowhere'"),
    (["--image-size", "30"], r"--image-size 30: must be a multiple of 16 pixels.*e.g. 16 or 32"),
    (["--num-frames", "5"], r"--num-frames 5: must be a multiple of 2 frames"),
    (["--model-overrides", "depth=1"],
     r"--model-overrides depth=1: .*num_latent_layers=2 .*--model-overrides num_latent_layers=N with N <= 1, or a depth >= 2"),
    (["--model-overrides", "dim=30"], r"--model-overrides: dim=30 must be divisible by num_heads=4"),
])
def test_failed_start_names_the_flag_and_writes_no_config(tmp_path, capsys, flags, message):
    args = ["pretrain", "--model", "4ds-tiny", "--data", "random", "--num-frames", "4", "--image-size", "32",
            "--batch-size", "2", "--steps", "1", "--out", str(tmp_path / "run")]
    assert main([*args, *flags]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run" / "config.json").exists()


def test_warmup_longer_than_the_run_warns(tmp_path, caplog):
    cfg = PretrainConfig(model="4ds-tiny", data="random", out=str(tmp_path / "w"), num_frames=4, image_size=32,
                         batch_size=2, steps=2, warmup_steps=8, log_every=1)
    with caplog.at_level(logging.WARNING, logger="fourds.train.pretrain"):
        pretrain(cfg)
    warning = [r.message for r in caplog.records if "never reaches its peak" in r.message]
    assert warning and "--warmup-steps 8 > --steps 2" in warning[0] and "0.000125" in warning[0]
