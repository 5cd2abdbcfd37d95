"""The probe's training loop and evaluation, shared by the frozen sweep and the finetuned runs.

K heads (one when finetuning), one AdamW with K parameter groups tagged by head, one backward on the
sum of the K losses (exact: the heads are disjoint and frozen features carry no gradient), per-head
gradient clipping and per-head divergence (a head whose loss or gradient goes non-finite stops
training; the others continue). The step loop, checkpoints, resume, SIGTERM and the
``FOURDS_FAULT_AT_STEP`` SIGKILL hook are the shared ones of :mod:`fourds.train.trainer`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fourds.tasks.base import TaskContract
from fourds.train.checkpoint import Checkpointer
from fourds.train.distributed import DistInfo, all_reduce_mean
from fourds.train.logger import RunLogger
from fourds.train.optim import param_groups
from fourds.train.probe_config import ProbeConfig
from fourds.train.probe_data import (
    EvalClips,
    ShardSampler,
    collate_clips,
    collate_fn,
    first_clip_batch,
    make_loader,
    merge_clip_outputs,
    to_device,
    tree_map,
)
from fourds.train.probe_heads import HeadSpec
from fourds.train.probe_metrics import MetricAccumulator, primary_spec
from fourds.train.trainer import (
    Cadence,
    NonFiniteLossError,
    Steps,
    apply_schedule,
    refuse_existing_checkpoints,
    run_steps,
)

log = logging.getLogger(__name__)


class StopRequested(RuntimeError):
    """SIGTERM/SIGINT: the run checkpointed and stopped; continue it with ``--resume``."""


def float_outputs(outputs: Any) -> Any:
    """Losses and metrics in float32 (outputs may be bf16 under autocast)."""
    return tree_map(lambda t: t.float() if t.is_floating_point() else t, outputs)


def head_groups(heads: list[nn.Module], specs: list[HeadSpec]) -> list[dict]:
    """AdamW groups per head (decayed, and non-decayed if the head declares ``no_weight_decay()``),
    tagged with the head index and its peak learning rate."""
    groups = []
    for k, (head, spec) in enumerate(zip(heads, specs)):
        no_decay = head.no_weight_decay() if hasattr(head, "no_weight_decay") else set()
        for g in param_groups(head, spec.weight_decay, no_decay):
            groups.append({**g, "peak_lr": spec.lr, "head": k})
    return groups


class HeadTrainer(Steps):
    """Trains ``core.heads`` (and any other trainable parameter of ``core``) for ``cfg.steps`` steps, in
    the shared step loop (:func:`fourds.train.trainer.run_steps`).

    Args:
        cfg: the resolved probe config.
        info: where this process runs.
        task: the task (its ``loss``).
        out: the run folder (checkpoints, metrics.jsonl, tb/).
        core: the module whose state is checkpointed; has ``heads`` (ModuleList) and ``specs``.
        wrapped: ``core`` or its DDP wrapper (what ``step_outputs`` calls).
        optimizer: AdamW whose groups carry ``peak_lr``, ``lr_scale`` and ``head`` (-1: not a head).
        counter: backbone forward counts, saved with the checkpoint and restored on resume.
        desc: progress-bar label.
    """

    def __init__(self, cfg: ProbeConfig, info: DistInfo, task: TaskContract, out: Path, core: nn.Module,
                 wrapped: nn.Module, optimizer: torch.optim.Optimizer, counter: dict[str, int], desc: str) -> None:
        self.cfg, self.info, self.task, self.out = cfg, info, task, out
        self.core, self.wrapped, self.optimizer, self.counter, self.desc = core, wrapped, optimizer, counter, desc
        self.specs: list[HeadSpec] = list(core.specs)
        self.ckpt = Checkpointer(out / "checkpoints", info, keep=cfg.keep_checkpoints)
        self.diverged = [False] * len(self.specs)

    def resume(self) -> int:
        latest = self.ckpt.latest()
        refuse_existing_checkpoints(self.out, latest, self.cfg.resume)
        resumed = self.ckpt.resume(self.core, self.optimizer) if latest is not None else None
        if resumed is None:
            return 0
        latest, state = resumed  # the newest intact checkpoint (an unreadable newer one is set aside)
        self.diverged = [bool(d) for d in state["diverged"]]
        self.counter.update({k: int(v) for k, v in state["counter"].items()})
        log.info("resumed %s from %s at step %d", self.desc, latest, int(state["step"]))
        return int(state["step"])

    def fit(self, loader_for: Callable[[int], Any], step_outputs: Callable[[dict], list[Any]]) -> None:
        """Train from the latest checkpoint (or step 0) to ``cfg.steps``.

        Args:
            loader_for: ``start_step → iterable`` of this rank's batches for steps ``start..steps-1``.
            step_outputs: ``batch → [outputs of head k]`` (runs the backbone as the mode needs).

        Raises:
            StopRequested: SIGTERM/SIGINT (after a checkpoint).
            NonFiniteLossError: every readout diverged.
        """
        cfg, info = self.cfg, self.info
        start = self.resume()
        if start >= cfg.steps:
            return
        self.head_params = [[p for p in h.parameters() if p.requires_grad] for h in self.core.heads]
        in_heads = {id(p) for ps in self.head_params for p in ps}
        self.other = [p for p in self.core.parameters() if p.requires_grad and id(p) not in in_heads]
        self.max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        self.logger = RunLogger(self.out, total=cfg.steps, initial=start, enabled=info.is_main,
                                tensorboard=cfg.tensorboard, desc=self.desc)
        self.step_outputs = step_outputs
        self.batches = iter(loader_for(start))
        self.wrapped.train()
        try:
            # The step reads its K losses and norms on the host anyway: ranks may agree on a stop at every step.
            step, stopped = run_steps(self, start, Cadence.of(cfg), info, self.logger, sync_every_step=True)
            if stopped:
                raise StopRequested(f"stopped at step {step} on request; continue with --resume")
        finally:
            self.logger.close()

    def step(self, step: int) -> None:
        info = self.info
        self.t0 = time.perf_counter()
        apply_schedule(self.optimizer, step, self.cfg)  # every group at its own peak_lr
        self.optimizer.zero_grad(set_to_none=True)
        batch = to_device(next(self.batches), info.device)
        outputs = self.step_outputs(batch)
        losses = [self.task.loss(float_outputs(o), batch) for o in outputs]
        # A diverged head keeps a zero-gradient dependence so DDP still sees its parameters used.
        total = sum(sum((p * 0).sum() for p in self.head_params[k]) if self.diverged[k] else losses[k]
                    for k in range(len(losses)))
        total.backward()
        # Gradients are already averaged over ranks by DDP, so every rank decides alike. One host read per
        # step for the K losses and K + 1 gradient norms together.
        zero = torch.zeros((), device=info.device)
        norm_t = [torch.nn.utils.clip_grad_norm_(ps, self.max_norm) if ps else zero for ps in self.head_params]
        other_t = torch.nn.utils.clip_grad_norm_(self.other, float("inf")) if self.other else zero
        read = torch.cat([all_reduce_mean(torch.stack([l.detach().float() for l in losses])),
                          torch.stack([n.float() for n in norm_t]), other_t.float().reshape(1)]).tolist()
        k_heads = len(losses)
        self.loss_values, self.norms, self.other_norm = read[:k_heads], read[k_heads:2 * k_heads], read[-1]
        self._mark_diverged(step)
        for k, params in enumerate(self.head_params):
            if self.diverged[k]:
                for p in params:
                    p.grad = None  # AdamW skips parameters without a gradient
        self.optimizer.step()

    def _mark_diverged(self, step: int) -> None:
        """Heads whose loss or gradient norm went non-finite stop training; all of them: the run stops."""
        for k, spec in enumerate(self.specs):
            values = (self.loss_values[k], self.norms[k], self.other_norm)
            if not all(math.isfinite(v) for v in values) and not self.diverged[k]:
                self.diverged[k] = True
                self.logger.write(f"{spec.name}: non-finite loss ({self.loss_values[k]}) or gradient norm "
                                  f"({self.norms[k]}) at step {step}; this readout stops training")
        if all(self.diverged):
            last = self.ckpt.latest()
            raise NonFiniteLossError(
                f"every readout diverged by step {step} (non-finite loss or gradient norm); last "
                f"good checkpoint: {last if last else 'none yet'}. Try lower --lrs or --grad-clip 1.0."
            )

    def log(self, step: int) -> None:
        self._log(self.logger, step, time.perf_counter() - self.t0, self.loss_values, self.norms,
                  self.other_norm if self.other else None)

    def save(self, step: int, last: bool) -> None:
        state = {"config": self.cfg.to_dict(), "diverged": self.diverged, "counter": dict(self.counter)}
        self.logger.write(f"saved {self.ckpt.save(step, self.core, self.optimizer, state)}")

    def _log(self, logger: RunLogger, step: int, dt: float, losses: list[float], norms: list[float],
             other_norm: float | None) -> None:
        scalars: dict[str, float] = {"clips_per_s": self.cfg.batch_size / dt, "step_time_s": dt,
                                     "backbone_forward_calls": float(self.counter.get("train", 0))}
        groups = self.optimizer.param_groups
        for k, spec in enumerate(self.specs):
            lr = next(g["lr"] for g in groups if g["head"] == k)
            scalars.update({f"{spec.name}/loss": losses[k], f"{spec.name}/lr": lr, f"{spec.name}/grad_norm": norms[k]})
        if other_norm is not None:
            scalars["backbone/grad_norm"] = other_norm
        live = [v for v, d in zip(losses, self.diverged) if not d]
        logger.log(step, scalars, bar={"loss": f"{min(live):.4f}", "heads": f"{len(live)}/{len(losses)}"})


@torch.no_grad()
def evaluate(task: TaskContract, outputs_of: Callable[[dict], list[Any]], loader: Any, num_heads: int,
             info: DistInfo) -> list[dict[str, float]]:
    """Every head's data-set metrics on one split (each rank evaluates its shard; gathered)."""
    return [acc.reduce() for acc in _accumulate(task, outputs_of, loader, num_heads, info)]


