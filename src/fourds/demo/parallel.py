"""The demo's stages in worker processes: one core each, the models' pretraining side by side, then one
probed backbone per job (its feature pass and every task x seed of it).

Why: the demo's models are tiny, and on a CPU torch's second intra-op thread does not speed them up (a
100-step depth probe of 4DS-micro at 16x64x64 took 6.7 s on one thread and 7.7 s on two of this
project's 2-core machine); two processes with one thread each do twice the work in the same time.
Every job is one of the sequential path's own steps (``fourds.demo.pipeline``), run in a spawned
process with one torch thread, reading the rendered scenes from disk, with its output in
``<out>/state/logs/<job>.log``; the main process shows one progress bar per stage from the runs' own
files (pretraining logs, probe ``results.json``). Finished work is skipped exactly as on the sequential
path, so an interrupted run resumes either way.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fourds.demo.config import DemoRecipe
from fourds.demo.pipeline import (
    Entry,
    Pools,
    backbone_features,
    distinct_clips,
    drop_optimiser_state,
    entries,
    pretrain_config,
    probe_dir,
    render_scenes,
    run_probes,
    say,
    task_layers,
    build_task,
)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def _worker(out: Path, job: str) -> Any:
    """One torch thread, library logging at WARNING, and stdout/stderr into ``<out>/state/logs/<job>.log``."""
    import torch

    torch.set_num_threads(1)
    for name in ("fourds.train", "fourds.models", "fourds.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    path = out / "state" / "logs" / f"{job.replace('/', '_')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def _pools(recipe: DemoRecipe, out: Path) -> Pools:
    """The rendered scenes, read back from ``<out>/scenes`` (the main process rendered them)."""
    return render_scenes(dataclasses.replace(recipe, render_workers=0), out)


def pretrain_job(recipe: DemoRecipe, out: Path, label: str) -> str:
    """Pretrain the recipe's model ``label`` (resuming its checkpoints), in a worker process."""
    from fourds.data.pretrain import InMemoryVideos
    from fourds.train.pretrain import pretrain

    with _worker(out, f"pretrain-{label}"):
        model = recipe.model(label)
        folder = out / "pretrain" / label / "model"
        if not (folder / "model.safetensors").is_file():
            pools = _pools(recipe, out)
            pretrain(pretrain_config(recipe, model, out), source=InMemoryVideos(pools.train.videos(), seed=0))
            drop_optimiser_state(out / "pretrain" / label)
    return label


def probe_job(recipe: DemoRecipe, out: Path, label: str) -> str:
    """Every task x seed of the probed backbone ``label`` (its features first), in a worker process."""
    with _worker(out, f"probes-{label}"):
        pools = _pools(recipe, out)
        entry = next(e for e in entries(recipe, out) if e.label == label)
        if entry.kind == "blank" or not recipe.feature_memo:
            memo = entry.build()
        else:
            backbone = entry.build()
            tasks = [build_task(recipe, name) for name in recipe.tasks]
            layers = sorted({layer for t in tasks for layer in task_layers(t, backbone.num_layers)})
            memo = backbone_features(entry, recipe, out, distinct_clips(recipe, pools), layers)
        run_probes(recipe, out, pools, entry, memo, _NoBar())  # type: ignore[arg-type]
    return label


def _pretrain_steps_done(out: Path, label: str) -> int:
    log = out / "pretrain" / label / "metrics.jsonl"
    if (out / "pretrain" / label / "model" / "model.safetensors").is_file():
        return -1
    if not log.is_file():
        return 0
    last = 0
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            last = max(last, int(json.loads(line)["step"]))
    return last


def _run(jobs: list[tuple[Any, str]], recipe: DemoRecipe, out: Path, workers: int, bar: tqdm,
         progress: Any) -> None:
    """Run ``(function, label)`` jobs on ``workers`` spawned processes; ``progress()`` → units done."""
    ctx = multiprocessing.get_context("spawn")
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers inherit it (set before they start)
    try:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(fn, recipe, out, label): label for fn, label in jobs}
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=2.0, return_when=cf.FIRST_COMPLETED)
                bar.n = progress()
                bar.refresh()
                for future in done:
                    label = futures[future]
                    try:
                        future.result()
                    except BaseException as exc:
                        tail = _log_tail(out, label)
                        raise RuntimeError(f"demo worker for {label!r} failed: {exc}\n{tail}") from exc
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads


def _log_tail(out: Path, label: str) -> str:
    logs = sorted((out / "state" / "logs").glob(f"*{label}*.log"))
    return "".join(f"--- {p} (last lines) ---\n{p.read_text()[-3000:]}" for p in logs)


def pretrain_parallel(recipe: DemoRecipe, out: Path, workers: int) -> None:
    """Every model's pretraining, side by side on ``workers`` processes."""
    todo = [m for m in recipe.models if _pretrain_steps_done(out, m.label) != -1]
    if not todo:
        return
    total = sum(m.steps for m in todo)
    say(f"[pretrain] {', '.join(f'{m.label} ({m.preset}): {m.steps} steps x batch {m.batch_size}' for m in todo)}"
        f" — {min(workers, len(todo))} worker processes")

    def progress() -> int:
        return sum(m.steps if _pretrain_steps_done(out, m.label) == -1 else _pretrain_steps_done(out, m.label)
                   for m in todo)

    with tqdm(total=total, desc="pretrain (all models)", unit="step") as bar:
        _run([(pretrain_job, m.label) for m in todo], recipe, out, min(workers, len(todo)), bar, progress)
        bar.n = total
        bar.refresh()


def probes_parallel(recipe: DemoRecipe, out: Path, rows: list[Entry], workers: int) -> None:
    """Every probed backbone's features and probe runs, one job per backbone, on ``workers`` processes
    (the costliest first: the blank row has no feature pass)."""
    runs = [(e.label, t, s) for e in rows for t in recipe.tasks for s in recipe.seeds]

    def progress() -> int:
        return sum((probe_dir(out, label, t, s) / "results.json").is_file() for label, t, s in runs)

    todo = [e for e in rows if any(not (probe_dir(out, e.label, t, s) / "results.json").is_file()
                                   for t in recipe.tasks for s in recipe.seeds)]
    todo.sort(key=lambda e: e.kind == "blank")
    t0 = time.perf_counter()
    with tqdm(total=len(runs), desc=f"probe runs ({workers} worker processes)", unit="run") as bar:
        bar.n = progress()
        _run([(probe_job, e.label) for e in todo], recipe, out, workers, bar, progress)
        bar.n = progress()
        bar.refresh()
    say(f"[probes] {len(runs)} runs of {len(rows)} backbones in {time.perf_counter() - t0:.0f} s")
