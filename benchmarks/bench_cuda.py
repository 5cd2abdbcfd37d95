"""CUDA throughput in bf16 and model FLOPs utilisation (MFU); skipped cleanly without a CUDA device.

On the first CUDA device, in bf16 autocast (fp32 master weights and loss) with fused SDPA kernels only
(flash / memory-efficient / cuDNN; the unfused math path is disallowed, so a configuration it would
need fails loudly), each configuration in its own process (a failing worker's stderr tail is printed):

- ``pretrain``: one SimpleMAE optimiser step (95% masking, fused AdamW, activation checkpointing off) of
  4DS-S, 4DS-B and 4DS-L at 16x224x224 and fixed batch sizes, next to Hugging Face
  ``VideoMAEForPreTraining`` of 4DS-B's encoder size (same batch, 95% masking, bf16); model FLOPs from
  ``fourds.train.device_step.mae_train_flops`` (3x the counted forward) and from the dispatcher's counter;
- ``forward``: the frozen 4DS-B encoder forward (``features`` at depth 0.95 and 0.75, as
  ``fourds extract``) under ``torch.inference_mode``;
- ``loop``: the real ``fourds pretrain`` loop on the demo's 4ds-micro (16x64x64, 2x8x8 tubelets, batch
  128, random clips from 8 loader workers, a checkpoint every 100 steps): loop steps/s over the wall
  clock (data, logging and saves included) next to the step timer's, and the slow-down of each logging
  window that contains a checkpoint save against its neighbours.

MFU = achieved model FLOP/s / the device's nominal dense bf16 peak, from ``fourds.train.device_step``'s table
by device name (H100/H200 989 TFLOP/s, A100 312, ...) or ``--bf16-peak-tflops``; the fraction of the
bf16 matmul peak measured in the same run (8192^3) is reported too.

    python benchmarks/bench_cuda.py [--quick] [--bf16-peak-tflops 989] [--only pretrain,forward,loop]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import figure, result, skipped  # noqa: E402

TITLE = "CUDA bf16 throughput and MFU (pretraining step vs HF, encoder forward)"
CLIP = (16, 224, 224)


def nominal_peak(override_tflops: float | None = None) -> tuple[float | None, str]:
    """The device's dense bf16 peak (FLOP/s) and where it came from."""
    if override_tflops:
        return override_tflops * 1e12, "--bf16-peak-tflops"
    from fourds.train.device_step import peak_flops

    peak = peak_flops(torch.device("cuda"))
    name = torch.cuda.get_device_name()
    if peak is None:
        return None, f"{name!r} is not in fourds.train.device_step's table: pass --bf16-peak-tflops for MFU"
    return peak, f"data-sheet value for {name!r} (fourds.train.device_step; override with --bf16-peak-tflops)"


def worker_forward(model: str, batch: int, steps: int) -> dict:
    """Frozen encoder forward in bf16 autocast, in this process."""
    from benchmarks.bench_pretrain import _fused_sdpa
    from fourds.models import create
    from fourds.train.device_step import flop_counter

    torch.manual_seed(0)
    net = create(model, input_size=CLIP).cuda().eval()
    video = torch.rand(batch, *CLIP, 3, device="cuda")
    layers = [0.95, 0.75]
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16), _fused_sdpa():
        with flop_counter() as counter:
            net.features(video, layers)
        flops = counter.get_total_flops()
        for _ in range(2):
            net.features(video, layers)
        torch.cuda.synchronize()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            net.features(video, layers)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"model": model, "batch": batch, "step_s": sec, "clips_per_s": batch / sec, "gflop": flops / 1e9,
            "achieved_gflops": flops / sec / 1e9, "peak_cuda_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "device_name": torch.cuda.get_device_name()}


#: (model, batch) of the pretraining-step rows; activation checkpointing off (all fit on an 80 GB GPU at
#: 95% masking). HF VideoMAEForPreTraining runs beside the 4DS-B row.
PRETRAIN_ROWS = (("4ds-s", 64), ("4ds-b", 64), ("4ds-l", 32))
QUICK_ROWS = (("4ds-s", 16), ("4ds-b", 16))
HF_BESIDE = "4ds-b"


def stderr_tail(text: str | None, lines: int = 25) -> str:
    """The last ``lines`` lines of a worker's stderr, for an error that shows the worker's own cause."""
    tail = (text or "").strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(no output on stderr)"


