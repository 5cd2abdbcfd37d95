"""bench_cuda's CPU-checkable parts: worker failures show their own error, the loop-window analysis,
the loop command's flags, and a clean skip without CUDA."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_cuda  # noqa: E402


def test_a_failing_worker_reports_its_stderr_tail_not_a_bare_called_process_error(capsys):
    cmd = [sys.executable, "-c", "import sys; print('line1', file=sys.stderr); "
                                 "sys.stderr.write('ValueError: the real cause\\n'); sys.exit(3)"]
    res = bench_cuda.spawn_json(cmd, "fourds 4ds-b batch 8 pretraining step")
    assert "status 3" in res["error"] and "ValueError: the real cause" in res["error"]
    assert "the real cause" in capsys.readouterr().err
    assert bench_cuda.spawn_json([sys.executable, "-c", "print('{\"a\": 1}')"], "ok") == {"a": 1}
    assert "no JSON" in bench_cuda.spawn_json([sys.executable, "-c", "print('hello')"], "x")["error"]


def _records(times: dict[int, float], steps: int, every: int) -> list[dict]:
    return [{"step": s, "loop_step_time_s": times.get(s, 0.02), "step_time_s": 0.01, "data_time_s": 0.001}
            for s in range(every, steps + 1, every)]


def test_loop_windows_find_the_window_after_each_save_and_compare_it_with_its_neighbours():
    # log every 10 steps, save every 20: the save after step 20 lands in the window ending at step 30.
    recs = _records({30: 0.03, 70: 0.021}, steps=100, every=10)
    res = bench_cuda.loop_windows(recs, save_every=20)
    by_step = {w["step"]: w["slowdown"] for w in res["save_windows"]}
    assert by_step[30] == pytest.approx(0.5) and by_step[70] == pytest.approx(0.05)
    assert res["worst_save_slowdown"] == pytest.approx(0.5)
    assert res["loop_steps_per_s"] == pytest.approx(50.0) and res["step_timer_steps_per_s"] == pytest.approx(100.0)


def test_the_loop_command_is_a_valid_fourds_pretrain_command():
    from fourds.cli import build_parser

    cmd = bench_cuda.loop_command(Path("/tmp/x"), 10, 5, 5, workers=2)
    args = build_parser().parse_args(cmd[3:])  # drop "python -m fourds"
    assert args.batch_size == 128 and args.device == "cuda" and args.precision == "bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_benchmark_is_skipped_with_a_reason():
    res = bench_cuda.run(quick=True)
    assert "no CUDA device" in res["skipped"]
