"""Typed configuration of a pretraining run, resolved against the model preset's defaults."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fourds.models.registry import build_configs, get_preset

STRATEGIES = ("auto", "none", "ddp", "fsdp")
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEVICES = ("auto", "cpu", "cuda")

#: Keys a resumed run may change: where the run lives, how long it runs, how it logs and checkpoints, and
#: how the same computation is carried out (devices, parallelism, memory switches). Every other key
#: changes the model, the data or the optimisation, so a resumed run takes it from the saved config.
RESUMABLE_KEYS = frozenset({
    "out", "resume", "steps", "save_every", "keep_checkpoints", "log_every", "num_workers",
    "max_decode_failures", "debug_rank_logs", "device", "precision", "strategy", "grad_accum",
    "activation_checkpointing", "compile", "compile_mode",
})


class ConfigBase:
    """What every run configuration dataclass shares: the plain-dict round trip through ``config.json``
    (:meth:`to_dict` / :meth:`from_dict` with its unknown-key check), the fields a caller set
    (:meth:`non_default_keys`) and the resume rule (:meth:`resume_from`: the saved settings win, except
    the :attr:`RESUMABLE` keys). Subclasses are dataclasses and set ``CONFIG_NOUN`` (for messages) and
    ``RESUMABLE``.
    """

    CONFIG_NOUN: ClassVar[str] = "run"
    RESUMABLE: ClassVar[frozenset[str]] = RESUMABLE_KEYS

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able values (what ``config.json`` holds, besides run facts)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from :meth:`to_dict`'s output.

        Raises:
            ValueError: ``data`` has keys that are not fields (the first five named, with the valid ones).
        """
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            shown = [k[:40] for k in sorted(unknown)[:5]] + (["..."] if len(unknown) > 5 else [])
            raise ValueError(f"unknown {cls.CONFIG_NOUN} config keys {shown}; valid: {sorted(known)}")
        return cls(**data)

    def non_default_keys(self) -> set[str]:
        """Fields whose value differs from the dataclass default (what a library caller set)."""
        return non_default_keys(self)

    def resume_from(self, saved: dict[str, Any], explicit: Iterable[str], where: str) -> Any:
        """The configuration of a resumed run (see :func:`resume_config`, with this class's ``RESUMABLE``)."""
        return resume_config(saved, self, explicit, where, resumable=self.RESUMABLE)


@dataclass
class RunFields(ConfigBase):
    """The fields every training run has — pretraining, distillation and the probe: where it writes,
    the schedule's length and batch, warm-up and cosine floor, AdamW betas, gradient clipping, seed,
    checkpoint/log cadence, resume, precision, device and loader workers. Subclasses document them in
    their own docstring and may redeclare a field to change its default (order stays this one).
    """

    out: str = "runs/pretrain"
    steps: int | None = None
    batch_size: int | None = None
    warmup_steps: int | None = None
    min_lr: float = 0.0
    beta1: float | None = None
    beta2: float | None = None
    grad_clip: float = 0.0
    seed: int = 0
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = False
    precision: str = "auto"
    device: str = "auto"
    num_workers: int | None = None


@dataclass
class RunSettings(RunFields):
    """The settings of the pretraining loop that every run of it shares — pretraining
    (:class:`PretrainConfig`) and distillation (:class:`fourds.train.distill.DistillConfig`): data,
    schedule, optimiser, clip sampling, checkpoints, devices. Each subclass documents every field and sets
    its own ``out`` default; ``None`` fields are filled from the model preset by ``resolved()``.
    """

    data: str = "synthetic"
    lr: float | None = None
    weight_decay: float | None = None
    exempt_biases_from_wd: bool = False
    num_frames: int | None = None
    frame_stride: int | None = None
    image_size: int | None = None
    min_resize: float | None = None
    max_resize: float | None = None
    flip: bool = True
    strategy: str = "auto"
    grad_accum: int = 1
    activation_checkpointing: bool = False
    compile: bool = False
    compile_mode: str | None = None
    max_decode_failures: float = 0.01
    debug_rank_logs: bool = False


