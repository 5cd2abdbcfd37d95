"""The readout learnability ladder (issue 17): where does a readout stop learning, and why?

Per synthetic task, the task's own readout, loss and metric are trained on a sequence of feature
sources, each a rung that a working readout must climb:

============ ==================================================================================
rung         what it shows
============ ==================================================================================
``trivial``  the task's answer without features (:mod:`fourds.demo.trivial`), on the test scenes
``blank``    the readout on constant features: what it learns with no information. The task's
             **floor** is the better of ``trivial`` and ``blank``
``overfit``  the readout trained on ``overfit_clips`` clips (raw tubelet pixels) for at most
             ``overfit_steps`` steps and scored on those clips: its loss must fall to <= 10% of the
             trivial answer's loss there and its metric close >= 80% of the gap from the trivial
             answer (on those clips) to a perfect score (a readout that cannot memorise 8 clips has
             a bug). The blank readout on the same clips is reported too but is no floor here: with
             query points or boxes, a readout memorises a few clips from its queries alone
``oracle``   ground-truth channels at the right tokens (:func:`fourds.diagnostics.features.oracle_features`):
             on held-out scenes the readout must close >= 50% of the floor → perfect gap
``pixels``   raw tubelet pixels (+ fixed position channels) on the demo's token grid, held-out scenes
============ ==================================================================================

The loop is the frozen probe's, on precomputed feature tensors (no backbone): AdamW (weight decay
``weight_decay``, biases and norms decayed as the probe does), linear warm-up then cosine to 1e-7,
batches drawn without replacement per epoch, the task's own ``loss``; metrics are reduced with the
probe's :class:`fourds.probe.metrics.MetricAccumulator`. Clips are the tasks' deterministic
evaluation transform (``augment=False``, as in the demo), so each scene's features are computed once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fourds.data.collate import collate_samples
from fourds.diagnostics.features import ORACLE_GROUPS, blank_features, oracle_features, pixel_features
from fourds.train.optim import warmup_cosine
from fourds.probe.metrics import MetricAccumulator, primary_spec

TASKS = ("synth_tracking", "synth_boxes", "synth_pose", "synth_depth", "synth_motion")
RUNGS = ("trivial", "blank", "overfit", "oracle", "pixels")
OVERFIT_LOSS_RATIO = 0.10
OVERFIT_GAP = 0.80
ORACLE_GAP = 0.50


@dataclass
class LadderConfig:
    """Sizes and the readout recipe of one ladder run.

    Attributes:
        tasks: synthetic task names.
        frames, size: clip length and square frame size (scenes are rendered at it).
        train_scenes, test_scenes: scenes of the ``train`` and ``test`` splits (the tasks' own seeds).
        label_tracks: point tracks per scene the tracking task is trained and scored on.
        oracle_tracks: tracks rendered per scene to fill the oracle's tracking channels (>= label_tracks).
        steps, batch_size, lr, weight_decay, warmup: the readouts' training on ``train`` (warm-up in steps).
        overfit_clips, overfit_steps: the overfit rung (its batch is all its clips).
        pixel_patch: tubelet of the ``pixels`` (and ``overfit``) features, the demo's backbone grid.
        blank_dim: width of the blank features.
        oracle_patch: spatial patch of the oracle grid (one frame per token). 4 at 64x64: with 8 a
            perfect reader of the channels scores only AJ 0.57 / IoU 0.59 (a patch mixes objects), with
            4 it scores 0.80 / 0.99 (:func:`oracle_ceiling`, docs/ladder.md).
        oracle_channels: ``all`` (every task's channels in one oracle, as measured in docs/ladder.md) or
            ``task`` (the task's own channels and the position channels only: no distractors).
        seed: readout initialisation and data order.
        task_overrides: per task, options of the synthetic task (readout widths and settings); the
            default is the demo's (``fourds.demo.config``).
        rungs: which rungs to run (``trivial`` always runs: it and ``blank`` make the floor).
    """

    tasks: tuple[str, ...] = TASKS
    frames: int = 16
    size: int = 64
    train_scenes: int = 256
    test_scenes: int = 64
    label_tracks: int = 32
    oracle_tracks: int = 256
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 30
    overfit_clips: int = 8
    overfit_steps: int = 300
    pixel_patch: tuple[int, int, int] = (2, 16, 16)
    blank_dim: int = 64
    oracle_patch: int = 4
    oracle_channels: str = "all"
    seed: int = 0
    task_overrides: dict[str, dict[str, Any]] | None = None
    rungs: tuple[str, ...] = RUNGS

    def validate(self) -> None:
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"ladder: unknown tasks {sorted(unknown)}; the ladder runs on {', '.join(TASKS)}")
        bad = set(self.rungs) - set(RUNGS)
        if bad:
            raise ValueError(f"ladder: unknown rungs {sorted(bad)}; rungs are {', '.join(RUNGS)}")
        for name in ("frames", "size", "train_scenes", "test_scenes", "steps", "batch_size", "overfit_clips",
                     "overfit_steps", "label_tracks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ladder: {name} must be a positive integer, got {value!r}")
        if self.overfit_clips > self.train_scenes:
            raise ValueError(f"ladder: overfit_clips={self.overfit_clips} exceeds train_scenes={self.train_scenes}")
        if self.oracle_tracks < self.label_tracks:
            raise ValueError(f"ladder: oracle_tracks={self.oracle_tracks} must be >= label_tracks={self.label_tracks}")
        if self.oracle_channels not in ("all", "task"):
            raise ValueError(f"ladder: oracle_channels must be 'all' or 'task', got {self.oracle_channels!r}")
        if self.size % self.oracle_patch:
            raise ValueError(f"ladder: oracle_patch={self.oracle_patch} must divide size={self.size}")


def demo_task_overrides() -> dict[str, dict[str, Any]]:
    """The demo's per-task readout settings (widths, query frequency, offsets, depth patch, no zoom)."""
    from fourds.demo.config import readout_settings

    return readout_settings()


def build_task(cfg: LadderConfig, name: str) -> Any:
    from fourds.tasks import get_task

    overrides = demo_task_overrides() if cfg.task_overrides is None else cfg.task_overrides
    return get_task(name, num_frames=cfg.frames, input_size=(cfg.size, cfg.size), augment=False,
                    **overrides.get(name, {}))


# ------------------------------------------------------------------------------------------ data
def render(cfg: LadderConfig, split: str, count: int) -> list[dict[str, Tensor]]:
    """``count`` raw scene samples of ``split`` (the synthetic tasks' own seed), ``oracle_tracks`` tracks."""
    task = build_task(cfg, cfg.tasks[0])
    ds = task.dataset(split, num_samples=count, num_tracks=cfg.oracle_tracks)
    return [ds[i] for i in range(count)]


def label_sample(cfg: LadderConfig, task: Any, scene: dict[str, Tensor]) -> dict[str, Tensor]:
    """The task's evaluation clip of ``scene`` (its tracks cut to ``label_tracks``)."""
    if task.name == "synth_tracking":
        scene = {**scene, **{k: scene[k][: cfg.label_tracks] for k in ("tracks", "visible", "track_object")}}
    return task.eval_transform(scene)


FeatureFn = Callable[[dict[str, Tensor]], Tensor]


def feature_fn(cfg: LadderConfig, rung: str, task_name: str | None = None) -> FeatureFn:
    """The scene → ``(T', N, D)`` features of a rung (``task_name`` picks a per-task oracle)."""
    if rung == "blank":
        return lambda s: blank_features(s["video"], cfg.pixel_patch, cfg.blank_dim)
    if rung in ("pixels", "overfit"):
        return lambda s: pixel_features(s["video"], cfg.pixel_patch)
    if rung == "oracle":
        groups = ORACLE_GROUPS[task_name] if cfg.oracle_channels == "task" and task_name else None
        return lambda s: oracle_features(s, cfg.oracle_patch, groups=groups)
    raise ValueError(f"ladder: rung {rung!r} has no features; rungs with features: blank, overfit, oracle, pixels")


# ------------------------------------------------------------------------------------------ training
def _grid_of(features: Tensor, cfg: LadderConfig) -> tuple[int, int, int]:
    t, n = features.shape[1:3]
    side = int(round(math.sqrt(n)))
    return (t, side, n // side)


def build_readout(task: Any, features: Tensor, cfg: LadderConfig) -> nn.Module:
    from fourds.seeding import derive_seed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "ladder-readout", task.name))
        return task.build_readout(int(features.shape[-1]), _grid_of(features, cfg))


def _optimizer(head: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    from fourds.train.optim import param_groups

    no_decay = head.no_weight_decay() if hasattr(head, "no_weight_decay") else set()
    return torch.optim.AdamW(param_groups(head, weight_decay, no_decay), lr=lr, betas=(0.9, 0.999))


def train_readout(task: Any, features: Tensor, labels: Sequence[dict[str, Tensor]], cfg: LadderConfig, *,
                  steps: int, batch_size: int, curve: list[tuple[int, float]] | None = None) -> nn.Module:
    """A fresh readout of ``task`` trained on ``features`` ``(S, T', N, D)`` and their ``labels``.

    ``curve`` (if given) receives ``(step, training loss)`` every ``max(1, steps // 10)`` steps.
    """
    if features.shape[0] != len(labels):
        raise ValueError(f"ladder: {features.shape[0]} feature clips but {len(labels)} labels")
    head = build_readout(task, features, cfg)
    opt = _optimizer(head, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    warmup = min(cfg.warmup, max(1, steps // 10))
    head.train()
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(labels), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = collate_samples([labels[i] for i in idx])
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, steps, warmup, cfg.lr, 1e-7)
        opt.zero_grad(set_to_none=True)
        loss = task.loss(head(features[idx], batch), batch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"ladder: {task.name} readout loss is {float(loss)} at step {step}; lower lr={cfg.lr}")
        loss.backward()
        opt.step()
        if curve is not None and (step % max(1, steps // 10) == 0 or step == steps - 1):
            curve.append((step, float(loss.detach())))
    return head.eval()


@torch.no_grad()
def evaluate(task: Any, head: nn.Module | Callable[[Tensor, dict], Any], features: Tensor | None,
             labels: Sequence[dict[str, Tensor]], batch_size: int = 16) -> dict[str, float]:
    """The task's metrics (reduced as the probe reduces them) and ``loss`` (mean over batches) of
    ``head(features, batch)`` on ``labels``; ``features`` None calls ``head(None, batch)``."""
    acc = MetricAccumulator(task)
    losses, weights = [], []
    for start in range(0, len(labels), batch_size):
        part = list(labels[start:start + batch_size])
        batch = collate_samples(part)
        feats = None if features is None else features[start:start + len(part)]
        out = head(feats, batch)
        acc.add(out, batch)
        losses.append(float(task.loss(out, batch)))
        weights.append(len(part))
    values = acc.reduce()
    values["loss"] = sum(l * w for l, w in zip(losses, weights)) / sum(weights)
    return values


def trivial_head(task: Any, train_scenes: Sequence[dict[str, Tensor]]) -> Callable[[Any, dict], Any]:
    """The task's trivial answer (``fourds.demo.trivial``) as a ``head(features, batch)``."""
    from fourds.demo.trivial import trivial_outputs

    return lambda _features, batch: trivial_outputs(task, train_scenes, batch)


def oracle_ceiling(cfg: LadderConfig, task: Any, scenes: Sequence[dict[str, Tensor]]) -> float | None:
    """The primary metric of a hand-written perfect reader of the oracle channels on ``scenes`` (tracking
    and boxes; None for the other tasks, whose oracle channels are their exact answer): each query reads
    the channels of the token under its point (the box centre) in frame 0. It bounds the oracle rung."""
    from fourds.diagnostics.features import position_channels

    if task.name not in ("synth_tracking", "synth_boxes"):
        return None
    p = cfg.oracle_patch
    off = position_channels(1, 1).shape[-1]
    groups = ORACLE_GROUPS[task.name] if cfg.oracle_channels == "task" else None
    acc = MetricAccumulator(task)
    for scene in scenes:
        batch = collate_samples([label_sample(cfg, task, scene)])
        feats = oracle_features(scene, p, groups=groups)
        t, gw = feats.shape[0], cfg.size // p
        if task.name == "synth_tracking":
            query = batch["tracks"][0, :, 0]
            cell = (query[:, 1] // p).long().clamp(0, gw - 1) * gw + (query[:, 0] // p).long().clamp(0, gw - 1)
            ch = feats[0, cell, off:off + 3 * t].view(-1, t, 3)
            occ = torch.where(ch[..., 2] > 0.5, -10.0, 10.0)
            out: Any = {"points": (query[:, None] / cfg.size + ch[..., :2])[None], "occlusion_logit": occ[None],
                        "uncertainty_logit": torch.full_like(occ, -10.0)[None]}
        else:
            box = batch["boxes"][0, :, 0]
            cx = ((box[:, 0] + box[:, 2]) / 2 // p).long().clamp(0, gw - 1)
            cy = ((box[:, 1] + box[:, 3]) / 2 // p).long().clamp(0, gw - 1)
            start = off if groups is not None else off + 3 * t
            out = feats[0, cy * gw + cx, start:start + 5 * t].view(-1, t, 5)[None, ..., :4]
        acc.add(out, batch)
    return acc.reduce()[primary_spec(task)[1]]


# ------------------------------------------------------------------------------------------ scoring
def perfect_score(task: Any) -> float:
    """The metric's perfect value: 1 for fractions (higher is better), 0 for errors (lower)."""
    spec, _ = primary_spec(task)
    return 1.0 if spec.direction == "higher" else 0.0


def better(task: Any, a: float, b: float) -> float:
    spec, _ = primary_spec(task)
    return max(a, b) if spec.direction == "higher" else min(a, b)


def gap_closed(task: Any, value: float, floor: float) -> float:
    """Fraction of the ``floor`` → perfect gap that ``value`` closes (negative: below the floor)."""
    perfect = perfect_score(task)
    span = perfect - floor
    if abs(span) < 1e-12:
        return float("nan")
    return (value - floor) / span


# ------------------------------------------------------------------------------------------ the run
@dataclass
class RungResult:
    """One rung of one task: primary ``metric`` (test scenes unless ``on`` says otherwise), ``loss``,
    ``gap`` closed from the floor, and the rung's verdict (``None`` where the rung has no threshold)."""

    rung: str
    metric: float
    loss: float
    gap: float | None = None
    passed: bool | None = None
    on: str = "test"
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _stack(fn: FeatureFn, scenes: Sequence[dict[str, Tensor]]) -> Tensor:
    return torch.stack([fn(s) for s in scenes])


def run_task(cfg: LadderConfig, name: str, train: list[dict[str, Tensor]], test: list[dict[str, Tensor]],
             cache: dict[str, tuple[Tensor, Tensor]], log: Callable[[str], None] = print) -> list[RungResult]:
    """Every rung of ``cfg.rungs`` for task ``name`` (``cache`` holds each rung's train/test features)."""
    task = build_task(cfg, name)
    _, key = primary_spec(task)
    train_labels = [label_sample(cfg, task, s) for s in train]
    test_labels = [label_sample(cfg, task, s) for s in test]
    results: list[RungResult] = []

    def features(rung: str) -> tuple[Tensor, Tensor]:
        kind = "pixels" if rung == "overfit" else rung
        if kind == "oracle" and cfg.oracle_channels == "task":
            kind = f"oracle:{name}"
        if kind not in cache:
            fn = feature_fn(cfg, kind.split(":")[0], name)
            cache[kind] = (_stack(fn, train), _stack(fn, test))
        return cache[kind]

    t0 = time.perf_counter()
    triv = evaluate(task, trivial_head(task, train), None, test_labels)
    results.append(RungResult("trivial", triv[key], triv["loss"], seconds=time.perf_counter() - t0))
    floor = triv[key]
    for rung in cfg.rungs:
        if rung == "trivial":
            continue
        t0 = time.perf_counter()
        if rung == "overfit":
            ftrain, _ = features(rung)
            n = cfg.overfit_clips
            few, few_labels = ftrain[:n], train_labels[:n]
            triv8 = evaluate(task, trivial_head(task, train[:n]), None, few_labels)
            blank8_feats = features("blank")[0][:n]
            blank8 = evaluate(task, train_readout(task, blank8_feats, few_labels, cfg, steps=cfg.overfit_steps,
                                                  batch_size=n), blank8_feats, few_labels)
            floor8 = triv8[key]  # not blank8: a readout memorises a few clips from its queries alone
            curve: list[tuple[int, float]] = []
            head = train_readout(task, few, few_labels, cfg, steps=cfg.overfit_steps, batch_size=n, curve=curve)
            fit = evaluate(task, head, few, few_labels)
            ratio = fit["loss"] / triv8["loss"] if triv8["loss"] > 0 else float("nan")
            gap = gap_closed(task, fit[key], floor8)
            res = RungResult("overfit", fit[key], fit["loss"], gap, bool(ratio <= OVERFIT_LOSS_RATIO and gap >= OVERFIT_GAP),
                             on=f"{n} training clips",
                             extra={"loss_ratio": ratio, "trivial_loss": triv8["loss"], "trivial": triv8[key],
                                    "blank": blank8[key], "floor": floor8, "curve": curve})
        else:
            ftrain, ftest = features(rung)
            curve = []
            head = train_readout(task, ftrain, train_labels, cfg, steps=cfg.steps, batch_size=cfg.batch_size,
                                 curve=curve)
            ev = evaluate(task, head, ftest, test_labels)
            fit = evaluate(task, head, ftrain[: len(test_labels)], train_labels[: len(test_labels)])
            extra = {"train_metric": fit[key], "train_loss": fit["loss"], "curve": curve}
            if rung == "blank":
                floor = better(task, floor, ev[key])
                res = RungResult("blank", ev[key], ev["loss"], extra=extra)
            else:
                gap = gap_closed(task, ev[key], floor)
                passed = bool(gap >= ORACLE_GAP) if rung == "oracle" else None
                if rung == "oracle":
                    extra["ceiling"] = oracle_ceiling(cfg, task, test)
                res = RungResult(rung, ev[key], ev["loss"], gap, passed, extra=extra)
        res.seconds = time.perf_counter() - t0
        results.append(res)
        log(f"[ladder] {name:<15} {rung:<8} {key} = {res.metric:.4f}  loss {res.loss:.4g}"
            + (f"  gap {res.gap:+.2f}" if res.gap is not None else "")
            + (f"  loss/trivial {res.extra['loss_ratio']:.3f}" if rung == "overfit" else "")
            + (f"  ceiling {res.extra['ceiling']:.4f}" if res.extra.get("ceiling") is not None else "")
            + ("" if res.passed is None else ("  PASS" if res.passed else "  FAIL"))
            + f"  ({res.seconds:.1f} s)")
    for r in results:
        r.extra["floor"] = r.extra.get("floor", floor) if r.rung == "overfit" else floor
    return results


def run_ladder(cfg: LadderConfig, log: Callable[[str], None] = print) -> dict[str, list[RungResult]]:
    """Render the scenes once, then every task's rungs. Returns ``{task: [RungResult, ...]}``."""
    cfg.validate()
    t0 = time.perf_counter()
    train = render(cfg, "train", cfg.train_scenes)
    test = render(cfg, "test", cfg.test_scenes)
    log(f"[ladder] rendered {len(train)} + {len(test)} scenes ({time.perf_counter() - t0:.1f} s)")
    cache: dict[str, tuple[Tensor, Tensor]] = {}
    return {name: run_task(cfg, name, train, test, cache, log) for name in cfg.tasks}


def to_dict(results: dict[str, list[RungResult]]) -> dict[str, Any]:
    return {name: [dataclasses.asdict(r) for r in rows] for name, rows in results.items()}


def markdown_table(results: dict[str, list[RungResult]]) -> str:
    """One row per task: each rung's metric (gap closed from the floor, verdict)."""
    rungs = [r.rung for r in next(iter(results.values()))]
    lines = ["| task | metric | " + " | ".join(rungs) + " |", "|---|---|" + "---:|" * len(rungs)]
    for name, rows in results.items():
        task_metric = primary_spec(build_task(LadderConfig(tasks=(name,)), name))[1].split("/")[-1]
        cells = []
        for r in rows:
            cell = f"{r.metric:.3f}"
            if r.gap is not None:
                cell += f" ({r.gap:+.2f})"
            if r.rung == "overfit":
                cell += f" loss {r.extra['loss_ratio']:.2f}x"
            if r.passed is not None:
                cell += " ✓" if r.passed else " ✗"
            cells.append(cell)
        lines.append(f"| {name} | {task_metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
