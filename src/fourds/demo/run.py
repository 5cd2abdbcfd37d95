"""``run_demo``: the whole paper in miniature, stage by stage, resumable (see :mod:`fourds.demo.pipeline`)."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fourds.demo.config import DemoRecipe, default_recipe, quick_recipe
from fourds.demo.pipeline import (
    Entry,
    Pools,
    Timings,
    backbone_features,
    build_task,
    distill_model,
    distinct_clips,
    entries,
    pretrain_models,
    probes_done,
    render_scenes,
    run_probes,
    say,
    task_layers,
)
from fourds.demo.parallel import run_parallel
from fourds.models.io import write_json_atomic

log = logging.getLogger(__name__)


def _check_recipe(out: Path, recipe: DemoRecipe) -> None:
    """A demo folder belongs to one recipe: resuming with another would mix their results."""
    path = out / "state" / "recipe.json"
    # Threads and worker processes change speed, not results; distillation only adds a row: all may differ on resume.
    current = {k: v for k, v in json.loads(json.dumps(recipe.to_dict())).items() if k not in ("threads", "workers", "distill")}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != current:
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise ValueError(
                f"{out} holds a demo run of another recipe ({saved.get('name')!r}; differs in {changed}); "
                f"resume it with the same options, or choose another --out"
            )
    else:
        write_json_atomic(path, current)


def machine_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "load_average_1_5_15": [round(x, 2) for x in load]}


def _all_done(recipe: DemoRecipe, out: Path, rows: list[Entry]) -> bool:
    return all(probes_done(recipe, out, e.label) for e in rows) and all(
        (out / "pretrain" / m.label / "model" / "model.safetensors").is_file() for m in recipe.models)


def _run_sequential(recipe: DemoRecipe, out: Path, pools: Pools, rows: list[Entry], timings: Timings) -> None:
    """Pretraining (and distillation), then each probed backbone's features and probe runs, in this process."""
    with timings.stage("pretrain"):
        pretrain_models(recipe, out, pools)
    if recipe.distill:
        with timings.stage("distill"):
            distill_model(recipe, out, pools)
    tasks = {name: build_task(recipe, name) for name in recipe.tasks}
    clips = None
    total = len(rows) * len(recipe.tasks) * len(recipe.seeds)
    with tqdm(total=total, desc="probe runs", unit="run") as bar:
        for entry in rows:
            if probes_done(recipe, out, entry.label):
                bar.update(len(recipe.tasks) * len(recipe.seeds))
                continue
            if entry.kind == "blank" or not recipe.feature_memo:  # the probe runs the backbone on each batch
                memo = entry.build()
            else:
                with timings.stage(f"features:{entry.label}"):
                    if clips is None:
                        clips = distinct_clips(recipe, pools)
                    backbone = entry.build()
                    layers = sorted({layer for t in tasks.values() for layer in task_layers(t, backbone.num_layers)})
                    memo = backbone_features(entry, recipe, out, clips, layers)
            with timings.stage(f"probes:{entry.label}"):
                run_probes(recipe, out, pools, entry, memo, bar)
            del memo


def run_demo(out: str | Path = "demo_out", quick: bool = False, recipe: DemoRecipe | None = None,
             keep_cache: bool = False) -> dict[str, Any]:
    """Run (or resume) the demo into ``out``; returns the results dict (also ``<out>/results.json``).

    Args:
        out: the demo folder (results, plots, pictures, and the runs behind them).
        quick: the 13-second recipe (:func:`fourds.demo.config.quick_recipe`) instead of the default.
        recipe: a custom recipe (overrides ``quick``).
        keep_cache: keep the rendered scenes' feature cache (``<out>/cache``) after a finished run.
    """
    from fourds.demo.report import write_outputs

    recipe = recipe or (quick_recipe() if quick else default_recipe())
    recipe.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_recipe(out, recipe)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    timings = Timings(out / "state" / "timings.json")
    start, machine_start = time.perf_counter(), machine_info()
    say(f"fourds demo ({recipe.name} recipe) -> {out}  [{machine_start['cpu_count']} CPUs, torch threads "
        f"{machine_start['torch_threads']}, load average {machine_start['load_average_1_5_15'][0]}]")

    with timings.stage("scenes"):
        pools = render_scenes(recipe, out)
    rows = entries(recipe, out)
    if recipe.workers > 1:
        if not _all_done(recipe, out, rows):
            with timings.stage("pretrain_and_probes"):
                run_parallel(recipe, out, rows, recipe.workers)
    else:
        _run_sequential(recipe, out, pools, rows, timings)

    with timings.stage("report"):
        results = write_outputs(recipe, out, rows, pools, timings, machine_start, time.perf_counter() - start)
    if not keep_cache:
        shutil.rmtree(out / "cache", ignore_errors=True)
    return results