@dataclass
class PretrainConfig(RunSettings):
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
        compile: ``torch.compile`` each block (slow to start: minutes on a CPU, where it does not pay).
        compile_mode: ``torch.compile`` mode with ``--compile`` (unset: torch's standard mode):
            ``reduce-overhead`` (CUDA graphs, for small launch-bound models on a GPU), ``max-autotune``,
            ``max-autotune-no-cudagraphs``.
        num_workers: DataLoader worker processes (0 = in the main process; unset: 0 on the CPU, on CUDA
            ``min(8, cores - 1)`` so that clips are decoded and augmented off the step's critical path).
        max_decode_failures: file sources skip videos that fail to decode (counted in the logged
            scalars, each named once); the run stops when more than this fraction of the decode
            attempts so far have failed (summed over ranks), once at least 10 have failed.
        debug_rank_logs: every rank writes ``rank{r}.jsonl`` with its loss and a parameter checksum
            per step (used by the distributed test).
    """

    model: str = "4ds-tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/pretrain"
    exempt_latents_from_wd: bool = False

    CONFIG_NOUN: ClassVar[str] = "pretraining"

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
        cfg.check_model()
        return cfg

    def validate(self) -> None:
        validate_run_fields(self)

    def check_model(self) -> None:
        """Architecture checks of a resolved config whose errors name the flags to change (the model
        layer's own errors name its fields)."""
        preset = get_preset(self.model)
        overrides = self.model_overrides
        merged = {**_field_defaults(), **preset.vit, **preset.mae, **overrides}
        try:
            depth, latent = int(merged["depth"]), int(merged["num_latent_layers"])
            patch = tuple(int(v) for v in merged["patch_size"])
            dec_patch = tuple(int(v) for v in merged["decoder_patch_size"])
            input_size = tuple(int(v) for v in merged["input_size"])
        except (TypeError, ValueError):
            depth = latent = 0
            patch = dec_patch = input_size = ()  # malformed override: build_configs below names it
        if latent > depth:
            given = " ".join(f"{k}={overrides[k]}" for k in ("depth", "num_latent_layers") if k in overrides)
            raise ValueError(
                f"--model {self.model} --model-overrides {given or '(none)'}: SimpleMAE joins the latent grid "
                f"before the last num_latent_layers={latent} blocks, but the encoder has depth={depth}; give "
                f"--model-overrides num_latent_layers=N with N <= {depth}, or a depth >= {latent}"
            )
        if "input_size" in overrides or self.num_frames is None or self.image_size is None:
            flags, size = ("--model-overrides input_size",) * 3, input_size
        else:
            flags, size = ("--num-frames", "--image-size", "--image-size"), (self.num_frames, self.image_size, self.image_size)
        for axis, flag, value, p, q in zip("THW", flags, size, patch, dec_patch):
            multiple = math.lcm(p, q)
            if value % multiple:
                lower = value - value % multiple
                hint = " or ".join(str(v) for v in (lower, lower + multiple) if v > 0)
                raise ValueError(
                    f"{flag} {value}: must be a multiple of {multiple} {'frames' if axis == 'T' else 'pixels'} "
                    f"(the tubelet patch {patch} and the decoding patch {dec_patch} of {self.model} must tile the "
                    f"clip), e.g. {hint}"
                )
        try:
            build_configs(self.model, **self.model_kwargs())
        except (TypeError, ValueError) as err:
            raise ValueError(f"--model {self.model} --model-overrides: {err}") from None

    def model_kwargs(self) -> dict[str, Any]:
        """Overrides for :func:`fourds.models.simple_mae`: the clip size sets the input size."""
        kwargs = dict(self.model_overrides)
        if self.num_frames is not None and self.image_size is not None:
            kwargs.setdefault("input_size", (self.num_frames, self.image_size, self.image_size))
        return kwargs


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]


def _field_defaults() -> dict[str, Any]:
    """Architecture defaults of ViTConfig / MAEConfig fields (the presets set only what differs)."""
    from fourds.models.simple_mae import MAEConfig
    from fourds.models.vit import ViTConfig

    return {f.name: f.default for cls in (ViTConfig, MAEConfig) for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (tuples and lists alike, as after a round trip through config.json)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def non_default_keys(cfg: Any) -> set[str]:
    """Fields of the dataclass ``cfg`` whose value differs from the field default (what a library caller set)."""
    return {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != _default(f)}


def _json_kind(value: Any) -> str:
    """The JSON type of a value: ``null``, ``bool``, ``number``, ``string``, ``array`` or ``object``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, (list, tuple)) else "object"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def check_saved_config(saved: Any, cfg: Any, where: str) -> None:
    """Refuse a saved run configuration (parsed ``config.json``) that cannot be the one fourds wrote:
    not a JSON object, or a setting whose JSON type differs from the field's default (``null`` is
    accepted for any field; a number for a field whose default is ``null``).

    Raises:
        ValueError: naming ``where``, the first offending keys and their types (never their values).
    """
    if not isinstance(saved, dict):
        raise ValueError(f"{where} holds {_a('JSON ' + _json_kind(saved))}, not the object of settings fourds writes; the "
                         f"file is damaged: restore it, or start a new run with another --out")
    bad = []
    for f in sorted(dataclasses.fields(cfg), key=lambda f: f.name):  # named in a stable order
        if f.name not in saved or saved[f.name] is None:
            continue
        default = _default(f)
        want, got = _json_kind(default), _json_kind(saved[f.name])
        if want != "null" and want != got:
            bad.append(f"{f.name} is {_a(got)} (expected {_a(want)})")
    if bad:
        raise ValueError(f"{where} is damaged: {'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. Restore the file "
                         f"(or fix those settings), or start a new run with another --out")


def resume_config(saved: dict[str, Any], cfg: Any, explicit: Iterable[str], where: str,
                  resumable: frozenset[str] = RESUMABLE_KEYS) -> Any:
    """The configuration of a resumed run: the ``saved`` one (``config.json`` of the run), with the
    ``resumable`` keys among ``explicit`` (the flags given) taken from ``cfg``.

    Works for any run-config dataclass (:class:`PretrainConfig`, the probe's and distillation's
    configs); the result has ``cfg``'s type.

    Raises:
        ValueError: an explicit key outside ``resumable`` differs from its saved value; the message
            names every such flag with its saved value.
    """
    check_saved_config(saved, cfg, where)
    known = {f.name for f in dataclasses.fields(cfg)}
    values = {k: v for k, v in saved.items() if k in known}  # drops world_size, strategy_resolved
    refused = []
    for key in sorted(set(explicit) | {"out", "resume"}):
        new = getattr(cfg, key)
        if key in resumable or key not in values:
            values[key] = new
        elif not _same(new, values[key]):
            refused.append(f"--{key.replace('_', '-')} {json.dumps(new)} (saved: {json.dumps(values[key])})")
    if refused:
        allowed = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(resumable - {"out", "resume"}))
        raise ValueError(
            f"--resume continues the run saved in {where} with its own settings, and these differ: "
            f"{'; '.join(refused)}. They would change the model, the data or the optimisation, so drop them to "
            f"continue the run as saved, or start a new run with another --out. Flags that may change on resume: "
            f"{allowed}. (If only a path moved, edit it in {where}.)"
        )
    values["resume"] = True
    return type(cfg)(**values)


def need(cond: bool, msg: str) -> None:
    """Raise ``ValueError(msg)`` unless ``cond``: the configs' validation step."""
    if not cond:
        raise ValueError(msg)


def check_choices(cfg: Any, names: dict[str, tuple[str, ...]]) -> None:
    """Each field ``name`` of ``cfg`` is one of ``names[name]``; the error names the flag and the choices."""
    for name, choices in names.items():
        value = getattr(cfg, name)
        need(value in choices, f"--{name.replace('_', '-')} {value!r}: choose one of {choices}")


def validate_run_fields(cfg: Any) -> None:
    """Checks shared by every config with the training-run fields of :class:`PretrainConfig` (the
    distillation config too); errors name the flag and the valid values."""
    check_choices(cfg, {"strategy": STRATEGIES, "precision": PRECISIONS, "device": DEVICES})
    need(cfg.compile_mode is None or cfg.compile_mode in COMPILE_MODES,
         f"--compile-mode {cfg.compile_mode!r}: choose one of {COMPILE_MODES} (or leave it unset)")
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
    need(cfg.num_workers is None or cfg.num_workers >= 0, f"--num-workers must be >= 0, got {cfg.num_workers}")
    need(0.0 <= cfg.max_decode_failures <= 1.0,
         f"--max-decode-failures is a fraction in [0, 1], got {cfg.max_decode_failures}")
    need(cfg.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1")
