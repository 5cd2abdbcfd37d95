"""Gather probe ``results.json`` files into the paper's presentations.

- ``results.md`` / ``results.csv``: Table 2 (frozen) and Table 3 (finetuned) shape: backbones as rows
  (by parameter count), tasks as columns, each headed by its primary metric and direction arrow
  (↑ higher is better, ↓ lower); fractions (accuracy, Jaccard, IoU) shown as percentages as in the paper.
- ``layer_depth.png/.svg`` (Fig. 6): for runs that swept several layers, the metric against fractional
  depth per task, one line per backbone (per layer: the learning rate best on validation, its test value).
- ``size_scaling.png/.svg`` (Fig. 7): the chosen test metric against backbone parameter count per task,
  frozen and finetuned.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fourds.fileio import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

_PERCENT_UNITS = ("fraction", "iou")


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """``results.json`` files: each path is such a file, a run folder, or a folder searched recursively."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "results.json":
            found.append(p)
        elif (p / "results.json").is_file():
            found.append(p / "results.json")
        elif p.is_dir():
            found.extend(sorted(p.rglob("results.json")))
        else:
            raise FileNotFoundError(f"{p}: no results.json there (give probe run folders, from `fourds probe --out`)")
    if not found:
        raise FileNotFoundError(f"no results.json under {', '.join(map(str, paths))}")
    return list(dict.fromkeys(found))


def load_runs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    runs = []
    from fourds.textfiles import read_json

    for path in find_results(paths):
        run = read_json(path, "a probe run's results.json, written by fourds probe")
        if not isinstance(run, dict) or not isinstance(run.get("configs", []), list):
            raise ValueError(f"{path} is not a fourds probe results.json (expected a JSON object with 'configs'); "
                             f"run the probe again or leave that folder out")
        run["_path"] = str(path.parent)
        runs.append(run)
    return runs


def _is_path(name: str) -> bool:
    return ("/" in name or "\\" in name) and not name.startswith("hf:")


#: The folder name every pretraining and distillation run writes its model to (``<run>/model``): it names
#: nothing, so labels use the run folder above it.
MODEL_FOLDER = "model"


def _parts(name: str) -> tuple[str, ...]:
    """A folder spec's path parts without a trailing ``model`` (``runs/tiny/model`` → ``runs``, ``tiny``)."""
    parts = Path(os.path.normpath(name)).parts
    return parts[:-1] if len(parts) > 1 and parts[-1] == MODEL_FOLDER else parts


def model_name(spec: str) -> str | None:
    """The architecture name in a model folder's ``config.json`` (``"4ds-tiny"``), when the folder is
    still where the probe read it; None otherwise (or for registered names and adapter specs)."""
    try:
        from fourds.textfiles import read_json

        name = read_json(Path(spec) / "config.json", "a model folder's config.json").get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return str(name) if name else None


def _with_arch(label: str, spec: str) -> str:
    arch = model_name(spec) if _is_path(spec) else None
    return label if arch is None or arch == label else f"{label} ({arch})"


def backbone_label(run: dict[str, Any]) -> str:
    """The short name of a run's backbone on its own: a folder's run name (``runs/tiny/model`` → ``tiny``,
    plus the architecture from its ``config.json`` when readable: ``tiny (4ds-tiny)``), else the spec as
    given. Tables and plots use :func:`backbone_labels`, which keeps different backbones apart."""
    name = str(run.get("backbone", "?"))
    return _with_arch(_parts(name)[-1], name) if _is_path(name) else name


def _identity(run: dict[str, Any]) -> tuple[str, int]:
    """What makes two runs' backbones the same: the spec (folders normalised) and the parameter count."""
    name = str(run.get("backbone", "?"))
    return (os.path.normpath(name) if _is_path(name) else name), int(run.get("backbone_params", 0) or 0)


