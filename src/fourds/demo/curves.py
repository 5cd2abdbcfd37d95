"""Learning curves of the demo's comparison: the metric against pretraining clips and against readout
examples, on the synthetic ``val`` split, with the task's floors (trivial answer, blank readout).

What the demo's verdicts need when a task does not count: how far the pretrained row is from its
random initialisation and from the floor as pretraining and readout training grow, and what budget a
trend says a missing task would need. One model of the recipe is pretrained once with checkpoints at the
asked steps (step 0 is the run's own step-0 weights, the random-init row); each checkpoint's encoder
encodes the pool once (:class:`fourds.demo.FeatureMemo`) and is probed, per task and readout length, with
the recipe's readouts and seeds (``fourds.probe.run_probe``, frozen). Runs are kept and skipped
when rerun, like the demo's. ``benchmarks/bench_demo_curves.py`` is the command.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fourds.demo.config import DemoRecipe
from fourds.demo.features import FeatureMemo
from fourds.demo.pipeline import (
    BLANK,
    Entry,
    Pools,
    build_task,
    distinct_clips,
    pretrain_config,
    probe_config,
    quiet_stderr,
    render_scenes,
    say,
    step_zero_encoder,
    step_zero_mae,
    task_layers,
)
from fourds.models.io import write_json_atomic


@dataclass
class CurvePlan:
    """What to measure.

    Attributes:
        model: label of the recipe's model to pretrain and probe (None: the largest).
        pretrain_points: pretraining steps whose encoder is probed (0: the step-0 weights); each one a
            multiple of their greatest common divisor, which becomes the checkpoint interval.
        readout_steps: readout training lengths (the warm-up scales with them, as in the recipe).
        tasks: the synthetic tasks (None: the recipe's).
    """

    model: str | None = None
    pretrain_points: tuple[int, ...] = (0, 50, 100, 150)
    readout_steps: tuple[int, ...] = (100, 300)
    tasks: tuple[str, ...] | None = None


def _checkpoint_interval(points: list[int]) -> int:
    positive = [p for p in points if p > 0]
    return math.gcd(*positive) if positive else 1


def _summary(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    return {"values": values, "mean": statistics.fmean(finite) if finite else math.nan,
            "std": statistics.stdev(finite) if len(finite) > 1 else 0.0}


def _probe(recipe: DemoRecipe, out: Path, label: str, backbone: Any, pools: Pools, task_name: str,
           steps: int) -> dict[str, Any]:
    from fourds.probe.protocol import run_probe

    sized = dataclasses.replace(recipe, probe_steps=steps, probe_warmup=max(1, round(recipe.probe_warmup * steps / recipe.probe_steps)),
                                task_probe_steps={}, visualize=0)
    values = []
    for seed in recipe.seeds:
        entry = Entry(label, "curve", recipe.models[-1], None)
        cfg = probe_config(sized, entry, task_name, seed, out / "curves")
        done = Path(cfg.out) / "results.json"
        if done.is_file():  # finished in an earlier invocation
            res = json.loads(done.read_text())
        else:
            with quiet_stderr():
                res = run_probe(cfg, backbone=backbone, task=build_task(sized, task_name),
                                datasets={"train": pools.train, "eval": pools.test})
        values.append(float((res.get("test") or {}).get(res["primary_metric"], math.nan)))
    return _summary(values)


def learning_curves(recipe: DemoRecipe, out: str | Path, plan: CurvePlan | None = None) -> dict[str, Any]:
    """Measure the curves of ``plan`` for ``recipe`` into ``out`` (``curves.json`` and ``curves.png``
    there); returns the curves dict. The recipe is scored on its ``eval_split`` (``val`` for tuning)."""
    from fourds.demo.trivial import trivial_metrics
    from fourds.train.pretrain import pretrain
    from fourds.data.pretrain import InMemoryVideos

    plan = plan or CurvePlan()
    recipe.validate()
    out = Path(out)
    tasks = list(plan.tasks or recipe.tasks)
    model = recipe.model(plan.model) if plan.model else recipe.models[-1]
    points = sorted(set(int(p) for p in plan.pretrain_points))
    if points[-1] > model.steps:
        raise ValueError(f"pretrain point {points[-1]} is beyond the model's {model.steps} pretraining steps")
    pools = render_scenes(recipe, out)
    cfg = dataclasses.replace(pretrain_config(recipe, model, out), save_every=_checkpoint_interval(points),
                              keep_checkpoints=len(points) + 2)
    run = out / "pretrain" / model.label
    if not (run / "model" / "model.safetensors").is_file():
        say(f"[curves] pretraining {model.label}: {model.steps} steps, checkpoints every {cfg.save_every}")
        pretrain(cfg, source=InMemoryVideos(pools.train.videos(), seed=0))
    clips = distinct_clips(recipe, pools)
    built = {name: build_task(recipe, name) for name in tasks}

    curves: dict[str, Any] = {"model": model.label, "preset": model.preset, "batch_size": model.batch_size,
                              "probe_batch": recipe.probe_batch, "eval_split": recipe.eval_split,
                              "points": points, "readout_steps": list(plan.readout_steps), "seeds": list(recipe.seeds),
                              "tasks": {}}
    from fourds.probe.metrics import primary_spec

    for name in tasks:
        task = built[name]
        curves["tasks"][name] = {
            "metric": task.primary_metric, "direction": primary_spec(task)[0].direction,
            "trivial": trivial_metrics(task, pools.train, pools.test).get(task.primary_metric, math.nan),
            "blank": {str(steps): _probe(recipe, out, f"{BLANK}/r{steps}", _blank_like(step_zero_encoder(cfg)), pools,
                                         name, steps) for steps in plan.readout_steps},
            "pretrained": {str(steps): {} for steps in plan.readout_steps},
        }
    from fourds.demo.report import mae_test_loss, mean_colour_loss, test_videos
    from fourds.models import load_simple_mae

    video = test_videos(pools)
    curves["mean_colour_loss"] = mean_colour_loss(video)
    curves["mae_ratio"] = {}
    for p in points:
        mae = step_zero_mae(cfg) if p == 0 else load_simple_mae(run / "checkpoints" / f"step_{p:08d}")
        curves["mae_ratio"][str(p)] = mae_test_loss(mae, video) / curves["mean_colour_loss"]
        encoder = mae.encoder.eval()
        memo = FeatureMemo(encoder)
        layers = sorted({layer for t in built.values() for layer in task_layers(t, encoder.num_layers)})
        memo.precompute(clips, layers, recipe.feature_batch)
        for name in tasks:
            for steps in plan.readout_steps:
                cell = _probe(recipe, out, f"{model.label}@{p}/r{steps}", memo, pools, name, steps)
                curves["tasks"][name]["pretrained"][str(steps)][str(p)] = cell
                say(f"[curves] {name:<15} pretrain step {p:>5} ({p * model.batch_size:>6} clips), readout {steps:>4} "
                    f"steps: {cell['mean']:.4g} ± {cell['std']:.2g}")
        del memo
    for name in tasks:
        curves["tasks"][name]["trend"] = trend(curves["tasks"][name], points, model.batch_size)
    write_json_atomic(out / "curves.json", curves)
    plot_curves(curves, out / "curves.png")
    return curves


def _blank_like(encoder: torch.nn.Module) -> torch.nn.Module:
    from fourds.demo.blank import BlankBackbone

    return BlankBackbone(encoder)


def trend(entry: dict[str, Any], points: list[int], batch: int) -> dict[str, Any]:
    """A straight line of the metric against log10(pretraining clips) over the pretrained points (> 0)
    at the longest readout, and the clips at which it would beat the better floor by the seeds' mean
    std (None: no trend towards it). An extrapolation, reported as such."""
    longest = max(entry["pretrained"], key=int)
    cells = entry["pretrained"][longest]
    xs = [math.log10(p * batch) for p in points if p > 0]
    ys = [cells[str(p)]["mean"] for p in points if p > 0]
    higher = entry["direction"] == "higher"
    floors = [entry["trivial"], entry["blank"][longest]["mean"]]
    floor = max(floors) if higher else min(floors)
    margin = statistics.fmean([cells[str(p)]["std"] for p in points if p > 0] or [0.0])
    last = cells[str(points[-1])]["mean"]
    target = floor + margin if higher else floor - margin
    out: dict[str, Any] = {"readout_steps": int(longest), "floor": floor, "margin": margin,
                           "beats_floor_at_last_point": bool(last > target if higher else last < target)}
    if len(xs) < 2 or not all(math.isfinite(y) for y in ys):
        return {**out, "slope_per_decade": None, "clips_needed": None}
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    towards = slope > 0 if higher else slope < 0
    needed = None
    if towards and slope != 0:
        x_needed = mx + (target - my) / slope
        needed = 10 ** x_needed if x_needed < 15 else math.inf
    return {**out, "slope_per_decade": slope, "clips_needed": needed}


def _ticks(ax: Any, values: list[int], notes: list[str] | None = None) -> None:
    """Ticks exactly at the measured x values, written out (1,600 rather than 10^3.2), with a second line
    per tick where ``notes`` gives one."""
    ax.set_xticks(values)
    ax.set_xticklabels([f"{v:,}" + (f"\n{n}" if notes else "") for v, n in zip(values, notes or values)],
                       fontsize=7, rotation=35)
    ax.minorticks_off()


def plot_curves(curves: dict[str, Any], path: Path) -> Path:
    """Two rows of panels, one column per task: the metric against pretraining clips (a line per readout
    length; the trivial answer dashed, the blank readout dotted) and against readout examples (a line
    per pretraining point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fourds.demo.plots import save_figure

    tasks = list(curves["tasks"])
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.2 * len(tasks), 6.0), squeeze=False)
    batch, probe_batch = curves["batch_size"], curves["probe_batch"]
    for col, name in enumerate(tasks):
        entry = curves["tasks"][name]
        top, bottom = axes[0][col], axes[1][col]
        for steps, cells in entry["pretrained"].items():
            xs = [int(p) * batch for p in cells]
            top.errorbar(xs, [c["mean"] for c in cells.values()], yerr=[c["std"] for c in cells.values()],
                         marker="o", capsize=3, label=f"readout {steps} steps")
            blank = entry["blank"][steps]
            top.axhline(blank["mean"], ls=":", lw=1.2, color=top.lines[-1].get_color())
        top.axhline(entry["trivial"], ls="--", lw=1, color="black")
        top.set_xscale("symlog", linthresh=max(batch * min((p for p in curves["points"] if p > 0), default=1), 1))
        ratios = curves.get("mae_ratio", {})
        _ticks(top, [p * batch for p in curves["points"]],
               [f"r {ratios[str(p)]:.2f}" for p in curves["points"]] if ratios else None)
        top.set_xlabel("pretraining clips (0: step-0 weights)\nr: SimpleMAE loss / mean-colour loss", fontsize=7)
        top.set_title(f"{name}\n{entry['metric'].split('/', 1)[-1]} {'↑' if entry['direction'] == 'higher' else '↓'}",
                      fontsize=9)
        for p in curves["points"]:
            pts = [(int(s) * probe_batch, entry["pretrained"][s][str(p)]) for s in entry["pretrained"]]
            bottom.errorbar([x for x, _ in pts], [c["mean"] for _, c in pts], yerr=[c["std"] for _, c in pts], marker="s",
                            capsize=3, label=f"pretrain step {p}")
        bottom.plot([int(s) * probe_batch for s in entry["blank"]], [c["mean"] for c in entry["blank"].values()], ls=":",
                    color="tab:brown", marker="x", label="blank readout")
        bottom.axhline(entry["trivial"], ls="--", lw=1, color="black", label="trivial answer")
        bottom.set_xscale("log")
        _ticks(bottom, [int(s) * probe_batch for s in entry["blank"]])
        bottom.set_xlabel("readout training examples", fontsize=8)
        for ax in (top, bottom):
            ax.margins(x=0.12)  # the last tick label stays inside the panel
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    return save_figure(fig, path, f"Learning curves of {curves['model']} ({curves['eval_split']} split)\nmean ± std "
                       f"over seeds {curves['seeds']}; trivial answer dashed, blank readout dotted")
