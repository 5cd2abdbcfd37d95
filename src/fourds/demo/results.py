"""The demo's results: mean ± std over readout seeds, a Table-2-shaped table, and verdicts from the numbers.

A comparison is called a win only when the difference of the means is larger than the sum of the two
standard deviations over seeds (the ``mean ± std`` intervals do not overlap); otherwise it is a tie
within the seeds' spread. Every verdict line is written from the measured numbers.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PERCENT_UNITS = ("fraction", "iou")


@dataclass
class Cell:
    """One model x task: the primary metric of each seed's run."""

    metric: str
    direction: str
    units: str
    values: list[float]

    @property
    def mean(self) -> float:
        vals = [v for v in self.values if math.isfinite(v)]
        return statistics.fmean(vals) if vals else math.nan

    @property
    def std(self) -> float:
        vals = [v for v in self.values if math.isfinite(v)]
        return statistics.stdev(vals) if len(vals) > 1 else 0.0

    @property
    def percent(self) -> bool:
        return any(u in self.units.lower() for u in _PERCENT_UNITS)

    def scale(self, value: float) -> float:
        return 100.0 * value if self.percent else value

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "higher" else a < b

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction, "units": self.units, "values": self.values,
                "mean": self.mean, "std": self.std}


def collect(probe_root: Path, labels: list[str], tasks: list[str], seeds: list[int]) -> dict[str, dict[str, Cell]]:
    """``label → task → Cell`` from ``<probe_root>/<label>/<task>/seed<k>/results.json``."""
    table: dict[str, dict[str, Cell]] = {}
    for label in labels:
        for task in tasks:
            values, meta = [], None
            for seed in seeds:
                path = probe_root / label / task / f"seed{seed}" / "results.json"
                if not path.is_file():
                    continue
                run = json.loads(path.read_text())
                meta = run
                values.append(float((run.get("test") or {}).get(run["primary_metric"], math.nan)))
            if meta is not None:
                table.setdefault(label, {})[task] = Cell(meta["primary_metric"], meta.get("direction", "higher"),
                                                         str(meta.get("primary_units", "")), values)
    return table


def fmt(cell: Cell, value: float) -> str:
    v = cell.scale(value)
    if not math.isfinite(v):
        return "—"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"


def cell_text(cell: Cell) -> str:
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


def compare(table: dict[str, dict[str, Cell]], a: str, b: str, tasks: list[str],
            reference: str | None = None) -> dict[str, Any]:
    """``a`` against ``b`` per task: ``win`` / ``loss`` (beyond the sum of the stds) or ``tie``.

    With ``reference`` (a row label, e.g. the trivial answers), each task also records whether ``a``
    beats that row beyond ``a``'s std (``beats_reference``), and ``wins_beyond_reference`` lists the
    wins where it does: beating a row that is itself below the trivial answer is not learning.
    """
    per_task = {}
    for task in tasks:
        ca, cb = table.get(a, {}).get(task), table.get(b, {}).get(task)
        if ca is None or cb is None or not (math.isfinite(ca.mean) and math.isfinite(cb.mean)):
            continue
        diff = ca.mean - cb.mean
        spread = ca.std + cb.std
        if abs(diff) > spread and ca.better(ca.mean, cb.mean):
            outcome = "win"
        elif abs(diff) > spread:
            outcome = "loss"
        else:
            outcome = "tie"
        per_task[task] = {"outcome": outcome, "difference": diff, "spread": spread, "a": ca.mean, "b": cb.mean}
        ref = table.get(reference, {}).get(task) if reference else None
        if ref is not None and math.isfinite(ref.mean):
            per_task[task]["beats_reference"] = bool(ca.better(ca.mean, ref.mean) and abs(ca.mean - ref.mean) > ca.std)
    wins = [t for t, r in per_task.items() if r["outcome"] == "win"]
    losses = [t for t, r in per_task.items() if r["outcome"] == "loss"]
    result = {"a": a, "b": b, "tasks": per_task, "wins": wins, "losses": losses,
              "ties": [t for t, r in per_task.items() if r["outcome"] == "tie"]}
    if reference:
        result["reference"] = reference
        result["wins_beyond_reference"] = [t for t in wins if per_task[t].get("beats_reference")]
    return result


def verdict_line(result: dict[str, Any], table: dict[str, dict[str, Cell]]) -> str:
    """One sentence from a :func:`compare` result, with the numbers behind it."""
    a, b, n = result["a"], result["b"], len(result["tasks"])
    parts = []
    for task, r in result["tasks"].items():
        cell = table[a][task]
        sign = "+" if r["difference"] >= 0 else "−"
        word = {"win": "better", "loss": "worse", "tie": "tie"}[r["outcome"]]
        if r["outcome"] == "win" and r.get("beats_reference") is False:
            word = f"better but not above the {result['reference']} row"
        parts.append(f"{task} {word} ({sign}{fmt(cell, abs(r['difference']))} vs spread {fmt(cell, r['spread'])})")
    head = (f"**{a} vs {b}**: {a} is better beyond the seeds' spread on {len(result['wins'])} of {n} tasks"
            f"{' (' + ', '.join(result['wins']) + ')' if result['wins'] else ''}, worse on {len(result['losses'])}"
            f"{' (' + ', '.join(result['losses']) + ')' if result['losses'] else ''}, within the spread on "
            f"{len(result['ties'])}.")
    if "wins_beyond_reference" in result:
        kept = result["wins_beyond_reference"]
        head += (f" Of its wins, {len(kept)} also beat the {result['reference']} row"
                 f"{' (' + ', '.join(kept) + ')' if kept else ''}.")
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
