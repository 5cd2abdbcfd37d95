"""Sweep cost of the frozen probe: K = 6 readouts on one backbone pass vs K = 1, 4DS-B at 16x224x224.

Runs the real probe loop (:func:`fourds.probe.run_probe`, frozen, on random clips) and reads the
per-step times it logs (``metrics.jsonl``, ``step_time_s``), skipping the first (warm-up) step. K = 6 is
3 learning rates x 2 layers (0.75 and 0.95 depth), so the backbone runs to the same depth as K = 1
(layer 0.95). Two readouts from the paper's Table 6, built at 4DS-B's width:

- ``ssv2``: the single-query classification readout (768 channels, 12 heads, 1 learned query, 174
  classes); goal: K = 6 costs at most 1.5x K = 1 (the backbone dominates);
- ``depth``: the dense ScanNet readout (1024 channels, 16 heads, one learned query per 2x8x8 patch =
  6272 queries, 128 outputs each); reported: the heads dominate there, so the ratio approaches K.

The backbone's share is measured by timing its ``features`` calls inside the loop. On a shared CPU the
absolute figures are noisy; the ratio is the point.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fourds.models import create
from fourds.readouts import AttentionReadout
from fourds.probe.protocol import run_probe
from fourds.probe.config import ProbeConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._report import figure, result  # noqa: E402

CLIP = (16, 224, 224)
QUICK_CLIP = (16, 64, 64)


class _Readout(nn.Module):
    def __init__(self, kind: str, dim: int, clip: tuple[int, int, int] = CLIP, width_scale: int = 1) -> None:
        super().__init__()
        if kind == "ssv2":
            self.net = AttentionReadout(dim, 768 // width_scale, 12 // width_scale, 174, num_queries=1, steps=clip[0])
        else:
            self.net = AttentionReadout(dim, 1024 // width_scale, 16 // width_scale, 128,
                                        num_queries=clip[0] // 2 * (clip[1] // 8) * (clip[2] // 8), steps=clip[0])
        self.kind = kind

    def forward(self, features: Tensor, batch: dict) -> Tensor:
        out = self.net(features)
        return out[:, 0] if self.kind == "ssv2" else out


class _Clips:
    def __init__(self, n: int, clip: tuple[int, int, int] = CLIP) -> None:
        self.n, self.clip = n, clip

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"video": torch.randint(0, 256, (*self.clip, 3), dtype=torch.uint8, generator=g),
                "label": torch.tensor(i % 174)}


class BenchTask:
    """Random clips with a classification (ssv2) or dense regression (depth) readout of Table 6's shape."""

    layer_fraction = 0.95
    frame_stride = 2
    primary_metric = "loss"

    def __init__(self, kind: str, clip: tuple[int, int, int] = CLIP, width_scale: int = 1) -> None:
        from fourds.metrics import MetricSpec

        self.kind, self.name, self.clip, self.width_scale = kind, f"bench_{kind}", clip, width_scale
        self.num_frames, self.input_size, self.readout_steps = clip[0], clip[1:], clip[0]
        self.metric_specs = {"loss": MetricSpec("loss", "lower", "mean")}

    def dataset(self, split: str, **kw) -> _Clips:
        return _Clips(4, self.clip)

    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module:
        return _Readout(self.kind, dim, self.clip, self.width_scale)

    def loss(self, outputs: Tensor, batch: dict) -> Tensor:
        if self.kind == "ssv2":
            return F.cross_entropy(outputs, batch["label"])
        return outputs.pow(2).mean()

    def metrics(self, outputs: Tensor, batch: dict) -> dict[str, Tensor]:
        if self.kind == "ssv2":
            return {"loss": F.cross_entropy(outputs, batch["label"], reduction="none")}
        return {"loss": outputs.pow(2).flatten(1).mean(1)}

    def train_transform(self, sample: dict, generator: torch.Generator) -> dict:
        return sample

    def eval_transform(self, sample: dict) -> dict:
        return sample

    def evaluate_clips(self, sample: dict) -> list[dict]:
        return [sample]