def backbone_labels(runs: Sequence[dict[str, Any]]) -> list[str]:
    """A label per run, the same for runs of one backbone and different for different backbones.

    A model folder is named after its run (the ``model`` folder every pretraining run writes is dropped:
    ``runs/small/model`` → ``small``), by the shortest path suffix that no other backbone shares
    (``/data/a/x`` and ``/data/b/x`` → ``a/x`` and ``b/x``), followed by the architecture name from the
    folder's ``config.json`` when it is readable (``small (4ds-s)``); backbones that still collide (a
    registered name with different overrides, one folder evaluated at two sizes) get their parameter
    count appended, ``4ds-tiny (0.4M)``.
    """
    ids = list(dict.fromkeys(_identity(r) for r in runs))
    depth = {i: 1 for i in ids}

    def label(i: tuple[str, int]) -> str:
        name = i[0]
        return "/".join(_parts(name)[-depth[i]:]) if _is_path(name) else name

    while True:
        groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for i in ids:
            groups[label(i)].append(i)
        grow = [i for members in groups.values() if len({m[0] for m in members}) > 1 for i in members
                if _is_path(i[0]) and depth[i] < len(_parts(i[0]))]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    final = {i: _with_arch(label(i), i[0]) for i in ids}
    counts: dict[str, int] = defaultdict(int)
    for i in ids:
        counts[final[i]] += 1
    for i in ids:
        if counts[final[i]] > 1:
            final[i] = f"{final[i]} ({i[1] / 1e6:.3g}M)"
    return [final[_identity(r)] for r in runs]


def _metric(run: dict[str, Any]) -> str:
    """The primary metric's name without the task prefix it is stored with (``synth_depth/abs_rel`` → ``abs_rel``)."""
    key = str(run["primary_metric"])
    return key[len(run["task"]) + 1:] if key.startswith(f"{run['task']}/") else key


def _percent(run: dict[str, Any]) -> bool:
    units = str(run.get("primary_units", "")).lower()
    return any(u in units for u in _PERCENT_UNITS)


def _display(run: dict[str, Any], value: float) -> float:
    return 100.0 * value if _percent(run) else value


def _arrow(run: dict[str, Any]) -> str:
    return "↑" if run.get("direction") == "higher" else "↓"


def _value(run: dict[str, Any]) -> float:
    test = run.get("test") or {}
    return float(test.get(run["primary_metric"], math.nan))


def table_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One CSV row per run (latest run wins for a repeated backbone x task x mode)."""
    rows = []
    for run, label in zip(runs, backbone_labels(runs)):
        rows.append({
            "mode": run["mode"], "backbone": label, "backbone_spec": run.get("backbone"),
            "params_m": run.get("backbone_params", 0) / 1e6,
            "task": run["task"], "metric": run["primary_metric"], "direction": run.get("direction"),
            "value": _value(run), "display_value": _display(run, _value(run)), "chosen": run.get("chosen"),
            "select_on": run.get("select_on"), "steps": run.get("train_steps"), "run": run["_path"],
        })
    return rows


def markdown_tables(runs: Sequence[dict[str, Any]]) -> str:
    """Table-2-shaped markdown, one table per mode."""
    parts = []
    labels = dict(zip(map(id, runs), backbone_labels(runs)))
    for mode, title in (("frozen", "Frozen evaluation"), ("finetune", "Finetuned evaluation")):
        sel = [r for r in runs if r["mode"] == mode]
        if not sel:
            continue
        tasks = list(dict.fromkeys(r["task"] for r in sel))
        heads = {r["task"]: f"{r['task']} {_metric(r)}{' (%)' if _percent(r) else ''} {_arrow(r)}" for r in sel}
        cells: dict[tuple[str, str], str] = {}
        params: dict[str, float] = {}
        for r in sel:
            label = labels[id(r)]
            params[label] = r.get("backbone_params", 0) / 1e6
            v = _display(r, _value(r))
            cells[(label, r["task"])] = "—" if math.isnan(v) else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        lines = [f"### {title}", "", "| Model | Size (M) | " + " | ".join(heads[t] for t in tasks) + " |",
                 "|---|---:|" + "---:|" * len(tasks)]
        for label in sorted(params, key=lambda k: (params[k], k)):
            lines.append(f"| {label} | {params[label]:.3g} | " + " | ".join(cells.get((label, t), "") for t in tasks) + " |")
        selections = sorted({r.get("select_on", "?") for r in sel})
        lines += ["", f"Configuration chosen on: {', '.join(selections)}"
                  + (" (eval = the paper's practice: chosen and reported on the same split)" if "eval" in selections else "")]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def layer_curves(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """task → backbone → [(depth, test value of the best-on-val config at that depth)] for frozen runs
    with more than one layer."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(dict)
    for run, label in zip(runs, backbone_labels(runs)):
        if run["mode"] != "frozen":
            continue
        key = run["primary_metric"]
        by_depth: dict[float, list[dict]] = defaultdict(list)
        for c in run["configs"]:
            if not c.get("diverged"):
                by_depth[float(c["depth"])].append(c)
        if len(by_depth) < 2:
            continue
        higher = run.get("direction") == "higher"
        points = []
        for depth in sorted(by_depth):
            cands = [c for c in by_depth[depth] if math.isfinite(c["val"].get(key, math.nan))]
            if not cands:
                continue
            best = cands[0]
            for c in cands[1:]:
                if (c["val"][key] > best["val"][key]) if higher else (c["val"][key] < best["val"][key]):
                    best = c
            points.append((depth, _display(run, float(best["test"].get(key, math.nan)))))
        curves[run["task"]][label] = points
    return dict(curves)


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return paths


