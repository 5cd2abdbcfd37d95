"""The training-loop core that pretraining, distillation and the probe all drive.

One step loop (:func:`run_steps`) owns what every run does around its optimisation steps: the
``FOURDS_FAULT_AT_STEP`` crash hook (a real SIGKILL, for resume tests), the SIGTERM/SIGINT stop flag
(:class:`StopFlag`: checkpoint, then stop at the next step boundary), the logging and checkpoint
cadence (:class:`Cadence`) and the non-finite check before anything is logged or saved. A run supplies
its step and what it logs and saves as a :class:`Steps` object. Around the loop: the warm-up + cosine
schedule (:func:`apply_schedule`), the bf16 choice (:func:`use_bf16`), the refusal to start over a run
that already holds checkpoints (:func:`refuse_existing_checkpoints`) and :class:`NonFiniteLossError`.

The clip-stream runs (pretraining and distillation) share their whole loop, :func:`train_loop`
(:class:`ClipSteps`: gradient accumulation, clipping, the device-side non-finite guard, throughput
logging, background checkpoints); their set-up (run folder, data, resume, export) is in
:mod:`fourds.train.pretrain`. The probe's K-head step is :class:`fourds.probe.sweep.HeadTrainer`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fourds.data import to_float
from fourds.fileio import release_run_folder
from fourds.train.checkpoint import Checkpointer
from fourds.train.device_step import (
    NonFiniteGuard,
    StepTimer,
    fused_attention_only,
    out_of_memory_message,
    peak_flops,
)
from fourds.train.distributed import DistInfo, all_reduce_mean, all_reduce_min, all_reduce_sum
from fourds.train.logger import RunLogger
from fourds.train.optim import warmup_cosine

log = logging.getLogger(__name__)

#: Test hook: the process SIGKILLs itself right before this step (a real crash, for resume tests).
FAULT_ENV = "FOURDS_FAULT_AT_STEP"


class NonFiniteLossError(RuntimeError):
    """Raised when the loss or gradient norm is NaN/inf; no optimiser step was taken."""


class StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop at the next step boundary; a second signal
    stops at once (``KeyboardInterrupt``). A context manager: the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def agreed(self, info: DistInfo, sync_point: bool) -> bool:
        """Whether every process stops now. Distributed, the ranks agree (a collective, so only at a
        ``sync_point``: a step where the loop synchronises anyway); one process: the flag itself."""
        if info.distributed:
            return sync_point and all_reduce_min(0.0 if self.requested else 1.0, info.device) < 1.0
        return self.requested


def fault_step() -> int:
    """The step before which the process kills itself (``FOURDS_FAULT_AT_STEP``), -1 for none."""
    return int(os.environ.get(FAULT_ENV, "-1"))


def use_bf16(precision: str, device: torch.device) -> bool:
    """``--precision``: bf16 when asked, or ``auto`` on CUDA; warns when that means bf16 on the CPU."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if bf16 and device.type == "cpu":
        log.warning("bf16 on CPU is 10-100x slower than fp32 here; use --precision fp32 on CPU")
    return bf16


def refuse_existing_checkpoints(out: Path, latest: Path | None, resume: bool) -> None:
    """A run never starts over checkpoints it would overwrite: ``ValueError`` unless resuming.

    Args:
        out: the run folder (``--out``).
        latest: its newest checkpoint folder, or ``None``.
        resume: ``--resume`` was given.
    """
    if latest is not None and not resume:
        raise ValueError(f"--out {out} already holds checkpoints ({latest.name}); pass --resume to continue "
                         f"that run, or choose a new --out")


def apply_schedule(optimizer: torch.optim.Optimizer, step: int, cfg: Any, peak: float | None = None) -> float | None:
    """Warm-up + cosine (:func:`fourds.train.optim.warmup_cosine`) over ``cfg.steps`` with
    ``cfg.warmup_steps`` and ``cfg.min_lr``: every group's lr at ``step`` is its schedule value times its
    ``lr_scale``; a group's peak is its ``peak_lr`` (the probe's per-head rates), else ``peak``.
    Returns the schedule value of ``peak`` (what a single-rate run logs), ``None`` without one."""
    for group in optimizer.param_groups:
        top = group["peak_lr"] if "peak_lr" in group else peak
        group["lr"] = warmup_cosine(step, cfg.steps, cfg.warmup_steps, top, cfg.min_lr) * group.get("lr_scale", 1.0)
    return None if peak is None else warmup_cosine(step, cfg.steps, cfg.warmup_steps, peak, cfg.min_lr)


