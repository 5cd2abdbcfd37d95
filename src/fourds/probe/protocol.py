"""The evaluation protocol: frozen readout sweeps in one backbone pass per batch, and finetuning.

Frozen (default): the backbone runs once per batch under ``torch.no_grad()`` in eval mode and returns
every layer the sweep reads; K readouts (learning rate x layer x weight decay) train on those features
side by side. One AdamW holds K parameter groups (each head's own lr and weight decay); one backward
runs on the sum of the K losses, which is exact because the heads share no parameter and the features
carry no gradient; gradient clipping, non-finite checks and divergence are per head. Every head thus
ends exactly where it would have trained alone with the same seed and data.

Finetuned (``finetune=True``): one run per (learning rate, weight decay), backbone and readout trained
together, the backbone at ``backbone_lr_scale`` x the readout's rate and its forward stopping at the
readout layer (the blocks after it are frozen, so no trainable parameter goes unused).

Selection: each configuration is evaluated on a validation split (a held-out slice of the training set
by default, the evaluation split with ``select_on="eval"``, the paper's practice) and on the evaluation
split; the best on validation by the task's primary metric is the chosen one. Runs resume exactly
after SIGKILL (the pretraining loop's checkpoint machinery; data and augmentation are pure functions of
the step). ``results.json`` holds every configuration's metrics, the chosen one and the resolved config.
"""


from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fourds.data import to_float
from fourds.data.pretrain import StepBatchSampler
from fourds.models.backbone import token_grid
from fourds.models.io import load_state_into, save_model, write_json_atomic
from fourds.models.open import open_backbone
from fourds.probe.config import ProbeConfig
from fourds.probe.data import ProbeData, TrainDraws, clip_size, collate_fn, make_loader, task_clips
from fourds.probe.evaluate import eval_loader, evaluate, evaluate_with_samples, select
from fourds.probe.metrics import primary_spec
from fourds.probe.sweep import (
    HeadSpec,
    HeadTrainer,
    build_head,
    default_layers,
    frozen_sweep,
    head_groups,
    head_specs,
    probe_autocast,
    save_head,
)
from fourds.tasks.base import TaskContract
from fourds.textfiles import read_json
from fourds.train.distributed import DistInfo, barrier, init_distributed, wrap_ddp
from fourds.train.optim import build_adamw, param_groups

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ backbones
def resolve_backbone(spec: str, overrides: dict[str, Any] | None = None, seed: int = 0,
                     clip_size: tuple[int, int, int] | None = None) -> nn.Module:
    """:func:`fourds.models.open_backbone` under its earlier name and argument order."""
    return open_backbone(spec, seed=seed, overrides=overrides, clip_size=clip_size)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def freeze_after(backbone: nn.Module, layer: int) -> int:
    """Finetuning reads layer ``layer``: blocks after it never run, so freeze them (DDP requires every
    trainable parameter to get a gradient). Returns the number of frozen parameters."""
    blocks = getattr(backbone, "blocks", None)
    frozen = 0
    if blocks is None:
        if layer < getattr(backbone, "num_layers", layer):
            log.warning("backbone %s has no .blocks; cannot freeze the blocks after layer %d",
                        type(backbone).__name__, layer)
        return 0
    for block in list(blocks)[layer:]:
        for p in block.parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen



