"""The real CUDA paths (marked ``gpu``; skipped without CUDA): initialisation and masks identical to the
CPU's, CPU-vs-CUDA loss parity, and every command on the GPU: pretrain (fp32, bf16, FSDP2 on one rank
with resume), distill, probe (frozen and finetune), extract and depth. Run them with
``pytest -m gpu tests/test_gpu.py`` (``benchmarks/gpu_check.sh`` does, with everything else)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fourds.models import create, save_model, simple_mae
from fourds.models.masking import masking_keys, masking_noise

pytestmark = pytest.mark.gpu

sys.path.insert(0, str(Path(__file__).parent))
from probe_toy import ToyTask  # noqa: E402

TINY = {"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64}
OFFICIAL_DEPTH = Path(__file__).parent / "fixtures" / "official" / "tiny_depth.npz"


def test_seeded_init_is_bit_identical_on_cpu_and_cuda():
    with torch.device("meta"):
        a, b = simple_mae("4ds-tiny"), simple_mae("4ds-tiny")
    a.to_empty(device="cpu")
    b.to_empty(device="cuda")
    a.init_weights(seed=11)
    b.init_weights(seed=11)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y.cpu()), name


def test_masks_are_identical_on_cpu_and_cuda():
    ids = torch.arange(100, 164)
    cpu = masking_noise(masking_keys(5, ids), 1568)
    gpu = masking_noise(masking_keys(5, ids.cuda()), 1568)
    assert gpu.device.type == "cuda" and torch.equal(cpu, gpu.cpu())
    assert torch.equal(cpu.argsort(1), gpu.argsort(1).cpu())


def test_simple_mae_loss_parity_cpu_vs_cuda_fp32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = simple_mae("4ds-tiny")
    model.init_weights(seed=2)
    video = torch.rand(3, 16, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    keys = masking_keys(9, torch.arange(3))
    cpu = model(video, sample_seeds=keys)
    gpu_model = simple_mae("4ds-tiny").cuda()
    gpu_model.load_state_dict(model.state_dict())
    gpu = gpu_model(video.cuda(), sample_seeds=keys.cuda())
    assert torch.equal(cpu.mask, gpu.mask.cpu())
    torch.testing.assert_close(gpu.loss.cpu(), cpu.loss, rtol=1e-4, atol=1e-6)
    gpu.loss.backward()
    cpu.loss.backward()
    for (name, p), q in zip(model.named_parameters(), gpu_model.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-5, msg=name)


def _pretrain_cfg(tmp_path, **kw):
    from fourds.train import PretrainConfig

    base = dict(model="4ds-tiny", data="random", out=str(tmp_path / "run"), num_frames=4, image_size=32,
                batch_size=8, steps=6, warmup_steps=2, save_every=3, log_every=2, device="cuda")
    return PretrainConfig(**{**base, **kw})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pretrain_on_cuda_learns_and_matches_the_cpu_start(tmp_path, precision):
    from fourds.train import pretrain

    folder = pretrain(_pretrain_cfg(tmp_path, precision=precision, steps=30, lr=2e-3, log_every=5))
    losses = [float(line.split('"loss": ')[1].split(",")[0]) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    assert (folder / "model.safetensors").is_file()


def test_fsdp_on_one_gpu_saves_sharded_and_resumes_to_the_same_weights(tmp_path):
    from fourds.train import pretrain

    whole = pretrain(_pretrain_cfg(tmp_path / "whole", strategy="fsdp"))
    pretrain(_pretrain_cfg(tmp_path / "split", strategy="fsdp", steps=3))
    assert (tmp_path / "split" / "run" / "checkpoints" / "step_00000003" / "dcp").is_dir()
    resumed = pretrain(_pretrain_cfg(tmp_path / "split", strategy="fsdp", resume=True))
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_distill_on_cuda(tmp_path):
    from fourds.data.pretrain import RandomVideos
    from fourds.train.distill import distill
    from fourds.train.distill import DistillConfig

    teacher = create("4ds-tiny", input_size=(4, 32, 32), depth=3, dim=48, num_heads=3, mlp_dim=96)
    folder = save_model(teacher, tmp_path / "teacher")
    cfg = DistillConfig(student="4ds-tiny", student_overrides=TINY, teacher=str(folder), data="random",
                        out=str(tmp_path / "run"), num_frames=4, frame_stride=1, image_size=32, min_resize=1.0,
                        batch_size=8, steps=4, warmup_steps=1, save_every=2, log_every=1, flip=False, device="cuda")
    assert RandomVideos  # the data source the config names
    assert (distill(cfg) / "model.safetensors").is_file()


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_probe_on_cuda(tmp_path, mode):
    from fourds.probe.protocol import run_probe
    from fourds.probe.config import ProbeConfig

    cfg = ProbeConfig(backbone="4ds-tiny", backbone_overrides=TINY, out=str(tmp_path / "run"), steps=6, batch_size=4,
                      warmup_steps=2, lrs=[1e-3], layers=[2], save_every=3, log_every=1, tensorboard=False,
                      device="cuda", finetune=mode == "finetune")
    result = run_probe(cfg, task=ToyTask())
    assert result is not None and (tmp_path / "run" / "results.json").is_file()


def test_extract_and_depth_on_cuda(tmp_path):
    from fourds.cli import main as cli
    from fourds.convert import convert_official

    frames = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "v.npy", frames)
    save_model(create("4ds-tiny"), tmp_path / "native")
    assert cli(["extract", str(tmp_path / "native"), str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"),
                "--device", "cuda", "--no-progress"]) == 0
    model_dir = convert_official(OFFICIAL_DEPTH, tmp_path / "depth_model")
    assert cli(["depth", str(tmp_path / "v.npy"), "--model", str(model_dir), "--out", str(tmp_path / "d"),
                "--device", "cuda", "--no-progress"]) == 0
    assert np.isfinite(np.load(tmp_path / "d" / "v_depth.npy")).all()


def test_feature_memo_on_cuda_serves_clips_converted_on_either_device():
    from fourds.data import to_float
    from fourds.demo.features import FeatureMemo

    memo = FeatureMemo(create("4ds-tiny")).to("cuda")
    clips = torch.randint(0, 256, (3, 16, 64, 64, 3), dtype=torch.uint8)
    assert memo.precompute([to_float(c) for c in clips], [2], batch_size=2) == 3
    (feats,) = memo.features(to_float(clips.cuda()), [2])  # converted on the GPU: same keys, no miss
    assert memo.misses == 3 and memo.hits == 3 and feats.device.type == "cuda"
    assert memo.uses_device_keys and all(t.device.type == "cuda" for e in memo.store.values() for t in e.values())
