"""Typed configuration of a distillation run (a large frozen teacher → a small 4DS student).

Paper (Section 4, "Distilling from large models"): student 4DS-B at random init, teacher the pretrained
4DS-e, frozen; the same full clip (no masking) to both; two linear adapters on the student's last layer
regress teacher layers 36 and 51 with the L1 loss; 100k steps at batch 1024; adapters discarded after.
The paper states nothing else about the recipe, so every other hyper-parameter (learning rate, warm-up,
AdamW betas and weight decay, clip sampling) is the student preset's pretraining default (Table 5).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fourds.models.registry import get_preset
from fourds.train.config import RunSettings, validate_run_fields

#: The paper's teacher layers for 4DS-e (56 blocks), as fractions of the teacher's depth so the same
#: default works for any teacher: ``floor(d * L + 1e-6)`` gives exactly 36 and 51 for L = 56.
#: Assumption: the paper's "layer k" is our index k (the output of block k, 1-based; 0 = embedding);
#: the paper does not say how it counts.
PAPER_TEACHER_LAYERS: tuple[float, float] = (36 / 56, 51 / 56)

#: The paper's distillation schedule (used for the paper sizes; tiny sizes keep their preset's).
PAPER_DISTILL_DEFAULTS: dict[str, Any] = {"steps": 100_000, "batch_size": 1024}

TEACHER_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class DistillConfig(RunSettings):
    """Everything a distillation run needs. ``None`` fields take defaults (:meth:`resolved`): the
    paper's steps/batch for the paper sizes, otherwise the student preset's pretraining values.

    Attributes:
        student: registered size of the student, trained from random init (``fourds models``).
        student_overrides: architecture overrides of the student, e.g. ``{"depth": 2}``.
        teacher: the frozen teacher, any spec :func:`fourds.models.open_backbone` opens: a fourds model
            folder (e.g. an official 4DS-e converted with ``fourds convert official``), the official
            ``.npz`` itself, an adapter spec (``hf:...``, ``perframe:...``), or a registered name (random
            init, for smoke tests only).
        teacher_overrides: architecture overrides when ``teacher`` is a registered name.
        teacher_layers: teacher layers to regress (ints are indices, k = output of block k; floats are
            fractional depths); default: the paper's layers 36 and 51 of 4DS-e as fractions 36/56, 51/56
            of the teacher's depth (assumption: the paper counts layers like we do).
        teacher_precision: ``auto`` (bf16 weights and autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``.
        data: pretraining data spec: ``synthetic``, ``random``, a folder of videos, a manifest or shards.
        out: run directory (config, logs, checkpoints, final student model).
        steps: optimiser steps (paper: 100k).
        batch_size: global batch (clips per step over ranks and accumulation; paper: 1024).
        lr: peak learning rate after linear warm-up; cosine decay to ``min_lr`` at ``steps``.
        warmup_steps: linear warm-up from 0.
        min_lr: learning rate at the end of the cosine.
        weight_decay: AdamW weight decay (not on positional embeddings, LayerNorms).
        beta1: AdamW beta1.
        beta2: AdamW beta2.
        grad_clip: clip the global gradient norm to this value; 0 disables.
        exempt_biases_from_wd: also exempt every bias (student and adapters) from weight decay.
        num_frames: frames per clip.
        frame_stride: temporal stride of clip frames.
        image_size: square crop size.
        min_resize: the short side is resized to ``min_resize * image_size`` before cropping.
        max_resize: when set, the factor is drawn uniformly in [min_resize, max_resize] per clip.
        flip: random left-right flip.
        seed: seeds student/adapter initialisation, data order and augmentation.
        save_every: full training state every K steps (and at the end).
        keep_checkpoints: how many step checkpoints to keep.
        log_every: scalar logging period in steps.
        resume: continue from the latest checkpoint in ``out``.
        strategy: ``auto`` (DDP under torchrun with several processes), ``none``, ``ddp`` or ``fsdp``
            (FSDP2 shards the student; every rank holds its own frozen teacher).
        precision: the student's: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``.
        device: ``auto``, ``cpu`` or ``cuda``.
        grad_accum: micro-batches per optimiser step.
        activation_checkpointing: recompute student blocks in backward to save memory.
        compile: ``torch.compile`` each student block.
        compile_mode: ``torch.compile`` mode with ``--compile`` (unset: torch's standard mode):
            ``reduce-overhead`` (CUDA graphs), ``max-autotune``, ``max-autotune-no-cudagraphs``.
        num_workers: DataLoader worker processes (0 = in the main process; unset: 0 on the CPU,
            ``min(8, cores - 1)`` on CUDA).
        max_decode_failures: stop when more than this fraction of a file source's videos failed to decode.
        debug_rank_logs: every rank writes ``rank{r}.jsonl`` with its loss and a parameter checksum.
    """

    student: str = "4ds-b"
    student_overrides: dict[str, Any] = field(default_factory=dict)
    teacher: str = ""
    teacher_overrides: dict[str, Any] = field(default_factory=dict)
    teacher_layers: list[int | float] | None = None
    teacher_precision: str = "auto"
    out: str = "runs/distill"

    CONFIG_NOUN: ClassVar[str] = "distillation"

    def resolved(self) -> DistillConfig:
        """A copy with every ``None`` filled (paper schedule for paper sizes, else the preset's), validated."""
        preset = get_preset(self.student)
        defaults = preset.train_defaults()
        if preset.table1_params_m is not None:
            defaults = {**defaults, **PAPER_DISTILL_DEFAULTS}
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if value is None and key in defaults:
                values[key] = defaults[key]
        if values["teacher_layers"] is None:
            values["teacher_layers"] = list(PAPER_TEACHER_LAYERS)
        cfg = DistillConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        validate_run_fields(self)
        if not self.teacher:
            raise ValueError(
                "--teacher is required: a fourds model folder (e.g. `fourds convert official` of 4DS-e, or "
                "<run>/model of `fourds pretrain`), an adapter spec (hf:..., perframe:...), or a registered name "
                "(random init, smoke tests only)"
            )
        if self.teacher_precision not in TEACHER_PRECISIONS:
            raise ValueError(f"--teacher-precision {self.teacher_precision!r}: choose one of {TEACHER_PRECISIONS}")
        if self.teacher_layers is not None and len(self.teacher_layers) == 0:
            raise ValueError("--teacher-layers is empty; give at least one layer (e.g. 36 51 or 0.64 0.91)")

    @property
    def model(self) -> str:
        """The student's name (what the shared training loop logs)."""
        return self.student

    def student_kwargs(self) -> dict[str, Any]:
        """Overrides for :func:`fourds.models.create`: the clip size sets the student's input size."""
        kwargs = dict(self.student_overrides)
        if self.num_frames is not None and self.image_size is not None:
            kwargs.setdefault("input_size", (self.num_frames, self.image_size, self.image_size))
        return kwargs

    def clip_size(self) -> tuple[int, int, int]:
        assert self.num_frames is not None and self.image_size is not None, "call resolved() first"
        return (self.num_frames, self.image_size, self.image_size)
