"""SimpleMAE pretraining: one process on a CPU or ``torchrun`` (DDP or FSDP2), and the run set-up it
shares with distillation (run folder, clip data, resume, export). The loop is
:func:`fourds.train.trainer.train_loop`.

Exact resume: model, optimiser and step come from the checkpoint; the data of step ``s`` and the masks
of its clips are pure functions of ``(seed, sample id)`` (see :mod:`fourds.data.pretrain`), and the
learning rate a pure function of ``s``, so a run killed at any point and resumed ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fourds.data.pretrain import ClipSpec, PretrainClips, StepBatchSampler, VideoSource, make_loader
from fourds.data.sources import DecodeFailures, build_pretrain_source
from fourds.fileio import release_run_folder
from fourds.models.io import save_model, write_json_atomic
from fourds.models.masking import masking_keys
from fourds.models.registry import simple_mae
from fourds.models.simple_mae import SimpleMAE
from fourds.seeding import derive_seed
from fourds.textfiles import read_json
from fourds.train.checkpoint import Checkpointer, lock_run
from fourds.train.config import RESUMABLE_KEYS, PretrainConfig
from fourds.train.distributed import (
    DistInfo,
    apply_block_switches,
    init_distributed,
    release_one_rank_group,
    resolve_strategy,
    shard_fsdp,
    unwrap,
    wrap_ddp,
)
from fourds.train.device_step import mae_train_flops
from fourds.train.optim import build_adamw, param_groups
from fourds.train.trainer import (  # noqa: F401  (FAULT_ENV, NonFiniteLossError, data_state_dict: re-exported)
    FAULT_ENV,
    NonFiniteLossError,
    Run,
    data_state_dict,
    refuse_existing_checkpoints,
    train_loop,
    use_bf16,
)

log = logging.getLogger(__name__)

def build_model(cfg: PretrainConfig, info: DistInfo, strategy: str, bf16: bool) -> tuple[nn.Module, SimpleMAE]:
    """The trained module (maybe DDP/FSDP-wrapped) and the plain SimpleMAE inside it."""
    with torch.device("meta"):
        model = simple_mae(cfg.model, **cfg.model_kwargs())
    return parallelize_and_init(model, cfg, info, strategy, bf16)


def parallelize_and_init(model: nn.Module, cfg: Any, info: DistInfo, strategy: str, bf16: bool) -> tuple[nn.Module, Any]:
    """Apply the block switches and the strategy to a model built on the meta device, then materialise
    it on ``info.device`` and initialise it with per-parameter seeds (``model.init_weights(seed)``).

    Each full parameter is drawn on the CPU with its own seeded generator and copied in (sharded under
    FSDP: no rank ever holds more than one full parameter), so every device, strategy and world size
    starts from bit-identical weights. Returns (trained module, plain module inside it).
    """
    apply_block_switches(model, cfg.activation_checkpointing, cfg.compile, getattr(cfg, "compile_mode", None))
    if strategy == "fsdp":
        shard_fsdp(model, info, bf16)
    model.to_empty(device=info.device)
    model.init_weights(seed=cfg.seed)
    if strategy == "fsdp":
        return model, model
    wrapped = wrap_ddp(model, info) if strategy == "ddp" else model
    return wrapped, model


def _check_run_dir(cfg: PretrainConfig, ckpt: Checkpointer) -> None:
    out = Path(cfg.out)
    refuse_existing_checkpoints(out, ckpt.latest(), cfg.resume)
    saved = out / "config.json"
    if cfg.resume and saved.is_file():
        before = read_json(saved, "the run's config.json, written by fourds pretrain")
        ignore = RESUMABLE_KEYS
        changed = {k: (before.get(k), v) for k, v in cfg.to_dict().items() if k not in ignore and before.get(k) != v}
        if changed:
            log.warning("resuming with a changed config (old, new): %s", changed)


def start_run(cfg: Any, write_config: bool = True) -> Run:
    """Process group, strategy and precision; refuses to overwrite a run without ``--resume``; writes
    the resolved config beside the run (rank 0; with ``write_config=False`` the caller does, with
    :func:`write_run_config`, once the start has succeeded). ``cfg`` is a resolved training config
    (:class:`PretrainConfig` or one with the same run fields, e.g. the distillation config)."""
    info = init_distributed(cfg.device, one_rank_group=cfg.strategy == "fsdp")
    strategy = resolve_strategy(cfg.strategy, info)
    bf16 = use_bf16(cfg.precision, info.device)
    out = Path(cfg.out)
    lock_run(out, info)  # <out>/.lock for the run's life: a second run on this --out fails with our PID
    ckpt = Checkpointer(out / "checkpoints", info, keep=cfg.keep_checkpoints, sharded=strategy == "fsdp")
    try:
        _check_run_dir(cfg, ckpt)
    except ValueError:
        release_run_folder(out)
        raise
    run = Run(info, strategy, bf16, out, ckpt)
    if write_config:
        write_run_config(cfg, run)
    return run


def write_run_config(cfg: Any, run: Run) -> None:
    """``<out>/config.json``: the resolved configuration (rank 0)."""
    if run.info.is_main:
        write_json_atomic(run.out / "config.json", {**cfg.to_dict(), "world_size": run.info.world_size,
                                                    "strategy_resolved": run.strategy})


def saved_run_config(out: Path) -> dict[str, Any] | None:
    """The configuration a run folder was started with: ``config.json``, else the one stored in its
    newest checkpoint; ``None`` for a folder without either."""
    path = out / "config.json"
    if path.is_file():
        return read_json(path, "the run's config.json, written by fourds pretrain/distill")
    steps = sorted((out / "checkpoints").glob("step_*/train_state.pt"))
    if steps:
        from fourds.train.checkpoint import safe_load

        return safe_load(steps[-1]).get("config")
    return None


@dataclass
class Data:
    """The clip source of a run and its bad-video bookkeeping."""

    source: Any
    num_videos: int
    failures: DecodeFailures


def open_data(cfg: Any, source: VideoSource | None) -> Data:
    """``source`` or the one ``cfg.data`` names; a missing path or an empty source fails here, before any
    worker starts."""
    decode_short_side = math.ceil((cfg.max_resize or cfg.min_resize) * cfg.image_size)
    source = source if source is not None else build_pretrain_source(cfg.data, cfg.seed, cfg.image_size, decode_short_side)
    num_videos = len(source) if hasattr(source, "__len__") else 0
    return Data(source, num_videos, DecodeFailures(max(num_videos, 1), cfg.max_decode_failures))


def resume_run(cfg: Any, run: Run, core: nn.Module, optimizer: torch.optim.Optimizer, data: Data) -> int:
    """Restore the newest intact checkpoint when resuming (an unreadable newer one is reported and set
    aside, see :meth:`Checkpointer.resume`); returns the step to start from."""
    resumed = run.ckpt.resume(core, optimizer) if cfg.resume else None
    if resumed is not None:
        latest, state = resumed
        start_step = int(state["step"])
        if start_step > cfg.steps:
            raise ValueError(f"--steps {cfg.steps} is below the step of the checkpoint to resume, {latest} "
                             f"(step {start_step}); give --steps >= {start_step}")
        saved_steps = state.get("config", {}).get("steps", cfg.steps)
        if saved_steps != cfg.steps and run.info.is_main:
            log.info("--steps %d (was %d): the cosine decay is stretched to the new length from step %d on",
                     cfg.steps, saved_steps, start_step)
        data_state = state.get("data", {})
        data.failures.load_state_dict(data_state.get("failures", {}))
        if data_state.get("num_videos", data.num_videos) != data.num_videos:
            log.warning(
                "the data source had %s videos when the checkpoint was written and has %d now: the sample order "
                "of the resumed run differs from the original run's", data_state.get("num_videos"), data.num_videos,
            )
        log.info("resumed from %s at step %d (next sample %d)", latest, start_step, start_step * cfg.batch_size)
        return start_step
    if cfg.resume:
        log.warning("--resume given but %s has no checkpoint; starting from scratch", run.out / "checkpoints")
    return 0


def clip_loader(cfg: Any, run: Run, data: Data, start_step: int) -> tuple[Any, StepBatchSampler]:
    """The step-indexed loader of pretraining clips for steps ``start_step .. cfg.steps - 1``."""
    spec = ClipSpec(cfg.num_frames, cfg.frame_stride, cfg.image_size, cfg.min_resize, cfg.max_resize, cfg.flip)
    info = run.info
    sampler = StepBatchSampler(start_step, cfg.steps, cfg.batch_size, info.rank, info.world_size, cfg.grad_accum)
    workers = loader_workers(cfg.num_workers, info.device)
    loader = make_loader(PretrainClips(data.source, spec, cfg.seed), sampler, workers, info.device.type == "cuda")
    return loader, sampler


def loader_workers(requested: int | None, device: torch.device) -> int:
    """DataLoader workers: ``requested``, else 0 on the CPU (the step uses every core) and on CUDA
    ``min(8, cores - 1)`` (clips are prepared while the GPU runs the previous steps)."""
    if requested is not None:
        return requested
    return max(1, min(8, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 0


def pretrain(cfg: PretrainConfig, source: VideoSource | None = None, explicit: Iterable[str] | None = None) -> Path:
    """Run (or resume) SimpleMAE pretraining; returns the final model folder ``<out>/model``.

    Resuming (``cfg.resume``) continues the run saved in ``cfg.out`` with *its* configuration; of the keys
    in ``explicit`` only :data:`fourds.train.config.RESUMABLE_KEYS` (steps, logging, checkpointing,
    workers, devices, ...) are taken from ``cfg``, and any other one that differs from the saved value is
    refused (see :func:`fourds.train.config.resume_config`). ``config.json`` is written once the start
    has succeeded (config, model, data source and checkpoint all good).

    Args:
        cfg: the run configuration (``None`` fields take the preset's defaults).
        source: clips to train on; default: ``build_pretrain_source(cfg.data, ...)`` (folder, manifest,
            shards, ``synthetic`` or ``random``).
        explicit: the fields the caller set (the CLI passes the flags given); default: the fields of
            ``cfg`` that differ from the dataclass defaults.
    """
    if cfg.resume:
        saved = saved_run_config(Path(cfg.out))
        if saved is not None:
            given = cfg.non_default_keys() if explicit is None else set(explicit)
            cfg = cfg.resume_from(saved, given, str(Path(cfg.out) / "config.json"))
    cfg = cfg.resolved()
    try:
        return _pretrain(cfg, source)
    finally:
        release_one_rank_group()


def _pretrain(cfg: PretrainConfig, source: VideoSource | None) -> Path:
    run = start_run(cfg, write_config=False)
    info = run.info
    if info.is_main and cfg.warmup_steps > cfg.steps:
        log.warning(
            "--warmup-steps %d > --steps %d: the learning rate never reaches its peak --lr %g (it stops at %.3g); "
            "lower --warmup-steps", cfg.warmup_steps, cfg.steps, cfg.lr, cfg.lr * (cfg.steps - 1) / cfg.warmup_steps,
        )
    model, core = build_model(cfg, info, run.strategy, run.bf16)
    groups = param_groups(core, cfg.weight_decay, core.no_weight_decay(cfg.exempt_biases_from_wd, cfg.exempt_latents_from_wd))
    optimizer = build_adamw(groups, cfg.lr, (cfg.beta1, cfg.beta2), info.device)
    data = open_data(cfg, source)
    start_step = resume_run(cfg, run, core, optimizer, data)
    write_run_config(cfg, run)  # only now that the config, the model, the data and the checkpoint are good
    loader, sampler = clip_loader(cfg, run, data, start_step)

    micro = sampler.micro
    step_flops = mae_train_flops(cfg.model, cfg.model_kwargs(), micro) * cfg.grad_accum * info.world_size
    if info.is_main:
        n_params = sum(p.numel() for p in core.parameters())
        log.info(
            "pretraining %s (%.2fM params) on %s x%d [%s, %s]: global batch %d (%d per rank x %d accum), "
            "lr %.2e, %d warm-up, %d steps",
            cfg.model, n_params / 1e6, info.device.type, info.world_size, run.strategy, "bf16" if run.bf16 else "fp32",
            cfg.batch_size, micro, cfg.grad_accum, cfg.lr, cfg.warmup_steps, cfg.steps,
        )

    mask_seed = derive_seed(cfg.seed, "simple-mae-mask")

    def mae_loss(video: torch.Tensor, batch: dict) -> torch.Tensor:
        # Mask streams keyed by (seed, global sample id), hashed on the device: no host round trip.
        ids = torch.as_tensor(batch["sample_id"]).to(video.device, non_blocking=True)
        return model(video, sample_seeds=masking_keys(mask_seed, ids)).loss

    step = train_loop(cfg, run, model, core, optimizer, loader, data, start_step, mae_loss, step_flops,
                      desc=f"pretrain {cfg.model}")
    final = run.out / "model"
    if step == cfg.steps:
        export_model(core, final, info, run.strategy, extra={"pretrain": {"steps": cfg.steps, "data": cfg.data}})
    return final


def export_model(core: nn.Module, folder: Path, info: DistInfo, strategy: str, extra: dict[str, Any],
                 submodule: str | None = None) -> None:
    """Write the plain model folder (gathering the full state dict from FSDP shards when needed).

    With ``submodule`` (e.g. ``"encoder"``) only that part of ``core`` is exported.
    """
    state = None
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(core, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if submodule:
            prefix = submodule + "."
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    module = unwrap(core)
    if submodule:
        module = module.get_submodule(submodule)
    if info.is_main:
        save_model(module, folder, state_dict=state, extra=extra)
