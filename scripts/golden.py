"""Golden outputs of a tiny pretrain, distill, frozen probe and finetune run (issue 19's safeguard).

With fixed seeds and one CPU thread the four runs are deterministic, so a refactor that does not change
behaviour must reproduce them bit for bit. ``record(out)`` runs them under ``out`` and returns a digest:

- ``tensors``: ``"run/relative/path.safetensors::key" -> "dtype shape sha256"`` for every final weight file
  (the exported model folders, the probe heads, the finetuned backbones; not the checkpoints);
- ``results``: each probe run's ``results.json`` with the output folder written as ``<OUT>``;
- ``curves``: the logged loss, learning rate and gradient norm of every step (timings dropped).

    python scripts/golden.py --write   # record tests/golden/golden.json (do this before a refactor)
    python scripts/golden.py           # check a fresh run against it; exit 1 with the differences

``--fixture DIR`` also keeps the run folders written by this code (model, readout and checkpoint folders)
so later code can be checked to still load them (tests/fixtures/pre_arch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "golden.json"
# The smallest 4DS backbone that still has two layers to probe (~18k parameters).
TINY = {"depth": 2, "dim": 16, "num_heads": 2, "mlp_dim": 32}
CLIP = dict(num_frames=4, image_size=32)
CURVE_KEYS = ("step", "loss", "lr", "grad_norm")


def _toy_task() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from probe_toy import ToyTask

    return ToyTask()


def run_all(out: Path) -> None:
    """The four runs, each a few steps on 4-frame 32x32 clips, seed 0."""
    from fourds.train import PretrainConfig, pretrain
    from fourds.train.distill import distill
    from fourds.train.distill import DistillConfig
    from fourds.probe.protocol import run_probe
    from fourds.probe.config import ProbeConfig

    torch.set_num_threads(1)
    model = pretrain(PretrainConfig(model="4ds-tiny", model_overrides=TINY, data="random", out=str(out / "pretrain"),
                                    batch_size=4, steps=4, warmup_steps=1, save_every=2, log_every=1, **CLIP))
    distill(DistillConfig(student="4ds-tiny", student_overrides=TINY, teacher=str(model), data="random",
                          out=str(out / "distill"), frame_stride=1, min_resize=1.0, batch_size=4, steps=3,
                          warmup_steps=1, save_every=3, log_every=1, flip=False, **CLIP))
    probe = dict(backbone=str(model), batch_size=4, warmup_steps=1, save_every=3, log_every=1, tensorboard=False)
    run_probe(ProbeConfig(out=str(out / "frozen"), steps=3, lrs=[1e-3, 3e-3], layers=[1, 2], **probe), task=_toy_task())
    run_probe(ProbeConfig(out=str(out / "finetune"), finetune=True, steps=3, lrs=[1e-3], layers=[2],
                          weight_decays=[1e-4], **probe), task=_toy_task())


def _tensor_digest(t: torch.Tensor) -> str:
    data = t.contiguous().view(torch.uint8) if t.numel() else t
    return f"{t.dtype} {list(t.shape)} {hashlib.sha256(data.numpy().tobytes()).hexdigest()}"


def _relative(obj: Any, out: str) -> Any:
    if isinstance(obj, dict):
        return {k: _relative(v, out) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, out) for v in obj]
    return obj.replace(out, "<OUT>") if isinstance(obj, str) else obj


def digest(out: Path) -> dict[str, Any]:
    """The digest of the run folders under ``out`` (see the module docstring)."""
    tensors: dict[str, str] = {}
    for path in sorted(out.rglob("*.safetensors")):
        rel = path.relative_to(out).as_posix()
        if "checkpoints/" in rel:
            continue
        for key, value in sorted(load_file(str(path)).items()):
            tensors[f"{rel}::{key}"] = _tensor_digest(value)
    results = {p.relative_to(out).as_posix(): _relative(json.loads(p.read_text()), str(out))
               for p in sorted(out.rglob("result*.json"))}
    curves = {}
    for path in sorted(out.rglob("metrics.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        curves[path.relative_to(out).as_posix()] = [
            {k: v for k, v in row.items() if k in CURVE_KEYS or k.startswith("loss_")} for row in rows]
    return {"tensors": tensors, "results": results, "curves": curves}


def record(out: Path) -> dict[str, Any]:
    """Run the four runs under ``out`` (must not exist or be empty) and return their digest."""
    run_all(out)
    return digest(out)


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Human-readable paths where two digests differ (exact comparison, floats included)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}/{k}: missing" for k in expected.keys() - actual.keys()]
        out += [f"{where}/{k}: unexpected" for k in actual.keys() - expected.keys()]
        for k in sorted(expected.keys() & actual.keys()):
            out += differences(expected[k], actual[k], f"{where}/{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (a, b) in enumerate(zip(expected, actual)) for d in differences(a, b, f"{where}[{i}]")]
    return [] if expected == actual else [f"{where}: {expected!r} != {actual!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"record {GOLDEN.relative_to(ROOT)}")
    parser.add_argument("--fixture", type=Path, help="also keep the run folders here (pre-refactor fixtures)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "golden"
        got = record(out)
        if args.fixture:
            shutil.rmtree(args.fixture, ignore_errors=True)
            shutil.copytree(out, args.fixture, ignore=shutil.ignore_patterns("tb", ".lock", "*.jsonl"))
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN} ({len(got['tensors'])} tensors)")
        return 0
    diff = differences(json.loads(GOLDEN.read_text()), got)
    print("\n".join(diff[:50]) if diff else f"golden outputs match ({len(got['tensors'])} tensors)")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