def spawn_json(cmd: list[str], what: str, timeout: float = 900) -> dict:
    """Run a worker process and parse the JSON object on its last stdout line.

    A worker that fails, times out or prints no JSON gives ``{"error": ...}`` with its exit status and
    stderr tail (printed to this process's stderr as well), instead of a bare ``CalledProcessError``.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        msg = f"{what}: worker timed out after {timeout:.0f} s\n{stderr_tail(err.stderr if isinstance(err.stderr, str) else None)}"
        print(msg, file=sys.stderr)
        return {"error": msg}
    if out.returncode != 0:
        msg = f"{what}: worker exited with status {out.returncode}; its stderr ends with:\n{stderr_tail(out.stderr)}"
        print(msg, file=sys.stderr)
        return {"error": msg}
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        msg = f"{what}: worker printed no JSON result; stderr ends with:\n{stderr_tail(out.stderr)}"
        print(msg, file=sys.stderr)
        return {"error": msg}


def _spawn_forward(model: str, batch: int, steps: int) -> dict:
    return spawn_json([sys.executable, __file__, "--worker", model, str(batch), str(steps)], f"{model} forward batch {batch}")


def _spawn_step(kind: str, model: str, batch: int, steps: int) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_pretrain.py"), "--worker", kind, "--model", model,
           "--batches", str(batch), "--steps", str(steps), "--warmup", "3", "--clip", "x".join(map(str, CLIP)),
           "--device", "cuda", "--precision", "bf16"]
    return spawn_json(cmd, f"{kind} {model} batch {batch} pretraining step")


def _rates(r: dict, measured: float, nominal: float | None) -> None:
    """Add TFLOP/s, MFU and the fraction of the measured matmul peak to a worker's result, in place."""
    if "achieved_gflops" not in r:
        return
    r["achieved_tflops"] = r["achieved_gflops"] / 1e3
    r["fraction_of_matmul_peak"] = r["achieved_gflops"] * 1e9 / measured
    if nominal:
        r["mfu"] = r["achieved_gflops"] * 1e9 / nominal
    if "mae_train_gflop" in r:
        r["mae_train_tflops"] = r["mae_train_gflop"] / r["step_s"] / 1e3
        if nominal:
            r["mae_train_mfu"] = r["mae_train_gflop"] * 1e9 / r["step_s"] / nominal


#: The demo's GPU pretraining configuration: 4ds-micro with 2x8x8 tubelets at 16x64x64, batch 128.
LOOP_MODEL = ["--model", "4ds-micro", "--model-overrides", "input_size=[16,64,64]", "--model-overrides", "patch_size=[2,8,8]"]


def loop_command(out: Path, steps: int, log_every: int, save_every: int, workers: int) -> list[str]:
    """``fourds pretrain`` of the demo's micro configuration on random clips, bf16 on CUDA."""
    return [sys.executable, "-m", "fourds", "pretrain", *LOOP_MODEL, "--data", "random", "--num-frames", "16",
            "--image-size", "64", "--min-resize", "1.0", "--max-resize", "1.0", "--batch-size", "128",
            "--steps", str(steps), "--warmup-steps", "10", "--log-every", str(log_every), "--save-every",
            str(save_every), "--num-workers", str(workers), "--device", "cuda", "--precision", "bf16",
            "--out", str(out)]


def loop_windows(records: list[dict], save_every: int) -> dict:
    """Loop throughput from a run's ``metrics.jsonl`` records (one per logging window).

    Returns the median loop and step-timer steps/s over windows without a save, and for each window
    that contains a save (its last step is a multiple of ``save_every``: the save runs before the next
    window starts, so it lands in the *next* window) the ratio of its wall time per step to the median
    of its two neighbours.
    """
    import statistics as st

    windows = [r for r in records if "loop_step_time_s" in r][1:]  # the first window holds the warm-up
    if len(windows) < 3:
        return {"error": f"only {len(windows)} logging windows after warm-up"}
    saved_before = {i for i, r in enumerate(windows) if i > 0 and windows[i - 1]["step"] % save_every == 0}
    plain = [w for i, w in enumerate(windows) if i not in saved_before]
    out = {"windows": len(windows), "loop_steps_per_s": 1.0 / st.median(w["loop_step_time_s"] for w in plain),
           "step_timer_steps_per_s": 1.0 / st.median(w["step_time_s"] for w in plain),
           "data_time_s": st.median(w["data_time_s"] for w in plain), "save_windows": []}
    for i in sorted(saved_before):
        neighbours = [windows[j]["loop_step_time_s"] for j in (i - 1, i + 1) if 0 <= j < len(windows) and j not in saved_before]
        if neighbours:
            out["save_windows"].append({"step": windows[i]["step"],
                                        "slowdown": windows[i]["loop_step_time_s"] / st.median(neighbours) - 1.0})
    out["worst_save_slowdown"] = max((w["slowdown"] for w in out["save_windows"]), default=None)
    return out


