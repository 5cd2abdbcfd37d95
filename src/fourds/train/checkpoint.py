"""Atomic, resumable training checkpoints.

Layout of ``<run>/checkpoints/step_XXXXXXXX/``:

- unsharded runs (one process or DDP): ``config.json`` + ``model.safetensors`` (so every checkpoint is
  also a model folder for :func:`fourds.models.load`) and ``train_state.pt`` (optimiser, step, data
  position, config, rank-0 RNG);
- FSDP2 runs: ``dcp/`` (model and optimiser, sharded, via ``torch.distributed.checkpoint``) and
  ``train_state.pt`` (everything else);
- every rank adds ``rng_rank{r}.pt`` (its torch/CUDA/numpy/python RNG states).

A checkpoint is written into a hidden temporary folder and renamed into place when complete, so a crash
mid-write never leaves a half checkpoint behind; the newest ``keep`` are kept. State files load with
``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fourds.models.io import save_model
from fourds.train.distributed import DistInfo, barrier

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d{8})$")


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


def safe_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with a clear error for missing or unsafe files."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for unsafe content, RuntimeError/EOFError for corrupt files
        raise RuntimeError(
            f"refusing to load {path}: not a plain-tensor training state ({type(err).__name__}: {err}). "
            f"fourds never unpickles code; delete this checkpoint to resume from the previous one."
        ) from err


class Checkpointer:
    """Saves and restores full training state under ``root`` (``<run>/checkpoints``)."""

    def __init__(self, root: str | Path, info: DistInfo, keep: int = 2, sharded: bool = False) -> None:
        self.root = Path(root)
        self.info = info
        self.keep = keep
        self.sharded = sharded

    def step_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
        return sorted(dirs, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]

    def latest(self) -> Path | None:
        dirs = self.step_dirs()
        return dirs[-1] if dirs else None

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
        """Write the checkpoint of ``step`` (collective: every rank must call it)."""
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp_step_{step:08d}"
        if self.info.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        barrier()
        if self.sharded:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_sd, optim_sd = get_state_dict(model, optimizer)
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "dcp"))
        elif self.info.is_main:
            save_model(model, tmp, extra={"step": step})
            state = {**state, "optimizer": optimizer.state_dict()}
        if self.info.is_main:
            torch.save({**state, "step": step}, tmp / "train_state.pt")
        torch.save(rng_state(), tmp / f"rng_rank{self.info.rank}.pt")
        barrier()
        if self.info.is_main:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.step_dirs()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        return final

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Restore model, optimiser and this rank's RNG from ``path``; returns the rest of the state."""
        state = safe_load(path / "train_state.pt")
        if self.sharded:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            if not (path / "dcp").is_dir():
                raise RuntimeError(f"{path} is not a sharded (FSDP) checkpoint; resume with the strategy it was saved with")
            model_sd, optim_sd = get_state_dict(model, optimizer)
            sd = {"model": model_sd, "optim": optim_sd}
            dcp.load(sd, checkpoint_id=str(path / "dcp"))
            set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        else:
            if "optimizer" not in state:
                raise RuntimeError(f"{path} is a sharded (FSDP) checkpoint; resume it with --strategy fsdp")
            from safetensors.torch import load_file

            weights = load_file(str(path / "model.safetensors"))
            model.load_state_dict(weights)
            optimizer.load_state_dict(state.pop("optimizer"))
        rng_file = path / f"rng_rank{self.info.rank}.pt"
        if rng_file.is_file():
            set_rng_state(safe_load(rng_file))
        else:
            log.warning("%s has no RNG state for rank %d (world size changed?); keeping fresh RNG", path, self.info.rank)
        if dist.is_initialized():
            dist.barrier()
        return state
