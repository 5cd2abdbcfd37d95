"""The demo's results: mean ± std over readout seeds, a Table-2-shaped table, and verdicts from the numbers.

A comparison is called a win only when the difference of the means is larger than the sum of the two
standard deviations over seeds (the ``mean ± std`` intervals do not overlap); otherwise it is a tie
within the seeds' spread. A win *counts* only when, in addition, a paired bootstrap over the test scenes
(:mod:`fourds.demo.bootstrap`, 95%) excludes zero and the row beats the task's floor (the trivial answer
and the blank readout) by the same two rules. A missing or non-finite seed fails its task. Every verdict
line is written from the measured numbers.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fourds.demo.bootstrap import Interval, paired_bootstrap
from fourds.metrics import metric_spec

_PERCENT_UNITS = ("fraction", "iou")


@dataclass
class Cell:
    """One model x task: the primary metric of each seed's run.

    Attributes:
        metric, direction, units: the task's primary metric.
        values: one figure per seed that has a result (NaN where it was not finite).
        samples: per seed, the run's ``test_samples`` (the metric per test scene), where the runs stored them.
        missing: the seeds the recipe asked for that have no result.
    """

    metric: str
    direction: str
    units: str
    values: list[float]
    samples: list[dict[str, Any]] | None = None
    missing: list[int] = field(default_factory=list)

    @property
    def mean(self) -> float:
        vals = [v for v in self.values if math.isfinite(v)]
        return statistics.fmean(vals) if vals else math.nan

    @property
    def std(self) -> float:
        vals = [v for v in self.values if math.isfinite(v)]
        return statistics.stdev(vals) if len(vals) > 1 else 0.0

    @property
    def problem(self) -> str | None:
        """Why this cell cannot enter a verdict (a missing or non-finite seed fails its task), else None."""
        bad = [i for i, v in enumerate(self.values) if not math.isfinite(v)]
        parts = []
        if self.missing:
            parts.append(f"seed(s) {self.missing} have no result")
        if bad:
            parts.append(f"{len(bad)} seed(s) gave a non-finite {self.metric}")
        return "; ".join(parts) or None

    @property
    def percent(self) -> bool:
        return any(u in self.units.lower() for u in _PERCENT_UNITS)

    def scale(self, value: float) -> float:
        return 100.0 * value if self.percent else value

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "higher" else a < b

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction, "units": self.units, "values": self.values,
                "mean": self.mean, "std": self.std, "missing_seeds": self.missing, "problem": self.problem}


def collect(probe_root: Path, labels: list[str], tasks: list[str], seeds: list[int]) -> dict[str, dict[str, Cell]]:
    """``label → task → Cell`` from ``<probe_root>/<label>/<task>/seed<k>/results.json`` (with each run's
    per-scene ``test_samples``; seeds without a results.json are listed as missing)."""
    table: dict[str, dict[str, Cell]] = {}
    for label in labels:
        for task in tasks:
            values, samples, missing, meta = [], [], [], None
            for seed in seeds:
                path = probe_root / label / task / f"seed{seed}" / "results.json"
                if not path.is_file():
                    missing.append(seed)
                    continue
                run = json.loads(path.read_text())
                meta = run
                value = float((run.get("test") or {}).get(run["primary_metric"], math.nan))
                values.append(value)
                if run.get("test_samples"):
                    samples.append(run["test_samples"])
            if meta is not None:
                table.setdefault(label, {})[task] = Cell(
                    meta["primary_metric"], meta.get("direction", "higher"), str(meta.get("primary_units", "")), values,
                    samples if len(samples) == len(values) else None, missing)
    return table


def fmt(cell: Cell, value: float) -> str:
    v = cell.scale(value)
    if not math.isfinite(v):
        return "—"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"


def cell_text(cell: Cell) -> str:
    """``mean ± std`` over the seeds; the value alone for a row measured once (the trivial answers)."""
    if len(cell.values) == 1 and not cell.missing:
        return fmt(cell, cell.mean)
    return f"{fmt(cell, cell.mean)} ± {fmt(cell, cell.std)}"


def best_labels(table: dict[str, dict[str, Cell]], task: str) -> set[str]:
    """Labels whose mean is the best of the column (ties all bold)."""
    cells = {label: row[task] for label, row in table.items() if task in row and math.isfinite(row[task].mean)}
    if not cells:
        return set()
    first = next(iter(cells.values()))
    best = max(c.mean for c in cells.values()) if first.direction == "higher" else min(c.mean for c in cells.values())
    return {label for label, c in cells.items() if c.mean == best}


def header(cell: Cell, task: str) -> str:
    arrow = "↑" if cell.direction == "higher" else "↓"
    short = cell.metric.split("/", 1)[-1]
    return f"{task} {short}{' (%)' if cell.percent else ''} {arrow}"


def markdown_table(table: dict[str, dict[str, Cell]], tasks: list[str], params: dict[str, int],
                   kinds: dict[str, str]) -> str:
    """Models x tasks, ``mean ± std``, best mean per column in bold, arrows give the direction."""
    heads = {}
    for task in tasks:
        for row in table.values():
            if task in row:
                heads[task] = header(row[task], task)
                break
    lines = ["| Model | Kind | Params (M) | " + " | ".join(heads.get(t, t) for t in tasks) + " |",
             "|---|---|---:|" + "---:|" * len(tasks)]
    bold = {t: best_labels(table, t) for t in tasks}
    for label, row in table.items():
        cells = []
        for t in tasks:
            if t not in row:
                cells.append("")
                continue
            text = cell_text(row[t])
            cells.append(f"**{text}**" if label in bold[t] else text)
        size = f"{params[label] / 1e6:.2f}" if params.get(label) else "—"
        lines.append(f"| {label} | {kinds.get(label, '')} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(ca: Cell, cb: Cell, resamples: int) -> Interval | None:
    """The paired bootstrap interval of ``mean(a) - mean(b)`` over test scenes, where both cells hold
    per-scene samples of one metric with a known reducer; else None."""
    if not ca.samples or not cb.samples:
        return None
    try:
        spec = metric_spec(ca.metric)
    except ValueError:
        return None
    return paired_bootstrap(ca.samples, cb.samples, spec, resamples=resamples)


def _beyond(ca: Cell, cb: Cell, resamples: int) -> dict[str, Any]:
    """``a`` against ``b`` by both rules: the means differ by more than ``std_a + std_b``, and the paired
    bootstrap's 95% interval excludes zero on ``a``'s better side."""
    diff = ca.mean - cb.mean
    spread = ca.std + cb.std
    outcome = "tie" if abs(diff) <= spread else ("win" if ca.better(ca.mean, cb.mean) else "loss")
    interval = _interval(ca, cb, resamples)
    significant = bool(interval is not None and interval.excludes_zero_towards(ca.direction))
    return {"outcome": outcome, "difference": diff, "spread": spread, "a": ca.mean, "b": cb.mean,
            "interval": None if interval is None else interval.to_dict(), "significant": significant}


def compare(table: dict[str, dict[str, Cell]], a: str, b: str, tasks: list[str],
            floors: Sequence[str] = (), reference: str | None = None, resamples: int = 2000) -> dict[str, Any]:
    """``a`` against ``b`` per task: ``win`` / ``loss`` (beyond the sum of the stds) or ``tie``, with the
    paired bootstrap interval over test scenes; ``failed`` where a seed of either row is missing or not
    finite (never dropped).

    A task *counts* (``counted``) when ``a`` wins beyond the stds, the bootstrap's 95% interval excludes
    zero, and ``a`` also beats every row in ``floors`` (the trivial answer, the blank readout) by the same
    two rules: beating a row that is itself below the floor is not learning. ``wins_beyond_reference``
    lists the counted tasks. ``reference`` is the older single-floor form of ``floors``.
    """
    floors = tuple(floors) + ((reference,) if reference and reference not in floors else ())
    per_task = {}
    for task in tasks:
        ca, cb = table.get(a, {}).get(task), table.get(b, {}).get(task)
        if ca is None or cb is None:
            continue
        problems = [f"{row}: {c.problem}" for row, c in ((a, ca), (b, cb)) if c.problem]
        if problems:
            per_task[task] = {"outcome": "failed", "reason": "; ".join(problems), "counted": False}
            continue
        r = _beyond(ca, cb, resamples)
        r["floors"] = {}
        for f in floors:
            cf = table.get(f, {}).get(task)
            if cf is None:
                continue
            if cf.problem:
                r["floors"][f] = {"beats": False, "reason": cf.problem}
                continue
            vs = _beyond(ca, cf, resamples)
            vs["beats"] = vs["outcome"] == "win" and vs["significant"]
            r["floors"][f] = vs
        r["counted"] = bool(r["outcome"] == "win" and r["significant"] and all(v["beats"] for v in r["floors"].values()))
        per_task[task] = r
    by = {o: [t for t, r in per_task.items() if r["outcome"] == o] for o in ("win", "loss", "tie", "failed")}
    result = {"a": a, "b": b, "tasks": per_task, "wins": by["win"], "losses": by["loss"], "ties": by["tie"],
              "failed": by["failed"], "significant_wins": [t for t in by["win"] if per_task[t]["significant"]],
              "floors": list(floors)}
    if floors:
        result["wins_beyond_reference"] = [t for t, r in per_task.items() if r["counted"]]
    return result


def verdict_line(result: dict[str, Any], table: dict[str, dict[str, Cell]]) -> str:
    """One sentence from a :func:`compare` result, with the numbers behind it."""
    a, b, n = result["a"], result["b"], len(result["tasks"])
    parts = []
    for task, r in result["tasks"].items():
        if r["outcome"] == "failed":
            parts.append(f"{task} failed ({r['reason']})")
            continue
        cell = table[a][task]
        sign = "+" if r["difference"] >= 0 else "−"
        word = {"win": "better", "loss": "worse", "tie": "tie"}[r["outcome"]]
        if r["outcome"] == "win" and not r["significant"]:
            word = "better, but the bootstrap interval includes zero" if r["interval"] else "better (no per-scene samples)"
        elif r["outcome"] == "win":
            below = [f for f, v in r["floors"].items() if not v["beats"]]
            if below:
                word = f"better but not above the {' and '.join(below)} row{'s' if len(below) > 1 else ''}"
        ci = r.get("interval")
        ci_text = f", 95% CI [{fmt(cell, ci['low'])}, {fmt(cell, ci['high'])}]" if ci else ""
        parts.append(f"{task} {word} ({sign}{fmt(cell, abs(r['difference']))} vs spread {fmt(cell, r['spread'])}{ci_text})")
    lists = {k: result[k] for k in ("wins", "losses", "failed")}
    head = (f"**{a} vs {b}**: {a} is better beyond the seeds' spread on {len(lists['wins'])} of {n} tasks"
            f"{' (' + ', '.join(lists['wins']) + ')' if lists['wins'] else ''}, worse on {len(lists['losses'])}"
            f"{' (' + ', '.join(lists['losses']) + ')' if lists['losses'] else ''}, within the spread on "
            f"{len(result['ties'])}" + (f", failed on {len(lists['failed'])} ({', '.join(lists['failed'])})"
                                        if lists["failed"] else "") + ".")
    if "wins_beyond_reference" in result:
        kept = result["wins_beyond_reference"]
        head += (f" Counted (also a bootstrap interval excluding zero, and above the {' and '.join(result['floors'])} "
                 f"rows): {len(kept)}{' (' + ', '.join(kept) + ')' if kept else ''}.")
    return head + " " + "; ".join(parts) + "."


def comparisons(kinds: dict[str, str], order: list[str], base: dict[str, str]) -> list[tuple[str, str]]:
    """The pairs the verdicts discuss: each pretrained model against its random init and its per-frame
    version, the larger pretrained model against the smaller, the distilled model against the
    pretrained model of its size. ``base`` maps a label to its model's label."""
    pairs = []
    pretrained = [label for label in order if kinds[label] == "pretrained"]
    for label in pretrained:
        for other in order:
            if other != label and base[other] == label and kinds[other] in ("random", "perframe"):
                pairs.append((label, other))
    for small, large in zip(pretrained, pretrained[1:]):
        pairs.append((large, small))
    for label in order:
        if kinds[label] == "distilled" and base[label] in pretrained:
            pairs.append((label, base[label]))
    return pairs
