"""Typed configuration of a pretraining run, resolved against the model preset's defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fourds.models.registry import get_preset

STRATEGIES = ("auto", "none", "ddp", "fsdp")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class PretrainConfig:
    """Everything a SimpleMAE pretraining run needs. ``None`` fields take the preset's defaults
    (paper Table 5 for the 4DS sizes), see :meth:`resolved`.

    Attributes:
        model: registered size (``fourds models`` lists them).
        model_overrides: architecture/MAE overrides, e.g. ``{"depth": 2}``.
        data: pretraining data spec: ``synthetic`` (procedural scenes, no files), ``random`` (moving
            squares, no files), a folder of videos, a CSV/JSONL manifest, or WebDataset ``.tar`` shards
            (a file, a folder of them or a brace pattern; see ``fourds.data.sources``).
        out: run directory (config, logs, checkpoints, final model).
        steps: optimiser steps.
        batch_size: global batch (clips per optimiser step, summed over ranks and accumulation).
        lr: peak learning rate after linear warm-up; cosine decay to ``min_lr`` at ``steps``.
        warmup_steps: linear warm-up from 0.
        min_lr: learning rate at the end of the cosine.
        weight_decay: AdamW decoupled weight decay (not on positional embeddings and LayerNorms).
        beta1: AdamW beta1.
        beta2: AdamW beta2.
        grad_clip: clip the global gradient norm to this value; 0 disables (paper: none stated).
        exempt_biases_from_wd: also exempt every bias from weight decay.
        exempt_latents_from_wd: also exempt SimpleMAE's latent tokens from weight decay.
        num_frames: frames per clip (16).
        frame_stride: temporal stride of clip frames (2).
        image_size: square crop size (224; 256 for 4DS-j).
        min_resize: the short side is resized to ``min_resize * image_size`` before cropping (1.15).
        max_resize: when set, the factor is drawn uniformly in [min_resize, max_resize] per clip.
        flip: random left-right flip.
        seed: seeds initialisation, data order, augmentation and masking.
        save_every: full training state every K steps (and at the end).
        keep_checkpoints: how many step checkpoints to keep (at least 2 is safe).
        log_every: scalar logging period in steps.
        resume: continue from the latest checkpoint in ``out``.
        strategy: ``auto`` (DDP when launched by torchrun with several processes), ``none``, ``ddp``
            or ``fsdp`` (FSDP2 ``fully_shard`` per block and at the root).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``; the loss is
            always float32.
        device: ``auto``, ``cpu`` or ``cuda``.
        grad_accum: micro-batches per optimiser step (per-rank batch = batch / (world * accum)).
        activation_checkpointing: recompute blocks in backward to save memory.
        compile: ``torch.compile`` each block (slow to start; no gain on CPU).
        num_workers: DataLoader worker processes (0 = in the main process).
        max_decode_failures: file sources skip videos that fail to decode (counted in the logged
            scalars, each named once); the run stops when more than this fraction of the source's
            videos have failed.
        debug_rank_logs: every rank writes ``rank{r}.jsonl`` with its loss and a parameter checksum
            per step (used by the distributed test).
    """

    model: str = "4ds-tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: str = "synthetic"
    out: str = "runs/pretrain"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    min_lr: float = 0.0
    weight_decay: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    grad_clip: float = 0.0
    exempt_biases_from_wd: bool = False
    exempt_latents_from_wd: bool = False
    num_frames: int | None = None
    frame_stride: int | None = None
    image_size: int | None = None
    min_resize: float | None = None
    max_resize: float | None = None
    flip: bool = True
    seed: int = 0
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = False
    strategy: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    grad_accum: int = 1
    activation_checkpointing: bool = False
    compile: bool = False
    num_workers: int = 0
    max_decode_failures: float = 0.01
    debug_rank_logs: bool = False

    def resolved(self) -> PretrainConfig:
        """A copy with every ``None`` filled from the preset, validated."""
        preset = get_preset(self.model)
        defaults = preset.train_defaults()
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if value is None and key in defaults:
                values[key] = defaults[key]
        cfg = PretrainConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        validate_run_fields(self)

    def model_kwargs(self) -> dict[str, Any]:
        """Overrides for :func:`fourds.models.simple_mae`: the clip size sets the input size."""
        kwargs = dict(self.model_overrides)
        if self.num_frames is not None and self.image_size is not None:
            kwargs.setdefault("input_size", (self.num_frames, self.image_size, self.image_size))
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown pretraining config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)


def validate_run_fields(cfg: Any) -> None:
    """Checks shared by every config with the training-run fields of :class:`PretrainConfig` (the
    distillation config too); errors name the flag and the valid values."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(msg)

    need(cfg.strategy in STRATEGIES, f"--strategy {cfg.strategy!r}: choose one of {STRATEGIES}")
    need(cfg.precision in PRECISIONS, f"--precision {cfg.precision!r}: choose one of {PRECISIONS}")
    need(cfg.device in DEVICES, f"--device {cfg.device!r}: choose one of {DEVICES}")
    for name in ("steps", "batch_size", "num_frames", "frame_stride", "image_size", "grad_accum",
                 "save_every", "log_every", "keep_checkpoints"):
        value = getattr(cfg, name)
        need(value is None or (isinstance(value, int) and value >= 1),
             f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    need(cfg.warmup_steps is None or cfg.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {cfg.warmup_steps}")
    need(cfg.lr is None or cfg.lr > 0, f"--lr must be > 0, got {cfg.lr}")
    need(cfg.min_lr >= 0, f"--min-lr must be >= 0, got {cfg.min_lr}")
    need(cfg.weight_decay is None or cfg.weight_decay >= 0, f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    need(cfg.grad_clip >= 0, f"--grad-clip must be >= 0 (0 disables), got {cfg.grad_clip}")
    need(cfg.min_resize is None or cfg.min_resize >= 1.0,
         f"--min-resize must be >= 1 (the short side is resized to factor x crop), got {cfg.min_resize}")
    need(cfg.max_resize is None or (cfg.min_resize is not None and cfg.max_resize >= cfg.min_resize),
         f"--max-resize ({cfg.max_resize}) must be >= --min-resize ({cfg.min_resize})")
    need(cfg.num_workers >= 0, f"--num-workers must be >= 0, got {cfg.num_workers}")
    need(0.0 <= cfg.max_decode_failures <= 1.0,
         f"--max-decode-failures is a fraction in [0, 1], got {cfg.max_decode_failures}")
    need(cfg.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1")
