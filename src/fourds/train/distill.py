"""Distillation of a large frozen Backbone (default: a 4DS checkpoint folder) into a small 4DS model.

The paper's recipe (Section 4): the same full clip (no masking) goes to a randomly initialised student
and to the frozen teacher; one linear adapter per teacher target maps the student's *last* layer to the
teacher's width; the loss is the mean absolute error (mean over tokens and channels) summed over the
targets (paper: teacher layers 36 and 51 of 4DS-e). The adapters are discarded at export: ``<out>/model``
is a plain 4DS model folder (``fourds.models.load``, ``fourds probe --backbone <out>/model``).

Token grids: when the teacher's grid differs from the student's (other patch size, an image teacher
with ``T' = T``, a teacher that resizes its input), the teacher's tokens are resampled to the student's
grid, viewed as a ``(T', h, w)`` volume per channel: box-averaged (``adaptive_avg_pool3d``) when no axis
grows, trilinear (``align_corners=False``) otherwise (:func:`align_tokens`). Student tokens are never
resampled.

Machinery is pretraining's (set-up in :mod:`fourds.train.pretrain`, the loop in
:mod:`fourds.train.trainer`): AdamW with the model's own weight-decay
exemptions, warm-up + cosine, gradient accumulation, torchrun (DDP or FSDP2 on the student; each rank
holds its own frozen teacher), atomic checkpoints with exact resume (the teacher is deterministic and
the clips are pure functions of ``(seed, sample id)``), JSONL/TensorBoard logs and a progress bar. The
teacher runs under ``torch.no_grad()`` in eval mode, on CUDA in bf16 (weights and autocast).

Configuration (:class:`DistillConfig`): the paper states nothing about the recipe beyond student 4DS-B at
random init, teacher the pretrained 4DS-e (frozen), teacher layers 36 and 51 and 100k steps at batch 1024,
so every other hyper-parameter (learning rate, warm-up, AdamW betas and weight decay, clip sampling) is the
student preset's pretraining default (Table 5).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fourds.data.pretrain import VideoSource
from fourds.models.backbone import resolve_layers, token_grid
from fourds.models.io import WEIGHTS_NAME, load_state_into, read_config
from fourds.models.open import open_backbone
from fourds.models.registry import create, get_preset
from fourds.models.vit import VideoViT, ViTConfig, init_named_parameters
from fourds.seeding import derive_seed
from fourds.train.config import RunSettings, validate_run_fields
from fourds.train.distributed import DistInfo, all_reduce_mean, release_one_rank_group
from fourds.train.device_step import count_forward_flops
from fourds.train.optim import build_adamw, param_groups
from fourds.train.pretrain import clip_loader, export_model, open_data, parallelize_and_init, resume_run, start_run
from fourds.train.trainer import train_loop

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ the config
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


# ------------------------------------------------------------------------------------------ the student
class DistillStudent(nn.Module):
    """The trained module: a 4DS encoder plus one linear adapter per teacher target.

    ``forward(video, targets)``: video ``(B, T, H, W, 3)`` in [0, 1]; ``targets`` the teacher's tokens,
    one ``(B, T', N, C_t)`` per adapter, already on the student's grid. Returns ``(loss, parts)``: the sum
    over targets of the L1 (mean over tokens and channels) and the ``(K,)`` per-target values.

    Args:
        encoder: the student :class:`VideoViT`.
        target_dims: the teacher's width at each target layer.
        teacher_layers: the teacher's layer indices (recorded in checkpoints and the export).
    """

    def __init__(self, encoder: VideoViT, target_dims: list[int], teacher_layers: list[int]) -> None:
        super().__init__()
        if len(target_dims) != len(teacher_layers):
            raise ValueError(f"{len(target_dims)} adapter widths for {len(teacher_layers)} teacher layers")
        self.encoder = encoder
        self.adapters = nn.ModuleList(nn.Linear(encoder.dim, int(d)) for d in target_dims)
        self.teacher_layers = [int(k) for k in teacher_layers]

    def predictions(self, video: Tensor) -> list[Tensor]:
        """The adapters' outputs ``(B, T', N, C_t)`` on the student's last layer."""
        (tokens,) = self.encoder.features(video, layers=[self.encoder.num_layers])
        return [adapter(tokens) for adapter in self.adapters]

    def forward(self, video: Tensor, targets: list[Tensor]) -> tuple[Tensor, Tensor]:
        preds = self.predictions(video)
        if len(targets) != len(preds):
            raise ValueError(f"{len(targets)} targets for {len(preds)} adapters")
        parts = torch.stack([F.l1_loss(p.float(), t.float()) for p, t in zip(preds, targets)])
        return parts.sum(), parts

    # ---------------------------------------------------------------- hooks the trainer uses
    @torch.no_grad()
    def init_parameter(self, name: str, tensor: Tensor, generator: torch.Generator | None = None) -> None:
        """Encoder parameters by the encoder's rule; adapters xavier-uniform weights, zero biases."""
        if name.startswith("encoder."):
            self.encoder.init_parameter(name[len("encoder."):], tensor, generator)
        elif name.endswith("bias"):
            nn.init.zeros_(tensor)
        else:
            nn.init.xavier_uniform_(tensor, generator=generator)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Per-parameter seeded initialisation (see :meth:`VideoViT.init_weights`)."""
        init_named_parameters(self, seed)

    def no_weight_decay(self, include_biases: bool = False) -> set[str]:
        names = {f"encoder.{n}" for n in self.encoder.no_weight_decay(include_biases)}
        if include_biases:
            names |= {f"adapters.{i}.bias" for i in range(len(self.adapters))}
        return names

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

    @property
    def blocks(self) -> nn.ModuleList:
        """The student's blocks (FSDP2 shards per block)."""
        return self.encoder.blocks

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": "distill_student",
            "name": self.encoder.name,
            "vit": self.encoder.cfg.to_dict(),
            "target_dims": [a.out_features for a in self.adapters],
            "teacher_layers": self.teacher_layers,
        }


