"""SimpleMAE pretraining: one loop for one CPU process and for ``torchrun`` (DDP or FSDP2).

Exact resume: model, optimiser and step come from the checkpoint; the data of step ``s`` and the masks
of its clips are pure functions of ``(seed, sample id)`` (see :mod:`fourds.data.pretrain`), and the
learning rate a pure function of ``s``, so a run killed at any point and resumed ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fourds.data import to_float
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
from fourds.train.device_step import NonFiniteGuard, StepTimer, fused_attention_only, out_of_memory_message
from fourds.train.distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_min,
    all_reduce_sum,
    apply_block_switches,
    init_distributed,
    release_one_rank_group,
    resolve_strategy,
    shard_fsdp,
    unwrap,
    wrap_ddp,
)
from fourds.train.flops import mae_train_flops, peak_flops
from fourds.train.logger import RunLogger
from fourds.train.optim import build_adamw, param_groups, set_lr, warmup_cosine

log = logging.getLogger(__name__)

#: Test hook: the process SIGKILLs itself right before this step (a real crash, for resume tests).
FAULT_ENV = "FOURDS_FAULT_AT_STEP"


class NonFiniteLossError(RuntimeError):
    """Raised when the loss or gradient norm is NaN/inf; no optimiser step was taken."""


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


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


def _param_checksum(model: nn.Module) -> float:
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float64)
        for p in model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            total += local.detach().double().sum().cpu()
    return float(total)


def _grad_sync(model: nn.Module, strategy: str, sync: bool) -> contextlib.AbstractContextManager:
    """Skip gradient all-reduce on all but the last accumulation micro-batch."""
    if strategy == "ddp" and not sync:
        return model.no_sync()  # type: ignore[operator]
    if strategy == "fsdp":
        model.set_requires_gradient_sync(sync)  # type: ignore[operator]
    return contextlib.nullcontext()


def _check_run_dir(cfg: PretrainConfig, ckpt: Checkpointer) -> None:
    out = Path(cfg.out)
    if not cfg.resume and ckpt.latest() is not None:
        raise ValueError(
            f"--out {out} already holds checkpoints ({ckpt.latest().name}); pass --resume to continue "
            f"that run, or choose a new --out"
        )
    saved = out / "config.json"
    if cfg.resume and saved.is_file():
        before = read_json(saved, "the run's config.json, written by fourds pretrain")
        ignore = RESUMABLE_KEYS
        changed = {k: (before.get(k), v) for k, v in cfg.to_dict().items() if k not in ignore and before.get(k) != v}
        if changed:
            log.warning("resuming with a changed config (old, new): %s", changed)


@dataclass
class Run:
    """Where a training run executes: process/device, strategy, precision, run folder, checkpoints."""

    info: DistInfo
    strategy: str
    bf16: bool
    out: Path
    ckpt: Checkpointer


def start_run(cfg: Any, write_config: bool = True) -> Run:
    """Process group, strategy and precision; refuses to overwrite a run without ``--resume``; writes
    the resolved config beside the run (rank 0; with ``write_config=False`` the caller does, with
    :func:`write_run_config`, once the start has succeeded). ``cfg`` is a resolved training config
    (:class:`PretrainConfig` or one with the same run fields, e.g. the distillation config)."""
    info = init_distributed(cfg.device, one_rank_group=cfg.strategy == "fsdp")
    strategy = resolve_strategy(cfg.strategy, info)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and info.device.type == "cuda")
    if bf16 and info.device.type == "cpu":
        log.warning("bf16 on CPU is 10-100x slower than fp32 here; use --precision fp32 on CPU")
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


def train_loop(
    cfg: Any, run: Run, model: nn.Module, core: nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
    data: Data, start_step: int, compute_loss: Callable[[torch.Tensor, dict], torch.Tensor], step_flops: float,
    desc: str, extra_scalars: Callable[[], dict[str, float]] | None = None,
) -> int:
    """The optimisation loop shared by pretraining and distillation; returns the last step reached.

    Per step: warm-up + cosine learning rate, ``cfg.grad_accum`` micro-batches of ``compute_loss(video,
    batch)`` (video ``(b, T, S, S, 3)`` float32 in [0, 1] on the device; called inside the gradient-sync,
    autocast and fused-attention contexts), gradient clipping, a non-finite guard, the optimiser step.
    Nothing reads a device value per step (no host synchronisation): the non-finite guard skips the
    fused optimiser's update on the device and is read when the loop logs (every ``cfg.log_every`` steps;
    ``extra_scalars()`` adds to the logged scalars; it runs on every rank, so it may all-reduce) or saves
    (every ``cfg.save_every`` steps, at the end and on SIGTERM/SIGINT, checked at logging steps when
    distributed). Logged throughput: ``clips_per_s`` is the loop's (clips over the wall time of the
    logging window: data, logging and saves included), ``step_clips_per_s`` the step timer's (the
    compute of the window's last step), with ``tflops``/``mfu`` from the step timer.
    """
    info, strategy, ckpt = run.info, run.strategy, run.ckpt
    peak = peak_flops(info.device)
    logger = RunLogger(run.out, total=cfg.steps, initial=start_step, enabled=info.is_main, desc=desc)
    rank_log = open(run.out / f"rank{info.rank}.jsonl", "a", buffering=1) if cfg.debug_rank_logs else None
    fault_step = int(os.environ.get(FAULT_ENV, "-1"))
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16) if run.bf16 and strategy != "fsdp" else contextlib.nullcontext()
    params = [p for p in core.parameters() if p.requires_grad]
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    guard = NonFiniteGuard(info.device, optimizer)
    timer = StepTimer(info.device)
    failures, num_videos = data.failures, data.num_videos
    batches: Iterator[dict] = iter(loader)
    model.train()
    step = start_step
    window_start, window_steps, data_time = time.perf_counter(), 0, 0.0
    try:
        with _StopFlag() as stop:
            while step < cfg.steps:
                if step == fault_step:
                    ckpt.wait()  # the crash comes after the previous (background) save has completed
                    os.kill(os.getpid(), signal.SIGKILL)
                timer.start()
                lr = warmup_cosine(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr)
                set_lr(optimizer, lr)
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=info.device)
                for m in range(cfg.grad_accum):
                    td = time.perf_counter()
                    batch = next(batches)
                    if "failed" in batch:  # file sources: every batch reports its skipped bad videos
                        failures.update([line for item in batch["failed"] for line in item.split("\n") if line],
                                        samples=len(batch["sample_id"]), check=False)
                    video = to_float(batch["video"].to(info.device, non_blocking=True))
                    data_time += time.perf_counter() - td
                    try:
                        with _grad_sync(model, strategy, m == cfg.grad_accum - 1), autocast, \
                                fused_attention_only(info.device):
                            loss = compute_loss(video, batch) / cfg.grad_accum
                        loss.backward()
                    except torch.OutOfMemoryError as err:
                        raise RuntimeError(out_of_memory_message(
                            f"{desc} step {step}", cfg.batch_size, len(batch["sample_id"]), cfg.grad_accum,
                            str(getattr(cfg, "model", getattr(cfg, "student", "?"))),
                            cfg.activation_checkpointing, cfg.precision, info.device)) from err
                    loss_sum += loss.detach()
                if num_videos:  # summed over ranks, so every rank takes the same stop decision
                    failures.commit(lambda counts: all_reduce_sum(counts, info.device))
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                if hasattr(grad_norm, "full_tensor"):
                    grad_norm = grad_norm.full_tensor()
                guard.update(step, grad_norm, loss_sum)
                if guard.must_check_every_step:
                    _raise_if_non_finite(guard, ckpt, loss_sum, grad_norm)
                guard.arm()
                optimizer.step()
                timer.stop()
                step += 1
                window_steps += 1
                if rank_log is not None:
                    rank_log.write(json.dumps({"step": step, "loss": float(loss_sum), "checksum": _param_checksum(core)}) + "\n")
                logger.advance()
                log_now = step % cfg.log_every == 0 or step == cfg.steps
                save_now = step % cfg.save_every == 0 or step == cfg.steps
                if info.distributed:  # a collective: only where the loop synchronises anyway
                    stop_now = (log_now or save_now) and all_reduce_min(0.0 if stop.requested else 1.0, info.device) < 1.0
                else:
                    stop_now = stop.requested
                if log_now or save_now or stop_now:
                    _raise_if_non_finite(guard, ckpt, loss_sum, grad_norm)
                if log_now:
                    loss_value = float(all_reduce_mean(loss_sum))
                    step_s = timer.seconds()
                    wall = time.perf_counter() - window_start
                    loop_clips = cfg.batch_size * window_steps / wall
                    scalars = {
                        "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                        "clips_per_s": loop_clips, "step_clips_per_s": cfg.batch_size / step_s,
                        "step_time_s": step_s, "loop_step_time_s": wall / window_steps,
                        "data_time_s": data_time / window_steps, "tflops": step_flops / step_s / 1e12,
                    }
                    if peak:
                        scalars["mfu"] = step_flops / step_s / peak
                        scalars["loop_mfu"] = step_flops * window_steps / wall / peak
                    if num_videos:
                        scalars.update(failures.scalars())
                    if extra_scalars is not None:
                        scalars.update(extra_scalars())
                    logger.log(step, scalars, bar={"loss": f"{loss_value:.4f}", "clips/s": f"{loop_clips:.1f}",
                                                   "step clips/s": f"{cfg.batch_size / step_s:.1f}"})
                if save_now or stop_now:
                    last = step == cfg.steps or stop_now  # periodic saves write in the background
                    path = ckpt.save(step, core, optimizer, {"config": cfg.to_dict(), "data": data_state_dict(step, cfg, num_videos, failures)},
                                     background=not last)
                    logger.write(f"saved {path}" if last else f"saving {path} in the background")
                if log_now:  # the next window starts after this step's logging and saving
                    window_start, window_steps, data_time = time.perf_counter(), 0, 0.0
                if stop_now:
                    logger.write(f"stopped at step {step} on request; resume with --resume")
                    break
        ckpt.wait()
    except BaseException:
        ckpt.wait_quietly()  # a background save finishes (or logs its error); the original error propagates
        raise
    finally:
        release_run_folder(run.out)
        logger.close()
        if rank_log is not None:
            rank_log.close()
    return step


def _raise_if_non_finite(guard: NonFiniteGuard, ckpt: Checkpointer, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
    """Raise :class:`NonFiniteLossError` if any step so far was non-finite (one host sync)."""
    bad = guard.first_bad_step()
    if bad is None:
        return
    last = ckpt.latest()
    raise NonFiniteLossError(
        f"non-finite loss or gradient norm at step {bad} (latest: loss {float(loss)}, gradient norm "
        f"{float(grad_norm)}); stopped before that step's optimiser update (later steps were skipped). "
        f"Last good checkpoint: {last if last else 'none yet'} (continue with --resume). "
        f"Try a lower --lr, --grad-clip 1.0 or --precision fp32."
    )


def data_state_dict(step: int, cfg: PretrainConfig, num_videos: int, failures: DecodeFailures) -> dict[str, Any]:
    """The data position saved with a checkpoint.

    Sample ids are global and their content a pure function of ``(seed, id)`` (see
    :mod:`fourds.data.pretrain`), so the position is one number for every rank and worker: the next
    step's first id. ``epoch`` (passes over the source) is informative; the failure counts carry on.
    """
    next_sample = step * cfg.batch_size
    return {
        "next_sample": next_sample,
        "epoch": next_sample // num_videos if num_videos else 0,
        "seed": cfg.seed,
        "num_videos": num_videos,
        "failures": failures.state_dict(),
    }


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
