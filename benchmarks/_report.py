"""The benchmark result schema and the suite report (markdown + JSON).

Every ``benchmarks/bench_*.py`` module exposes ``run(quick=False, context=None) -> dict`` returning
:func:`result` (schema ``fourds-bench/1``):

``name``, ``title``
    the benchmark's short name (``bench_<name>.py``) and a one-line title;
``figures``
    a list of :func:`figure` dicts: ``name``, ``value`` (float or None = not measured), ``unit``, and
    when the figure has a peer measured in the same run ``peer`` (its value) / ``peer_name`` / ``ratio``
    (= value / peer); when there is a goal ``goal`` (text) and ``met`` (bool); ``note``;
``goals_met``
    None without goals, else whether every goal was met;
``notes``
    free text lines (settings, caveats); ``details``: the raw measurements (any JSON);
``exports``
    figures later benchmarks of the same run may use (through ``context``);
``skipped``
    a reason, when the benchmark does not apply here (e.g. no CUDA device);
``output``
    (set by the runner) the printed output of a module without ``run()``, which it ran as a script.

A module whose ``run`` returns any other dict still works: :func:`coerce` turns its numeric leaves into
figures (units guessed from the key names) and keeps the dict as ``details``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SCHEMA = "fourds-bench/1"
REPORT_SCHEMA = "fourds-bench-report/1"


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def figure(name: str, value: float | None, unit: str, *, peer: float | None = None, peer_name: str | None = None,
           goal: str | None = None, met: bool | None = None, note: str = "") -> dict:
    """One reported figure; ``ratio`` = value / peer is filled in when both are finite."""
    value, peer = _num(value), _num(peer)
    fig: dict[str, Any] = {"name": name, "value": value, "unit": unit}
    if peer is not None or peer_name:
        fig.update(peer=peer, peer_name=peer_name,
                   ratio=value / peer if value is not None and peer not in (None, 0.0) else None)
    if goal is not None:
        fig.update(goal=goal, met=None if met is None else bool(met))
    if note:
        fig["note"] = note
    return fig


def result(name: str, title: str, figures: Iterable[dict], notes: Iterable[str] = (), details: Any = None,
           *, exports: Mapping[str, Any] | None = None) -> dict:
    """A benchmark's result in the uniform schema."""
    figures = list(figures)
    verdicts = [f["met"] for f in figures if "goal" in f and f.get("met") is not None]
    return {"schema": SCHEMA, "name": name, "title": title, "figures": figures,
            "goals_met": all(verdicts) if verdicts else None, "notes": list(notes),
            "details": details, "exports": dict(exports or {})}


def skipped(name: str, title: str, reason: str, details: Any = None) -> dict:
    """A result saying the benchmark does not apply on this machine (not a failure)."""
    res = result(name, title, [], [reason], details)
    res["skipped"] = reason
    return res


def validate(res: Any) -> None:
    """Raise ``ValueError`` naming what is wrong with a result dict."""
    problems = []
    if not isinstance(res, dict):
        raise ValueError(f"a benchmark result must be a dict, got {type(res).__name__}")
    for key in ("schema", "name", "title", "figures", "notes"):
        if key not in res:
            problems.append(f"missing key {key!r}")
    for i, fig in enumerate(res.get("figures", [])):
        for key in ("name", "value", "unit"):
            if key not in fig:
                problems.append(f"figure {i} misses {key!r}")
        if fig.get("value") is not None and not isinstance(fig["value"], (int, float)):
            problems.append(f"figure {i} ({fig.get('name')}) value is {type(fig['value']).__name__}, not a number")
    if problems:
        raise ValueError(f"benchmark result {res.get('name', '?')!r} does not follow {SCHEMA}: " + "; ".join(problems))


_UNITS = (  # key suffix -> unit, most specific first
    ("clips_per_s", "clips/s"), ("per_s", "1/s"), ("gflops", "GFLOP/s"), ("tflops", "TFLOP/s"), ("gflop", "GFLOP"),
    ("_mib", "MiB"), ("_mb", "MiB"), ("_gib", "GiB"), ("_bytes", "B"), ("_pct", "%"), ("ratio", "x"),
    ("_ms", "ms"), ("_s", "s"),
)


def _guess_unit(key: str) -> str:
    key = key.lower()
    for suffix, unit in _UNITS:
        if key.endswith(suffix):
            return unit
    return ""