class _TimedBackbone(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seconds = inner, []
        for attr in ("num_layers", "dim", "patch_size", "input_size", "grid"):
            setattr(self, attr, getattr(inner, attr))

    def token_grid(self, shape):  # noqa: ANN001, ANN201
        return self.inner.token_grid(shape)

    def features(self, video: Tensor, layers=None):  # noqa: ANN001, ANN201
        t0 = time.perf_counter()
        out = self.inner.features(video, layers)
        self.seconds.append(time.perf_counter() - t0)
        return out


def measure(kind: str, k: int, backbone: nn.Module, steps: int, batch: int, clip: tuple[int, int, int] = CLIP,
            model: str = "4ds-b", sweep_layers: tuple[float, float] = (0.75, 0.95), width_scale: int = 1) -> dict:
    lrs, layers = ([1e-4], [0.95]) if k == 1 else ([1e-4, 3e-4, 1e-3], list(sweep_layers))
    timed = _TimedBackbone(backbone)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ProbeConfig(backbone=model, out=tmp, steps=steps, batch_size=batch, warmup_steps=1, lrs=lrs,
                          layers=layers, select_on="eval", max_eval_samples=1, eval_batch_size=1, log_every=1,
                          save_every=10_000, tensorboard=False, device="cpu", precision="fp32")
        res = run_probe(cfg, backbone=timed, task=BenchTask(kind, clip, width_scale))
        times = [json.loads(line)["step_time_s"] for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    assert len(res["configs"]) == k and res["backbone_forward_calls"]["train"] == steps
    step = statistics.median(times[1:])
    backbone_s = statistics.median(timed.seconds[1:steps])
    return {"step_s": step, "backbone_s": backbone_s, "heads_s": step - backbone_s,
            "forward_calls": res["backbone_forward_calls"]["train"], "steps": steps}


def measure_all(quick: bool = False, steps: int | None = None, batch: int | None = None,
                depth_steps: int | None = None) -> dict:
    """K = 6 vs K = 1 step time for the ssv2 and depth readouts; returns the raw figures.

    Steps per configuration: ``steps`` (default 3: a warm-up and 2 timed) for the ssv2 readout, whose
    ratio has a goal, and ``depth_steps`` (default 2: 1 timed) for the dense one, reported only and 3x
    dearer per step. ``quick``: a smoke run of the plumbing (4ds-tiny at 16x64x64, readouts 4x narrower).
    """
    torch.manual_seed(0)
    # 4ds-tiny has 4 blocks, where 0.75 and 0.95 are the same layer: sweep 0.5 / 0.95 there.
    model, clip, sweep = ("4ds-tiny", QUICK_CLIP, (0.5, 0.95)) if quick else ("4ds-b", CLIP, (0.75, 0.95))
    scale = 4 if quick else 1
    steps = steps or 3
    depth_steps = depth_steps or min(steps, 2)
    batch = batch or 1
    backbone = create(model, input_size=clip).eval()
    out: dict = {"device": "cpu", "threads": torch.get_num_threads(), "batch": batch,
                 "steps": {"ssv2": steps, "depth": depth_steps},
                 "model": model, "clip": "x".join(map(str, clip)), "sweep_layers": list(sweep),
                 "readout_widths": {"ssv2": 768 // scale, "depth": 1024 // scale}}
    for kind in ("ssv2", "depth"):
        n = steps if kind == "ssv2" else depth_steps
        one = measure(kind, 1, backbone, n, batch, clip, model, sweep, scale)
        six = measure(kind, 6, backbone, n, batch, clip, model, sweep, scale)
        out[kind] = {"k1": one, "k6": six, "ratio": six["step_s"] / one["step_s"]}
    out["ssv2_goal_met"] = out["ssv2"]["ratio"] <= 1.5
    return out


def run(quick: bool = False, context: dict | None = None) -> dict:
    """The benchmark-suite entry: :func:`measure_all` in the uniform result schema."""
    r = measure_all(quick)
    figs = []
    for kind, label in (("ssv2", "single-query SSv2-style readout"), ("depth", "dense depth readout")):
        one, six = r[kind]["k1"], r[kind]["k6"]
        figs.append(figure(f"{label}: step time K=6", six["step_s"], "s", peer=one["step_s"], peer_name="K=1",
                           goal="ratio <= 1.5" if kind == "ssv2" else None,
                           met=r["ssv2_goal_met"] if kind == "ssv2" else None,
                           note="" if kind == "ssv2" else "reported: the heads dominate"))
        figs.append(figure(f"{label}: backbone share of the K=1 step", one["backbone_s"], "s", peer=one["step_s"],
                           peer_name="K=1 step"))
        figs.append(figure(f"{label}: backbone forward calls / steps (K=6)", six["forward_calls"] / six["steps"],
                           "calls/step", goal="== 1 (one pass for all K)", met=six["forward_calls"] == six["steps"]))
    notes = [f"{r['model']} frozen, {r['clip']} clips, batch {r['batch']}, {r['threads']} CPU threads, fp32; median "
             f"of {r['steps']['ssv2'] - 1} (ssv2) / {r['steps']['depth'] - 1} (depth) timed steps after a warm-up "
             "step. K=6 = 3 learning rates x layers "
             f"{'/'.join(map(str, r['sweep_layers']))}; K=1 = layer 0.95."]
    if quick:
        notes.insert(0, "QUICK smoke run: 4ds-tiny at 16x64x64, readouts 4x narrower — plumbing only, not the 4DS-B figures.")
    return result("probe", "Probe sweep cost: K=6 readouts on one backbone pass vs K=1", figs, notes, r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4ds-tiny at 16x64x64 (plumbing only)")
    parser.add_argument("--steps", type=int, default=None, help="probe steps per configuration (default 3, first untimed)")
    parser.add_argument("--depth-steps", type=int, default=None, help="steps for the dense readout (default 2)")
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default 1)")
    args = parser.parse_args()
    r = measure_all(quick=args.quick, steps=args.steps, batch=args.batch, depth_steps=args.depth_steps)
    print(f"{r['model']} frozen probe, {r['clip']}, batch {r['batch']}, {r['threads']} CPU thread(s); "
          f"median step time after a warm-up step")
    print(f"{'readout':<8} {'K':>2} {'step s':>8} {'backbone s':>11} {'heads s':>8} {'fwd calls':>10}")
    for kind in ("ssv2", "depth"):
        for k in ("k1", "k6"):
            m = r[kind][k]
            print(f"{kind:<8} {k[1:]:>2} {m['step_s']:8.2f} {m['backbone_s']:11.2f} {m['heads_s']:8.2f} "
                  f"{m['forward_calls']:>6}/{m['steps']}")
        print(f"{kind:<8} K=6 / K=1 = {r[kind]['ratio']:.2f}x" + ("  (goal <= 1.5x: "
              + ("met)" if r["ssv2_goal_met"] else "NOT met)") if kind == "ssv2" else "  (reported)"))


if __name__ == "__main__":
    main()