def load_student_folder(folder: Path, config: dict[str, Any]) -> DistillStudent:
    """Rebuild a ``distill_student`` folder from its ``config``: the student encoder and its adapters,
    weights loaded strictly (the loader of that kind for :func:`fourds.models.load_module`)."""
    with torch.device("meta"):
        encoder = VideoViT(ViTConfig(**config["vit"]), name=config.get("name"))
        module = DistillStudent(encoder, config["target_dims"], config["teacher_layers"])
    return load_state_into(module, Path(folder) / WEIGHTS_NAME)


def load_distill_student(path: str | Path) -> DistillStudent:
    """A distillation checkpoint folder (``<out>/checkpoints/step_*``) → student + adapters, eval, CPU.
    Its ``.encoder`` is the student Backbone at that step."""
    config = read_config(path)
    if config.get("kind") != "distill_student":
        raise ValueError(f"{path} holds kind={config.get('kind')!r}, not a distillation checkpoint (distill_student)")
    return load_student_folder(Path(path), config).eval()


# ------------------------------------------------------------------------------------------ targets
def align_tokens(tokens: Tensor, src_grid: tuple[int, int, int], dst_grid: tuple[int, int, int]) -> Tensor:
    """Resample ``(B, T_s, N_s, C)`` tokens on ``src_grid`` to ``dst_grid`` → ``(B, T_d, N_d, C)``.

    Box average (``adaptive_avg_pool3d``) when no axis grows (e.g. a 2x finer teacher: the mean of each
    2x2 block), trilinear interpolation with ``align_corners=False`` otherwise; identity when equal.
    """
    src, dst = tuple(int(g) for g in src_grid), tuple(int(g) for g in dst_grid)
    if src == dst:
        return tokens
    b, t, n, c = tokens.shape
    if t != src[0] or n != src[1] * src[2]:
        raise ValueError(f"tokens {tuple(tokens.shape)} do not match the grid {src}")
    vol = rearrange(tokens.float(), "b t (h w) c -> b c t h w", h=src[1], w=src[2])
    if all(d <= s for d, s in zip(dst, src)):
        vol = F.adaptive_avg_pool3d(vol, dst)
    else:
        vol = F.interpolate(vol, size=dst, mode="trilinear", align_corners=False)
    return rearrange(vol, "b c t h w -> b t (h w) c")


