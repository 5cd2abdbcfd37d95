"""The demo's stages: scenes → pretraining (→ distillation) → features → frozen probes → report.

Every stage leaves its products in the demo folder and skips what is already there, so an interrupted
run continues where it stopped: rendered scene chunks are kept, pretraining resumes from its last
checkpoint (``fourds.train.pretrain``), each backbone's features are saved once computed, and each probe
run (model x task x seed) with a ``results.json`` is not run again. Stage wall times are accumulated in
``<out>/state/timings.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fourds.data import to_float
from fourds.data.pretrain import InMemoryVideos
from fourds.demo.config import DemoRecipe, ModelRecipe
from fourds.demo.features import FeatureMemo, clip_key
from fourds.demo.scenes import ScenePool, render_pool
from fourds.models.io import write_json_atomic

log = logging.getLogger(__name__)

_VIT_KEYS = ("dim", "depth", "num_heads", "mlp_dim", "patch_size", "input_size", "in_channels", "ln_eps",
             "gelu_approximate", "qkv_bias")


def say(message: str) -> None:
    """A progress line that does not break tqdm bars."""
    tqdm.write(message)


class Timings:
    """Wall seconds per stage, accumulated over resumed invocations (``<out>/state/timings.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            entry = self.data.setdefault(name, {"seconds": 0.0, "invocations": 0})
            entry["seconds"] = round(entry["seconds"] + time.perf_counter() - t0, 2)
            entry["invocations"] += 1
            write_json_atomic(self.path, self.data)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send what is written to ``sys.stderr`` (progress bars, checkpoint lines) to a buffer; on an error,
    print the buffer's end before the error propagates. Logging handlers keep their own stream."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    except BaseException:
        sys.stderr.write(buffer.getvalue()[-4000:])
        raise


@dataclass
class Pools:
    """The rendered scenes: ``train`` (pretraining and readout training) and ``test`` (what the rows are
    scored on: the recipe's ``eval_split``, ``test`` for reported tables, ``val`` while tuning)."""

    train: ScenePool
    test: ScenePool


# ------------------------------------------------------------------------------------------ tasks
def build_task(recipe: DemoRecipe, name: str) -> Any:
    """The synthetic task at the scenes' clip size, without augmentation, with the recipe's readout."""
    from fourds.tasks import get_task

    return get_task(name, **task_overrides(recipe, name))


def task_overrides(recipe: DemoRecipe, name: str) -> dict[str, Any]:
    ov = {"num_frames": recipe.frames, "input_size": (recipe.size, recipe.size), "augment": False,
          **recipe.task_overrides.get(name, {})}
    if recipe.layer_fraction is not None:
        ov["layer_fraction"] = recipe.layer_fraction
    return ov


def split_seed(recipe: DemoRecipe, split: str) -> int:
    """The synthetic tasks' own scene seed of ``split`` (the same for every task)."""
    return int(build_task(recipe, recipe.tasks[0]).split_seed(split))


# ------------------------------------------------------------------------------------------ scenes
def render_scenes(recipe: DemoRecipe, out: Path) -> Pools:
    total = recipe.train_scenes + recipe.test_scenes
    with tqdm(total=total, desc="render scenes", unit="scene") as bar:
        pools = {}
        for role, split, count in (("train", "train", recipe.train_scenes),
                                   ("test", recipe.eval_split, recipe.test_scenes)):
            pools[role] = render_pool(out / "scenes" / split, split_seed(recipe, split), count, recipe.frames,
                                      recipe.size, recipe.num_tracks, recipe.scene_options,
                                      workers=recipe.render_workers, progress=bar.update)
    return Pools(pools["train"], pools["test"])


# ------------------------------------------------------------------------------------------ pretraining
def pretrain_config(recipe: DemoRecipe, model: ModelRecipe, out: Path) -> Any:
    from fourds.train.config import PretrainConfig

    overrides = {k: v for k, v in model.overrides.items() if k != "input_size"}
    return PretrainConfig(
        model=model.preset, model_overrides=overrides, data="synthetic", out=str(out / "pretrain" / model.label),
        steps=model.steps, batch_size=model.batch_size, lr=model.lr, warmup_steps=model.warmup_steps,
        weight_decay=model.weight_decay, beta2=model.beta2, num_frames=recipe.frames, frame_stride=1,
        image_size=recipe.size, min_resize=model.min_resize, max_resize=model.max_resize, flip=True, seed=0,
        save_every=max(1, model.steps // 4), log_every=max(1, model.steps // 50),
        resume=_has_checkpoint(out / "pretrain" / model.label), precision=recipe.precision,
    )


def _has_checkpoint(run: Path) -> bool:
    folder = run / "checkpoints"
    return folder.is_dir() and any(folder.iterdir())


def pretrain_models(recipe: DemoRecipe, out: Path, pools: Pools) -> dict[str, Path]:
    """SimpleMAE on the training scenes' videos (random zoom-crop and flip), one run per size."""
    from fourds.train.pretrain import pretrain

    folders = {}
    for model in recipe.models:
        folder = out / "pretrain" / model.label / "model"
        if not (folder / "model.safetensors").is_file():
            say(f"[pretrain] {model.label} ({model.preset}): {model.steps} steps x batch {model.batch_size}")
            pretrain(pretrain_config(recipe, model, out), source=InMemoryVideos(pools.train.videos(), seed=0))
            drop_optimiser_state(out / "pretrain" / model.label)
        folders[model.label] = folder
    return folders


def distill_model(recipe: DemoRecipe, out: Path, pools: Pools) -> Path:
    """The largest pretrained model distilled into the smallest architecture (paper Section 4)."""
    from fourds.train.distill import distill
    from fourds.train.distill import DistillConfig

    small, large = recipe.models[0], recipe.models[-1]
    folder = out / "distill" / "model"
    if not (folder / "model.safetensors").is_file():
        say(f"[distill] {large.label} -> {small.label} architecture: {recipe.distill_steps} steps")
        overrides = {k: v for k, v in small.overrides.items() if k in _VIT_KEYS and k != "input_size"}
        cfg = DistillConfig(
            student=small.preset, student_overrides=overrides, teacher=str(out / "pretrain" / large.label / "model"),
            data="synthetic", out=str(out / "distill"), steps=recipe.distill_steps, batch_size=recipe.distill_batch,
            lr=recipe.distill_lr, warmup_steps=max(1, recipe.distill_steps // 10), num_frames=recipe.frames,
            frame_stride=1, image_size=recipe.size, min_resize=small.min_resize, max_resize=small.max_resize,
            save_every=max(1, recipe.distill_steps // 4), log_every=max(1, recipe.distill_steps // 50),
            resume=_has_checkpoint(out / "distill"),
            precision=recipe.precision, teacher_precision=recipe.precision,
        )
        distill(cfg, source=InMemoryVideos(pools.train.videos(), seed=0))
        drop_optimiser_state(out / "distill")
    return folder


def drop_optimiser_state(run_dir: Path) -> None:
    """A finished stage keeps its checkpoints as model folders without optimiser state (most of their
    size: AdamW holds two moments per weight); the demo never extends a finished stage."""
    from fourds.train.checkpoint import finalize_checkpoints

    freed = finalize_checkpoints(run_dir)
    if freed:
        say(f"[cleanup] {run_dir.name}: dropped the finished run's optimiser state ({freed / 2**20:.0f} MiB)")


# ------------------------------------------------------------------------------------------ backbones
#: The label of the blank row (the readouts on constant features: :mod:`fourds.demo.blank`).
BLANK = "blank"


@dataclass
class Entry:
    """One probed backbone: ``label`` (results row), ``kind`` (pretrained / random / perframe /
    distilled / blank), the model recipe it comes from, and how to build it."""

    label: str
    kind: str
    model: ModelRecipe
    folder: Path | None
    start: Any = None  # random and blank rows: the PretrainConfig of the run whose step-0 weights they are (or copy)

    def build(self) -> nn.Module:
        from fourds.models import load
        from fourds.models.adapters.perframe import PerFrame

        if self.kind == "random":
            return step_zero_encoder(self.start)
        if self.kind == "blank":
            from fourds.demo.blank import BlankBackbone

            return BlankBackbone(step_zero_encoder(self.start))
        backbone = load(self.folder)
        return PerFrame(backbone, spec=f"perframe:{self.folder}") if self.kind == "perframe" else backbone


def step_zero_encoder(cfg: Any) -> nn.Module:
    """The encoder exactly as the pretraining run of ``cfg`` starts (its step-0 weights): the SimpleMAE
    built from the run's config and initialised with its seed, as :func:`fourds.train.pretrain.build_model`
    does (per-parameter seeds hash the parameter's name, so a bare VideoViT with the same seed would be
    another draw)."""
    return step_zero_mae(cfg).encoder.eval()


def step_zero_mae(cfg: Any) -> nn.Module:
    """The whole SimpleMAE of the pretraining run of ``cfg`` at step 0 (see :func:`step_zero_encoder`)."""
    from fourds.models.registry import simple_mae

    if cfg is None:
        raise ValueError("a random-init row needs the pretraining config whose step-0 weights it is")
    cfg = cfg.resolved()
    mae = simple_mae(cfg.model, **cfg.model_kwargs())
    mae.init_weights(seed=cfg.seed)
    return mae


def entries(recipe: DemoRecipe, out: Path) -> list[Entry]:
    """The probed backbones, in table order."""
    rows: list[Entry] = []
    for m in recipe.models:
        folder = out / "pretrain" / m.label / "model"
        if recipe.random_init:
            rows.append(Entry(f"{m.label}-random", "random", m, None, start=pretrain_config(recipe, m, out)))
        if m.label in recipe.perframe:
            rows.append(Entry(f"{m.label}-perframe", "perframe", m, folder))
        rows.append(Entry(m.label, "pretrained", m, folder))
    if recipe.distill:
        rows.append(Entry(f"{recipe.models[0].label}-distilled", "distilled", recipe.models[0], out / "distill" / "model"))
    if recipe.blank:
        largest = recipe.models[-1]
        rows.append(Entry(BLANK, "blank", largest, None, start=pretrain_config(recipe, largest, out)))
    return rows


# ------------------------------------------------------------------------------------------ features
def task_layers(task: Any, num_layers: int) -> list[int]:
    from fourds.models.backbone import resolve_layers
    from fourds.probe.sweep import default_layers

    return resolve_layers(default_layers(task, False), num_layers)


def distinct_clips(recipe: DemoRecipe, pools: Pools) -> list[torch.Tensor]:
    """Every distinct clip video (float32) any task's training or evaluation transform produces on the
    pool (with the recipe's identical geometry, one per scene)."""
    from fourds.probe.data import task_clips

    seen: dict[str, torch.Tensor] = {}
    for name in recipe.tasks:
        task = build_task(recipe, name)
        for pool in (pools.train, pools.test):
            for i in range(len(pool)):
                clips = [task.train_transform(pool[i], torch.Generator().manual_seed(0))] if pool is pools.train else []
                clips += task_clips(task, pool)(i)
                for clip in clips:
                    video = to_float(clip["video"])
                    seen.setdefault(clip_key(video), video)
    return list(seen.values())


def backbone_features(entry: Entry, recipe: DemoRecipe, out: Path, clips: list[torch.Tensor], layers: list[int]) -> FeatureMemo:
    """The entry's backbone behind a :class:`FeatureMemo` holding every pool clip's features."""
    # The backbone pass runs on the GPU where there is one (bit-identical pixels on every device, so the
    # memo's keys match the probe's clips either way).
    memo = FeatureMemo(entry.build()).to("cuda" if torch.cuda.is_available() else "cpu")
    path = out / "cache" / "features" / f"{entry.label}.safetensors"
    if path.is_file():
        memo.load(path)
    # The probe runs the backbone under bf16 autocast on a GPU (precision auto / bf16): so does this pass.
    bf16 = memo.device.type == "cuda" and recipe.precision in ("auto", "bf16")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with tqdm(total=len(clips), desc=f"features {entry.label}", unit="clip") as bar, autocast:
        encoded = memo.precompute(clips, layers, recipe.feature_batch, progress=bar.update)
    if encoded:
        memo.save(path)
    return memo


# ------------------------------------------------------------------------------------------ probes
def probe_dir(out: Path, label: str, task: str, seed: int) -> Path:
    return out / "probes" / label / task / f"seed{seed}"


def probe_config(recipe: DemoRecipe, entry: Entry, task_name: str, seed: int, out: Path) -> Any:
    from fourds.probe.config import ProbeConfig

    steps, warmup = recipe.steps_for(task_name)
    draw = recipe.visualize if (seed == recipe.seeds[0] and entry.label in recipe.visualize_models) else 0
    return ProbeConfig(
        backbone=entry.label, task=task_name, task_overrides=task_overrides(recipe, task_name),
        out=str(probe_dir(out, entry.label, task_name, seed)), lrs=[recipe.probe_lr], weight_decays=[1e-4],
        steps=steps, batch_size=recipe.probe_batch, warmup_steps=warmup,
        select_on="eval", eval_split=recipe.eval_split, seed=seed, save_every=steps,
        log_every=max(1, steps // 10), resume=True, tensorboard=False, visualize=draw,
        precision=recipe.precision,
    )


def run_probes(recipe: DemoRecipe, out: Path, pools: Pools, entry: Entry, memo: nn.Module | None,
               bar: tqdm) -> None:
    """Every task x seed of one backbone (runs with a results.json are skipped)."""
    from fourds.probe.protocol import run_probe

    for task_name in recipe.tasks:
        for seed in recipe.seeds:
            folder = probe_dir(out, entry.label, task_name, seed)
            if (folder / "results.json").is_file():
                bar.update(1)
                continue
            assert memo is not None
            t0 = time.perf_counter()
            task = build_task(recipe, task_name)
            with quiet_stderr():  # each run's own bar and "saved" lines; the demo's bar counts runs
                res = run_probe(probe_config(recipe, entry, task_name, seed, out), backbone=memo, task=task,
                                datasets={"train": pools.train, "eval": pools.test})
            value = (res.get("test") or {}).get(res["primary_metric"], float("nan"))
            bar.update(1)
            say(f"[probe] {entry.label:<16} {task_name:<15} seed {seed}: {res['primary_metric']} = {value:.4g} "
                f"({time.perf_counter() - t0:.1f} s)")


def probes_done(recipe: DemoRecipe, out: Path, label: str) -> bool:
    return all((probe_dir(out, label, t, s) / "results.json").is_file() for t in recipe.tasks for s in recipe.seeds)
