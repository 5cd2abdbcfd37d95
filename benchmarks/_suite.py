"""The benchmark suite runner behind ``python -m benchmarks`` and ``fourds bench``.

Finds every ``benchmarks/bench_<name>.py`` (known names in :data:`REGISTRY` order first, then any others
alphabetically), runs each in a fresh Python process (so each benchmark's peak memory is its own and one
crash cannot take the suite down), collects the results (schema in :mod:`benchmarks._report`) and writes
one ``report.md`` + ``report.json`` with machine information. A benchmark that fails or times out is
recorded with the end of its output; the others still run; the exit code is then 1.

Child protocol: ``python -m benchmarks._suite --child NAME --bench-dir DIR --result FILE --context FILE
[--quick]`` loads ``DIR/bench_NAME.py``, calls ``run(quick=..., context=...)`` (``context`` only if ``run``
accepts it: ``{"quick", "options", "results": {earlier name: result}}``) and writes the result as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import importlib.util
import inspect
import io
import json
import os
import platform
import resource
import runpy
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script, ``python benchmarks/_suite.py`` (what ``fourds bench`` does)
    sys.path.insert(0, str(ROOT))

#: Known benchmarks in run order, with what they measure; a missing file is reported as "not present".
REGISTRY: dict[str, str] = {
    "pretrain": "pretraining step of 4DS-S/B vs HF VideoMAEForPreTraining (CPU fp32), FLOP/s vs matmul peak",
    "data": "decode + augment throughput of the pretraining loader vs 4DS-S consumption",
    "extract": "fourds extract with 4DS-B at 16x224x224: clips/s, peak memory; official-layout import",
    "probe": "frozen probe sweep cost, K=6 readouts vs K=1, 4DS-B at 16x224x224",
    "synthetic": "procedural scenes clips/s at 16x128x128 on one core",
    "cuda": "CUDA bf16 pretraining and forward throughput, MFU (skipped without a CUDA device)",
}


def discover(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Names of the ``bench_<name>.py`` files present: registry order first, then the rest sorted."""
    present = {p.stem[len("bench_"):] for p in bench_dir.glob("bench_*.py")}
    return [n for n in REGISTRY if n in present] + sorted(present - set(REGISTRY))


