"""The files of one training checkpoint, apart from the :class:`~fourds.train.checkpoint.Checkpointer`
that writes and restores them: state files loaded with ``torch.load(weights_only=True)`` (no pickled code
is ever executed), per-rank RNG states, sha256 checksums, CPU snapshots for background saves, the run
lock, and :func:`finalize_checkpoints` (a finished run's checkpoints without optimiser state).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fourds.fileio import (
    atomic_path,
    lock_run_folder,
    sniff,
    write_json_atomic,
)
from fourds.train.distributed import DistInfo, all_reduce_min

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d{8})$")
MANIFEST_NAME = "checksums.json"
STATE_NAME = "train_state.pt"
#: Test hook: SIGKILL the process while writing the checkpoint of this step, right after its
#: ``model.safetensors`` is in the temporary folder (a crash mid-save, for resume tests).
FAULT_SAVE_ENV = "FOURDS_FAULT_IN_SAVE"



def step_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary and moved-aside folders are not listed)."""
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(dirs, key=lambda p: int(STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the message names the intact previous checkpoint."""


class CheckpointError(RuntimeError):
    """A file of a checkpoint is unreadable; ``file`` and ``reason`` say which and why."""

    def __init__(self, file: Path, reason: str) -> None:
        self.file, self.reason = Path(file), reason
        super().__init__(f"{file}: {reason}")


def rng_state() -> dict[str, Any]:
    """All RNG states of this process, in weights_only-loadable types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached"]))
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(obj: Any) -> Any:
    return tuple(_to_tuple(x) for x in obj) if isinstance(obj, (list, tuple)) else obj


class StateFileError(RuntimeError):
    """A ``torch.save`` state file fourds refuses to load; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def load_problem(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed on ``path``, in a short sentence (no file content)."""
    what = sniff(path)
    if not what.startswith(("a zip", "a Python pickle")):
        return f"refusing to load it: not a torch.save file (it looks like {what})"
    text = str(err)
    unsafe = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]{1,100})", text)
    if unsafe:
        return (f"refusing to load it: it holds Python objects, not only tensors (a reference to {unsafe.group(1)}); "
                f"fourds never unpickles code")
    if what.startswith("a Python pickle"):
        return ("refusing to load it: a Python pickle that the weights-only loader cannot read (not a plain-tensor "
                "torch.save file, or damaged); fourds never unpickles code")
    first = (text.strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:160]
    return f"refusing to load it: a damaged or truncated torch.save file ({type(err).__name__}: {first})"


def safe_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with a clear error for missing, damaged or unsafe files.

    Raises:
        FileNotFoundError: no such file.
        StateFileError: not a torch.save file, damaged, or holding more than tensors and plain
            containers (never unpickled).
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for unsafe content, RuntimeError/EOFError for corrupt files
        raise StateFileError(path, load_problem(path, err)) from None


def save_torch_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`fourds.fileio.atomic_path` (temporary file, umask mode, rename)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def cpu_copy(obj: Any, copy: bool) -> Any:
    """``obj`` with every tensor moved to the CPU (cloned when ``copy``, so later in-place updates of the
    originals do not reach it); dicts, lists and tuples are rebuilt, other values shared."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=copy)
    if isinstance(obj, dict):
        return {k: cpu_copy(v, copy) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v, copy) for v in obj)
    return obj


class Staging:
    """Reusable CPU buffers for background-save snapshots: the tensors of one snapshot are copied into
    the buffers of the previous one (same traversal order, same shapes), so a periodic save touches warm
    memory instead of allocating (and page-faulting) gigabytes each time; pinned when copying from CUDA.
    Only used once the previous background write has finished."""

    def __init__(self) -> None:
        self.buffers: list[torch.Tensor] = []
        self.index = 0

    def __call__(self, obj: Any) -> Any:
        self.index = 0
        out = self._copy(obj)
        del self.buffers[self.index:]
        return out

    def _copy(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            t = obj.detach()
            if hasattr(t, "to_local"):  # a DTensor is never staged here (sharded saves use DCP)
                return t.to("cpu", copy=True)
            i = self.index
            self.index += 1
            if i < len(self.buffers) and self.buffers[i].shape == t.shape and self.buffers[i].dtype == t.dtype:
                buf = self.buffers[i]
            else:
                buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)
                self.buffers[i:i + 1] = [buf]
            buf.copy_(t, non_blocking=t.is_cuda)
            return buf
        if isinstance(obj, dict):
            return {k: self._copy(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._copy(v) for v in obj)
        return obj


def clone_tree(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_tree(v) for k, v in obj.items()}
    return obj


def check_optimizer_matches(optimizer: torch.optim.Optimizer, saved: dict[str, Any], file: Path) -> None:
    """Raise before loading when ``saved`` cannot load into ``optimizer`` (so nothing is half-loaded)."""
    ours = [len(g["params"]) for g in optimizer.param_groups]
    theirs = [len(g.get("params", [])) for g in saved.get("param_groups", [])]
    if ours != theirs:
        raise ValueError(f"{file} holds optimiser state for parameter groups of sizes {theirs}, the model has "
                         f"{ours}: the checkpoint is from a different model or configuration; resume with the "
                         f"configuration it was saved with")


def lock_run(out: Path, info: DistInfo) -> None:
    """Rank 0 takes ``<out>/.lock`` (:func:`fourds.fileio.lock_run_folder`); every rank raises if it
    could not (rank 0 with the holder's PID)."""
    error: RuntimeError | None = None
    if info.is_main:
        try:
            lock_run_folder(out)
        except RuntimeError as err:
            error = err
    if all_reduce_min(0.0 if error else 1.0, info.device) < 1.0:
        raise error or RuntimeError(f"rank 0 could not lock the run folder {out} (see its error)")


def finalize_checkpoints(run_dir: str | Path) -> int:
    """Drop the optimiser state from a finished run's unsharded checkpoints; returns the bytes freed.

    ``run_dir`` is a run folder (with ``checkpoints/``) or its ``checkpoints`` folder. Each
    ``train_state.pt`` is rewritten (atomically, with its checksum) without ``optimizer`` and with
    ``optimizer_dropped: True``. The checkpoints stay model folders (``fourds.models.load``), and
    ``--resume`` from one restores the weights with a warning that AdamW restarts (e.g. to extend a
    finished run). Sharded (DCP) checkpoints and unreadable ones are left as they are (logged). Call it
    only once the run has finished: no process may be writing checkpoints there.
    """
    root = Path(run_dir)
    root = root / "checkpoints" if (root / "checkpoints").is_dir() else root
    freed = 0
    for path in step_dirs(root):
        state_file = path / STATE_NAME
        if (path / "dcp").is_dir():
            log.info("%s is sharded (DCP): its optimiser state is kept", path)
            continue
        try:
            state = safe_load(state_file)
        except (RuntimeError, FileNotFoundError) as err:
            log.warning("leaving %s as it is: %s", path, err)
            continue
        if not isinstance(state, dict) or "optimizer" not in state:
            continue
        before = state_file.stat().st_size
        state.pop("optimizer")
        state["optimizer_dropped"] = True
        save_torch_atomic(state, state_file)
        freed += before - state_file.stat().st_size
        manifest_file = path / MANIFEST_NAME
        if manifest_file.is_file():
            manifest = json.loads(manifest_file.read_text())
            manifest["files"][STATE_NAME] = {"sha256": file_sha256(state_file), "bytes": state_file.stat().st_size}
            write_json_atomic(manifest_file, manifest)
    return freed
