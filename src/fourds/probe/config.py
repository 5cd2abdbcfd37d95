"""Typed configuration of a probe run (frozen readout sweep or finetuning), with the paper's defaults.

Defaults (paper Appendix A.2): frozen: batch 32, 40k steps, AdamW weight decay 1e-4, learning rates
{1e-4, 3e-4, 1e-3}, linear warm-up over 1k steps from 0, cosine decay to 1e-7. Finetuned: learning rates
{1e-4, 3e-4} x weight decay {1e-4, 5e-2}, 3k warm-up, 20k steps (the paper's longer schedules: ``steps=[20000,
40000, 80000]`` runs every configuration with each), backbone learning rate 0.003 x the readout's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fourds.train.config import DEVICES, PRECISIONS, RunFields, check_choices, need

SELECT_ON = ("train-holdout", "eval")

#: Keys a resumed probe may change (where it runs and logs, how the same computation is carried out,
#: what is drawn at the end); every other key is taken from the run's saved ``config.json``.
RESUMABLE_KEYS = frozenset({
    "out", "resume", "eval_batch_size", "max_eval_samples", "visualize", "save_every", "keep_checkpoints",
    "log_every", "precision", "device", "num_workers", "tensorboard", "feature_cache",
})

FROZEN_DEFAULTS: dict[str, Any] = {
    "lrs": [1e-4, 3e-4, 1e-3], "weight_decays": [1e-4], "steps": 40_000, "warmup_steps": 1_000,
}
FINETUNE_DEFAULTS: dict[str, Any] = {
    "lrs": [1e-4, 3e-4], "weight_decays": [1e-4, 5e-2], "steps": 20_000, "warmup_steps": 3_000,
}


@dataclass
class ProbeConfig(RunFields):
    """Everything a probe run needs. ``None`` fields take the mode's paper defaults (:meth:`resolved`).

    Attributes:
        backbone: what :func:`fourds.models.open_backbone` opens: a registered model name (random
            init from ``seed``), a fourds model folder, an official ``.npz`` or an adapter spec (``hf:...``).
        backbone_overrides: architecture overrides for a registered name (``--backbone-overrides depth=2``).
        task: task name (``fourds.tasks.list_tasks()``).
        task_overrides: task keyword overrides (``--task-overrides num_frames=8``).
        data_kwargs: keyword arguments of ``task.dataset(split, ...)`` (synthetic tasks: sizes).
        out: run directory (config, logs, checkpoints, readouts, results.json).
        finetune: train the backbone too (one run per learning rate x weight decay).
        lrs: peak learning rates of the readouts (sweep).
        layers: readout layers: floats are fractional depths, ints layer indices; default the task's
            layer (0.95 for 4D tasks, 0.75 semantic; finetuning 0.95, 0.75 for K700).
        weight_decays: AdamW weight decays (sweep; frozen default 1e-4 only).
        steps: optimiser steps (frozen 40k; finetuned 20k). Finetuning takes several schedule lengths
            (``--steps 20000 40000 80000``): one run per learning rate x weight decay x length, each
            with its own warm-up and cosine decay over its own length.
        batch_size: global batch size (clips per step, over all ranks).
        eval_batch_size: batch size for evaluation (default: the training batch per rank).
        warmup_steps: linear warm-up from 0 (frozen 1k, finetuned 3k).
        min_lr: learning rate at the end of the cosine decay.
        backbone_lr_scale: finetuning: backbone learning rate relative to the readout's.
        beta1: AdamW beta1.
        beta2: AdamW beta2.
        grad_clip: clip each readout's own gradient norm to this value (0 disables; never global).
        select_on: ``train-holdout`` (choose on a held-out slice of the training set, report on the
            evaluation split) or ``eval`` (the paper's practice: choose and report on the evaluation split).
        holdout_fraction: share of the training set held out for ``train-holdout`` selection.
        train_split: dataset split to train on.
        eval_split: dataset split to report on.
        max_eval_samples: evaluate on at most this many samples per split (None: all).
        feature_cache: folder to cache frozen features in (tasks without random augmentation only);
            a later run with the same backbone, task and layers skips the backbone entirely.
        visualize: write qualitative figures for this many evaluation samples at the end.
        seed: seeds readout initialisation, data order, augmentation and the holdout split.
        save_every: full training state every K steps (and at the end).
        keep_checkpoints: how many step checkpoints to keep.
        log_every: scalar logging period in steps.
        resume: continue from the latest checkpoint in ``out``.
        precision: ``auto`` (bf16 autocast for the backbone on CUDA, fp32 on CPU), ``fp32`` or ``bf16``.
        device: ``auto``, ``cpu`` or ``cuda``.
        num_workers: DataLoader worker processes (0 = in the main process).
        tensorboard: write TensorBoard event files.
    """

    backbone: str = "4ds-tiny"
    backbone_overrides: dict[str, Any] = field(default_factory=dict)
    task: str = "synth_depth"
    task_overrides: dict[str, Any] = field(default_factory=dict)
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    finetune: bool = False
    lrs: list[float] | None = None
    layers: list[int | float] | None = None
    weight_decays: list[float] | None = None
    eval_batch_size: int | None = None
    backbone_lr_scale: float = 0.003
    select_on: str = "train-holdout"
    holdout_fraction: float = 0.05
    train_split: str = "train"
    eval_split: str = "test"
    max_eval_samples: int | None = None
    feature_cache: str | None = None
    visualize: int = 0
    tensorboard: bool = True

    # The shared run fields (:class:`fourds.train.config.RunFields`) whose probe default differs.
    out: str = "runs/probe"
    steps: int | list[int] | None = None  # type: ignore[assignment]
    batch_size: int = 32  # type: ignore[assignment]
    min_lr: float = 1e-7
    beta1: float = 0.9  # type: ignore[assignment]
    beta2: float = 0.999  # type: ignore[assignment]
    num_workers: int = 0  # type: ignore[assignment]

    CONFIG_NOUN: ClassVar[str] = "probe"
    RESUMABLE: ClassVar[frozenset[str]] = RESUMABLE_KEYS

    def resolved(self) -> ProbeConfig:
        """A copy with every ``None`` sweep/schedule field filled from the mode's defaults, validated."""
        defaults = FINETUNE_DEFAULTS if self.finetune else FROZEN_DEFAULTS
        values = dataclasses.asdict(self)
        for key, value in defaults.items():
            if values[key] is None:
                values[key] = list(value) if isinstance(value, list) else value
        if isinstance(values["steps"], (list, tuple)):
            values["steps"] = list(dict.fromkeys(values["steps"]))
            if len(values["steps"]) == 1:
                values["steps"] = values["steps"][0]
        cfg = ProbeConfig(**values)
        cfg.validate()
        return cfg

    @property
    def schedules(self) -> list[int]:
        """The schedule lengths to run (one for a frozen probe)."""
        return list(self.steps) if isinstance(self.steps, list) else [self.steps]  # type: ignore[list-item]

    def validate(self) -> None:
        check_choices(self, {"select_on": SELECT_ON, "precision": PRECISIONS, "device": DEVICES})
        for name in ("batch_size", "save_every", "log_every", "keep_checkpoints"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, int) and value >= 1),
                 f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        steps = self.steps if isinstance(self.steps, (list, tuple)) else [self.steps]
        need(len(steps) > 0 and all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in steps),
             f"--steps must be positive integers, got {self.steps!r}")
        need(len(steps) == 1 or self.finetune,
             f"--steps {' '.join(map(str, steps))}: a frozen probe trains every readout side by side for one length; "
             "several lengths are finetuning schedules (add --finetune), or run one frozen probe per length")
        need(self.eval_batch_size is None or self.eval_batch_size >= 1,
             f"--eval-batch-size must be a positive integer, got {self.eval_batch_size!r}")
        need(self.max_eval_samples is None or self.max_eval_samples >= 1,
             f"--max-eval-samples must be a positive integer, got {self.max_eval_samples!r}")
        need(self.warmup_steps is None or self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        for name in ("lrs", "weight_decays", "layers"):
            value = getattr(self, name)
            need(value is None or len(value) > 0, f"--{name.replace('_', '-')} is empty; give at least one value")
        need(self.lrs is None or all(lr > 0 for lr in self.lrs), f"--lrs must all be > 0, got {self.lrs}")
        need(self.weight_decays is None or all(wd >= 0 for wd in self.weight_decays),
             f"--weight-decays must all be >= 0, got {self.weight_decays}")
        need(self.min_lr >= 0, f"--min-lr must be >= 0, got {self.min_lr}")
        need(self.backbone_lr_scale > 0, f"--backbone-lr-scale must be > 0, got {self.backbone_lr_scale}")
        need(self.grad_clip >= 0, f"--grad-clip must be >= 0 (0 disables), got {self.grad_clip}")
        need(0.0 < self.holdout_fraction < 1.0, f"--holdout-fraction must be in (0, 1), got {self.holdout_fraction}")
        need(self.visualize >= 0, f"--visualize must be >= 0, got {self.visualize}")
        need(self.num_workers >= 0, f"--num-workers must be >= 0, got {self.num_workers}")
        need(not (self.finetune and self.feature_cache),
             "--feature-cache caches frozen features; it cannot be combined with --finetune")