def measure_loop(quick: bool) -> dict:
    """Run the demo's micro pretraining loop and summarise its logging windows (see :func:`loop_windows`)."""
    import tempfile

    steps, log_every, save_every = (120, 20, 40) if quick else (600, 25, 100)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = loop_command(out, steps, log_every, save_every, workers=8)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            msg = f"fourds pretrain (demo micro loop) exited with status {proc.returncode}; stderr ends with:\n{stderr_tail(proc.stderr)}"
            print(msg, file=sys.stderr)
            return {"error": msg, "command": " ".join(cmd)}
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    res = loop_windows(records, save_every)
    res.update({"steps": steps, "log_every": log_every, "save_every": save_every, "batch": 128,
                "process_wall_s": wall, "command": " ".join(cmd)})
    return res


def measure(quick: bool = False, bf16_peak_tflops: float | None = None, only: tuple[str, ...] = ("pretrain", "forward", "loop")) -> dict:
    """Everything on CUDA; the caller has checked that CUDA is available."""
    from benchmarks._suite import cuda_matmul_peak
    from fourds.train.device_step import mae_train_flops

    steps = 5 if quick else 10
    measured = cuda_matmul_peak(4096 if quick else 8192)
    nominal, source = nominal_peak(bf16_peak_tflops)
    res: dict = {"device": torch.cuda.get_device_name(), "bf16_matmul_peak_tflops": measured / 1e12,
                 "bf16_nominal_peak_tflops": nominal / 1e12 if nominal else None, "nominal_peak_source": source,
                 "steps": steps, "pretrain": [], "forward": [], "loop": None}
    if "pretrain" in only:
        for model, batch in (QUICK_ROWS if quick else PRETRAIN_ROWS):
            ours = _spawn_step("fourds", model, batch, steps)
            if "error" not in ours:
                ours["mae_train_gflop"] = mae_train_flops(model, {"input_size": list(CLIP)}, batch) / 1e9
            _rates(ours, measured, nominal)
            row = {"model": model, "batch": batch, "fourds": ours}
            if model == HF_BESIDE:
                row["hf"] = _spawn_step("hf", model, batch, steps)
                _rates(row["hf"], measured, nominal)
            res["pretrain"].append(row)
    if "forward" in only:
        for batch in ((8,) if quick else (8, 32)):
            f = _spawn_forward("4ds-b", batch, steps)
            _rates(f, measured, nominal)
            res["forward"].append({"batch": batch, **f})
    if "loop" in only:
        res["loop"] = measure_loop(quick)
    return res