# ------------------------------------------------------------------------------------------ finetuned
class FinetuneModel(nn.Module):
    """Backbone + one readout, trained together; the backbone's forward stops at the readout layer.

    ``forward(video, batch)``: video ``(B, T, H, W, 3)`` float32 in [0, 1]; returns ``[outputs]``.
    """

    def __init__(self, backbone: nn.Module, task: TaskContract, spec: HeadSpec, grid: tuple[int, int, int], seed: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.task_name, self.grid = task.name, tuple(grid)
        self.heads = nn.ModuleList([build_head(task, backbone.dim, grid, seed, spec.layer)])

    @property
    def specs(self) -> list[HeadSpec]:
        return [self.spec]

    def forward(self, video: Tensor, batch: dict[str, Any]) -> list[Any]:
        (features,) = self.backbone.features(video, layers=[self.spec.layer])
        # The readout runs in fp32 even inside the backbone's bf16 autocast, as in the frozen probe:
        # bf16 outputs quantise positions (1/256 of the frame) and depths (3 digits) before loss and metric.
        with torch.autocast(features.device.type, enabled=False):
            return [self.heads[0](features.float(), batch)]

    def to_config(self) -> dict[str, Any]:
        return {"kind": "probe_finetune", "task": self.task_name, "grid": list(self.grid), "head": self.spec.to_dict()}


def _finetune_model(cfg: ProbeConfig, info: DistInfo, task: TaskContract, pristine: nn.Module, spec: HeadSpec,
                    grid: tuple[int, int, int]) -> tuple[FinetuneModel, torch.optim.Optimizer, int]:
    """A deep copy of the backbone with its blocks after the readout layer frozen, plus the seeded readout,
    on the device; AdamW with the readout's groups and the backbone's at ``backbone_lr_scale``; and the
    number of frozen parameters."""
    model_backbone = copy.deepcopy(pristine)
    frozen = freeze_after(model_backbone, spec.layer)
    core = FinetuneModel(model_backbone, task, spec, grid, cfg.seed).to(info.device)
    bb_groups = param_groups(model_backbone, spec.weight_decay, getattr(model_backbone, "no_weight_decay", set)(),
                             lr_scale=cfg.backbone_lr_scale)
    groups = head_groups(list(core.heads), [spec]) + [{**g, "peak_lr": spec.lr, "head": -1} for g in bb_groups]
    return core, build_adamw(groups, spec.lr, (cfg.beta1, cfg.beta2), info.device), frozen


def _evaluate_one(cfg: ProbeConfig, info: DistInfo, task: TaskContract, data: ProbeData,
                  outputs_of: Callable[[dict], list[Any]], eval_batch: int) -> tuple[dict, dict, dict]:
    """One finetuned model's ``(test metrics, test samples, validation metrics)``."""
    (test,), (test_samples,) = evaluate_with_samples(
        task, outputs_of, eval_loader(task_clips(task, data.eval_set), data.eval_idx, eval_batch, info,
                                      cfg.num_workers), 1, info, data.eval_idx)
    val = test if data.val_idx is None else evaluate(
        task, outputs_of, eval_loader(task_clips(task, data.train_set), data.val_idx, eval_batch, info,
                                      cfg.num_workers), 1, info)[0]
    return test, test_samples, val


def _finetune(cfg: ProbeConfig, info: DistInfo, task: TaskContract, backbone: nn.Module, data: ProbeData, out: Path,
              counter: dict[str, int]) -> tuple[list[dict[str, Any]], Callable[[int], Callable]]:
    """One run per (lr, weight decay[, schedule length]) under ``out/runs/<name>``; returns results and a
    predictor. Each run has its own warm-up and cosine over its own length."""
    size = clip_size(task)
    grid = token_grid(backbone, size)
    several = len(cfg.schedules) > 1
    specs = head_specs(cfg.layers, cfg.lrs, cfg.weight_decays, backbone.num_layers, cfg.schedules if several else None)
    pristine = backbone  # never trained itself: each run trains its own deep copy, moved to the device
    collate = collate_fn()
    eval_batch = cfg.eval_batch_size or max(1, cfg.batch_size // info.world_size)
    autocast = probe_autocast(info, cfg)
    results: list[dict[str, Any]] = []
    models: dict[int, nn.Module] = {}
    for k, spec in enumerate(specs):
        run = out / "runs" / spec.name
        done = run / "result.json"
        if cfg.resume and done.is_file():
            results.append(read_json(done, "a finished finetuning run's result.json, written by fourds probe"))
            log.info("finetune %s already finished; kept its results", spec.name)
            continue
        run_cfg = dataclasses.replace(cfg, steps=spec.steps) if spec.steps is not None else cfg
        core, optimizer, frozen = _finetune_model(cfg, info, task, pristine, spec, grid)
        model_backbone = core.backbone
        wrapped = wrap_ddp(core, info) if info.distributed else core
        run_counter = {"train": 0, "eval": 0, "cache": 0}
        trainer = HeadTrainer(run_cfg, info, task, run, core, wrapped, optimizer, run_counter,
                              desc=f"finetune {task.name} {spec.name}")
        if info.is_main:
            log.info("finetuning %s (%d/%d): readout lr %g, backbone lr x%g, wd %g, layer %d of %d (%d parameters "
                     "after it frozen), %d steps, warm-up %d", spec.name, k + 1, len(specs), spec.lr,
                     cfg.backbone_lr_scale, spec.weight_decay, spec.layer, backbone.num_layers, frozen, run_cfg.steps,
                     cfg.warmup_steps)

        def loader_for(start: int, steps: int = run_cfg.steps) -> Any:  # type: ignore[assignment]
            draws = TrainDraws(data.train_set.__getitem__, data.train_idx, task.train_transform, cfg.seed)
            sampler = StepBatchSampler(start, steps, cfg.batch_size, info.rank, info.world_size)
            return make_loader(draws, sampler, collate, cfg.num_workers, info.device.type == "cuda")

        def step_outputs(batch: dict, wrapped=wrapped, run_counter=run_counter) -> list[Any]:  # noqa: ANN001
            run_counter["train"] += 1
            with autocast:
                return wrapped(to_float(batch["video"]), batch)

        trainer.fit(loader_for, step_outputs)
        core.eval()

        def outputs_of(batch: dict, core=core, run_counter=run_counter) -> list[Any]:  # noqa: ANN001
            run_counter["eval"] += 1
            with autocast:
                return core(to_float(batch["video"]), batch)

        test, test_samples, val = _evaluate_one(cfg, info, task, data, outputs_of, eval_batch)
        result = {**spec.to_dict(), "steps": run_cfg.steps, "val": val, "test": test, "test_samples": test_samples,
                  "diverged": trainer.diverged[0],
                  "backbone_forward_calls": dict(run_counter)}
        if info.is_main:
            save_model(model_backbone, run / "model", extra={"finetune": {"task": task.name, **spec.to_dict()}})
            save_head(core.heads[0], run / "heads" / spec.name, task, spec, backbone.dim, grid)
            write_json_atomic(done, result)
        for key in ("train", "eval"):
            counter[key] += run_counter[key]
        results.append(result)
        models[k] = core
        barrier()

    def predictor(k: int) -> Callable:
        core = models.get(k)
        if core is None:  # finished in an earlier process: rebuild from its folders
            spec = specs[k]
            from fourds.models import load

            bb = load(out / "runs" / spec.name / "model").to(info.device)
            core = FinetuneModel(bb, task, spec, grid, cfg.seed).to(info.device).eval()
            load_state_into(core.heads[0], out / "runs" / spec.name / "heads" / spec.name / "model.safetensors")
        return lambda batch: core(to_float(batch["video"]), batch)[0]
    return results, predictor


def _results(cfg: ProbeConfig, info: DistInfo, task: TaskContract, backbone: nn.Module, data: ProbeData,
             configs: list[dict[str, Any]], chosen: int | None, counter: dict[str, int]) -> dict[str, Any]:
    """The ``results.json`` of a probe run: every configuration, the chosen one, the protocol."""
    primary, key = primary_spec(task)
    return {
        "task": task.name,
        "backbone": cfg.backbone,
        "backbone_params": count_params(backbone),
        "backbone_layers": int(backbone.num_layers),
        "mode": "finetune" if cfg.finetune else "frozen",
        "primary_metric": key,
        "direction": primary.direction,
        "primary_units": primary.units,
        "select_on": cfg.select_on,
        "selection": ("chosen on a held-out {:.0%} of the training split ({} samples), reported on the {!r} split"
                      .format(cfg.holdout_fraction, len(data.val_idx or []), cfg.eval_split)
                      if cfg.select_on == "train-holdout" else
                      f"chosen and reported on the {cfg.eval_split!r} split (the paper's practice; optimistic)"),
        "configs": configs,
        "chosen": None if chosen is None else configs[chosen]["name"],
        "chosen_index": chosen,
        "test": None if chosen is None else configs[chosen]["test"],
        "test_samples": None if chosen is None else configs[chosen].get("test_samples"),
        "backbone_forward_calls": dict(counter),
        "train_steps": cfg.steps,
        "config": {**cfg.to_dict(), "world_size": info.world_size},
    }


# ------------------------------------------------------------------------------------------ entry point
def run_probe(cfg: ProbeConfig, backbone: nn.Module | None = None, task: TaskContract | None = None,
              datasets: dict[str, Any] | None = None, explicit: Any = None) -> dict[str, Any]:
    """Run (or resume) a probe: the frozen sweep, or the finetuning runs; returns the results dict
    (also written to ``<out>/results.json`` by rank 0).

    Args:
        cfg: the run configuration (``None`` fields take the mode's paper defaults).
        backbone: an already-built Backbone (e.g. a wrapped per-frame image model); default: built from
            ``cfg.backbone`` (which otherwise only labels the results, e.g. in ``fourds report``). In
            finetuning each configuration starts from a copy of it.
        task: a Task object; default ``fourds.tasks.get_task(cfg.task, **cfg.task_overrides)``.
        datasets: ``{"train": ..., "eval": ...}`` map-style datasets of samples, replacing
            ``task.dataset(cfg.train_split / cfg.eval_split)`` (real data sets).
        explicit: with ``cfg.resume`` and a saved ``<out>/config.json``, the settings given for this
            call (CLI flags; default: the fields that differ from their defaults). The run continues with
            its saved settings; explicit changes are allowed only for
            :data:`fourds.probe.config.RESUMABLE_KEYS` and refused otherwise.
    """
    saved = Path(cfg.out) / "config.json"
    if cfg.resume and saved.is_file():
        given = cfg.non_default_keys() if explicit is None else set(explicit)
        saved_cfg = read_json(saved, "the probe run's config.json, written by fourds probe")
        cfg = cfg.resume_from(saved_cfg, given, str(saved))
    cfg = cfg.resolved()
    info = init_distributed(cfg.device)
    short = [n for n in cfg.schedules if cfg.warmup_steps > n]
    if short and info.is_main:
        log.warning("--warmup-steps %d > --steps %s: the learning rates never reach their peaks (--lrs); lower "
                    "--warmup-steps", cfg.warmup_steps, " ".join(map(str, short)))
    if task is None:
        from fourds.tasks import get_task

        task = get_task(cfg.task, **cfg.task_overrides)
    if backbone is None:
        backbone = open_backbone(cfg.backbone, seed=cfg.seed, overrides=cfg.backbone_overrides,
                                 clip_size=clip_size(task))
    if not cfg.finetune:  # finetuning moves one copy per run to the device (no second resident copy)
        backbone = backbone.to(info.device)
    if cfg.layers is None:
        cfg.layers = default_layers(task, cfg.finetune)
    _, key = primary_spec(task)  # fails here, before any training, if the task declares no such metric
    out = Path(cfg.out)
    data = ProbeData(task, cfg, datasets)
    if info.is_main:
        write_json_atomic(out / "config.json", {**cfg.to_dict(), "world_size": info.world_size})
    counter = {"train": 0, "eval": 0, "cache": 0}
    run = _finetune if cfg.finetune else frozen_sweep
    configs, predictor = run(cfg, info, task, backbone, data, out, counter)
    chosen = select(task, configs)
    results = _results(cfg, info, task, backbone, data, configs, chosen, counter)
    if info.is_main:
        write_json_atomic(out / "results.json", results)
        if cfg.visualize and chosen is not None:
            from fourds.probe.visualize import visualize

            paths = visualize(task, predictor(chosen), data.eval_set, data.eval_idx[: cfg.visualize],
                              out / "visualizations", info.device)
            log.info("wrote %d qualitative figures to %s", len(paths), out / "visualizations")
        if chosen is not None:
            log.info("chosen %s: %s = %.4g on %s (val %.4g)", configs[chosen]["name"], key,
                     configs[chosen]["test"].get(key, math.nan), cfg.eval_split, configs[chosen]["val"].get(key, math.nan))
    barrier()
    return results