@dataclass(frozen=True)
class Cadence:
    """When a loop of ``steps`` steps logs and saves: every ``log_every`` / ``save_every`` steps and at
    the last step (steps counted 1-based here: after the step's optimiser update)."""

    steps: int
    log_every: int
    save_every: int

    @classmethod
    def of(cls, cfg: Any) -> Cadence:
        return cls(int(cfg.steps), int(cfg.log_every), int(cfg.save_every))

    def log_due(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.steps

    def save_due(self, step: int) -> bool:
        return step % self.save_every == 0 or step == self.steps


class Steps:
    """What one kind of run does inside :func:`run_steps` (subclass it; the defaults do nothing).

    ``step(k)`` runs optimisation step ``k`` (0-based). After it, with ``n = k + 1`` steps done:
    ``check()`` (raise :class:`NonFiniteLossError` if a step went non-finite) before any logging or
    saving, ``log(n)`` on logging steps, ``save(n, last)`` on saving steps and on a stop request
    (``last``: the run's final checkpoint, so it must be complete when this returns), ``after(n, logged)``.
    """

    def step(self, step: int) -> None:
        raise NotImplementedError

    def check(self) -> None:
        pass

    def log(self, step: int) -> None:
        pass

    def save(self, step: int, last: bool) -> None:
        pass

    def after(self, step: int, logged: bool) -> None:
        pass

    def before_crash(self) -> None:
        """Called right before the ``FOURDS_FAULT_AT_STEP`` SIGKILL (e.g. let a background save finish)."""


def run_steps(steps: Steps, start: int, cadence: Cadence, info: DistInfo, logger: RunLogger,
              sync_every_step: bool = False) -> tuple[int, bool]:
    """Run steps ``start .. cadence.steps - 1`` of ``steps``; returns ``(steps done, stopped on request)``.

    Args:
        steps: the run's step and hooks.
        start: the first step (0 or the resumed checkpoint's step).
        cadence: when to log and save.
        info: the process (distributed ranks agree on a stop request).
        logger: its progress bar advances once per step.
        sync_every_step: the run reads device values every step anyway, so distributed ranks may agree
            on a stop request at every step (otherwise only at logging and saving steps).
    """
    crash_at = fault_step()
    step = start
    with StopFlag() as stop:
        while step < cadence.steps:
            if step == crash_at:
                steps.before_crash()
                os.kill(os.getpid(), signal.SIGKILL)
            steps.step(step)
            step += 1
            logger.advance()
            log_now, save_now = cadence.log_due(step), cadence.save_due(step)
            stop_now = stop.agreed(info, sync_every_step or log_now or save_now)
            if log_now or save_now or stop_now:
                steps.check()
            if log_now:
                steps.log(step)
            if save_now or stop_now:
                steps.save(step, last=step == cadence.steps or stop_now)
            steps.after(step, log_now)
            if stop_now:
                return step, True
    return step, False


# ------------------------------------------------------------------------------------------ clip runs
@dataclass
class Run:
    """Where a training run executes: process/device, strategy, precision, run folder, checkpoints."""

    info: DistInfo
    strategy: str
    bf16: bool
    out: Path
    ckpt: Checkpointer


def grad_sync(model: nn.Module, strategy: str, sync: bool) -> contextlib.AbstractContextManager:
    """Skip gradient all-reduce on all but the last accumulation micro-batch."""
    if strategy == "ddp" and not sync:
        return model.no_sync()  # type: ignore[operator]
    if strategy == "fsdp":
        model.set_requires_gradient_sync(sync)  # type: ignore[operator]
    return contextlib.nullcontext()


def param_checksum(model: nn.Module) -> float:
    """The float64 sum of every (local shard of a) parameter: a cheap per-rank fingerprint."""
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float64)
        for p in model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            total += local.detach().double().sum().cpu()
    return float(total)


def data_state_dict(step: int, cfg: Any, num_videos: int, failures: Any) -> dict[str, Any]:
    """The data position saved with a checkpoint.

    Sample ids are global and their content a pure function of ``(seed, id)`` (see
    :mod:`fourds.data.pretrain`), so the position is one number for every rank and worker: the next
    step's first id. ``epoch`` (passes over the source) is informative; the failure counts carry on.
    """
    next_sample = step * cfg.batch_size
    return {
        "next_sample": next_sample,
        "epoch": next_sample // num_videos if num_videos else 0,
        "seed": cfg.seed,
        "num_videos": num_videos,
        "failures": failures.state_dict(),
    }