# ---------------------------------------------------------------------------------------------- machine info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _physical_cores() -> int | None:
    try:
        pairs = set()
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                phys = value.strip()
            elif key == "core id":
                core = value.strip()
            elif not line.strip() and core is not None:
                pairs.add((phys, core))
                phys = core = None
        if core is not None:
            pairs.add((phys, core))
        return len(pairs) or None
    except OSError:
        return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cuda_matmul_peak(n: int = 8192, repeats: int = 20) -> float:
    """Best bf16 FLOP/s of an n x n matmul on the current CUDA device (timed with CUDA events)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * n**3 / best


def machine_info(measure_peaks: bool = True, bf16_peak_tflops: float | None = None) -> dict[str, Any]:
    """CPU, cores, memory, versions, CUDA device, measured matmul peaks, date and git commit."""
    import torch

    logical = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": f"{_physical_cores() or '?'} physical, {logical} logical, {usable} usable by this process",
        "logical_cpus": logical, "usable_cpus": usable, "memory_gib": _memory_gib(),
        "os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": f"{torch.get_num_threads()} / {torch.get_num_interop_threads()}",
        "transformers": _version("transformers") or "not installed (HF comparison unavailable)",
        "git": _git(), "load_avg_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        from fourds.train.device_step import peak_flops

        dev = torch.device("cuda")
        prop = torch.cuda.get_device_properties(dev)
        info["cuda"] = (f"{torch.cuda.device_count()} x {prop.name}, {prop.total_memory / 2**30:.0f} GiB, "
                        f"capability {prop.major}.{prop.minor}, CUDA {torch.version.cuda}")
        nominal = bf16_peak_tflops * 1e12 if bf16_peak_tflops else peak_flops(dev)
        info["bf16_nominal_peak_tflops"] = nominal / 1e12 if nominal else None
        info["bf16_nominal_peak_source"] = ("--bf16-peak-tflops" if bf16_peak_tflops else
                                            "fourds.train.device_step table by device name" if nominal else "unknown device")
        if measure_peaks:
            info["bf16_matmul_peak_tflops"] = cuda_matmul_peak() / 1e12
    else:
        build = "a CPU-only build" if torch.version.cuda is None else f"built with CUDA {torch.version.cuda}"
        info["cuda"] = f"none (torch.cuda.is_available() is False; torch {build})"
    if measure_peaks:
        from benchmarks.bench_pretrain import matmul_peak

        info["fp32_matmul_peak_gflops"] = matmul_peak() / 1e9
    info["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return info


# ------------------------------------------------------------------------------------------------- the child


def load_module(name: str, bench_dir: Path = BENCH_DIR):
    """Import ``bench_dir/bench_<name>.py`` (as ``benchmarks.bench_<name>`` when it is this package's)."""
    if Path(bench_dir).resolve() == BENCH_DIR:
        return importlib.import_module(f"benchmarks.bench_{name}")
    path = Path(bench_dir) / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import benchmark {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run_as_script(name: str, path: Path, quick: bool, doc: str | None) -> dict:
    """Fallback for a benchmark without ``run()``: execute it as ``python bench_<name>.py [--quick]`` in
    this process and report what it printed (no figure table)."""
    from benchmarks._report import result

    captured = io.StringIO()
    argv, sys.argv = sys.argv, [str(path)] + (["--quick"] if quick else [])
    try:
        with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as stop:  # argparse or an explicit exit: only 0 / None is success
        if stop.code not in (0, None):
            raise
    finally:
        sys.argv = argv
    title = (doc or f"bench_{name}.py").strip().splitlines()[0]
    res = result(name, title, [], [f"bench_{name}.py has no run(quick=...) returning benchmarks._report.result(...), "
                                   "so it ran as a script and its output is shown as printed."])
    res["output"] = captured.getvalue()
    return res


def child_main(name: str, result_path: str, context_path: str | None, quick: bool, bench_dir: Path = BENCH_DIR) -> int:
    """Run one benchmark in this process and write its result (see the module docstring)."""
    from benchmarks._report import coerce, json_safe, peak_rss_mib, validate

    context = json.loads(Path(context_path).read_text()) if context_path else {"quick": quick, "options": {}, "results": {}}
    module = load_module(name, bench_dir)
    run = getattr(module, "run", None)
    if run is None:
        res = run_as_script(name, Path(bench_dir) / f"bench_{name}.py", quick, module.__doc__)
    else:
        kwargs: dict[str, Any] = {"quick": quick}
        if "context" in inspect.signature(run).parameters:
            kwargs["context"] = context
        res = coerce(run(**kwargs), name)
    validate(res)
    # The largest single process: this one or a worker it started. A worker's ru_maxrss may start from
    # this process's high-water mark at spawn time, never above this process's own peak: max() is exact.
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    res["peak_rss_mib"] = max(peak_rss_mib(), kids.ru_maxrss / 1024)
    res["cpu_s"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    for fig in res["figures"]:  # into the log, for whoever reads it
        peer = f"  vs {fig['peer_name']} {fig.get('peer')}  (ratio {fig.get('ratio')})" if fig.get("peer_name") else ""
        goal = f"  [goal {fig['goal']}: {fig.get('met')}]" if "goal" in fig else ""
        print(f"{fig['name']}: {fig['value']} {fig['unit']}{peer}{goal}")
    Path(result_path).write_text(json.dumps(json_safe(res)))
    return 0


# ------------------------------------------------------------------------------------------------ the runner


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_one(name: str, out_dir: Path, context: dict, quick: bool, timeout_s: float, bench_dir: Path = BENCH_DIR) -> dict:
    """Run ``bench_<name>`` in a subprocess; returns its entry of the report."""
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with tempfile.TemporaryDirectory() as tmp:
        ctx_path, res_path = Path(tmp) / "context.json", Path(tmp) / "result.json"
        ctx_path.write_text(json.dumps(context))
        cmd = [sys.executable, "-m", "benchmarks._suite", "--child", name, "--bench-dir", str(bench_dir),
               "--result", str(res_path), "--context", str(ctx_path)] + (["--quick"] if quick else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)}
        t0 = time.perf_counter()
        with open(log_path, "w") as log:
            # Its own process group, so a timeout (or Ctrl-C here) also ends the workers it started.
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                rc = None
            except BaseException:
                _kill_group(proc)
                raise
        wall = time.perf_counter() - t0
        entry: dict[str, Any] = {"name": name, "title": REGISTRY.get(name, ""), "wall_s": wall, "returncode": rc,
                                 "log": str(log_path)}
        if rc is None:
            return {**entry, "status": "timeout", "error": f"timed out after {timeout_s:.0f} s\n" + _tail(log_path)}
        if rc != 0 or not res_path.exists():
            return {**entry, "status": "failed", "error": _tail(log_path) or f"exit code {rc}, no output"}
        res = json.loads(res_path.read_text())
    entry["peak_rss_mib"] = res.pop("peak_rss_mib", None)
    entry["cpu_s"] = res.pop("cpu_s", None)
    entry["result"] = res
    if res.get("skipped"):
        return {**entry, "status": "skipped", "reason": res["skipped"]}
    return {**entry, "status": "ok"}


def run_suite(names: list[str], out_dir: Path, quick: bool = False, options: dict | None = None,
              timeout_s: float = 1800, requested: bool = False, machine: dict | None = None,
              echo=print, command: str = "python -m benchmarks", bench_dir: Path = BENCH_DIR) -> dict:
    """Run ``names`` in order, write the report into ``out_dir``, return it (``exit_code`` inside).

    ``requested``: the names were asked for explicitly (``--only``), so one that is not present is a
    failure rather than a "not present" line.
    """
    from benchmarks._report import write_report

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = dict(options or {})
    echo(f"benchmarks -> {out_dir} ({'quick' if quick else 'full'} run); measuring machine info...")
    machine = machine if machine is not None else machine_info(bf16_peak_tflops=options.get("bf16_peak_tflops"))
    present = set(discover(Path(bench_dir)))
    context: dict[str, Any] = {"quick": quick, "options": options, "results": {}}
    entries = []
    for i, name in enumerate(names, 1):
        if name not in present:
            reason = f"benchmarks/bench_{name}.py is not present in this checkout"
            entries.append({"name": name, "title": REGISTRY.get(name, ""), "status": "failed" if requested else "missing",
                            "reason": reason, "error": reason, "returncode": None})
            echo(f"[{i}/{len(names)}] {name}: not present")
            continue
        echo(f"[{i}/{len(names)}] {name}: running ({REGISTRY.get(name, 'bench_' + name + '.py')})...")
        entry = run_one(name, out_dir, context, quick, timeout_s, Path(bench_dir).resolve())
        entries.append(entry)
        if entry["status"] == "ok":
            context["results"][name] = entry["result"]
        extra = f": {entry.get('reason')}" if entry["status"] == "skipped" else ""
        if entry["status"] in ("failed", "timeout"):
            extra = f" (see {entry['log']})"
        echo(f"[{i}/{len(names)}] {name}: {entry['status']} in {entry['wall_s']:.0f} s{extra}")
    if hasattr(os, "getloadavg") and machine.get("load_avg_start") is not None:
        machine["load_avg_end"] = os.getloadavg()[0]
        machine["load_avg"] = f"{machine['load_avg_start']:.1f} / {machine['load_avg_end']:.1f}"
    bad = [e["name"] for e in entries if e["status"] in ("failed", "timeout")]
    unmet = [e["name"] for e in entries if (e.get("result") or {}).get("goals_met") is False]
    counts = {s: sum(e["status"] == s for e in entries) for s in ("ok", "skipped", "missing")}
    summary = ", ".join([f"{counts['ok']} ok"] + [f"{counts[s]} {s.replace('missing', 'not present')}"
                                                  for s in ("skipped", "missing") if counts[s]])
    if bad:
        summary += f", {len(bad)} FAILED ({', '.join(bad)})"
    if unmet:
        summary += f"; goals not met in: {', '.join(unmet)}"
    report = {
        "schema": "fourds-bench-report/1", "created": machine.get("created"), "quick": quick,
        "command": command,
        "options": options, "machine": machine, "benchmarks": entries, "summary": summary,
        "wall_s": time.perf_counter() - t_start, "exit_code": 1 if bad else 0,
    }
    md, js = write_report(report, out_dir)
    echo(f"report: {md} and {js} ({report['wall_s']:.0f} s); {summary}")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="Run the fourds benchmarks and write one "
                                "markdown + JSON report (report.md, report.json) with machine information.")
    p.add_argument("--quick", action="store_true", help="tiny settings (~1-2 min): checks the plumbing, figures not meaningful")
    p.add_argument("--only", nargs="+", metavar="NAME", default=None,
                   help=f"run only these benchmarks (known: {', '.join(REGISTRY)}; any bench_NAME.py works)")
    p.add_argument("--out", default=None, help="report folder (default runs/bench/<UTC date-time>[-quick])")
    p.add_argument("--list", action="store_true", help="list the benchmarks and whether each is present, then exit")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark before it is killed (default 1800)")
    p.add_argument("--bf16-peak-tflops", type=float, default=None,
                   help="CUDA: the device's dense bf16 peak for MFU, overriding the table by device name")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--bench-dir", default=str(BENCH_DIR), help=argparse.SUPPRESS)
    p.add_argument("--context", help=argparse.SUPPRESS)
    p.add_argument("--prog", default=None, help=argparse.SUPPRESS)  # the command name in the report
    return p


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.prog:  # ``fourds bench`` runs this file as a script and names itself
        prog = args.prog
        argv = [a for i, a in enumerate(argv) if a != "--prog" and (i == 0 or argv[i - 1] != "--prog")]
    if args.child:
        return child_main(args.child, args.result, args.context, args.quick, Path(args.bench_dir).resolve())
    present = discover()
    if args.list:
        for name in dict.fromkeys([*REGISTRY, *present]):
            state = "present" if name in present else "not present"
            print(f"{name:<10} {state:<12} {REGISTRY.get(name, f'benchmarks/bench_{name}.py')}")
        return 0
    if args.only:
        unknown = [n for n in args.only if n not in REGISTRY and n not in present]
        if unknown:
            raise SystemExit(f"python -m benchmarks: unknown benchmark(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(dict.fromkeys([*REGISTRY, *present]))}")
        names = list(dict.fromkeys(args.only))
    else:
        names = list(dict.fromkeys([*REGISTRY, *present]))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else ROOT / "runs" / "bench" / (stamp + ("-quick" if args.quick else ""))
    report = run_suite(names, out, args.quick, {"bf16_peak_tflops": args.bf16_peak_tflops}, args.timeout,
                       requested=bool(args.only), command=" ".join([prog, *map(shlex.quote, argv)]))
    return int(report["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
