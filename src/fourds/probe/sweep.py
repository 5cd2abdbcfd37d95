"""The frozen sweep: K readouts (learning rate x layer x weight decay) trained side by side on one backbone
pass per batch, and the head trainer that the sweep and the finetuned runs both drive.

Every head is built by the task (``task.build_readout(dim, grid)``) with its own seeded initialisation that
depends on the run seed and its layer only, so a head trained alongside others starts exactly like the same
head trained alone. The backbone runs once per batch under ``torch.no_grad()`` in eval mode and returns every
layer the sweep reads (or the features come from the on-disk cache, :mod:`fourds.probe.cache`).

Training: K heads (one when finetuning), one AdamW with K parameter groups tagged by head, one backward on the
sum of the K losses (exact: the heads are disjoint and frozen features carry no gradient), per-head gradient
clipping and per-head divergence (a head whose loss or gradient goes non-finite stops training; the others
continue). The step loop, checkpoints, resume, SIGTERM and the ``FOURDS_FAULT_AT_STEP`` SIGKILL hook are the
shared ones of :mod:`fourds.train.trainer`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fourds.data import to_float
from fourds.data.pretrain import StepBatchSampler
from fourds.models.backbone import resolve_layers, token_grid
from fourds.models.io import save_weights_atomic, write_json_atomic
from fourds.probe.cache import FeatureCache, check_deterministic, feature_key, fingerprint
from fourds.probe.config import ProbeConfig
from fourds.probe.data import ProbeData, TrainDraws, clip_size, collate_fn, make_loader, task_clips, to_device
from fourds.probe.evaluate import eval_loader, evaluate, evaluate_with_samples, float_outputs
from fourds.seeding import derive_seed
from fourds.tasks.base import TaskContract, finetune_fraction, task_options
from fourds.train.checkpoint import Checkpointer
from fourds.train.distributed import DistInfo, all_reduce_mean, wrap_ddp
from fourds.train.logger import RunLogger
from fourds.train.optim import build_adamw, param_groups
from fourds.train.trainer import (
    Cadence,
    NonFiniteLossError,
    Steps,
    apply_schedule,
    refuse_existing_checkpoints,
    run_steps,
    use_bf16,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ heads
@dataclass(frozen=True)
class HeadSpec:
    """One readout configuration of the sweep.

    Attributes:
        layer: backbone layer index read (0 = embedding, k = block k).
        depth: the layer's fractional depth ``layer / num_layers``.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        steps: the schedule length of this configuration when a finetuning sweep runs several
            (``None``: the run's one ``steps``); part of the name (``..._s20000``).
    """

    layer: int
    depth: float
    lr: float
    weight_decay: float
    steps: int | None = None

    @property
    def name(self) -> str:
        name = f"L{self.layer:02d}_lr{self.lr:g}_wd{self.weight_decay:g}"
        return name if self.steps is None else f"{name}_s{self.steps}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.steps is None:
            del data["steps"]
        return {"name": self.name, **data}


def head_specs(layers: Sequence[int | float], lrs: Sequence[float], weight_decays: Sequence[float],
               num_layers: int, steps: Sequence[int] | None = None) -> list[HeadSpec]:
    """The sweep (layer-major, then lr, weight decay, schedule length), with layers resolved to indices
    and duplicates removed; ``steps`` (several finetuning schedules) adds the length to every spec."""
    indices = list(dict.fromkeys(resolve_layers(list(layers), num_layers)))
    lengths: list[int | None] = list(steps) if steps else [None]
    specs = [HeadSpec(i, i / num_layers, float(lr), float(wd), None if n is None else int(n))
             for i in indices for lr in lrs for wd in weight_decays for n in lengths]
    return list(dict.fromkeys(specs))


def default_layers(task: TaskContract, finetune: bool) -> list[float]:
    """The task's readout depth: ``task.layer_fraction`` frozen; finetuning 0.95 except K700 (0.75)."""
    if finetune:
        return [finetune_fraction(task)]
    return [float(task.layer_fraction)]


def build_head(task: TaskContract, dim: int, grid: tuple[int, int, int], seed: int, layer: int) -> nn.Module:
    """``task.build_readout(dim, grid)`` initialised from a generator seeded by ``(seed, layer)``."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(seed, "probe-readout", layer))  # CPU RNG only
        return task.build_readout(dim, tuple(grid))


class ReadoutBank(nn.Module):
    """K readout heads trained side by side on one backbone pass (disjoint parameters).

    ``forward(features, batch)``: ``features`` maps layer index → ``(B, T', N, C)``; returns the K heads'
    outputs in spec order.
    """

    def __init__(self, task: TaskContract, specs: Sequence[HeadSpec], dim: int, grid: tuple[int, int, int], seed: int) -> None:
        super().__init__()
        self.specs = list(specs)
        self.task_name, self.dim, self.grid = task.name, dim, tuple(grid)
        self.heads = nn.ModuleList(build_head(task, dim, grid, seed, s.layer) for s in self.specs)

    @property
    def layers(self) -> list[int]:
        return sorted({s.layer for s in self.specs})

    def forward(self, features: dict[int, Tensor], batch: dict[str, Any]) -> list[Any]:
        return [head(features[spec.layer], batch) for spec, head in zip(self.specs, self.heads)]

    def to_config(self) -> dict[str, Any]:
        return {"kind": "probe_readout_bank", "task": self.task_name, "dim": self.dim, "grid": list(self.grid),
                "heads": [s.to_dict() for s in self.specs]}



class StopRequested(RuntimeError):
    """SIGTERM/SIGINT: the run checkpointed and stopped; continue it with ``--resume``."""


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


# ------------------------------------------------------------------------------------------ the sweep
def probe_autocast(info: DistInfo, cfg: ProbeConfig) -> contextlib.AbstractContextManager:
    """bf16 autocast where ``cfg.precision`` and the device choose bf16, else a no-op context."""
    bf16 = use_bf16(cfg.precision, info.device)
    return torch.autocast(info.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class _Features:
    """Frozen features of a batch: from the cache keys when present, else one backbone pass (counted)."""

    def __init__(self, backbone: nn.Module, layers: list[int], autocast: contextlib.AbstractContextManager,
                 counter: dict[str, int]) -> None:
        self.backbone, self.layers, self.autocast, self.counter = backbone, layers, autocast, counter
        self.phase = "train"

    def __call__(self, batch: dict[str, Any]) -> dict[int, Tensor]:
        if feature_key(self.layers[0]) in batch:
            return {layer: batch.pop(feature_key(layer)).float() for layer in self.layers}
        video = to_float(batch["video"])
        with torch.no_grad(), self.autocast:
            feats = self.backbone.features(video, layers=self.layers)
        self.counter[self.phase] += 1
        return {layer: f.float() for layer, f in zip(self.layers, feats)}


def frozen_sweep(cfg: ProbeConfig, info: DistInfo, task: TaskContract, backbone: nn.Module, data: ProbeData, out: Path,
            counter: dict[str, int]) -> tuple[list[dict[str, Any]], Callable[[int], Callable]]:
    """Train and evaluate the K-readout sweep; returns per-config results and ``k → predict(batch)``."""
    grid = token_grid(backbone, clip_size(task))
    specs = head_specs(cfg.layers, cfg.lrs, cfg.weight_decays, backbone.num_layers)
    bank = ReadoutBank(task, specs, backbone.dim, grid, cfg.seed).to(info.device)
    backbone.eval().requires_grad_(False)
    features = _Features(backbone, bank.layers, probe_autocast(info, cfg), counter)
    collate = collate_fn()
    eval_batch = cfg.eval_batch_size or max(1, cfg.batch_size // info.world_size)

    train_load: Callable[[int], dict] = data.train_set.__getitem__
    train_transform: Callable | None = task.train_transform
    eval_clips, val_clips = task_clips(task, data.eval_set), task_clips(task, data.train_set)
    if cfg.feature_cache:
        train_load, train_transform, eval_clips, val_clips = _use_cache(
            cfg, info, task, backbone, data, features, eval_batch, collate, eval_clips, val_clips)

    optimizer = build_adamw(head_groups(list(bank.heads), specs), cfg.lrs[0], (cfg.beta1, cfg.beta2), info.device)
    wrapped = wrap_ddp(bank, info) if info.distributed else bank
    trainer = HeadTrainer(cfg, info, task, out, bank, wrapped, optimizer, counter, desc=f"probe {task.name} x{len(specs)}")

    def loader_for(start: int) -> Any:
        draws = TrainDraws(train_load, data.train_idx, train_transform, cfg.seed)
        sampler = StepBatchSampler(start, cfg.steps, cfg.batch_size, info.rank, info.world_size)
        return make_loader(draws, sampler, collate, cfg.num_workers, info.device.type == "cuda")

    if info.is_main:
        log.info("frozen probe on %s: %d readouts (layers %s x lrs %s x wd %s) on one backbone pass per batch; "
                 "global batch %d on %d process(es), %d steps, warm-up %d", task.name, len(specs), bank.layers,
                 cfg.lrs, cfg.weight_decays, cfg.batch_size, info.world_size, cfg.steps, cfg.warmup_steps)
    features.phase = "train"
    trainer.fit(loader_for, lambda batch: wrapped(features(batch), batch))

    bank.eval()
    features.phase = "eval"
    outputs_of = lambda batch: bank(features(batch), batch)  # noqa: E731
    test, samples = evaluate_with_samples(task, outputs_of, eval_loader(eval_clips, data.eval_idx, eval_batch, info,
                                                                        cfg.num_workers), len(specs), info, data.eval_idx)
    val = test if data.val_idx is None else evaluate(
        task, outputs_of, eval_loader(val_clips, data.val_idx, eval_batch, info, cfg.num_workers), len(specs), info)
    if info.is_main:
        for spec, head in zip(specs, bank.heads):
            save_head(head, out / "heads" / spec.name, task, spec, backbone.dim, grid)
    results = [{**spec.to_dict(), "val": v, "test": t, "test_samples": ts, "diverged": d}
               for spec, v, t, ts, d in zip(specs, val, test, samples, trainer.diverged)]

    def predictor(k: int) -> Callable:
        features.phase = "eval"
        layer = specs[k].layer
        return lambda batch: bank.heads[k](features(batch)[layer], batch)
    return results, predictor


def _use_cache(cfg: ProbeConfig, info: DistInfo, task: TaskContract, backbone: nn.Module, data: ProbeData, features: _Features,
               batch_size: int, collate: Callable, eval_clips: Callable, val_clips: Callable) -> tuple:
    """Fill the feature cache where needed; returns the cached sources (train load/transform, clips)."""
    check_deterministic(task, data.train_set[data.train_idx[0]])
    cache = FeatureCache(cfg.feature_cache, {
        "backbone": fingerprint(backbone), "task": task.name, "task_overrides": cfg.task_overrides,
        "data_kwargs": cfg.data_kwargs, "layers": features.layers, "train_split": cfg.train_split,
        "eval_split": cfg.eval_split, "precision": type(features.autocast).__name__,
    })
    fixed = lambda i: [task.train_transform(data.train_set[i], torch.Generator().manual_seed(0))]  # noqa: E731
    views = [("train", fixed, data.train_idx), ("eval", eval_clips, data.eval_idx)]
    if data.val_idx is not None:
        views.append(("train-eval", val_clips, data.val_idx))
    features.phase = "cache"
    for view, load, indices in views:
        if not cache.complete(view):
            n = cache.build(view, load, indices, features, info, batch_size, collate)
            log.info("feature cache: wrote %s (%d samples, %d backbone batches) under %s", view, len(indices), n, cache.dir)
    log.info("feature cache %s: training and evaluation skip the backbone", cache.dir)
    return cache.load_first("train"), None, cache.load_clips("eval"), cache.load_clips("train-eval")


def save_head(head: nn.Module, folder: Path, task: TaskContract, spec: HeadSpec, dim: int, grid: tuple) -> None:
    """A readout folder: ``config.json`` (kind ``probe_readout``: task name and settings, width, grid,
    layer, lr, wd) + ``model.safetensors``; :func:`fourds.models.load_module` rebuilds it through the task
    registry with the same settings (e.g. a readout scaled down with ``--task-overrides channels=...``;
    :func:`fourds.tasks.registry.load_readout_folder`)."""
    options = task_options(task)
    save_weights_atomic(head.state_dict(), folder / "model.safetensors")
    write_json_atomic(folder / "config.json", {"kind": "probe_readout", "task": task.name, "task_options": options,
                                               "dim": dim, "grid": list(grid), **spec.to_dict()})