def teacher_autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast for the teacher, or autocast explicitly off (so an fp32 teacher stays fp32 inside
    the student's autocast region)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def teacher_targets(teacher: nn.Module, video: Tensor, layers: list[int], student_grid: tuple[int, int, int],
                    bf16: bool = False) -> list[Tensor]:
    """The frozen teacher's tokens at ``layers`` for ``video``, float32, on the student's grid."""
    with teacher_autocast(video.device, bf16):
        feats = teacher.features(video, layers=layers)
    src = token_grid(teacher, tuple(video.shape[1:4]))
    return [align_tokens(f.float(), src, student_grid) for f in feats]


@torch.no_grad()
def heldout_loss(student: DistillStudent, teacher: nn.Module, video: Tensor, bf16: bool = False) -> float:
    """The distillation loss of ``student`` (with its adapters) on ``video`` ``(B, T, H, W, 3)`` in [0, 1]."""
    was_training = student.training
    student.eval()
    grid = student.encoder.token_grid(video.shape)
    targets = teacher_targets(teacher, video, student.teacher_layers, grid, bf16)
    loss, _ = student(video, targets)
    student.train(was_training)
    return float(loss)


# ------------------------------------------------------------------------------------------ set-up
def build_teacher(cfg: DistillConfig, info: DistInfo, teacher: nn.Module | None = None) -> tuple[nn.Module, list[int], bool]:
    """The frozen teacher on the device (bf16 weights on CUDA unless fp32), its layer indices, and
    whether it runs in bf16."""
    if teacher is None:
        teacher = open_backbone(cfg.teacher, seed=derive_seed(cfg.seed, "teacher"), overrides=cfg.teacher_overrides,
                                clip_size=cfg.clip_size())
        from fourds.models import list_models

        if cfg.teacher in list_models():
            log.warning("teacher %r is a registered name: a RANDOMLY INITIALISED teacher (smoke tests only)", cfg.teacher)
    for attr in ("num_layers", "dim", "features"):
        if not hasattr(teacher, attr):
            raise ValueError(f"teacher {cfg.teacher!r} ({type(teacher).__name__}) is not a Backbone: it has no {attr!r}")
    try:
        layers = resolve_layers(list(cfg.teacher_layers or []), int(teacher.num_layers))
    except ValueError as err:
        raise ValueError(f"--teacher-layers {cfg.teacher_layers}: {err}") from err
    bf16 = cfg.teacher_precision == "bf16" or (cfg.teacher_precision == "auto" and info.device.type == "cuda")
    # Cast while moving (tensor by tensor), so a large teacher never sits on the GPU in float32.
    dtype = torch.bfloat16 if bf16 and info.device.type == "cuda" else None
    teacher = teacher.to(device=info.device, dtype=dtype).eval().requires_grad_(False)
    return teacher, layers, bf16


def _student_flops(cfg: DistillConfig, target_dims: list[int], layers: list[int], student_grid: tuple[int, int, int],
                   micro: int) -> int:
    """3x the counted student forward (+ adapters and loss) on the meta device."""
    t, h, w = cfg.clip_size()
    with torch.device("meta"):
        module = DistillStudent(create(cfg.student, **cfg.student_kwargs()), target_dims, layers)
        video = torch.empty(micro, t, h, w, 3)
        n = student_grid[1] * student_grid[2]
        targets = [torch.empty(micro, student_grid[0], n, d) for d in target_dims]
        return 3 * count_forward_flops(module, video, targets)


@torch.no_grad()
def _teacher_flops(teacher: nn.Module, cfg: DistillConfig, layers: list[int], device: torch.device, bf16: bool,
                   micro: int) -> int:
    """The teacher's forward FLOPs per micro-batch, counted on one real clip (scaled by ``micro``)."""
    t, h, w = cfg.clip_size()
    with teacher_autocast(device, bf16):
        return micro * count_forward_flops(teacher.features, torch.zeros(1, t, h, w, 3, device=device), layers=layers)


