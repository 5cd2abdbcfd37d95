"""Checkpoint and model-file safety: resume fallback, checksums, non-safetensors files, umask, full disk,
run lock, background saves (SIGKILL mid-save) and dropping the optimiser state of finished runs."""

import errno
import gzip
import logging
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import fourds.models as fm
from fourds import fileio
from fourds.models.io import CorruptFileError
from fourds.train import PretrainConfig, pretrain
from fourds.train.checkpoint import CheckpointError, Checkpointer, finalize_checkpoints
from fourds.train.distributed import DistInfo

SRC = str(Path(__file__).resolve().parents[1] / "src")
SMALL = ["pretrain", "--model", "4ds-tiny", "--data", "random", "--num-frames", "4", "--image-size", "32",
         "--batch-size", "4", "--steps", "8", "--save-every", "2", "--warmup-steps", "2"]
CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def small_cfg(out, **kw) -> PretrainConfig:
    base = dict(model="4ds-tiny", data="random", out=str(out), num_frames=4, image_size=32,
                batch_size=4, steps=8, warmup_steps=2, save_every=2, log_every=1)
    return PretrainConfig(**{**base, **kw})


def run_cli(args, env_extra=None, check=True):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-m", "fourds", *args], env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assert_same_weights(a_folder, b_folder):
    a, b = load_file(str(Path(a_folder) / "model.safetensors")), load_file(str(Path(b_folder) / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An 8-step run saved every 2 steps: checkpoints step 6 and 8 (keep 2) and the final model."""
    out = tmp_path_factory.mktemp("base") / "run"
    pretrain(small_cfg(out))
    return out


def copy_run(src, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    shutil.copytree(dst / "model", tmp_path / "reference")
    return dst


def flip_byte(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "weights truncated": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
    "weights bit flip": ("model.safetensors", flip_byte, "sha256"),
    "train state garbage": ("train_state.pt", lambda p: p.write_bytes(b"garbage" * 10), "refusing to load"),
    "train state bit flip": ("train_state.pt", lambda p: flip_byte(p, p.stat().st_size // 2), ""),
    "rng empty": ("rng_rank0.pt", lambda p: p.write_bytes(b""), ""),
    "rng missing": ("rng_rank0.pt", lambda p: p.unlink(), "missing"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_unreadable_latest_checkpoint_falls_back_and_ends_bit_identical(case, finished_run, tmp_path, caplog):
    name, damage, why = DAMAGE[case]
    run = copy_run(finished_run, tmp_path)
    damaged = run / "checkpoints" / "step_00000008" / name
    damage(damaged)
    before = {p.name: p.read_bytes() for p in damaged.parent.iterdir()}
    with caplog.at_level(logging.WARNING, logger="fourds.train.checkpoint"):
        pretrain(small_cfg(run, resume=True))
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert f"step_00000008/{name}" in warning and "unreadable" in warning and why in warning, warning
    aside = run / "checkpoints" / "step_00000008.unreadable"  # moved aside, not deleted
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before
    assert_same_weights(tmp_path / "reference", run / "model")  # resumed from step 6, re-trained 6 -> 8
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000006", "step_00000008", "step_00000008.unreadable"]


def test_no_intact_checkpoint_is_a_clear_error_and_deletes_nothing(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (run / "checkpoints" / "step_00000008" / "model.safetensors").write_bytes(b"")
    (run / "checkpoints" / "step_00000006" / "train_state.pt").write_bytes(b"PK\x03\x04 not really")
    proc = run_cli([*SMALL, "--out", str(run), "--resume"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("fourds pretrain: error: no intact checkpoint to resume"), error
    assert "step_00000008/model.safetensors" in error and "step_00000006/train_state.pt" in error
    assert "Nothing was deleted" in error and len(error) < 2000
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000006", "step_00000008"]


def test_validation_comes_before_loading_so_a_model_is_never_half_loaded(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    path = run / "checkpoints" / "step_00000008"
    (path / "rng_rank0.pt").write_bytes(b"\x80\x04 broken")  # the last file read...
    (path / "checksums.json").unlink()  # ...and no checksums to catch it early (a pre-checksum checkpoint)
    model = fm.simple_mae("4ds-tiny", input_size=(4, 32, 32))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(CheckpointError, match="rng_rank0.pt"):
        Checkpointer(run / "checkpoints", CPU).load(path, model, optimizer)
    assert all(torch.equal(fresh[k], v) for k, v in model.state_dict().items())
    assert not optimizer.state


# --- model files: checksums and non-safetensors files ------------------------------------------------------

def test_checksum_catches_silent_damage_and_old_folders_still_load(tmp_path):
    vit = fm.create("4ds-tiny", input_size=(4, 32, 32))
    fm.save_model(vit, tmp_path / "v")
    weights = tmp_path / "v" / "model.safetensors"
    flip_byte(weights, 1000)  # inside the tensor data: safetensors itself loads it without complaint
    load_file(str(weights))
    with pytest.raises(CorruptFileError, match=r"model.safetensors is damaged: .*sha256"):
        fm.load(tmp_path / "v")
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CorruptFileError, match="is truncated"):
        fm.load(tmp_path / "v")
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))  # pre-checksum folder
    assert isinstance(fm.load(tmp_path / "v"), fm.VideoViT)


def _fake(kind: str, path: Path, state: dict) -> None:
    if kind == "zip":
        torch.save(state, path)
    elif kind == "pickle":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif kind == "html":
        path.write_text("<!DOCTYPE html><html><body>SECRET-TOKEN Sign in to continue</body></html>")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1234\n")
    elif kind == "gzip":
        path.write_bytes(gzip.compress(pickle.dumps(state)))
    else:
        path.write_bytes(b"\xfe\xfd" + os.urandom(4094))  # binary from the first byte, no known magic


@pytest.mark.parametrize("kind,looks", [
    ("zip", "a zip archive (the format of torch.save"), ("pickle", "a Python pickle"),
    ("html", "an HTML or XML page"), ("empty", "an empty file"), ("gzip", "a gzip-compressed file"),
    ("random", "unrecognised binary data"), ("lfs", "a Git LFS pointer"),
])
def test_a_non_safetensors_model_file_says_what_it_is(kind, looks, tmp_path):
    vit = fm.create("4ds-tiny", input_size=(4, 32, 32))
    fm.save_model(vit, tmp_path / "v")
    _fake(kind, tmp_path / "v" / "model.safetensors", vit.state_dict())
    with pytest.raises(CorruptFileError) as info:
        fm.load(tmp_path / "v")
    msg = str(info.value)
    assert "model.safetensors is not a safetensors file: it looks like " + looks in msg, msg
    assert "never unpickles" in msg and "SECRET" not in msg and len(msg) < 1000
    if kind in ("zip", "pickle"):
        assert "st.save_file(" in msg and "weights_only=True" in msg


def test_the_conversion_the_message_suggests_works(tmp_path):
    vit = fm.create("4ds-tiny", input_size=(4, 32, 32))
    fm.save_model(vit, tmp_path / "v")
    torch.save(vit.state_dict(), tmp_path / "v" / "model.safetensors")
    os.replace(tmp_path / "v" / "model.safetensors", tmp_path / "model.pt")
    import safetensors.torch as st  # the snippet of the message, run as a user would
    st.save_file({k: v.contiguous() for k, v in torch.load(tmp_path / "model.pt", weights_only=True).items()},
                 str(tmp_path / "v" / "model.safetensors"))
    assert isinstance(fm.load(tmp_path / "v"), fm.VideoViT)


# --- permissions, full disk, lock ---------------------------------------------------------------------------

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    fileio.current_umask.cache_clear()
    try:
        vit = fm.create("4ds-tiny", input_size=(4, 32, 32))
        fm.save_model(vit, tmp_path / "m")
        fileio.write_json_atomic(tmp_path / "results.json", {"a": 1})
        opt = torch.optim.AdamW(vit.parameters())
        ckpt = Checkpointer(tmp_path / "ckpt", CPU).save(1, vit, opt, {})
        files = [tmp_path / "m" / "model.safetensors", tmp_path / "m" / "config.json", tmp_path / "results.json",
                 *[p for p in ckpt.iterdir()]]
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(mode) for p in files}
    finally:
        os.umask(old)
        fileio.current_umask.cache_clear()


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_saving_a_model_leaves_the_old_one(tmp_path, monkeypatch):
    vit = fm.create("4ds-tiny", input_size=(4, 32, 32))
    fm.save_model(vit, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    monkeypatch.setattr("fourds.models.io.save_file", _enospc)
    with torch.no_grad():
        next(vit.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match=r"could not write .*model.safetensors: no space left on device \(ENOSPC\)"):
        fm.save_model(vit, tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before  # no temporary file either


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "tmp_step_00000004" in str(f):
            _enospc()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RuntimeError, match=r"step_00000004 was not written \(writing train_state.pt failed: no space "
                                           r"left on device \(ENOSPC\).*step_00000002 is intact"):
        pretrain(small_cfg(tmp_path / "run", steps=6))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000002"]
    assert isinstance(fm.load(tmp_path / "run" / "checkpoints" / "step_00000002"), fm.VideoViT)


def test_a_second_run_on_one_out_names_the_lock_and_its_holder(tmp_path):
    out = tmp_path / "run"
    # The holder forks a child that outlives it, as data-loader workers do for a few seconds after the
    # run is SIGKILLed: the lock must die with the holder, not with its last child.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time; from fourds.fileio import lock_run_folder; "
                               "lock_run_folder(sys.argv[1]); child = os.fork(); "
                               "print('locked', child, flush=True) if child else None; time.sleep(60)", str(out)],
        env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        word, child = holder.stdout.readline().split()
        child = int(child)
        assert word == "locked"
        with pytest.raises(RuntimeError, match=rf"in use by another fourds run: process {holder.pid} holds .*run/\.lock"):
            pretrain(small_cfg(out, steps=2))
        holder.kill()  # a crash: the kernel releases the lock although the forked child still runs
        holder.wait()
        os.kill(child, 0)  # still alive
        pretrain(small_cfg(out, steps=2))
    finally:
        holder.kill()
        if child:
            os.kill(child, signal.SIGKILL)
    assert (out / "model" / "model.safetensors").is_file()


# --- background saves ---------------------------------------------------------------------------------------

def _model_and_optimizer():
    vit = fm.create("4ds-tiny", input_size=(4, 32, 32))
    opt = torch.optim.AdamW(vit.parameters(), lr=1e-3)
    for p in vit.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return vit, opt


def test_background_save_writes_the_state_of_the_step_it_was_called_at(tmp_path, monkeypatch):
    import fourds.train.checkpoint as ck

    real, go = ck.save_weights_atomic, threading.Event()
    monkeypatch.setattr(ck, "save_weights_atomic", lambda *a, **k: (go.wait(30), real(*a, **k)))
    go.set()
    vit, opt = _model_and_optimizer()
    expected = {k: v.clone() for k, v in vit.state_dict().items()}
    moment = opt.state_dict()["state"][0]["exp_avg"].clone()
    ckpt = Checkpointer(tmp_path / "ckpt", CPU, keep=1)
    first = ckpt.save(1, vit, opt, {})
    go.clear()  # the writer of the next save waits until the loop below has changed everything
    second = ckpt.save(2, vit, opt, {"note": "x"}, background=True)
    assert not second.exists() and first.exists()  # still being written; nothing rotated yet
    with torch.no_grad():  # the training loop goes on and changes everything in place
        for p in vit.parameters():
            p.add_(1.0)
        opt.state_dict()["state"][0]["exp_avg"].add_(1.0)
    go.set()
    ckpt.wait()
    assert sorted(p.name for p in ckpt.root.iterdir()) == ["step_00000002"]  # rotated only after the rename
    saved = load_file(str(second / "model.safetensors"))
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    state = torch.load(second / "train_state.pt", weights_only=True)
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], moment) and state["note"] == "x"
    # the next background save reuses the snapshot buffers: still the state of its own step
    expected = {k: v.clone() for k, v in vit.state_dict().items()}
    third = ckpt.save(3, vit, opt, {}, background=True)
    with torch.no_grad():
        for p in vit.parameters():
            p.mul_(2.0)
    ckpt.wait()
    saved = load_file(str(third / "model.safetensors"))
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_background_save_errors_surface_at_the_next_wait(tmp_path, monkeypatch):
    import fourds.train.checkpoint as ck

    vit, opt = _model_and_optimizer()
    ckpt = Checkpointer(tmp_path / "ckpt", CPU)
    ckpt.save(1, vit, opt, {})
    monkeypatch.setattr(ck, "save_weights_atomic", _enospc)
    ckpt.save(2, vit, opt, {}, background=True)  # returns; the failure happens in the thread
    with pytest.raises(RuntimeError, match=r"step_00000002 was not written .*ENOSPC.*step_00000001 is intact"):
        ckpt.wait()
    ckpt.wait()  # raised once
    assert sorted(p.name for p in ckpt.root.iterdir()) == ["step_00000001"]


def test_sigkill_in_the_middle_of_a_background_save_resumes_bit_identical(tmp_path):
    run_cli([*SMALL, "--out", str(tmp_path / "whole")])
    cut = tmp_path / "cut"
    killed = run_cli([*SMALL, "--out", str(cut)], env_extra={"FOURDS_FAULT_IN_SAVE": "6"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    names = sorted(p.name for p in (cut / "checkpoints").iterdir())
    assert names == [".tmp_step_00000006", "step_00000002", "step_00000004"], names  # half-written stays hidden
    assert (cut / "checkpoints" / ".tmp_step_00000006" / "model.safetensors").is_file()
    run_cli([*SMALL, "--out", str(cut), "--resume"])
    assert_same_weights(tmp_path / "whole" / "model", cut / "model")
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step_00000006", "step_00000008"]


# --- finished runs ------------------------------------------------------------------------------------------

def test_finalize_drops_optimizer_state_and_keeps_model_folders(finished_run, tmp_path, caplog):
    run = copy_run(finished_run, tmp_path)
    sizes = {p: (p / "train_state.pt").stat().st_size for p in (run / "checkpoints").iterdir()}
    freed = finalize_checkpoints(run)
    for path, before in sizes.items():
        state = torch.load(path / "train_state.pt", weights_only=True)
        assert "optimizer" not in state and state["optimizer_dropped"] is True
        assert isinstance(fm.load(path), fm.VideoViT)
    assert freed == sum(sizes.values()) - sum((p / "train_state.pt").stat().st_size for p in sizes) > 0
    assert finalize_checkpoints(run) == 0  # idempotent
    with caplog.at_level(logging.WARNING):
        pretrain(small_cfg(run, steps=10, resume=True))  # extending the finished run restarts AdamW
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "step_00000008 has no optimiser state" in text and "unreadable" not in text, text
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000008", "step_00000010"]


@pytest.mark.slow  # three 2-rank torchrun runs: ~80 s on 2 cores
def test_fsdp_async_save_killed_mid_save_and_a_damaged_shard_both_resume_bit_identical(tmp_path):
    """Two CPU ranks (gloo): dcp.async_save, SIGKILL before the checkpoint is complete, resume; then a
    truncated DCP shard in the newest checkpoint falls back to the previous one on every rank."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fourds"]
    args = [*SMALL[:-6], "--steps", "6", "--save-every", "2", "--warmup-steps", "2", "--strategy", "fsdp"]

    def torchrun(out, env_extra=None, extra=(), check=True):
        env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env_extra or {})}
        proc = subprocess.run([sys.executable, *launcher, *args, "--out", str(out), *extra], env=env,
                              capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
        return proc

    torchrun(tmp_path / "whole")
    cut = tmp_path / "cut"
    killed = torchrun(cut, env_extra={"FOURDS_FAULT_IN_SAVE": "4"}, check=False)
    assert killed.returncode != 0
    names = sorted(p.name for p in (cut / "checkpoints").iterdir())
    assert names == [".tmp_step_00000004", "step_00000002"], names
    torchrun(cut, extra=["--resume"])
    assert_same_weights(tmp_path / "whole" / "model", cut / "model")

    shard = sorted((cut / "checkpoints" / "step_00000006" / "dcp").glob("*.distcp"))[-1]
    shard.write_bytes(shard.read_bytes()[:100])
    shutil.copytree(cut / "model", tmp_path / "reference")
    proc = torchrun(cut, extra=["--resume"])
    assert f"step_00000006/dcp/{shard.name}" in proc.stderr and "trying the previous checkpoint" in proc.stderr
    assert (cut / "checkpoints" / "step_00000006.unreadable").is_dir()
    assert_same_weights(tmp_path / "reference", cut / "model")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_state_file_errors_say_what_is_wrong_and_never_unpickle(tmp_path):
    from fourds.train.checkpoint import StateFileError, safe_load

    marker = tmp_path / "pwned"
    good = tmp_path / "good.pt"
    torch.save({"step": 3, "x": torch.ones(2)}, good)
    cases = {
        "text.pt": (lambda p: p.write_text("hello"), r"not a torch.save file \(it looks like a text file\)"),
        "truncated.pt": (lambda p: p.write_bytes(good.read_bytes()[:200]), r"a damaged or truncated torch.save file"),
        "exploit.pt": (lambda p: torch.save({"a": _Exploit(marker)}, p), r"holds Python objects.*a reference to posix\.system"),
        "pickle.pt": (lambda p: p.write_bytes(pickle.dumps({"a": _Exploit(marker)}, protocol=4)), r"a Python pickle that the weights-only"),
    }
    for name, (write, message) in cases.items():
        write(tmp_path / name)
        with pytest.raises(StateFileError, match=message):
            safe_load(tmp_path / name)
    assert not marker.exists()
    assert safe_load(good)["step"] == 3


def test_probe_resume_falls_back_past_a_damaged_checkpoint(tmp_path, caplog):
    from fourds.probe.protocol import run_probe
    from fourds.probe.config import ProbeConfig

    sys.path.insert(0, str(Path(__file__).parent))
    from probe_toy import ToyTask

    def probe_cfg(**kw):
        return ProbeConfig(**{**dict(backbone="4ds-tiny", out=str(tmp_path / "run"), steps=6, batch_size=4,
                                     backbone_overrides={"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64},
                                     warmup_steps=2, lrs=[1e-3], layers=[2], save_every=3, log_every=1,
                                     tensorboard=False), **kw})

    first = run_probe(probe_cfg(), task=ToyTask())
    heads = tmp_path / "run" / "heads"
    before = {p: load_file(str(p)) for p in heads.rglob("model.safetensors")}
    weights = tmp_path / "run" / "checkpoints" / "step_00000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-50])
    with caplog.at_level(logging.WARNING, logger="fourds.train.checkpoint"):
        again = run_probe(probe_cfg(resume=True), task=ToyTask())
    assert "step_00000006/model.safetensors: is truncated" in caplog.text
    assert (tmp_path / "run" / "checkpoints" / "step_00000006.unreadable").is_dir()
    for path, tensors in before.items():  # retrained from step 3 to the same readouts
        after = load_file(str(path))
        assert all(torch.equal(tensors[k], after[k]) for k in tensors)
    assert again["test"] == first["test"]