def _leaves(obj: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)) and len(obj) <= 16:
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def coerce(raw: Any, name: str, title: str | None = None, max_figures: int = 40) -> dict:
    """Wrap a dict that is not in the schema: its numeric and boolean leaves become figures."""
    if isinstance(raw, dict) and raw.get("schema") == SCHEMA:
        return raw
    figs = []
    for key, value in _leaves(raw):
        if isinstance(value, bool):
            figs.append(figure(key, None, "", note=f"{value}"))
        elif isinstance(value, (int, float)):
            figs.append(figure(key, value, _guess_unit(key.rsplit(".", 1)[-1])))
    notes = [f"bench_{name}.py returned a plain dict, not the {SCHEMA} schema: figures are its numeric leaves "
             "(units guessed from key names)."]
    if len(figs) > max_figures:
        notes.append(f"{len(figs) - max_figures} more numeric leaves are in details only.")
        figs = figs[:max_figures]
    return result(name, title or f"bench_{name}.py", figs, notes, raw)


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB): ``VmHWM`` of ``/proc/self/status`` on Linux.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used where /proc exists: after fork/vfork + exec it
    starts from the *parent's* high-water mark, so a small child of a big process reports the parent.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------- report


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, unknown objects -> str, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        a = abs(x)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{x:,.0f}"
        if a >= 100:
            return f"{x:.1f}"
        if a >= 1:
            return f"{x:.2f}"
        return f"{x:.3g}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def _met(fig: dict) -> str:
    if "goal" not in fig:
        return ""
    return {True: "met", False: "**not met**", None: "–"}[fig.get("met")]


_STATUS = {"ok": "ok", "failed": "**FAILED**", "skipped": "skipped", "missing": "not present",
           "timeout": "**TIMED OUT**"}


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: header, machine, summary table, one section per benchmark."""
    m = report["machine"]
    mode = "quick smoke run (tiny settings: plumbing only, figures not meaningful)" if report["quick"] else "full"
    lines = [
        "# fourds benchmark report", "",
        f"- date: {report['created']}",
        f"- mode: {mode}",
        f"- command: `{report['command']}`",
        f"- total wall time: {report['wall_s']:.0f} s",
        f"- result: {report['summary']}", "",
        "## Machine", "",
        "| | |", "|---|---|",
    ]
    for key, label in (
        ("cpu_model", "CPU"), ("cpu_cores", "CPU cores"), ("memory_gib", "memory (GiB)"), ("os", "OS"),
        ("python", "Python"), ("torch", "torch"), ("torch_threads", "torch threads (intra / inter-op)"),
        ("transformers", "transformers"), ("cuda", "CUDA device"), ("fp32_matmul_peak_gflops", "fp32 matmul peak, CPU (GFLOP/s, measured)"),
        ("bf16_matmul_peak_tflops", "bf16 matmul peak, CUDA (TFLOP/s, measured)"),
        ("bf16_nominal_peak_tflops", "bf16 nominal peak, CUDA (TFLOP/s, data sheet)"),
        ("git", "git commit"), ("load_avg", "load average (1 min) at start / end"), ("note", "note"),
    ):
        if key in m and m[key] is not None:
            lines.append(f"| {label} | {_fmt(m[key])} |")
    lines += ["", "## Summary", "", "| benchmark | status | wall s | CPU s | peak RSS MiB | goals |",
              "|---|---|---:|---:|---:|---|"]
    for b in report["benchmarks"]:
        res = b.get("result") or {}
        goals = {None: "–", True: "all met", False: "**some not met**"}[res.get("goals_met")]
        lines.append(f"| {b['name']} | {_STATUS.get(b['status'], b['status'])} | {_fmt(b.get('wall_s'))} | "
                     f"{_fmt(b.get('cpu_s'))} | {_fmt(b.get('peak_rss_mib'))} | {goals} |")
    lines += ["", "CPU s: user + system seconds of the benchmark's processes; on a quiet machine wall s is about "
              "CPU s / the threads used, much more means other load shared the cores."]
    for b in report["benchmarks"]:
        res = b.get("result") or {}
        lines += ["", f"## {b['name']}: {res.get('title') or b.get('title') or 'bench_' + b['name'] + '.py'}", ""]
        if b["status"] in ("failed", "timeout"):
            lines += [f"{_STATUS[b['status']]} (exit code {b.get('returncode')}); last lines of its output:", "",
                      "```", *(b.get("error") or "").splitlines()[-25:], "```"]
            continue
        if b["status"] in ("skipped", "missing"):
            lines.append(f"{_STATUS[b['status']]}: {b.get('reason') or res.get('skipped', '')}")
            continue
        figs = res.get("figures", [])
        if figs:
            lines += ["| figure | value | unit | peer | peer value | ratio | goal | met | note |",
                      "|---|---:|---|---|---:|---:|---|---|---|"]
            for f in figs:
                lines.append(f"| {_fmt(f['name'])} | {_fmt(f['value'])} | {f['unit']} | {_fmt(f.get('peer_name') or '')} | "
                             f"{_fmt(f.get('peer')) if 'peer_name' in f else ''} | "
                             f"{_fmt(f.get('ratio')) if 'peer_name' in f else ''} | {_fmt(f.get('goal') or '')} | "
                             f"{_met(f)} | {_fmt(f.get('note') or '')} |")
        for note in res.get("notes", []):
            lines.append(f"- {note}")
        if res.get("output"):
            lines += ["", "```", *res["output"].rstrip().splitlines()[-60:], "```"]
    lines += ["", "Ratios are value / peer value. Figures from a shared machine are noisy: compare ratios "
              "measured in the same run rather than absolute figures across runs.", ""]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.json`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "report.md", out / "report.json"
    safe = json_safe(dict(report))
    js.write_text(json.dumps(safe, indent=2, allow_nan=False) + "\n")
    md.write_text(render_markdown(safe))
    return md, js
