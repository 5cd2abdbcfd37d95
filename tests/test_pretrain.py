"""The pretraining loop: learning, exact resume after SIGKILL, distributed equivalence, failure modes."""

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fourds.data.pretrain import InMemoryVideos, RandomVideos
from fourds.train import NonFiniteLossError, PretrainConfig, pretrain

SRC = str(Path(__file__).resolve().parents[1] / "src")
SMALL = ["pretrain", "--model", "4ds-tiny", "--data", "random", "--num-frames", "4", "--image-size", "32", "--batch-size", "4"]


def small_cfg(tmp_path, **kw) -> PretrainConfig:
    base = dict(model="4ds-tiny", data="random", out=str(tmp_path / "run"), num_frames=4, image_size=32,
                batch_size=4, steps=8, warmup_steps=2, save_every=4, log_every=1)
    return PretrainConfig(**{**base, **kw})


def run_cli(args, env_extra=None, check=True, launcher=("-m", "fourds")):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, *launcher, *args], env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def weights(folder) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


def losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_a_fixed_set_of_clips(tmp_path):
    gen = torch.Generator().manual_seed(0)
    videos = [RandomVideos((40, 40)).clip(i, 8, 1, gen) for i in range(4)]
    cfg = small_cfg(tmp_path, steps=120, warmup_steps=10, lr=2e-3, save_every=1000, flip=False)
    final = pretrain(cfg, source=InMemoryVideos(videos))
    curve = losses(cfg.out)
    first, last = sum(curve[:5]) / 5, sum(curve[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    assert (final / "config.json").is_file() and (Path(cfg.out) / "tb").is_dir()
    saved = json.loads((Path(cfg.out) / "config.json").read_text())
    assert saved["lr"] == 2e-3 and saved["steps"] == 120  # the resolved config sits beside the run


def test_sigkill_then_resume_ends_with_identical_weights(tmp_path):
    args = [*SMALL, "--steps", "8", "--save-every", "2", "--warmup-steps", "2"]
    run_cli([*args, "--out", str(tmp_path / "whole")])
    killed = run_cli([*args, "--out", str(tmp_path / "cut")], env_extra={"FOURDS_FAULT_AT_STEP": "5"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    ckpts = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert ckpts == ["step_00000002", "step_00000004"]  # the two newest, nothing half-written
    run_cli([*args, "--out", str(tmp_path / "cut"), "--resume"])
    a, b = weights(tmp_path / "whole" / "model"), weights(tmp_path / "cut" / "model")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_ranks_take_identical_steps_and_match_one_process(tmp_path):
    args = [*SMALL, "--steps", "4", "--save-every", "4", "--debug-rank-logs"]
    run_cli([*args, "--out", str(tmp_path / "ddp"), "--strategy", "ddp"],
            launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fourds"))
    r0 = [json.loads(x) for x in (tmp_path / "ddp" / "rank0.jsonl").read_text().splitlines()]
    r1 = [json.loads(x) for x in (tmp_path / "ddp" / "rank1.jsonl").read_text().splitlines()]
    assert [r["checksum"] for r in r0] == [r["checksum"] for r in r1]  # same weights after every step
    assert any(a["loss"] != b["loss"] for a, b in zip(r0, r1))  # ...from different halves of the batch
    run_cli([*args, "--out", str(tmp_path / "one")])
    a, b = weights(tmp_path / "one" / "model"), weights(tmp_path / "ddp" / "model")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4)


def test_fsdp2_on_two_cpu_ranks_matches_one_process(tmp_path):
    args = [*SMALL, "--steps", "4", "--save-every", "2"]
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fourds")
    run_cli([*args, "--out", str(tmp_path / "fsdp"), "--strategy", "fsdp", "--steps", "2"], launcher=launcher)
    run_cli([*args, "--out", str(tmp_path / "fsdp"), "--strategy", "fsdp", "--resume"], launcher=launcher)
    run_cli([*args, "--out", str(tmp_path / "one")])
    a, b = weights(tmp_path / "one" / "model"), weights(tmp_path / "fsdp" / "model")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    one = pretrain(small_cfg(tmp_path / "a", steps=3))
    acc = pretrain(small_cfg(tmp_path / "b", steps=3, grad_accum=2))
    # Adam is scale-invariant, so compare the logged losses (which carry the 1/accum scaling) tightly
    # and the weights to the accuracy that float reduction order allows.
    torch.testing.assert_close(torch.tensor(losses(one.parent)), torch.tensor(losses(acc.parent)), atol=1e-6, rtol=1e-5)
    a, b = weights(one), weights(acc)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3)


def test_non_finite_loss_stops_before_the_step_and_keeps_checkpoints(tmp_path, monkeypatch):
    from fourds.models.simple_mae import SimpleMAE

    calls = {"n": 0}
    original = SimpleMAE.forward

    def diverging(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if kwargs.get("sample_seeds") is None:  # the FLOP counter's meta-device pass (cached per process)
            return out
        calls["n"] += 1
        if calls["n"] == 6:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SimpleMAE, "forward", diverging)
    cfg = small_cfg(tmp_path, save_every=2)
    with pytest.raises(NonFiniteLossError, match=r"step 5.*step_00000004"):
        pretrain(cfg)
    assert (Path(cfg.out) / "checkpoints" / "step_00000004" / "train_state.pt").is_file()
    assert not (Path(cfg.out) / "model").exists()


def test_existing_run_needs_resume_and_unsafe_state_is_refused(tmp_path):
    cfg = small_cfg(tmp_path, steps=2, save_every=2)
    pretrain(cfg)
    with pytest.raises(ValueError, match="--resume"):
        pretrain(cfg)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    state = Path(cfg.out) / "checkpoints" / "step_00000002" / "train_state.pt"
    state.write_bytes(pickle.dumps({"step": 2, "x": Exploit()}))
    with pytest.raises(RuntimeError, match="refusing to load"):
        pretrain(small_cfg(tmp_path, steps=3, save_every=2, resume=True))
    assert not (tmp_path / "pwned").exists()


def test_bad_config_values_are_named(tmp_path):
    with pytest.raises(ValueError, match="--strategy 'zero'"):
        pretrain(small_cfg(tmp_path, strategy="zero"))
    with pytest.raises(ValueError, match="--batch-size 3 must be divisible"):
        pretrain(small_cfg(tmp_path, batch_size=3, grad_accum=2))
    with pytest.raises(ValueError, match="--data 'nowhere'"):
        pretrain(small_cfg(tmp_path, data="nowhere"))