def _grid(n: int) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def plot_layer_depth(runs: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Fig. 6: metric vs fractional readout depth per task (nothing when no run swept layers)."""
    curves = layer_curves(runs)
    if not curves:
        return []
    import matplotlib.pyplot as plt

    meta = {r["task"]: r for r in runs}
    fig, axes = _grid(len(curves))
    for ax, (task, lines) in zip(axes, curves.items()):
        for label, pts in sorted(lines.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label, ms=4)
        r = meta[task]
        ax.set_title(f"{task} ({_metric(r)} {_arrow(r)})")
        ax.set_xlabel("readout layer depth (fraction)")
        ax.set_ylabel(f"test {_metric(r)}{' (%)' if _percent(r) else ''}")
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    paths = _save(fig, out, "layer_depth")
    plt.close(fig)
    return paths


def plot_size_scaling(runs: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Fig. 7: chosen test metric vs parameter count per task, frozen and finetuned."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in runs))
    labels = dict(zip(map(id, runs), backbone_labels(runs)))
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        sel = [r for r in runs if r["task"] == task]
        for mode, style in (("frozen", "o-"), ("finetune", "s--")):
            pts = sorted((r.get("backbone_params", 0), _display(r, _value(r)), labels[id(r)]) for r in sel if r["mode"] == mode)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=mode, ms=5)
            for x, y, label in pts:
                ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(f"{task} ({_metric(sel[0])} {_arrow(sel[0])})")
        ax.set_xlabel("backbone parameters")
        ax.set_ylabel(f"test {_metric(sel[0])}{' (%)' if _percent(sel[0]) else ''}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    paths = _save(fig, out, "size_scaling")
    plt.close(fig)
    return paths


def write_report(run_dirs: Iterable[str | Path], out: str | Path) -> dict[str, Any]:
    """Write ``results.md``, ``results.csv`` and the two figures under ``out``; returns what was written."""
    runs = load_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(runs)
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figures = plot_layer_depth(runs, out) + plot_size_scaling(runs, out)
    md = ["# Probe results", "", markdown_tables(runs)]
    for p in figures:
        if p.suffix == ".png":
            md += [f"![{p.stem}]({p.name})", ""]
    if not any(p.stem == "layer_depth" for p in figures):
        md += ["(no layer-depth plot: no frozen run swept more than one layer; use --layers 0.25,0.5,0.75,0.85,0.95,1.0)", ""]
    write_text_atomic(out / "results.md", "\n".join(md))
    return {"runs": len(runs), "markdown": out / "results.md", "csv": out / "results.csv", "figures": figures}