def raise_if_non_finite(guard: NonFiniteGuard, ckpt: Checkpointer, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
    """Raise :class:`NonFiniteLossError` if any step so far was non-finite (one host sync)."""
    bad = guard.first_bad_step()
    if bad is None:
        return
    last = ckpt.latest()
    raise NonFiniteLossError(
        f"non-finite loss or gradient norm at step {bad} (latest: loss {float(loss)}, gradient norm "
        f"{float(grad_norm)}); stopped before that step's optimiser update (later steps were skipped). "
        f"Last good checkpoint: {last if last else 'none yet'} (continue with --resume). "
        f"Try a lower --lr, --grad-clip 1.0 or --precision fp32."
    )


class ClipSteps(Steps):
    """The step of a clip-stream run (see :func:`train_loop`, which documents the arguments)."""

    def __init__(self, cfg: Any, run: Run, model: nn.Module, core: nn.Module, optimizer: torch.optim.Optimizer,
                 loader: Any, data: Any, compute_loss: Callable[[torch.Tensor, dict], torch.Tensor],
                 step_flops: float, desc: str, logger: RunLogger,
                 extra_scalars: Callable[[], dict[str, float]] | None) -> None:
        self.cfg, self.run, self.info, self.model, self.core = cfg, run, run.info, model, core
        self.optimizer, self.data, self.compute_loss, self.step_flops = optimizer, data, compute_loss, step_flops
        self.desc, self.logger, self.extra_scalars = desc, logger, extra_scalars
        self.peak = peak_flops(run.info.device)
        self.rank_log = open(run.out / f"rank{run.info.rank}.jsonl", "a", buffering=1) if cfg.debug_rank_logs else None
        use_autocast = run.bf16 and run.strategy != "fsdp"  # FSDP2 casts through its mixed-precision policy
        self.autocast = torch.autocast(run.info.device.type, dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
        self.params = [p for p in core.parameters() if p.requires_grad]
        self.max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        self.guard = NonFiniteGuard(run.info.device, optimizer)
        self.timer = StepTimer(run.info.device)
        self.batches: Iterator[dict] = iter(loader)
        self.lr = 0.0
        self.loss_sum = self.grad_norm = torch.zeros(())
        self._new_window()

    def _new_window(self) -> None:
        self.window_start, self.window_steps, self.data_time = time.perf_counter(), 0, 0.0

    def _micro_step(self, step: int, m: int) -> torch.Tensor:
        """Forward and backward of micro-batch ``m``; returns its (scaled, detached) loss."""
        cfg, info = self.cfg, self.info
        td = time.perf_counter()
        batch = next(self.batches)
        if "failed" in batch:  # file sources: every batch reports its skipped bad videos
            self.data.failures.update([line for item in batch["failed"] for line in item.split("\n") if line],
                                      samples=len(batch["sample_id"]), check=False)
        video = to_float(batch["video"].to(info.device, non_blocking=True))
        self.data_time += time.perf_counter() - td
        try:
            with grad_sync(self.model, self.run.strategy, m == cfg.grad_accum - 1), self.autocast, \
                    fused_attention_only(info.device):
                loss = self.compute_loss(video, batch) / cfg.grad_accum
            loss.backward()
        except torch.OutOfMemoryError as err:
            raise RuntimeError(out_of_memory_message(
                f"{self.desc} step {step}", cfg.batch_size, len(batch["sample_id"]), cfg.grad_accum,
                str(getattr(cfg, "model", getattr(cfg, "student", "?"))),
                cfg.activation_checkpointing, cfg.precision, info.device)) from err
        return loss.detach()

    def step(self, step: int) -> None:
        cfg, info = self.cfg, self.info
        self.timer.start()
        self.lr = apply_schedule(self.optimizer, step, cfg, cfg.lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=info.device)
        for m in range(cfg.grad_accum):
            loss_sum += self._micro_step(step, m)
        if self.data.num_videos:  # summed over ranks, so every rank takes the same stop decision
            self.data.failures.commit(lambda counts: all_reduce_sum(counts, info.device))
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.loss_sum, self.grad_norm = loss_sum, grad_norm
        self.guard.update(step, grad_norm, loss_sum)
        if self.guard.must_check_every_step:
            self.check()
        self.guard.arm()
        self.optimizer.step()
        self.timer.stop()
        self.window_steps += 1
        if self.rank_log is not None:
            record = {"step": step + 1, "loss": float(loss_sum), "checksum": param_checksum(self.core)}
            self.rank_log.write(json.dumps(record) + "\n")

    def check(self) -> None:
        raise_if_non_finite(self.guard, self.run.ckpt, self.loss_sum, self.grad_norm)

    def log(self, step: int) -> None:
        cfg = self.cfg
        loss_value = float(all_reduce_mean(self.loss_sum))
        step_s = self.timer.seconds()
        wall = time.perf_counter() - self.window_start
        loop_clips = cfg.batch_size * self.window_steps / wall
        scalars = {
            "loss": loss_value, "lr": self.lr, "grad_norm": float(self.grad_norm),
            "clips_per_s": loop_clips, "step_clips_per_s": cfg.batch_size / step_s,
            "step_time_s": step_s, "loop_step_time_s": wall / self.window_steps,
            "data_time_s": self.data_time / self.window_steps, "tflops": self.step_flops / step_s / 1e12,
        }
        if self.peak:
            scalars["mfu"] = self.step_flops / step_s / self.peak
            scalars["loop_mfu"] = self.step_flops * self.window_steps / wall / self.peak
        if self.data.num_videos:
            scalars.update(self.data.failures.scalars())
        if self.extra_scalars is not None:
            scalars.update(self.extra_scalars())
        self.logger.log(step, scalars, bar={"loss": f"{loss_value:.4f}", "clips/s": f"{loop_clips:.1f}",
                                            "step clips/s": f"{cfg.batch_size / step_s:.1f}"})

    def save(self, step: int, last: bool) -> None:
        data = self.data
        state = {"config": self.cfg.to_dict(), "data": data_state_dict(step, self.cfg, data.num_videos, data.failures)}
        path = self.run.ckpt.save(step, self.core, self.optimizer, state, background=not last)  # periodic: background
        self.logger.write(f"saved {path}" if last else f"saving {path} in the background")

    def after(self, step: int, logged: bool) -> None:
        if logged:  # the next window starts after this step's logging and saving
            self._new_window()

    def before_crash(self) -> None:
        self.run.ckpt.wait()  # the crash comes after the previous (background) save has completed

    def close(self) -> None:
        if self.rank_log is not None:
            self.rank_log.close()


def train_loop(
    cfg: Any, run: Run, model: nn.Module, core: nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
    data: Any, start_step: int, compute_loss: Callable[[torch.Tensor, dict], torch.Tensor], step_flops: float,
    desc: str, extra_scalars: Callable[[], dict[str, float]] | None = None,
) -> int:
    """The optimisation loop of pretraining and distillation; returns the last step reached.

    Per step: warm-up + cosine learning rate, ``cfg.grad_accum`` micro-batches of ``compute_loss(video,
    batch)`` (video ``(b, T, S, S, 3)`` float32 in [0, 1] on the device; called inside the gradient-sync,
    autocast and fused-attention contexts), gradient clipping, a non-finite guard, the optimiser step.
    Nothing reads a device value per step (no host synchronisation): the non-finite guard skips the
    fused optimiser's update on the device and is read when the loop logs (every ``cfg.log_every`` steps;
    ``extra_scalars()`` adds to the logged scalars; it runs on every rank, so it may all-reduce) or saves
    (every ``cfg.save_every`` steps, at the end and on SIGTERM/SIGINT, checked at logging steps when
    distributed). Logged throughput: ``clips_per_s`` is the loop's (clips over the wall time of the
    logging window: data, logging and saves included), ``step_clips_per_s`` the step timer's (the
    compute of the window's last step), with ``tflops``/``mfu`` from the step timer.

    Args:
        data: the run's clip source (:class:`fourds.train.pretrain.Data`: ``num_videos``, ``failures``).
        start_step: the first step (0, or the resumed checkpoint's step).
        step_flops: model FLOPs of one optimiser step over all ranks (for ``tflops`` / ``mfu``).
    """
    logger = RunLogger(run.out, total=cfg.steps, initial=start_step, enabled=run.info.is_main, desc=desc)
    steps = ClipSteps(cfg, run, model, core, optimizer, loader, data, compute_loss, step_flops, desc, logger,
                      extra_scalars)
    model.train()
    try:
        step, stopped = run_steps(steps, start_step, Cadence.of(cfg), run.info, logger)
        if stopped:
            logger.write(f"stopped at step {step} on request; resume with --resume")
        run.ckpt.wait()
    except BaseException:
        run.ckpt.wait_quietly()  # a background save finishes (or logs its error); the original error propagates
        raise
    finally:
        release_run_folder(run.out)
        logger.close()
        steps.close()
    return step
