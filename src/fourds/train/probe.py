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

import contextlib
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
from fourds.models.open import open_backbone
from fourds.models.io import load_state_into, save_model, save_weights_atomic, write_json_atomic
from fourds.tasks.base import TaskContract, has_dataset, task_options
from fourds.textfiles import read_json
from fourds.train.distributed import DistInfo, barrier, init_distributed, wrap_ddp
from fourds.train.feature_cache import FeatureCache, check_deterministic, feature_key
from fourds.train.optim import build_adamw, param_groups
from fourds.train.probe_config import ProbeConfig
from fourds.train.probe_data import TrainDraws, collate_fn, holdout_split, make_loader, task_clips
from fourds.train.probe_heads import (
    FinetuneModel,
    HeadSpec,
    ReadoutBank,
    count_params,
    default_layers,
    fingerprint,
    freeze_after,
    head_specs,
    token_grid,
)
from fourds.train.probe_loop import HeadTrainer, eval_loader, evaluate, evaluate_with_samples, head_groups, select
from fourds.train.probe_metrics import primary_spec
from fourds.train.trainer import use_bf16

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ set-up
class ProbeData:
    """The datasets and index lists of a run: training indices, validation and evaluation clips."""

    def __init__(self, task: TaskContract, cfg: ProbeConfig, datasets: dict[str, Any] | None = None) -> None:
        datasets = datasets or {}
        if not has_dataset(task) and not {"train", "eval"} <= set(datasets):
            raise ValueError(
                f"task {task.name!r} has no built-in data (only synthetic tasks do); pass "
                "run_probe(..., datasets={'train': ..., 'eval': ...}) with map-style datasets of samples"
            )
        self.train_set = datasets["train"] if "train" in datasets else task.dataset(cfg.train_split, **cfg.data_kwargs)
        self.eval_set = datasets["eval"] if "eval" in datasets else task.dataset(cfg.eval_split, **cfg.data_kwargs)
        n_train, n_eval = len(self.train_set), len(self.eval_set)
        if n_eval == 0:
            raise ValueError(f"the evaluation split {cfg.eval_split!r} of task {task.name!r} is empty")
        if cfg.select_on == "train-holdout":
            self.train_idx, val = holdout_split(n_train, cfg.holdout_fraction, cfg.seed)
        else:
            self.train_idx, val = list(range(n_train)), None
        cap = cfg.max_eval_samples
        self.eval_idx = list(range(n_eval))[:cap]
        self.val_idx = None if val is None else val[:cap]


def clip_size(task: TaskContract) -> tuple[int, int, int]:
    return (int(task.num_frames), *(int(s) for s in task.input_size))  # type: ignore[return-value]


def _autocast(info: DistInfo, cfg: ProbeConfig) -> contextlib.AbstractContextManager:
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


def _frozen(cfg: ProbeConfig, info: DistInfo, task: TaskContract, backbone: nn.Module, data: ProbeData, out: Path,
            counter: dict[str, int]) -> tuple[list[dict[str, Any]], Callable[[int], Callable]]:
    """Train and evaluate the K-readout sweep; returns per-config results and ``k → predict(batch)``."""
    grid = token_grid(backbone, clip_size(task))
    specs = head_specs(cfg.layers, cfg.lrs, cfg.weight_decays, backbone.num_layers)
    bank = ReadoutBank(task, specs, backbone.dim, grid, cfg.seed).to(info.device)
    backbone.eval().requires_grad_(False)
    features = _Features(backbone, bank.layers, _autocast(info, cfg), counter)
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


# ------------------------------------------------------------------------------------------ finetuned
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
    autocast = _autocast(info, cfg)
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
            :data:`fourds.train.probe_config.RESUMABLE_KEYS` and refused otherwise.
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
    run = _finetune if cfg.finetune else _frozen
    configs, predictor = run(cfg, info, task, backbone, data, out, counter)
    chosen = select(task, configs)
    results = _results(cfg, info, task, backbone, data, configs, chosen, counter)
    if info.is_main:
        write_json_atomic(out / "results.json", results)
        if cfg.visualize and chosen is not None:
            from fourds.train.probe_visualize import visualize

            paths = visualize(task, predictor(chosen), data.eval_set, data.eval_idx[: cfg.visualize],
                              out / "visualizations", info.device)
            log.info("wrote %d qualitative figures to %s", len(paths), out / "visualizations")
        if chosen is not None:
            log.info("chosen %s: %s = %.4g on %s (val %.4g)", configs[chosen]["name"], key,
                     configs[chosen]["test"].get(key, math.nan), cfg.eval_split, configs[chosen]["val"].get(key, math.nan))
    barrier()
    return results