# ------------------------------------------------------------------------------------------ the run
def distill(cfg: DistillConfig, source: VideoSource | None = None, teacher: nn.Module | None = None) -> Path:
    """Run (or resume) distillation; returns the exported student folder ``<out>/model``.

    Args:
        cfg: the run configuration (``None`` fields take defaults, see :class:`DistillConfig`).
        source: clips to train on; default: the source ``cfg.data`` names.
        teacher: an already-built Backbone to use instead of resolving ``cfg.teacher`` (which then only
            labels the run).
    """
    cfg = cfg.resolved()
    try:
        return _distill(cfg, source, teacher)
    finally:
        release_one_rank_group()


def _distill(cfg: DistillConfig, source: VideoSource | None, teacher: nn.Module | None) -> Path:
    run = start_run(cfg)
    info = run.info
    teacher, layers, teacher_bf16 = build_teacher(cfg, info, teacher)
    target_dims = [int(teacher.dim)] * len(layers)

    with torch.device("meta"):
        module = DistillStudent(create(cfg.student, **cfg.student_kwargs()), target_dims, layers)
    model, core = parallelize_and_init(module, cfg, info, run.strategy, run.bf16)
    groups = param_groups(core, cfg.weight_decay, core.no_weight_decay(cfg.exempt_biases_from_wd))
    optimizer = build_adamw(groups, cfg.lr, (cfg.beta1, cfg.beta2), info.device)
    data = open_data(cfg, source)
    start_step = resume_run(cfg, run, core, optimizer, data)
    loader, sampler = clip_loader(cfg, run, data, start_step)

    clip = cfg.clip_size()
    student_grid = core.encoder.token_grid((1, *clip, 3))
    teacher_grid = token_grid(teacher, clip)
    micro = sampler.micro
    step_flops = (_student_flops(cfg, target_dims, layers, student_grid, micro)
                  + _teacher_flops(teacher, cfg, layers, info.device, teacher_bf16, micro)) * cfg.grad_accum * info.world_size
    if info.is_main:
        n_student = sum(p.numel() for p in core.encoder.parameters())
        n_teacher = sum(p.numel() for p in teacher.parameters())
        log.info(
            "distilling %s (%.2fM params) -> %s (%.2fM params) on %s x%d [%s, student %s, teacher %s]: teacher layers "
            "%s of %d -> adapters on the student's last layer; grids teacher %s -> student %s%s; global batch %d (%d "
            "per rank x %d accum), lr %.2e, %d warm-up, %d steps",
            cfg.teacher, n_teacher / 1e6, cfg.student, n_student / 1e6, info.device.type, info.world_size,
            run.strategy, "bf16" if run.bf16 else "fp32", "bf16" if teacher_bf16 else "fp32", layers,
            teacher.num_layers, teacher_grid, student_grid,
            "" if teacher_grid == student_grid else " (teacher tokens resampled)",
            cfg.batch_size, micro, cfg.grad_accum, cfg.lr, cfg.warmup_steps, cfg.steps,
        )

    recent: collections.deque[Tensor] = collections.deque(maxlen=cfg.grad_accum)

    def distill_loss(video: Tensor, batch: dict) -> Tensor:
        targets = teacher_targets(teacher, video, layers, student_grid, teacher_bf16)
        loss, parts = model(video, targets)
        recent.append(parts.detach())
        return loss

    def per_layer() -> dict[str, float]:
        mean = all_reduce_mean(torch.stack(list(recent)).mean(0))
        return {f"loss_teacher_layer{k}": float(v) for k, v in zip(layers, mean)}

    step = train_loop(cfg, run, model, core, optimizer, loader, data, start_step, distill_loss, step_flops,
                      desc=f"distill {cfg.student}", extra_scalars=per_layer)
    final = run.out / "model"
    if step == cfg.steps:
        provenance = {"teacher": cfg.teacher, "teacher_layers": layers, "steps": cfg.steps, "data": cfg.data}
        export_model(core, final, info, run.strategy, extra={"distill": provenance}, submodule="encoder")
    return final
