"""CUDA throughput in bf16 and model FLOPs utilisation (MFU); skipped cleanly without a CUDA device.

On the first CUDA device, in bf16 autocast with fused SDPA kernels only (cuDNN / flash /
memory-efficient; the unfused math path is disallowed, so a configuration it would need fails loudly):

- ``pretrain``: one SimpleMAE optimiser step of 4DS-S and 4DS-B at 16x224x224 (95% masking, fused
  AdamW, fp32 master weights) vs Hugging Face ``VideoMAEForPreTraining`` of the same encoder size, same
  settings as ``bench_pretrain.py`` (its worker, in a fresh process per configuration);
- ``forward``: the frozen 4DS-B encoder forward (``features`` at depth 0.95 and 0.75, as
  ``fourds extract``) under ``torch.inference_mode``.

FLOPs are counted with ``torch.utils.flop_counter`` (model FLOPs: matmuls, convolutions, attention).
MFU = achieved FLOP/s / the device's nominal dense bf16 peak, from ``fourds.train.flops``'s table by
device name (H100/H200 989 TFLOP/s, A100 312, ...) or ``--bf16-peak-tflops``; the fraction of the bf16
matmul peak measured here (8192^3) is reported too.

    python benchmarks/bench_cuda.py [--quick] [--bf16-peak-tflops 989] [--batches 8,32]
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
    from fourds.train.flops import peak_flops

    peak = peak_flops(torch.device("cuda"))
    name = torch.cuda.get_device_name()
    if peak is None:
        return None, f"{name!r} is not in fourds.train.flops's table: pass --bf16-peak-tflops for MFU"
    return peak, f"data-sheet value for {name!r} (fourds.train.flops; override with --bf16-peak-tflops)"


def worker_forward(model: str, batch: int, steps: int) -> dict:
    """Frozen encoder forward in bf16 autocast, in this process."""
    from benchmarks.bench_pretrain import _fused_sdpa
    from fourds.models import create
    from fourds.train.flops import flop_counter

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


def _spawn_forward(model: str, batch: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, __file__, "--worker", model, str(batch), str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(quick: bool = False, bf16_peak_tflops: float | None = None, batches: tuple[int, ...] | None = None) -> dict:
    """Everything on CUDA; the caller has checked that CUDA is available."""
    from benchmarks import bench_pretrain
    from benchmarks._suite import cuda_matmul_peak

    models = ("4ds-s",) if quick else ("4ds-s", "4ds-b")
    batches = batches or ((8,) if quick else (8, 32))
    steps = 5 if quick else 10
    measured = cuda_matmul_peak(4096 if quick else 8192)
    nominal, source = nominal_peak(bf16_peak_tflops)
    raw = bench_pretrain.measure(False, models, batches, rounds=1, steps=steps, warmup=3, device="cuda",
                                 precision="bf16", clip=CLIP)
    for row in raw["rows"]:
        for r in (row["fourds"], row["hf"]):
            if "achieved_gflops" in r:
                r["fraction_of_matmul_peak"] = r["achieved_gflops"] * 1e9 / measured
                if nominal:
                    r["mfu"] = r["achieved_gflops"] * 1e9 / nominal
    fwd = []
    for batch in batches:
        f = _spawn_forward("4ds-b", batch, steps)
        f["fraction_of_matmul_peak"] = f["achieved_gflops"] * 1e9 / measured
        if nominal:
            f["mfu"] = f["achieved_gflops"] * 1e9 / nominal
        fwd.append(f)
    return {"device": torch.cuda.get_device_name(), "bf16_matmul_peak_tflops": measured / 1e12,
            "bf16_nominal_peak_tflops": nominal / 1e12 if nominal else None, "nominal_peak_source": source,
            "pretrain": raw, "forward": fwd, "steps": steps}


def run(quick: bool = False, context: dict | None = None, bf16_peak_tflops: float | None = None,
        batches: tuple[int, ...] | None = None) -> dict:
    """The benchmark-suite entry; a ``skipped`` result on a machine without CUDA."""
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built with CUDA {torch.version.cuda}"
        return skipped("cuda", TITLE, f"no CUDA device here (torch.cuda.is_available() is False; torch "
                       f"{torch.__version__}, {build}); run the same command on a CUDA machine (docs/benchmarks.md)")
    from benchmarks.bench_pretrain import figures_for_rows

    override = bf16_peak_tflops or ((context or {}).get("options") or {}).get("bf16_peak_tflops")
    raw = measure(quick, override, batches)
    figs = [figure("bf16 matmul peak (8192^3, measured)", raw["bf16_matmul_peak_tflops"], "TFLOP/s"),
            figure("bf16 nominal peak", raw["bf16_nominal_peak_tflops"], "TFLOP/s", note=raw["nominal_peak_source"])]
    rows = raw["pretrain"]["rows"]
    figs += figures_for_rows(rows, "fraction_of_matmul_peak", "measured bf16 matmul peak", None, tera=True)
    for row in rows:
        ours, hf = row["fourds"], row["hf"]
        if "mfu" in ours:
            figs.append(figure(f"{row['model']} batch {row['batch']}: MFU (pretraining step)", 100 * ours["mfu"], "%",
                               peer=100 * hf["mfu"] if "mfu" in hf else None, peer_name="HF VideoMAEForPreTraining"))
    for f in raw["forward"]:
        tag = f"4ds-b forward batch {f['batch']}"
        figs += [figure(f"{tag}: clips/s", f["clips_per_s"], "clips/s"),
                 figure(f"{tag}: peak CUDA memory", f["peak_cuda_mem_gib"], "GiB"),
                 figure(f"{tag}: achieved", f["achieved_gflops"] / 1e3, "TFLOP/s"),
                 figure(f"{tag}: fraction of measured bf16 matmul peak", 100 * f["fraction_of_matmul_peak"], "%")]
        if "mfu" in f:
            figs.append(figure(f"{tag}: MFU", 100 * f["mfu"], "%"))
    notes = [f"{raw['device']}, bf16 autocast (fp32 weights and loss), fused SDPA only, 16x224x224; median of "
             f"{raw['steps']} timed steps after warm-up; each configuration in its own process.",
             "MFU = counted model FLOP/s / nominal dense bf16 peak; 'fraction of measured bf16 matmul peak' uses "
             "the 8192^3 matmul measured here."]
    if quick:
        notes.insert(0, "QUICK run: 4ds-s only, batch 8, 5 steps.")
    return result("cuda", TITLE, figs, notes, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bf16-peak-tflops", type=float, default=None, help="override the nominal bf16 peak")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 8,32)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, batch, steps = args.worker
        print(json.dumps(worker_forward(model, int(batch), int(steps))))
        return
    batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else None
    res = run(args.quick, None, args.bf16_peak_tflops, batches)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
