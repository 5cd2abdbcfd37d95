"""The benchmark runner's plumbing (discovery, subprocesses, failure handling, context, report writing),
with trivial fake benchmarks; the real benchmarks' speed is never tested here."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _report, _suite  # noqa: E402

FAKES = {
    "fast": """
        from benchmarks._report import figure, result

        def run(quick=False, context=None):
            figs = [figure("step time", 2.0, "s", peer=3.0, peer_name="peer impl"),
                    figure("speed-up", 1.5, "x", goal=">= 1.2x", met=True),
                    figure("unmeasured", float("nan"), "s", peer=0.0, peer_name="peer impl")]
            return result("fast", "a fast fake", figs, ["quick" if quick else "full"], {"nan": float("nan")},
                          exports={"rate": 7.0})
    """,
    "uses_context": """
        from benchmarks._report import figure, result

        def run(quick=False, context=None):
            rate = context["results"]["fast"]["exports"]["rate"]
            return result("uses_context", "reads an earlier export", [figure("rate seen", rate, "clips/s",
                          goal="> 100", met=rate > 100)], [f"option {context['options'].get('flag')}"])
    """,
    "broken": """
        def run(quick=False):
            raise RuntimeError("this fake benchmark always fails")
    """,
    "plain": """
        def run(quick=False):
            return {"clips_per_s": 12.5, "nested": {"peak_rss_mib": 100, "ok": True}, "label": "x"}
    """,
    "skips": """
        from benchmarks._report import skipped

        def run(quick=False):
            return skipped("skips", "needs hardware", "no such device here")
    """,
    "big": """
        from benchmarks._report import figure, result

        def run(quick=False):
            block = b"x" * (200 * 2**20)  # written, so resident
            return result("big", "allocates 200 MiB", [figure("bytes", len(block), "B")])
    """,
    "script_only": """
        \"\"\"A benchmark written as a script: no run(), prints its figures.\"\"\"
        import argparse

        def main():
            parser = argparse.ArgumentParser()
            parser.add_argument("--quick", action="store_true")
            args = parser.parse_args()
            print(f"widgets/s 42 quick={args.quick}")

        if __name__ == "__main__":
            main()
    """,
    "slow": """
        import time

        def run(quick=False):
            time.sleep(30)
    """,
}


@pytest.fixture()
def bench_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fake_benchmarks"
    d.mkdir()
    for name, src in FAKES.items():
        (d / f"bench_{name}.py").write_text(textwrap.dedent(src))
    (d / "helper.py").write_text("x = 1\n")  # not a bench_*.py: ignored
    return d


def test_figure_ratio_and_nan() -> None:
    f = _report.figure("t", 2.0, "s", peer=4.0, peer_name="p", goal="< 3", met=True)
    assert f["ratio"] == pytest.approx(0.5) and f["met"] is True
    g = _report.figure("t", math.nan, "s", peer=0.0, peer_name="p")
    assert g["value"] is None and g["ratio"] is None
    assert "peer" not in _report.figure("t", 1.0, "s")
    res = _report.result("n", "t", [f, _report.figure("u", 1.0, "x", goal="g", met=False)])
    assert res["goals_met"] is False
    assert _report.result("n", "t", [g])["goals_met"] is None


def test_validate_names_the_problem() -> None:
    with pytest.raises(ValueError, match="missing key 'figures'"):
        _report.validate({"schema": _report.SCHEMA, "name": "x", "title": "t", "notes": []})
    with pytest.raises(ValueError, match="not a number"):
        _report.validate(_report.result("x", "t", [{"name": "a", "value": "fast", "unit": "s"}]))


def test_coerce_plain_dict() -> None:
    res = _report.coerce({"clips_per_s": 3.0, "inner": {"peak_rss_mib": 5, "flag": False}, "s": "text"}, "p")
    _report.validate(res)
    by_name = {f["name"]: f for f in res["figures"]}
    assert by_name["clips_per_s"]["unit"] == "clips/s" and by_name["clips_per_s"]["value"] == 3.0
    assert by_name["inner.peak_rss_mib"]["unit"] == "MiB"
    assert by_name["inner.flag"]["value"] is None and by_name["inner.flag"]["note"] == "False"
    assert res["details"]["s"] == "text"


def test_discover_orders_registry_first(bench_dir: Path) -> None:
    for name in ("probe", "pretrain"):
        (bench_dir / f"bench_{name}.py").write_text("def run(quick=False):\n    return {}\n")
    names = _suite.discover(bench_dir)
    assert names[:2] == ["pretrain", "probe"]  # registry order, whatever the alphabet says
    assert names[2:] == sorted(FAKES)


def test_suite_runs_survives_failures_and_writes_report(bench_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    lines: list[str] = []
    machine = {"cpu_model": "fake CPU", "created": "2026-01-01T00:00:00+00:00", "fp32_matmul_peak_gflops": 10.0}
    names = ["fast", "broken", "uses_context", "plain", "skips", "big", "script_only", "slow", "synthetic"]
    report = _suite.run_suite(names, out, quick=True, options={"flag": "on"}, timeout_s=3, machine=machine,
                              echo=lines.append, bench_dir=bench_dir)
    status = {e["name"]: e["status"] for e in report["benchmarks"]}
    assert status == {"fast": "ok", "broken": "failed", "uses_context": "ok", "plain": "ok", "skips": "skipped",
                      "big": "ok", "script_only": "ok", "slow": "timeout", "synthetic": "missing"}
    assert report["exit_code"] == 1
    entries = {e["name"]: e for e in report["benchmarks"]}
    assert "this fake benchmark always fails" in entries["broken"]["error"]
    assert Path(entries["broken"]["log"]).is_file()
    assert entries["fast"]["result"]["notes"] == ["quick"]  # quick reached the child
    ctx = entries["uses_context"]["result"]
    assert ctx["figures"][0]["value"] == 7.0 and ctx["notes"] == ["option on"] and ctx["goals_met"] is False
    # Each benchmark's peak memory is its own: not the (larger) test process's it was spawned from.
    assert 0 < entries["fast"]["peak_rss_mib"] < 150 < 200 <= entries["big"]["peak_rss_mib"]
    assert entries["fast"]["cpu_s"] > 0 and "cpu_s" not in entries["fast"]["result"]
    script = entries["script_only"]["result"]
    assert script["output"].strip() == "widgets/s 42 quick=True" and script["figures"] == []
    assert script["title"] == "A benchmark written as a script: no run(), prints its figures."
    assert "goals not met in: uses_context" in report["summary"] and "FAILED (broken, slow)" in report["summary"]

    data = json.loads((out / "report.json").read_text())  # strict JSON: the NaNs became null
    assert data["benchmarks"][0]["result"]["details"] == {"nan": None}
    assert data["machine"]["cpu_model"] == "fake CPU" and data["quick"] is True
    md = (out / "report.md").read_text()
    assert "| step time | 2.00 | s | peer impl | 3.00 | 0.667 |  |  |  |" in md
    assert "| speed-up | 1.50 | x |  |  |  | >= 1.2x | met |  |" in md
    assert "this fake benchmark always fails" in md and "TIMED OUT" in md
    assert "not present: benchmarks/bench_synthetic.py is not present" in md
    assert "no such device here" in md and "| CPU | fake CPU |" in md
    assert "```\nwidgets/s 42 quick=True\n```" in md
    assert any("broken: failed" in line for line in lines)


def test_requested_missing_benchmark_fails(bench_dir: Path, tmp_path: Path) -> None:
    report = _suite.run_suite(["synthetic"], tmp_path / "r", machine={"created": "now"}, echo=lambda s: None,
                              requested=True, bench_dir=bench_dir)
    assert report["benchmarks"][0]["status"] == "failed" and report["exit_code"] == 1


def test_machine_info_without_peaks() -> None:
    info = _suite.machine_info(measure_peaks=False)
    for key in ("cpu_model", "cpu_cores", "torch", "torch_threads", "cuda", "created"):
        assert info[key], key
    assert "fp32_matmul_peak_gflops" not in info


def test_cli_list_and_unknown_name() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pretrain" in proc.stdout and "cuda" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nosuch"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "unknown benchmark(s) nosuch" in proc.stderr


def test_fourds_bench_command_lists(capfd: pytest.CaptureFixture) -> None:
    """``fourds bench`` runs benchmarks/_suite.py as a script: the package never imports the checkout's
    ``benchmarks`` folder."""
    from fourds.cli import main

    before = {m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")}
    assert main(["bench", "--list"]) == 0
    assert "extract" in capfd.readouterr().out
    assert {m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")} == before


def test_every_real_benchmark_is_runnable() -> None:
    """Each benchmarks/bench_*.py defines ``run(quick=...)``, or is a script the runner can execute
    (parsed, not imported: no heavy work). The ones of this suite's own registry all have ``run``."""
    files = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    assert {"bench_pretrain.py", "bench_data.py", "bench_extract.py", "bench_probe.py", "bench_cuda.py"} <= {
        f.name for f in files}
    for path in files:
        tree = ast.parse(path.read_text())
        runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
        if not runs:
            assert path.name not in {"bench_pretrain.py", "bench_data.py", "bench_extract.py", "bench_probe.py",
                                     "bench_cuda.py"}, f"{path.name} lost its run()"
            assert "__main__" in path.read_text(), f"{path.name} has neither run() nor a __main__ block"
            continue
        args = [a.arg for a in runs[0].args.args + runs[0].args.kwonlyargs]
        assert "quick" in args, f"{path.name}: run() takes no quick argument"