@torch.no_grad()
def evaluate_with_samples(task: TaskContract, outputs_of: Callable[[dict], list[Any]], loader: Any, num_heads: int,
                          info: DistInfo, indices: list[int]) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    """:func:`evaluate`, and every head's primary metric per evaluated sample in ``indices`` order
    (``{"metric", "indices", "values"[, "weights"]}``: what a paired bootstrap over the split resamples)."""
    _, key = primary_spec(task)
    accs = _accumulate(task, outputs_of, loader, num_heads, info)
    order = [j for r in range(info.world_size) for j in range(r, len(indices), info.world_size)]  # gathered order
    samples = []
    for acc in accs:
        raw = acc.samples(key)
        placed = {name: [0.0] * len(indices) for name in raw}
        for pos, j in enumerate(order):
            for name, vals in raw.items():
                placed[name][j] = vals[pos]
        samples.append({"metric": key, "indices": list(indices), **placed})
    return [acc.reduce() for acc in accs], samples


def _accumulate(task: TaskContract, outputs_of: Callable[[dict], list[Any]], loader: Any, num_heads: int,
                info: DistInfo) -> list[MetricAccumulator]:
    accs = [MetricAccumulator(task) for _ in range(num_heads)]
    for batch, counts in loader:
        batch = to_device(batch, info.device)
        outputs = outputs_of(batch)
        labels = first_clip_batch(batch, counts)
        for acc, out in zip(accs, outputs):
            acc.add(merge_clip_outputs(task, float_outputs(out), counts), labels)
    return accs


def eval_loader(load_clips: Callable[[int], list[dict]], indices: list[int], batch_size: int, info: DistInfo,
                num_workers: int) -> Any:
    """This rank's evaluation batches: ``(clip batch, clips per sample)``."""
    return make_loader(EvalClips(load_clips, indices), ShardSampler(len(indices), batch_size, info.rank, info.world_size),
                       collate_clips(collate_fn()), num_workers, info.device.type == "cuda")


def select(task: TaskContract, configs: list[dict[str, Any]]) -> int | None:
    """Index of the best non-diverged configuration on ``val`` by the task's primary metric."""
    spec, key = primary_spec(task)
    best = None
    for k, r in enumerate(configs):
        value = r["val"].get(key, float("nan"))
        if r.get("diverged") or not math.isfinite(value):
            continue
        if best is None or spec.better(value, configs[best]["val"][key]):
            best = k
    return best
