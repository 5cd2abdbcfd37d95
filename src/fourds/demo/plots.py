"""The demo's plots: pretraining loss curves, per-task bars (mean ± std over seeds), metric vs model size."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fourds.demo.config import DemoRecipe
from fourds.demo.results import Cell

KIND_COLOURS = {"pretrained": "tab:blue", "random": "tab:grey", "perframe": "tab:orange", "distilled": "tab:green",
                "no features": "white", "blank": "tab:brown"}
#: Markers and x offsets (a factor on the parameter count) of the size plot: a per-frame row has its
#: pretrained model's size, so it is drawn a little to the right instead of on top of it.
KIND_MARKERS = {"pretrained": ("o", 1.0), "random": ("s", 1.0), "perframe": ("^", 1.04), "distilled": ("D", 0.96)}
#: Legend text of each kind of row.
KIND_LABELS = {"pretrained": "pretrained (SimpleMAE)", "random": "random init", "perframe": "per-frame",
               "distilled": "distilled", "no features": "no features (trivial answer)",
               "blank": "blank readout (constant features)"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, title: str | None = None, dpi: int = 110, fontsize: int = 10,
                legend: list[Any] | None = None) -> Path:
    """Title above, ``legend`` handles below the panels, tight layout, write ``path`` (its folder
    created), close; returns ``path``. Room for the title and the legend is kept out of the panels'
    area (``tight_layout`` alone ignores both, and the title would overlap the top panels' titles)."""
    import matplotlib.pyplot as plt

    height = fig.get_size_inches()[1]
    line = fontsize / 72 * 1.6  # one line of text, inches
    top = 1 - line * (title.count("\n") + 1) / height if title else 1.0
    bottom = (line + 0.05) / height if legend else 0.0
    if title:
        fig.suptitle(title, fontsize=fontsize, y=1 - 0.05 / height, va="top")
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), 6), fontsize=fontsize - 2,
                   frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, top))
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


def kind_legend(kinds: list[str]) -> list[Any]:
    """Legend patches for the kinds of rows present, in :data:`KIND_COLOURS` order (hatched: no features)."""
    from matplotlib.patches import Patch

    return [Patch(facecolor=KIND_COLOURS.get(k, "tab:purple"), edgecolor="black", linewidth=0.5,
                  hatch="//" if k in ("no features", "blank") else "", label=KIND_LABELS.get(k, k))
            for k in KIND_COLOURS if k in kinds]


def honest_ylim(ax: Any, values: list[float]) -> None:
    """From 0 (every demo metric is >= 0) to a little above the largest value, so that the axis shows
    how large a gap is next to the values themselves (a zoomed axis makes a 0.1 % gap look like a trend)."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) >= 0:
        top = max(finite)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)


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
               edgecolor="black", linewidth=0.5, hatch=["//" if kinds[label] in ("no features", "blank") else "" for label, _ in cells])
        ax.set_xticks(list(xs), [label for label, _ in cells], rotation=40, ha="right", fontsize=7)
        ax.set_title(_title(cells[0][1], task), fontsize=9)
        honest_ylim(ax, [m + sd for m, sd in zip(means, stds)])
        ax.grid(alpha=0.3, axis="y")
    present = sorted({kinds[label] for label in labels})
    return [save_figure(fig, folder / "tasks_bars.png", "Frozen readouts: mean ± std over seeds",
                        legend=kind_legend(present))]


def plot_size(folder: Path, recipe: DemoRecipe, table: dict[str, dict[str, Cell]], params: dict[str, int],
              kinds: dict[str, str]) -> list[Path]:
    plt = _plt()
    tasks = [t for t in recipe.tasks if any(t in row for row in table.values())]
    if not tasks:
        return []
    fig, axes = _grid(plt, len(tasks))
    from matplotlib.lines import Line2D

    drawn: set[str] = set()
    for ax, task in zip(axes, tasks):
        cell0 = None
        values: list[float] = []
        for kind in ("pretrained", "random", "perframe", "distilled"):
            pts = sorted((params.get(label, 0), table[label][task]) for label in table
                         if kinds[label] == kind and task in table[label] and params.get(label))
            if not pts:
                continue
            cell0 = cell0 or pts[0][1]
            means, stds = [c.scale(c.mean) for _, c in pts], [c.scale(c.std) for _, c in pts]
            values += [m + sd for m, sd in zip(means, stds)]
            marker, shift = KIND_MARKERS[kind]
            ax.errorbar([p * shift for p, _ in pts], means, yerr=stds, fmt=marker + ("-" if len(pts) > 1 else ""),
                        capsize=3, label=KIND_LABELS[kind], color=KIND_COLOURS[kind], ms=5)
            drawn.add(kind)
        trivial = [table[label][task] for label in table if kinds[label] == "no features" and task in table[label]]
        if trivial and math.isfinite(trivial[0].mean):
            value = trivial[0].scale(trivial[0].mean)
            ax.axhline(value, color="black", ls="--", lw=1)
            values.append(value)
            drawn.add("no features")
        blank = [table[label][task] for label in table if kinds[label] == "blank" and task in table[label]]
        if blank and math.isfinite(blank[0].mean):
            value = blank[0].scale(blank[0].mean)
            ax.axhline(value, color=KIND_COLOURS["blank"], ls=":", lw=1.2)
            values.append(value)
            drawn.add("blank")
        ax.set_xscale("log")
        ax.set_xlabel("backbone parameters")
        if cell0 is not None:
            ax.set_title(_title(cell0, task), fontsize=9)
            ax.set_ylabel(f"test {cell0.metric.split('/', 1)[-1]}{' (%)' if cell0.percent else ''}", fontsize=8)
        honest_ylim(ax, values)
        ax.grid(alpha=0.3, which="both")
    legend = [Line2D([], [], color=KIND_COLOURS[k], marker=KIND_MARKERS[k][0], label=KIND_LABELS[k])
              for k in ("pretrained", "random", "perframe", "distilled") if k in drawn]
    if "no features" in drawn:
        legend.append(Line2D([], [], color="black", ls="--", lw=1, label=KIND_LABELS["no features"]))
    if "blank" in drawn:
        legend.append(Line2D([], [], color=KIND_COLOURS["blank"], ls=":", lw=1.2, label=KIND_LABELS["blank"]))
    return [save_figure(fig, folder / "metric_vs_size.png", "Metric vs model size (Fig. 7 in miniature): mean ± std "
                        "over seeds", legend=legend)]


def draw_plots(out: Path, recipe: DemoRecipe, table: dict[str, dict[str, Cell]], params: dict[str, int],
               kinds: dict[str, str], base: dict[str, str]) -> list[Path]:
    """Write ``<out>/plots/*.png``; returns the paths."""
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    return (plot_losses(out, recipe, folder) + plot_bars(folder, recipe, table, kinds)
            + plot_size(folder, recipe, table, params, kinds))
