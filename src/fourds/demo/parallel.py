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
from collections.abc import Callable
from dataclasses import dataclass
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


def distill_job(recipe: DemoRecipe, out: Path, label: str) -> str:
    """The distillation run (the largest pretrained model into the smallest architecture), in a worker."""
    from fourds.demo.pipeline import distill_model

    with _worker(out, "distill"):
        distill_model(recipe, out, _pools(recipe, out))
    return label


@dataclass
class Job:
    """One unit of work: ``fn(recipe, out, label)`` in a worker, after the jobs named in ``after``."""

    name: str
    fn: Callable[[DemoRecipe, Path, str], str]
    label: str
    after: tuple[str, ...] = ()


def demo_jobs(recipe: DemoRecipe, out: Path, rows: list[Entry]) -> list[Job]:
    """The demo's work as a graph, in priority order (longest first where it can start): every model's
    pretraining; the distillation after its teacher; each probed backbone after what its weights come
    from — nothing for the random-init and blank rows (step-0 weights), the model's pretraining for the
    pretrained and per-frame rows, the distillation for the distilled row."""
    jobs = [Job(f"pretrain:{m.label}", pretrain_job, m.label) for m in reversed(recipe.models)]
    if recipe.distill:
        jobs.append(Job("distill", distill_job, "distill", (f"pretrain:{recipe.models[-1].label}",)))
    after = {"random": (), "blank": (), "distilled": ("distill",)}
    for entry in sorted(rows, key=lambda e: e.kind == "blank"):
        jobs.append(Job(f"probes:{entry.label}", probe_job, entry.label,
                        after.get(entry.kind, (f"pretrain:{entry.model.label}",))))
    return jobs


def run_jobs(jobs: list[Job], recipe: DemoRecipe, out: Path, workers: int, on_tick: Callable[[], None]) -> None:
    """Run ``jobs`` on ``workers`` spawned processes, each as soon as the jobs it comes after are done and
    a worker is free (in list order); ``on_tick()`` every 2 s (progress). A failed job stops the run with
    its worker's log tail."""
    ctx = multiprocessing.get_context("spawn")
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers inherit it (set before they start)
    done: set[str] = set()
    waiting = list(jobs)
    running: dict[cf.Future, Job] = {}
    try:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            while waiting or running:
                for job in [j for j in waiting if set(j.after) <= done][: max(0, workers - len(running))]:
                    waiting.remove(job)
                    running[pool.submit(job.fn, recipe, out, job.label)] = job
                if not running:
                    missing = sorted({a for j in waiting for a in j.after} - done - {j.name for j in waiting})
                    raise RuntimeError(f"demo jobs wait for jobs that do not exist: {missing}")
                finished, _ = cf.wait(list(running), timeout=2.0, return_when=cf.FIRST_COMPLETED)
                on_tick()
                for future in finished:
                    job = running.pop(future)
                    try:
                        future.result()
                    except BaseException as exc:
                        raise RuntimeError(f"demo worker for {job.name!r} failed: {exc}\n{_log_tail(out, job.label)}") from exc
                    done.add(job.name)
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads


def _log_tail(out: Path, label: str) -> str:
    logs = sorted((out / "state" / "logs").glob(f"*{label}*.log"))
    return "".join(f"--- {p} (last lines) ---\n{p.read_text()[-3000:]}" for p in logs)


def run_parallel(recipe: DemoRecipe, out: Path, rows: list[Entry], workers: int) -> None:
    """Pretraining, distillation and every probed backbone's features and probe runs, on ``workers``
    processes as the job graph allows (:func:`demo_jobs`); two progress bars (pretraining steps, probe runs)."""
    models = [m for m in recipe.models if _pretrain_steps_done(out, m.label) != -1]
    runs = [(e.label, t, s) for e in rows for t in recipe.tasks for s in recipe.seeds]

    def steps_done() -> int:
        return sum(m.steps if _pretrain_steps_done(out, m.label) == -1 else _pretrain_steps_done(out, m.label)
                   for m in models)

    def runs_done() -> int:
        return sum((probe_dir(out, label, t, s) / "results.json").is_file() for label, t, s in runs)

    say(f"[parallel] {workers} worker processes, one torch thread each; logs in {out / 'state' / 'logs'}")
    t0 = time.perf_counter()
    with tqdm(total=sum(m.steps for m in models), desc="pretrain (all models)", unit="step", position=0) as pbar, \
            tqdm(total=len(runs), desc="probe runs", unit="run", position=1) as rbar:
        def tick() -> None:
            for bar, value in ((pbar, steps_done()), (rbar, runs_done())):
                bar.n = value
                bar.refresh()

        tick()
        run_jobs(demo_jobs(recipe, out, rows), recipe, out, workers, tick)
        tick()
    say(f"[parallel] {len(recipe.models)} pretraining runs and {len(runs)} probe runs in {time.perf_counter() - t0:.0f} s")
