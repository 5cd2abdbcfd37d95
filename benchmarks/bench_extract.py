"""``fourds extract`` speed and memory with 4DS-B on 16x224x224 clips (CPU, fp32), and the official import.

Each measurement runs in a fresh subprocess so its peak RSS is its own:

* ``extract``: a 4DS-B model folder (random weights: speed does not depend on them; the released files
  cannot be downloaded here) and an H.264 video of ``clips x 16`` frames at 320x240; the whole
  ``fourds extract MODEL VIDEO --layers 0.95,0.75`` command (decode, resize to 224x224, windows,
  forward, save safetensors) is timed after a warm-up run; the backbone forward alone is timed too.
* ``convert`` (full run only): a random ``.npz`` with exactly the key/shape layout of
  ``scaling4d_dist_b_depth.npz`` (420 MB), imported with ``fourds.convert.from_official_npz``.
* ``official`` (optional): ``--official-cmd "..."`` runs a command that times the official JAX encoder
  forward on the same machine and prints its output (e.g. a script around
  ``representations4d.models.model.Model`` with ``from_variant_str('B')``).

    python benchmarks/bench_extract.py [--quick] [--clips 4] [--official-cmd CMD]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import figure, peak_rss_mib, result  # noqa: E402

KEYS_B_DEPTH = ROOT / "tests" / "fixtures" / "official" / "keys_B_depth.txt"


def _peak_rss_mib() -> float:
    return peak_rss_mib()


def worker_extract(model: str, clips: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from fourds.cli import main as cli
    from fourds.inference import write_video
    from fourds.models import create, save_model

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone = create(model)
        save_model(backbone, tmp / "model")
        t, h, w = backbone.input_size
        rng = np.random.default_rng(0)
        write_video(tmp / "warm.mp4", rng.integers(0, 256, (t, 240, 320, 3), dtype=np.uint8), fps=25)
        write_video(tmp / "video.mp4", rng.integers(0, 256, (clips * t, 240, 320, 3), dtype=np.uint8), fps=25)
        del backbone
        base_rss = _peak_rss_mib()
        args = ["extract", str(tmp / "model"), "--layers", "0.95,0.75", "--no-progress", "--device", "cpu"]
        cli([*args[:2], str(tmp / "warm.mp4"), *args[2:], "--out", str(tmp / "out_warm")])
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            cli([*args[:2], str(tmp / "video.mp4"), *args[2:], "--out", str(tmp / f"out{r}")])
            times.append(time.perf_counter() - t0)
        # The backbone forward alone, on one clip.
        from fourds.models import load

        vit = load(tmp / "model")
        clip = torch.rand(1, t, h, w, 3)
        fwd = []
        with torch.inference_mode():
            vit.features(clip, [0.95, 0.75])
            for _ in range(repeats):
                t0 = time.perf_counter()
                vit.features(clip, [0.95, 0.75])
                fwd.append(time.perf_counter() - t0)
        out_bytes = (tmp / "out0" / "video.safetensors").stat().st_size
    best = min(times)
    return {
        "model": model, "clip": f"{t}x{h}x{w}", "clips": clips, "threads": torch.get_num_threads(),
        "extract_s": times, "extract_clips_per_s": clips / best,
        "extract_clips_per_s_median": clips / statistics.median(times),
        "forward_s_per_clip": min(fwd), "forward_s_per_clip_median": statistics.median(fwd),
        "peak_rss_mib": _peak_rss_mib(), "rss_before_extract_mib": base_rss,
        "output_mib_per_clip": out_bytes / clips / 2**20,
    }


def worker_make_npz(path: str) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    lines = KEYS_B_DEPTH.read_text().splitlines()[1:]
    arrays = {}
    for line in lines:
        key, shape = line.split("\t")
        arrays[key] = rng.standard_normal(ast.literal_eval(shape), dtype=np.float32) * 0.02
    np.savez(path, **arrays)
    return {"bytes": os.path.getsize(path), "keys": len(arrays)}


def worker_convert(path: str) -> dict:
    from fourds.convert import from_official_npz
    from fourds.models import count_parameters

    t0 = time.perf_counter()
    backbone, heads = from_official_npz(path)
    took = time.perf_counter() - t0
    return {"convert_s": took, "peak_rss_mib": _peak_rss_mib(),
            "params": count_parameters(backbone) + sum(count_parameters(h) for h in heads.values())}


def _subprocess(*argv: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, __file__, "--worker", *argv], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"benchmark worker {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(quick: bool = False, clips: int | None = None, official_cmd: str | None = None) -> dict:
    """Measure; returns a dict of raw figures (see the module docstring)."""
    model = "4ds-tiny" if quick else "4ds-b"
    clips = clips or (2 if quick else 4)
    result: dict = {
        "machine": f"{os.cpu_count()} CPU cores, shared with other jobs (timings are noisy)",
        "load_avg_at_start": os.getloadavg()[0],
        "extract": _subprocess("extract", model, str(clips), "1" if quick else "2"),
    }
    if not quick:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "b_depth.npz")
            made = _subprocess("make_npz", path)
            result["convert"] = {**_subprocess("convert", path), "npz_bytes": made["bytes"]}
    if official_cmd:
        t0 = time.perf_counter()
        proc = subprocess.run(official_cmd, shell=True, capture_output=True, text=True)
        result["official"] = {"cmd": official_cmd, "rc": proc.returncode, "wall_s": time.perf_counter() - t0,
                              "stdout": proc.stdout[-2000:]}
    result["load_avg_at_end"] = os.getloadavg()[0]
    return result


def run(quick: bool = False, context: dict | None = None) -> dict:
    """The benchmark-suite entry: :func:`measure` in the uniform result schema."""
    raw = measure(quick)
    e = raw["extract"]
    figs = [
        figure(f"fourds extract {e['model']} {e['clip']}: clips/s (best run)", e["extract_clips_per_s"], "clips/s",
               note=f"median {e['extract_clips_per_s_median']:.3g}"),
        figure("backbone forward alone", e["forward_s_per_clip"], "s/clip",
               note=f"median {e['forward_s_per_clip_median']:.3g}"),
        figure("peak RSS of the extract process", e["peak_rss_mib"], "MiB"),
        figure("features on disk (layers 0.95, 0.75)", e["output_mib_per_clip"], "MiB/clip"),
    ]
    if "convert" in raw:
        c = raw["convert"]
        figs += [figure(f"import of a scaling4d_dist_b_depth.npz-layout file ({c['npz_bytes'] / 2**20:,.0f} MiB)",
                        c["convert_s"], "s"),
                 figure("peak RSS of the import", c["peak_rss_mib"], "MiB")]
    notes = [f"Whole `fourds extract MODEL VIDEO --layers 0.95,0.75` command (decode, resize, windows, forward, "
             f"save) on a {e['clips']}-clip H.264 video, fp32, {e['threads']} threads, after a warm-up run; random "
             "weights (speed does not depend on them).",
             f"Load average {raw['load_avg_at_start']:.1f} at start, {raw['load_avg_at_end']:.1f} at end.",
             "No peer here: the official JAX forward can be timed with `python benchmarks/bench_extract.py "
             "--official-cmd ...` where JAX is installed."]
    if quick:
        notes.insert(0, "QUICK smoke run: 4ds-tiny, 2 clips, no import — plumbing only.")
    return result("extract", "Feature extraction (fourds extract) and official-checkpoint import", figs, notes, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4ds-tiny, 2 clips, no conversion (seconds)")
    parser.add_argument("--clips", type=int, default=None, help="16-frame clips in the benchmark video")
    parser.add_argument("--official-cmd", default=None, help="shell command timing the official JAX forward")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "extract":
            out = worker_extract(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "make_npz":
            out = worker_make_npz(rest[0])
        else:
            out = worker_convert(rest[0])
        print(json.dumps(out))
        return
    res = measure(args.quick, args.clips, args.official_cmd)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    e = res["extract"]
    print(f"{res['machine']}; load average {res['load_avg_at_start']:.1f} -> {res['load_avg_at_end']:.1f}")
    print(f"fourds extract, {e['model']}, {e['clip']} clips, fp32, {e['threads']} threads, layers 0.95,0.75:")
    print(f"  {e['extract_clips_per_s']:.3f} clips/s best ({e['extract_clips_per_s_median']:.3f} median) over "
          f"{e['clips']} clips; runs {['%.1f s' % t for t in e['extract_s']]}")
    print(f"  backbone forward alone: {e['forward_s_per_clip']:.3f} s/clip best "
          f"({e['forward_s_per_clip_median']:.3f} median)")
    print(f"  peak RSS {e['peak_rss_mib']:,.0f} MiB; features on disk {e['output_mib_per_clip']:.2f} MiB/clip")
    if "convert" in res:
        c = res["convert"]
        print(f"import of a scaling4d_dist_b_depth.npz-layout file ({c['npz_bytes'] / 2**20:,.0f} MiB, "
              f"{c['params']:,} parameters): {c['convert_s']:.1f} s, peak RSS {c['peak_rss_mib']:,.0f} MiB")
    if "official" in res:
        o = res["official"]
        print(f"official JAX forward (rc {o['rc']}, {o['wall_s']:.0f} s wall):\n{o['stdout']}")


if __name__ == "__main__":
    main()
