"""Distillation: a tiny student learns a tiny frozen teacher, the export is a plain 4DS model that loads and
probes, token grids are aligned, resume is exact, and configuration errors are named."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fourds.data.pretrain import InMemoryVideos, RandomVideos
from fourds.models import VideoViT, create, load, save_model
from fourds.models.backbone import resolve_layers
from fourds.train.distill import (
    DistillStudent,
    align_tokens,
    distill,
    heldout_loss,
    load_distill_student,
    teacher_targets,
)
from fourds.train.distill import PAPER_TEACHER_LAYERS, DistillConfig
from fourds.probe.protocol import run_probe
from fourds.probe.config import ProbeConfig

sys.path.insert(0, str(Path(__file__).parent))
from probe_toy import ToyTask  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
STUDENT = {"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64}
TEACHER = {"depth": 3, "dim": 48, "num_heads": 3, "mlp_dim": 96}
CLIP = (4, 32, 32)


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    """A frozen tiny 4DS teacher saved as a model folder (the default kind of teacher)."""
    teacher = create("4ds-tiny", input_size=CLIP, **TEACHER)
    teacher.init_weights(seed=7)
    return save_model(teacher, tmp_path_factory.mktemp("teacher") / "model")


def small_cfg(tmp_path, teacher, **kw) -> DistillConfig:
    base = dict(student="4ds-tiny", student_overrides=STUDENT, teacher=str(teacher), data="random",
                out=str(tmp_path / "run"), num_frames=4, frame_stride=1, image_size=32, min_resize=1.0, batch_size=8,
                steps=6, warmup_steps=2, lr=3e-3, save_every=3, log_every=1, flip=False)
    return DistillConfig(**{**base, **kw})


def test_student_halves_heldout_l1_and_exports_a_plain_model_that_probes(tmp_path, teacher_folder):
    gen = torch.Generator().manual_seed(0)
    videos = [RandomVideos((32, 32)).clip(i, 8, 1, gen) for i in range(24)]
    train, held = videos[:16], torch.stack([v[:4] for v in videos[16:]]).float()
    cfg = small_cfg(tmp_path, teacher_folder, steps=80, warmup_steps=10, save_every=80, log_every=10)
    teacher = load(teacher_folder)
    # The student exactly as the run initialises it (per-parameter seeds from cfg.seed).
    start = DistillStudent(create("4ds-tiny", input_size=CLIP, **STUDENT), [48, 48], [1, 2])
    start.init_weights(seed=cfg.seed)
    final = distill(cfg, source=InMemoryVideos(train))

    trained = load_distill_student(tmp_path / "run" / "checkpoints" / "step_00000080")
    assert trained.teacher_layers == [1, 2] == resolve_layers(list(PAPER_TEACHER_LAYERS), 3)
    before, after = heldout_loss(start, teacher, held), heldout_loss(trained, teacher, held)
    assert after <= 0.5 * before, (before, after)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_teacher_layer1", "loss_teacher_layer2"} <= set(logged[-1])
    assert logged[-1]["loss"] == pytest.approx(logged[-1]["loss_teacher_layer1"] + logged[-1]["loss_teacher_layer2"], rel=1e-5)

    student = load(final)  # the export: a plain 4DS model, adapters dropped
    assert type(student) is VideoViT and student.num_layers == 2 and student.input_size == CLIP
    config = json.loads((final / "config.json").read_text())
    assert config["kind"] == "video_vit" and config["distill"]["teacher_layers"] == [1, 2]
    exported = load_file(str(final / "model.safetensors"))
    assert not any("adapter" in k for k in exported)
    for key, value in trained.encoder.state_dict().items():
        assert torch.equal(exported[key], value), key
    res = run_probe(ProbeConfig(backbone=str(final), out=str(tmp_path / "probe"), steps=2, batch_size=4, warmup_steps=1,
                                lrs=[1e-3], save_every=2, log_every=1, tensorboard=False), task=ToyTask())
    assert res["backbone_layers"] == 2 and len(res["configs"]) == 1


def test_align_tokens_box_averages_down_interpolates_up_and_keeps_equal_grids():
    tokens = torch.randn(2, 2, 4 * 6, 5)
    assert align_tokens(tokens, (2, 4, 6), (2, 4, 6)) is tokens
    down = align_tokens(tokens, (2, 4, 6), (1, 2, 3))
    blocks = tokens.view(2, 1, 2, 2, 2, 3, 2, 5).mean(dim=(2, 4, 6))  # (b, t, 2, h, 2, w, 2, c) block means
    torch.testing.assert_close(down, blocks.reshape(2, 1, 6, 5))
    const = torch.full((1, 1, 4, 3), 2.5)
    torch.testing.assert_close(align_tokens(const, (1, 2, 2), (2, 4, 4)), torch.full((1, 2, 16, 3), 2.5))
    with pytest.raises(ValueError, match="do not match the grid"):
        align_tokens(tokens, (2, 3, 6), (1, 2, 3))


def test_teachers_on_other_token_grids_are_resampled_to_the_students(tmp_path):
    fine = create("4ds-tiny", input_size=CLIP, patch_size=(2, 8, 8), **TEACHER)  # 2x finer in space
    fine.init_weights(seed=3)
    video = torch.rand(2, *CLIP, 3)
    (target,) = teacher_targets(fine, video, [2], (2, 2, 2))
    (raw,) = fine.features(video, layers=[2])
    torch.testing.assert_close(target, align_tokens(raw, (2, 4, 4), (2, 2, 2)))
    assert target.shape == (2, 2, 4, 48)
    save_model(fine, tmp_path / "fine")
    # A per-frame teacher (T' = T = 4 against the student's 2) given as a spec string, end to end.
    for teacher in (str(tmp_path / "fine"), f"perframe:{tmp_path / 'fine'}"):
        out = tmp_path / teacher.replace("/", "_").replace(":", "_")
        final = distill(small_cfg(tmp_path, teacher, out=str(out), steps=2, save_every=2, teacher_layers=[1, 3]))
        assert load(final).num_layers == 2
        assert all(torch.isfinite(torch.tensor(json.loads(x)["loss"])) for x in (out / "metrics.jsonl").read_text().splitlines())


def run_cli(args, env_extra=None, check=True, launcher=()):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run([sys.executable, *launcher, "-m", "fourds", "distill", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def cli_args(teacher_folder, steps=6):
    return ["--student", "4ds-tiny", *[f"--student-overrides={k}={v}" for k, v in STUDENT.items()],
            "--teacher", str(teacher_folder), "--teacher-layers", "1", "3", "--data", "random", "--num-frames", "4",
            "--frame-stride", "1", "--image-size", "32", "--batch-size", "4", "--steps", str(steps), "--warmup-steps",
            "2", "--save-every", "2", "--lr", "3e-3"]


def test_sigkill_then_resume_ends_with_the_same_student(tmp_path, teacher_folder):
    args = cli_args(teacher_folder)
    run_cli([*args, "--out", str(tmp_path / "whole")])
    killed = run_cli([*args, "--out", str(tmp_path / "cut")], env_extra={"FOURDS_FAULT_AT_STEP": "5"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    run_cli([*args, "--out", str(tmp_path / "cut"), "--resume"])
    a = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["teacher_layers"] == [1, 3] and saved["student_overrides"]["dim"] == 32


def test_fsdp2_on_two_cpu_ranks_matches_one_process(tmp_path, teacher_folder):
    args = cli_args(teacher_folder, steps=2)
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    run_cli([*args, "--out", str(tmp_path / "fsdp"), "--strategy", "fsdp"], launcher=launcher)
    run_cli([*args, "--out", str(tmp_path / "one")])
    assert (tmp_path / "fsdp" / "checkpoints" / "step_00000002" / "dcp").is_dir()  # sharded training state
    a = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "fsdp" / "model" / "model.safetensors"))  # gathered, adapters dropped
    assert a.keys() == b.keys() and not any("adapter" in k for k in b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4)


def test_defaults_and_configuration_errors(tmp_path, teacher_folder):
    paper = DistillConfig(teacher="some/folder").resolved()
    assert (paper.student, paper.steps, paper.batch_size) == ("4ds-b", 100_000, 1024)
    assert (paper.lr, paper.num_frames, paper.image_size) == (1e-4, 16, 224)  # the 4DS-B preset's recipe
    assert resolve_layers(paper.teacher_layers, 56) == [36, 51]  # the paper's layers of 4DS-e
    tiny = small_cfg(tmp_path, teacher_folder, steps=None, batch_size=None).resolved()
    assert (tiny.steps, tiny.batch_size) == (200, 8)  # tiny sizes keep their preset's schedule
    with pytest.raises(ValueError, match="--teacher is required"):
        DistillConfig().resolved()
    with pytest.raises(ValueError, match=r"--teacher-layers \[36, 51\].*out of range"):
        distill(small_cfg(tmp_path, teacher_folder, teacher_layers=[36, 51]))
    with pytest.raises(ValueError, match="--teacher-precision 'fp16'"):
        small_cfg(tmp_path, teacher_folder, teacher_precision="fp16").resolved()
    with pytest.raises(ValueError, match="unknown distillation config keys"):
        DistillConfig.from_dict({"teacher": "x", "mask_ratio": 0.9})
    with pytest.raises(ValueError, match="not a distillation checkpoint"):
        load_distill_student(teacher_folder)
