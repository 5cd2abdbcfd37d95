"""Atomic, verified, resumable training checkpoints, optionally written in the background.

Layout of ``<run>/checkpoints/step_XXXXXXXX/``:

- unsharded runs (one process or DDP): ``config.json`` + ``model.safetensors`` (so every checkpoint is
  also a model folder for :func:`fourds.models.load`; the weights carry their own sha256) and
  ``train_state.pt`` (optimiser, step, data position, config);
- FSDP2 runs: ``dcp/`` (model and optimiser, sharded, via ``torch.distributed.checkpoint``) and
  ``train_state.pt`` (everything else);
- every rank adds ``rng_rank{r}.pt`` (its torch/CUDA/numpy/python RNG states);
- ``checksums.json``: sha256 and size of every other file, written last.

What survives a crash:

- A checkpoint is written into the hidden folder ``.tmp_step_XXXXXXXX`` and renamed into place only when
  complete; old checkpoints beyond ``keep`` are removed only after that rename. A crash or a full disk
  mid-write thus never leaves a half checkpoint (a failed write removes its temporary folder and names
  the intact previous checkpoint).
- :meth:`Checkpointer.resume` validates a checkpoint completely (checksums, safetensors framing,
  ``torch.load(weights_only=True)`` of every state file, DCP load into scratch copies) before anything
  is loaded into the model or optimiser, so a half-loaded model is impossible. An unreadable checkpoint
  gives a warning naming the file and why, is moved aside to ``step_XXXXXXXX.unreadable`` (nothing is
  deleted), and the newest intact one is used; if none is intact, a RuntimeError lists each problem.
- ``save(..., background=True)`` copies the state to CPU memory at the step boundary and writes it in a
  background thread (FSDP2 runs: ``torch.distributed.checkpoint.async_save`` on a gloo group of its
  own); the next save, :meth:`Checkpointer.wait` or the end of the loop waits for it, renames it into
  place, and raises a background failure there.

State files load with ``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fourds.fileio import WriteError, describe_os_error, write_json_atomic
from fourds.models.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CorruptFileError,
    check_state_matches,
    model_folder_config,
    read_safetensors,
    save_weights_atomic,
)
from fourds.train.checkpoint_files import (
    FAULT_SAVE_ENV,
    MANIFEST_NAME,
    STATE_NAME,
    CheckpointError,
    CheckpointWriteError,
    Staging,
    StateFileError,
    check_optimizer_matches,
    clone_tree,
    cpu_copy,
    file_sha256,
    finalize_checkpoints,
    lock_run,
    rng_state,
    safe_load,
    save_torch_atomic,
    set_rng_state,
    step_dirs,
)
from fourds.train.distributed import DistInfo, all_reduce_min, barrier

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves and restores full training state under ``root`` (``<run>/checkpoints``).

    Args:
        root: the checkpoints folder.
        info: this process's rank and device.
        keep: how many step checkpoints to keep (older ones are removed after a new one is complete).
        sharded: FSDP2 run (DCP sharded model/optimiser).
    """

    def __init__(self, root: str | Path, info: DistInfo, keep: int = 2, sharded: bool = False) -> None:
        self.root = Path(root)
        self.info = info
        self.keep = keep
        self.sharded = sharded
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._pending: Path | None = None
        self._sharded_pending: tuple[int, Path, Path, Any] | None = None
        self._gloo: Any = None
        self._staging = Staging()

    def step_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary and moved-aside folders are not listed)."""
        return step_dirs(self.root)

    def latest(self) -> Path | None:
        """The newest complete checkpoint (after a background save in progress has finished; its error,
        if any, is still raised by the next :meth:`wait` or :meth:`save`)."""
        self._join()
        dirs = self.step_dirs()
        return dirs[-1] if dirs else None

    # --- saving -----------------------------------------------------------------------------------------

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
             background: bool = False) -> Path:
        """Write the checkpoint of ``step`` (collective: every rank must call it); returns its final path.

        With ``background`` the model, optimiser and RNG state are copied to CPU memory now and written
        by a background thread (sharded runs: ``dcp.async_save``); the checkpoint appears at the returned
        path once complete (sharded: at the next :meth:`wait` or :meth:`save`, a collective). A previous
        background save is waited for first, and its error, if any, is raised here.

        Raises:
            RuntimeError: the write failed (e.g. a full disk); the message names the intact previous
                checkpoint. No temporary folder is left behind.
        """
        self.wait()
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp_step_{step:08d}"
        if self.info.is_main:
            try:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
            except OSError as err:
                raise self._write_failed(final, WriteError(tmp, err)) from err
        barrier()
        rng = rng_state()
        if self.sharded:
            self._save_sharded(step, model, optimizer, state, final, tmp, rng, background)
            return final
        if not self.info.is_main:
            save_torch_atomic(rng, tmp / f"rng_rank{self.info.rank}.pt")
            barrier()  # every rank's RNG file is in place before rank 0 may rename the folder
            barrier()
            return final
        barrier()
        if background:  # a snapshot: the loop goes on changing the live tensors in place
            weights, optim = self._staging({"w": model.state_dict(), "o": optimizer.state_dict()}).values()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the non-blocking device-to-host copies are complete
        else:
            weights, optim = cpu_copy(model.state_dict(), copy=False), cpu_copy(optimizer.state_dict(), copy=False)
        job = {
            "weights": weights,
            "config": model_folder_config(model, {"step": step}),
            "state": {**cpu_copy(state, copy=True), "optimizer": optim, "step": step},
            "rng": rng,
        }
        if background:
            self._pending = final
            self._thread = threading.Thread(target=self._run_in_background, args=(step, final, tmp, job),
                                            name=f"fourds-save-{step}", daemon=False)
            self._thread.start()
        else:
            self._write_unsharded(step, final, tmp, job)
        barrier()
        return final

    def _run_in_background(self, step: int, final: Path, tmp: Path, job: dict[str, Any]) -> None:
        try:
            self._write_unsharded(step, final, tmp, job)
        except BaseException as err:  # surfaced by the next wait()/save()
            self._error = err

    def _write_unsharded(self, step: int, final: Path, tmp: Path, job: dict[str, Any]) -> None:
        """Rank 0: write ``job`` into ``tmp``, then rename it to ``final`` and rotate old checkpoints."""
        try:
            save_weights_atomic(job["weights"], tmp / WEIGHTS_NAME)
            write_json_atomic(tmp / CONFIG_NAME, job["config"])
            if os.environ.get(FAULT_SAVE_ENV) == str(step):
                os.kill(os.getpid(), signal.SIGKILL)
            save_torch_atomic(job["state"], tmp / STATE_NAME)
            save_torch_atomic(job["rng"], tmp / f"rng_rank{self.info.rank}.pt")
            self._finish(final, tmp)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, (WriteError, OSError)):
                raise self._write_failed(final, err) from err
            raise

    def _save_sharded(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                      final: Path, tmp: Path, rng: dict[str, Any], background: bool) -> None:
        """FSDP2: DCP shards (``dcp.async_save`` when ``background``: it copies the shards to CPU memory
        and returns; :meth:`wait` completes the checkpoint on every rank), the training state and RNG."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        failure: BaseException | None = None
        future = None
        try:
            model_sd, optim_sd = get_state_dict(model, optimizer)
            sd = {"model": model_sd, "optim": optim_sd}
            if background:
                future = dcp.async_save(sd, checkpoint_id=str(tmp / "dcp"), process_group=self._cpu_group())
            else:
                dcp.save(sd, checkpoint_id=str(tmp / "dcp"))
            if self.info.is_main:
                save_torch_atomic({**cpu_copy(state, copy=True), "step": step}, tmp / STATE_NAME)
            save_torch_atomic(rng, tmp / f"rng_rank{self.info.rank}.pt")
        except (WriteError, OSError) as err:
            failure = err
        if future is not None and failure is None:
            self._sharded_pending = (step, final, tmp, future)
            self._pending = final
            return
        if future is not None:
            with suppress(Exception):
                future.result()
        self._complete_sharded(step, final, tmp, failure)

    def _cpu_group(self) -> Any:
        """A gloo process group of its own for ``dcp.async_save`` (its write thread runs collectives while
        the loop runs its own on the default group; created at the first background save, on every rank)."""
        if self._gloo is None:
            self._gloo = dist.new_group(backend="gloo")
        return self._gloo

    def _complete_sharded(self, step: int, final: Path, tmp: Path, failure: BaseException | None) -> None:
        """Collective: agree that every rank wrote its files, then rank 0 renames ``tmp`` into place."""
        if failure is None and os.environ.get(FAULT_SAVE_ENV) == str(step):
            os.kill(os.getpid(), signal.SIGKILL)
        if all_reduce_min(0.0 if failure else 1.0, self.info.device) < 1.0:
            if self.info.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            barrier()
            raise self._write_failed(final, failure or RuntimeError("another rank could not write its files"))
        if self.info.is_main:
            try:
                self._finish(final, tmp)
            except (WriteError, OSError) as err:
                shutil.rmtree(tmp, ignore_errors=True)
                raise self._write_failed(final, err) from err
        barrier()

    def _finish(self, final: Path, tmp: Path) -> None:
        """Write the manifest, rename ``tmp`` to ``final``, then drop checkpoints beyond ``keep``."""
        manifest = {
            str(p.relative_to(tmp)): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != WEIGHTS_NAME
        }
        write_json_atomic(tmp / MANIFEST_NAME, {"format": "fourds-checkpoint-1", "files": manifest})
        if final.exists():  # the same step saved again (after a resume from an older checkpoint)
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.step_dirs()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _write_failed(self, final: Path, err: BaseException) -> CheckpointWriteError:
        previous = [d for d in self.step_dirs() if d != final]
        where = (f"the previous checkpoint {previous[-1]} is intact (continue from it with --resume)" if previous
                 else "no earlier checkpoint exists")
        if isinstance(err, WriteError):
            why = f"writing {err.path.name} failed: {err.reason}"
        elif isinstance(err, OSError):
            why = describe_os_error(err)
        else:
            why = str(err)[:300]
        return CheckpointWriteError(f"checkpoint {final} was not written ({why}); no partial checkpoint was left "
                                    f"behind and {where}")

    def wait(self) -> None:
        """Block until the background save (if any) is complete; raise its error (once). Collective for
        sharded runs (every rank calls it at the same point, as :meth:`save`)."""
        self._join()
        if self._sharded_pending is not None:
            step, final, tmp, future = self._sharded_pending
            self._sharded_pending = None
            failure: BaseException | None = None
            try:
                future.result()
            except Exception as err:  # the shards of this rank were not written
                failure = err if isinstance(err, (OSError, WriteError)) else OSError(errno.EIO, str(err)[:300])
            self._pending = None
            self._complete_sharded(step, final, tmp, failure)
        err, self._error = self._error, None
        pending, self._pending = self._pending, None
        if err is not None:
            if isinstance(err, CheckpointWriteError):
                raise err
            raise RuntimeError(f"the background save of checkpoint {pending} failed: {type(err).__name__}: "
                               f"{str(err)[:300]}") from err

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait_quietly(self) -> None:
        """:meth:`wait`, logging instead of raising a background error (for error paths that already raise).

        A pending sharded save is only waited for locally (no collective: the other ranks may not be here);
        it stays in its temporary folder and the previous checkpoint remains the newest."""
        if self._sharded_pending is not None:
            _, final, _, future = self._sharded_pending
            self._sharded_pending = self._pending = None
            with suppress(Exception):
                future.result()
            log.warning("the background save of %s was abandoned (the run stopped with an error)", final)
        try:
            self.wait()
        except RuntimeError as err:
            log.error("%s", err)

    # --- loading ----------------------------------------------------------------------------------------

    def _verify_manifest(self, path: Path) -> None:
        manifest_file = path / MANIFEST_NAME
        if not manifest_file.is_file():
            return  # checkpoints written before checksums
        try:
            files = json.loads(manifest_file.read_text())["files"]
            items = [(str(k), int(v["bytes"]), str(v["sha256"])) for k, v in files.items()]
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise CheckpointError(manifest_file, f"is damaged ({type(err).__name__})") from None
        for rel, size, digest in items:
            m = re.fullmatch(r"rng_rank(\d+)\.pt", rel)
            if m and int(m.group(1)) != self.info.rank:
                continue  # another rank's file: that rank checks it
            file = path / rel
            if not file.is_file():
                raise CheckpointError(file, "is missing (listed in checksums.json)")
            if file.stat().st_size != size:
                raise CheckpointError(file, f"has {file.stat().st_size} bytes, {size} were written (truncated or damaged)")
            if file_sha256(file) != digest:
                raise CheckpointError(file, "does not match the sha256 written with it (damaged after writing)")

    def _read(self, path: Path) -> dict[str, Any]:
        """Read and validate this rank's files of checkpoint ``path`` (touching no model); raises
        :class:`CheckpointError` naming the first unreadable file."""
        def guarded(file: Path, read: Callable[[], Any]) -> Any:
            try:
                return read()
            except (CorruptFileError, StateFileError) as err:
                raise CheckpointError(file, err.reason) from None
            except (RuntimeError, OSError, ValueError) as err:
                raise CheckpointError(file, str(err)[:300]) from None

        state = guarded(path / STATE_NAME, lambda: safe_load(path / STATE_NAME))
        if not isinstance(state, dict) or "step" not in state:
            raise CheckpointError(path / STATE_NAME, "is not a fourds training state (no 'step')")
        self._verify_manifest(path)
        out: dict[str, Any] = {"state": state}
        if (path / "dcp").is_dir():
            if not (path / "dcp" / ".metadata").is_file():
                raise CheckpointError(path / "dcp" / ".metadata", "is missing (incomplete sharded checkpoint)")
        else:
            out["weights"] = guarded(path / WEIGHTS_NAME, lambda: read_safetensors(path / WEIGHTS_NAME)[0])
        rng_file = path / f"rng_rank{self.info.rank}.pt"
        if rng_file.is_file():
            out["rng"] = guarded(rng_file, lambda: safe_load(rng_file))
        return out

    def _read_agreed(self, path: Path) -> dict[str, Any]:
        """:meth:`_read` on every rank; if any rank fails, all raise (so every rank falls back alike)."""
        error: CheckpointError | None = None
        loaded: dict[str, Any] = {}
        try:
            loaded = self._read(path)
        except CheckpointError as err:
            error = err
        if all_reduce_min(0.0 if error else 1.0, self.info.device) < 1.0:
            raise error or CheckpointError(path, "another rank found one of its files unreadable (see its warning)")
        return loaded

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Restore model, optimiser and this rank's RNG from ``path``; returns the rest of the state.

        Everything is read and validated first; the model and optimiser are only touched once all of it
        is good.

        Raises:
            CheckpointError: a file of the checkpoint is unreadable (names the file and why).
            ValueError / RuntimeError: the checkpoint is intact but does not fit this model or strategy.
        """
        loaded = self._read_agreed(path)
        state = loaded["state"]
        dropped = bool(state.get("optimizer_dropped"))
        if self.sharded:
            if not (path / "dcp").is_dir():
                raise RuntimeError(f"{path} is not a sharded (FSDP) checkpoint; resume with the strategy it was saved with")
            self._load_sharded(path, model, optimizer)
        else:
            if "weights" not in loaded:
                raise RuntimeError(f"{path} is a sharded (FSDP) checkpoint; resume it with --strategy fsdp")
            check_state_matches(loaded["weights"], model, path / WEIGHTS_NAME)
            if not dropped:
                if "optimizer" not in state:
                    raise CheckpointError(path / STATE_NAME, "has no optimiser state")
                check_optimizer_matches(optimizer, state["optimizer"], path / STATE_NAME)
            model.load_state_dict(loaded["weights"])
            if not dropped:
                optimizer.load_state_dict(state.pop("optimizer"))
        if dropped and self.info.is_main:
            log.warning("%s has no optimiser state (dropped by finalize_checkpoints when its run finished): the "
                        "weights are restored but AdamW restarts from zero moments, so the continued run differs "
                        "from an uninterrupted one", path)
        if "rng" in loaded:
            set_rng_state(loaded["rng"])
        else:
            log.warning("%s has no RNG state for rank %d (world size changed?); keeping fresh RNG", path, self.info.rank)
        if dist.is_initialized():
            dist.barrier()
        return state

    def _load_sharded(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(model, optimizer)
        scratch = {"model": clone_tree(model_sd), "optim": clone_tree(optim_sd)}  # loaded here first
        try:
            dcp.load(scratch, checkpoint_id=str(path / "dcp"))
        except Exception as err:  # DCP raises on every rank when any rank's read fails
            raise CheckpointError(path / "dcp", f"is unreadable ({type(err).__name__}: {str(err)[:300]})") from None
        set_state_dict(model, optimizer, model_state_dict=scratch["model"], optim_state_dict=scratch["optim"])

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Path, dict[str, Any]] | None:
        """Load the newest intact checkpoint; ``None`` if there is none at all.

        An unreadable checkpoint gives a warning naming the file and why and is moved aside to
        ``step_XXXXXXXX.unreadable`` (nothing is deleted); the next older one is tried. Leftover
        ``.tmp_step_*`` folders (saves interrupted by a crash) are removed.

        Raises:
            RuntimeError: checkpoints exist but none is intact (lists each one's problem).
        """
        self.wait()
        if self.info.is_main and self.root.is_dir():
            for tmp in self.root.glob(".tmp_step_*"):
                log.info("removing %s, a checkpoint whose save was interrupted", tmp)
                shutil.rmtree(tmp, ignore_errors=True)
        dirs = self.step_dirs()
        if not dirs:
            return None
        bad: list[tuple[Path, CheckpointError]] = []
        for path in reversed(dirs):
            try:
                state = self.load(path, model, optimizer)
            except CheckpointError as err:
                older = "trying the previous checkpoint" if path != dirs[0] else "no older checkpoint is left"
                # Every rank says what it found: a damaged file of one rank (its rng_rank<r>.pt, its DCP
                # shard) is named only by the rank that read it.
                rank = f"rank {self.info.rank}: " if self.info.distributed else ""
                log.warning("%scheckpoint %s is unreadable: %s; %s", rank, path.name, err, older)
                bad.append((path, err))
                continue
            if bad:
                self._set_aside([p for p, _ in bad])
            return path, state
        problems = "; ".join(f"{err}" for _, err in bad)
        raise RuntimeError(
            f"no intact checkpoint to resume in {self.root} ({problems}). Nothing was deleted. Restore the "
            f"damaged files from a copy, or start again with a new --out"
        )

    def _set_aside(self, paths: list[Path]) -> None:
        if self.info.is_main:
            for path in paths:
                target = path.with_name(path.name + ".unreadable")
                n = 1
                while target.exists():
                    n += 1
                    target = path.with_name(f"{path.name}.unreadable{n}")
                os.replace(path, target)
                log.warning("moved the unreadable checkpoint %s aside to %s (delete it once inspected)", path, target)
        barrier()

    # --- after a run ------------------------------------------------------------------------------------

    def drop_optimizer_state(self) -> int:
        """:func:`finalize_checkpoints` on this run's checkpoints (rank 0, after any pending save)."""
        self.wait()
        freed = finalize_checkpoints(self.root) if self.info.is_main else 0
        barrier()
        return freed


__all__ = [
    "FAULT_SAVE_ENV", "MANIFEST_NAME", "STATE_NAME", "CheckpointError", "CheckpointWriteError", "Checkpointer",
    "StateFileError", "file_sha256", "finalize_checkpoints", "lock_run", "rng_state", "safe_load",
    "save_torch_atomic", "set_rng_state", "step_dirs",
]