def _figures(raw: dict) -> list:
    figs = [figure("bf16 matmul peak (8192^3, measured)", raw["bf16_matmul_peak_tflops"], "TFLOP/s"),
            figure("bf16 nominal peak", raw["bf16_nominal_peak_tflops"], "TFLOP/s", note=raw["nominal_peak_source"])]
    for row in raw["pretrain"]:
        tag = f"{row['model']} batch {row['batch']} pretraining step"
        ours, hf = row["fourds"], row.get("hf") or {}
        if "error" in ours:
            figs.append(figure(f"{tag}: FAILED", None, "", note=ours["error"][-600:]))
            continue
        figs += [figure(f"{tag}: clips/s", ours["clips_per_s"], "clips/s", peer=hf.get("clips_per_s"),
                        peer_name="HF VideoMAEForPreTraining" if hf else None),
                 figure(f"{tag}: achieved (counted model FLOPs)", ours["achieved_tflops"], "TFLOP/s",
                        peer=hf.get("achieved_tflops"), peer_name="HF VideoMAEForPreTraining" if hf else None),
                 figure(f"{tag}: peak CUDA memory", ours.get("peak_cuda_mem_gib"), "GiB", peer=hf.get("peak_cuda_mem_gib"),
                        peer_name="HF VideoMAEForPreTraining" if hf else None),
                 figure(f"{tag}: fraction of measured bf16 matmul peak", 100 * ours["fraction_of_matmul_peak"], "%")]
        if "mfu" in ours:
            goal = {"4ds-l": 45.0, "4ds-b": 35.0}.get(row["model"])
            figs.append(figure(f"{tag}: MFU", 100 * ours["mfu"], "%",
                               peer=100 * hf["mfu"] if "mfu" in hf else None, peer_name="HF VideoMAEForPreTraining" if hf else None,
                               goal=f">= {goal:.0f}%" if goal else None, met=100 * ours["mfu"] >= goal if goal else None))
        if hf and "achieved_tflops" in hf:
            figs.append(figure(f"{tag}: achieved TFLOP/s above HF's", ours["achieved_tflops"] / hf["achieved_tflops"], "x",
                               goal="> 1", met=ours["achieved_tflops"] > hf["achieved_tflops"]))
        if "mae_train_mfu" in ours:
            figs.append(figure(f"{tag}: MFU with mae_train_flops", 100 * ours["mae_train_mfu"], "%"))
        if hf and "error" in hf:
            figs.append(figure(f"{tag}: HF FAILED", None, "", note=hf["error"][-600:]))
    for f in raw["forward"]:
        tag = f"4ds-b forward batch {f['batch']}"
        if "error" in f:
            figs.append(figure(f"{tag}: FAILED", None, "", note=f["error"][-600:]))
            continue
        figs += [figure(f"{tag}: clips/s", f["clips_per_s"], "clips/s"),
                 figure(f"{tag}: peak CUDA memory", f["peak_cuda_mem_gib"], "GiB"),
                 figure(f"{tag}: achieved", f["achieved_tflops"], "TFLOP/s"),
                 figure(f"{tag}: fraction of measured bf16 matmul peak", 100 * f["fraction_of_matmul_peak"], "%")]
        if "mfu" in f:
            figs.append(figure(f"{tag}: MFU", 100 * f["mfu"], "%"))
    loop = raw.get("loop")
    if loop:
        if "error" in loop:
            figs.append(figure("4ds-micro demo loop: FAILED", None, "", note=loop["error"][-600:]))
        else:
            figs += [figure("4ds-micro demo loop (16x64x64, 2x8x8, batch 128): loop steps/s (wall clock)",
                            loop["loop_steps_per_s"], "steps/s", peer=loop["step_timer_steps_per_s"], peer_name="step timer",
                            goal=">= 40", met=loop["loop_steps_per_s"] >= 40),
                     figure("4ds-micro demo loop: data wait per step", 1e3 * loop["data_time_s"], "ms")]
            if loop["worst_save_slowdown"] is not None:
                figs.append(figure("4ds-micro demo loop: worst logging window with a save vs its neighbours",
                                   100 * loop["worst_save_slowdown"], "%", goal="<= 10%",
                                   met=loop["worst_save_slowdown"] <= 0.10))
    return figs


def run(quick: bool = False, context: dict | None = None, bf16_peak_tflops: float | None = None,
        only: tuple[str, ...] = ("pretrain", "forward", "loop")) -> dict:
    """The benchmark-suite entry; a ``skipped`` result on a machine without CUDA."""
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built with CUDA {torch.version.cuda}"
        return skipped("cuda", TITLE, f"no CUDA device here (torch.cuda.is_available() is False; torch "
                       f"{torch.__version__}, {build}); run the same command on a CUDA machine (docs/benchmarks.md)")
    override = bf16_peak_tflops or ((context or {}).get("options") or {}).get("bf16_peak_tflops")
    raw = measure(quick, override, only)
    notes = [f"{raw['device']}, bf16 autocast (fp32 weights and loss), fused SDPA only, 16x224x224; median of "
             f"{raw['steps']} timed steps after warm-up; each configuration in its own process.",
             "MFU = model FLOP/s / nominal dense bf16 peak; 'fraction of measured bf16 matmul peak' uses the "
             "matmul measured here. Model FLOPs: the dispatcher's count of one step (attention backward as "
             "2x forward), and 'with mae_train_flops' = 3x the counted forward."]
    if quick:
        notes.insert(0, "QUICK run: 4ds-s and 4ds-b at batch 16, 5 steps; a 120-step loop.")
    return result("cuda", TITLE, _figures(raw), notes, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and steps (about a minute)")
    parser.add_argument("--bf16-peak-tflops", type=float, default=None, help="override the nominal bf16 peak")
    parser.add_argument("--only", default="pretrain,forward,loop", help="comma-separated parts to run")
    parser.add_argument("--out", default=None, help="also write the JSON result to this file")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, batch, steps = args.worker
        print(json.dumps(worker_forward(model, int(batch), int(steps))))
        return
    res = run(args.quick, None, args.bf16_peak_tflops, tuple(p.strip() for p in args.only.split(",") if p.strip()))
    text = json.dumps(res, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
