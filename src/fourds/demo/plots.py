"""The demo's plots: pretraining loss curves, per-task bars (mean ± std over seeds), metric vs model size."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fourds.demo.config import DemoRecipe
from fourds.demo.results import Cell

KIND_COLOURS = {"pretrained": "tab:blue", "random": "tab:grey", "perframe": "tab:orange", "distilled": "tab:green",
                "no features": "white"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, title: str | None = None, dpi: int = 110, fontsize: int = 10) -> Path:
    """Title, tight layout, write ``path`` (its folder created), close; returns ``path``."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def read_curve(path: Path, key: str = "loss") -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in a run's ``metrics.jsonl`` (later records of a step win)."""
    points: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if key in rec:
                points[int(rec["step"])] = float(rec[key])
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def plot_losses(out: Path, recipe: DemoRecipe, folder: Path) -> list[Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = False
    for model in recipe.models:
        steps, loss = read_curve(out / "pretrain" / model.label / "metrics.jsonl")
        if steps:
            ax.plot(steps, loss, label=f"{model.label} ({model.preset}) SimpleMAE", lw=1.5)
            drawn = True
    steps, loss = read_curve(out / "distill" / "metrics.jsonl")
    if steps:
        ax.plot(steps, loss, label=f"{recipe.models[0].label}-distilled (L1 to teacher)", lw=1.5, ls="--")
        drawn = True
    if not drawn:
        plt.close(fig)
        return []
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.set_title("Pretraining loss (pixel MSE on masked clips)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return [save_figure(fig, folder / "pretraining_loss.png")]


def _grid(plt: Any, n: int, w: float = 3.6, h: float = 3.2) -> tuple[Any, list[Any]]:
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _title(cell: Cell, task: str) -> str:
    return f"{task}\n{cell.metric.split('/', 1)[-1]}{' (%)' if cell.percent else ''} {'↑' if cell.direction == 'higher' else '↓'}"


def plot_bars(folder: Path, recipe: DemoRecipe, table: dict[str, dict[str, Cell]], kinds: dict[str, str]) -> list[Path]:
    plt = _plt()
    tasks = [t for t in recipe.tasks if any(t in row for row in table.values())]
    if not tasks:
        return []
    fig, axes = _grid(plt, len(tasks))
    labels = list(table)
    for ax, task in zip(axes, tasks):
        cells = [(label, table[label][task]) for label in labels if task in table[label]]
        xs = range(len(cells))
        means = [c.scale(c.mean) for _, c in cells]
        stds = [c.scale(c.std) for _, c in cells]
        ax.bar(xs, means, yerr=stds, capsize=3, color=[KIND_COLOURS.get(kinds[label], "tab:purple") for label, _ in cells],
               edgecolor="black", linewidth=0.5, hatch=["//" if kinds[label] == "no features" else "" for label, _ in cells])
        ax.set_xticks(list(xs), [label for label, _ in cells], rotation=40, ha="right", fontsize=7)
        ax.set_title(_title(cells[0][1], task), fontsize=9)
        finite = [m for m in means if math.isfinite(m)]
        if finite and cells[0][1].direction == "lower":
            ax.set_ylim(0, max(finite) * 1.25)
        ax.grid(alpha=0.3, axis="y")
    return [save_figure(fig, folder / "tasks_bars.png", "Frozen readouts: mean ± std over seeds")]


def plot_size(folder: Path, recipe: DemoRecipe, table: dict[str, dict[str, Cell]], params: dict[str, int],
              kinds: dict[str, str]) -> list[Path]:
    plt = _plt()
    tasks = [t for t in recipe.tasks if any(t in row for row in table.values())]
    if not tasks:
        return []
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        cell0 = None
        for kind in ("pretrained", "random", "perframe", "distilled"):
            pts = sorted((params.get(label, 0), table[label][task]) for label in table
                         if kinds[label] == kind and task in table[label] and params.get(label))
            if not pts:
                continue
            cell0 = cell0 or pts[0][1]
            ax.errorbar([p for p, _ in pts], [c.scale(c.mean) for _, c in pts], yerr=[c.scale(c.std) for _, c in pts],
                        fmt="o-" if len(pts) > 1 else "o", capsize=3, label=kind, color=KIND_COLOURS[kind])
        ax.set_xscale("log")
        ax.set_xlabel("backbone parameters")
        if cell0 is not None:
            ax.set_title(_title(cell0, task), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return [save_figure(fig, folder / "metric_vs_size.png", "Metric vs model size (Fig. 7 in miniature)")]


def draw_plots(out: Path, recipe: DemoRecipe, table: dict[str, dict[str, Cell]], params: dict[str, int],
               kinds: dict[str, str], base: dict[str, str]) -> list[Path]:
    """Write ``<out>/plots/*.png``; returns the paths."""
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    return (plot_losses(out, recipe, folder) + plot_bars(folder, recipe, table, kinds)
            + plot_size(folder, recipe, table, params, kinds))
