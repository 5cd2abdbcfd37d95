"""``fourds demo``: the feature memo, the scene pool, the results logic, and the quick demo end to end
(interrupted mid-pretraining, resumed, then rerun with every stage skipped)."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fourds.demo.features import FeatureMemo, clip_key
from fourds.demo.results import Cell, best_labels, collect, compare, comparisons, markdown_table, verdict_line
from fourds.demo.scenes import POOL_KEYS, render_pool
from fourds.models import create
from fourds.probe.protocol import run_probe
from fourds.probe.config import ProbeConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64, "input_size": (4, 32, 32), "patch_size": (2, 16, 16)}


class Counting(torch.nn.Module):
    """A backbone that counts the clips it encodes."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.clips = inner, 0
        for attr in ("num_layers", "dim", "patch_size", "input_size", "grid"):
            setattr(self, attr, getattr(inner, attr))

    def token_grid(self, shape):
        return self.inner.token_grid(shape)

    def features(self, video, layers=None):
        self.clips += video.shape[0]
        return self.inner.features(video, layers)


def tiny_backbone():
    model = create("4ds-tiny", **TINY)
    model.init_weights(seed=0)
    return model.eval()


# ------------------------------------------------------------------------------------------ memo
def test_memo_returns_the_backbones_features_and_encodes_each_clip_once():
    inner = Counting(tiny_backbone())
    memo = FeatureMemo(inner)
    video = torch.rand(3, 4, 32, 32, 3)
    with torch.no_grad():
        expected = inner.inner.features(video, layers=[1, 2])
    got = memo.features(video, layers=[1, 2])
    assert inner.clips == 3 and memo.misses == 3 and memo.hits == 0
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    # A batch mixing seen and new clips, in another order: only the new one is encoded, order kept.
    fresh = torch.rand(1, 4, 32, 32, 3)
    mixed = torch.cat([video[2:], fresh, video[:1]])
    out = memo.features(mixed, layers=[2])
    assert inner.clips == 4 and memo.hits == 2
    with torch.no_grad():
        ref = inner.inner.features(mixed, layers=[2])[0]
    torch.testing.assert_close(out[0], ref, rtol=1e-5, atol=1e-6)
    # A layer not stored yet is a miss (the clip is encoded again for it).
    memo.features(video[:1], layers=[0])
    assert inner.clips == 5
    assert [f.shape for f in memo.features(video[:1], layers=[0, 1, 2])] == [f[:1].shape for f in expected[:1]] * 3


def test_memo_keys_see_every_pixel_and_the_store_round_trips(tmp_path):
    clip = torch.rand(4, 32, 32, 3)
    other = clip.clone()
    other[3, 31, 31, 2] += 1e-6
    assert clip_key(clip) == clip_key(clip.clone()) and clip_key(clip) != clip_key(other)
    assert clip_key(clip) != clip_key(clip.double())
    memo = FeatureMemo(tiny_backbone())
    videos = [torch.rand(4, 32, 32, 3) for _ in range(5)]
    assert memo.precompute(videos + videos[:2], [1, 2], batch_size=2) == 5
    assert memo.precompute(videos, [1, 2]) == 0  # everything stored
    memo.save(tmp_path / "f.safetensors")
    again = FeatureMemo(Counting(tiny_backbone()))
    assert again.load(tmp_path / "f.safetensors") == 5
    stack = torch.stack(videos)
    for a, b in zip(memo.features(stack, [1, 2]), again.features(stack, [1, 2])):
        assert torch.equal(a, b)
    assert again.inner.clips == 0
    wide = FeatureMemo(create("4ds-tiny", **{**TINY, "dim": 16, "num_heads": 2}))
    with pytest.raises(ValueError, match="width"):
        wide.load(tmp_path / "f.safetensors")


def test_device_keys_are_exact_and_independent_of_the_batch(tmp_path):
    """The GPU memo's keys (computed where the batch is; exercised here on the CPU): one key per exact
    clip whatever batch or position it arrives in, another key for a one-ulp change of one pixel."""
    from fourds.demo.features import device_clip_keys

    clips = torch.rand(5, 4, 32, 32, 3)
    alone = [device_clip_keys(c[None])[0] for c in clips]
    assert device_clip_keys(clips) == alone and device_clip_keys(clips.flip(0)) == alone[::-1]
    assert len(set(alone)) == 5
    nudged = clips[:1].clone()
    nudged[0, 3, 31, 31, 2] = torch.nextafter(nudged[0, 3, 31, 31, 2], torch.tensor(2.0))
    assert device_clip_keys(nudged)[0] != alone[0]
    memo = FeatureMemo(Counting(tiny_backbone()), device_keys=True)
    assert memo.precompute(list(clips) + list(clips[:2]), [1, 2], batch_size=2) == 5
    got = memo.features(clips[[3, 0]], [2])[0]
    with torch.no_grad():
        want = memo.inner.inner.features(clips[[3, 0]], layers=[2])[0]
    assert memo.inner.clips == 5 and memo.hits >= 2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    memo.save(tmp_path / "d.safetensors")
    again = FeatureMemo(Counting(tiny_backbone()), device_keys=True)
    assert again.load(tmp_path / "d.safetensors") == 5
    assert torch.equal(again.features(clips[[3, 0]], [2])[0], got) and again.inner.clips == 0


def test_probe_through_the_memo_matches_the_plain_backbone_and_reuses_features_across_tasks(tmp_path):
    from fourds.tasks import get_task

    pool = render_pool(tmp_path / "scenes", 7, 6, frames=4, size=32, num_tracks=8)
    data = {"train": pool, "eval": pool}
    counting = Counting(tiny_backbone())
    memo = FeatureMemo(counting)
    common = dict(backbone="tiny", steps=3, batch_size=2, warmup_steps=1, lrs=[1e-3], layers=[2], select_on="eval",
                  tensorboard=False, save_every=3)
    results = {}
    for name in ("synth_depth", "synth_pose"):
        ov = {"num_frames": 4, "input_size": (32, 32), "augment": False, "channels": 16, "num_heads": 2,
              "short_side_factor": 1.0}
        task = get_task(name, **ov)
        plain = run_probe(ProbeConfig(task=name, out=str(tmp_path / f"{name}-plain"), **common),
                          backbone=tiny_backbone(), task=task, datasets=data)
        memoised = run_probe(ProbeConfig(task=name, out=str(tmp_path / f"{name}-memo"), **common),
                             backbone=memo, task=task, datasets=data)
        for key, value in plain["test"].items():
            assert math.isclose(value, memoised["test"][key], rel_tol=1e-4, abs_tol=1e-6), (name, key)
        results[name] = memoised
    # Both tasks read the same 6 clips (identical geometry): the second task encoded nothing.
    assert counting.clips == 6 and len(memo) == 6


# ------------------------------------------------------------------------------------------ scenes
def test_scene_pool_renders_in_chunks_resumes_and_refuses_other_settings(tmp_path):
    first = render_pool(tmp_path / "p", 3, 5, frames=4, size=24, num_tracks=8, chunk=2)
    assert len(first) == 5 and set(first[0]) == set(POOL_KEYS) and first[0]["video"].dtype == torch.uint8
    assert sorted(p.name for p in (tmp_path / "p").glob("chunk_*")) == ["chunk_0000.safetensors",
                                                                          "chunk_0001.safetensors",
                                                                          "chunk_0002.safetensors"]
    (tmp_path / "p" / "chunk_0001.safetensors").unlink()  # as if killed while rendering chunk 1
    counted = []
    again = render_pool(tmp_path / "p", 3, 5, frames=4, size=24, num_tracks=8, chunk=2, workers=2,
                        progress=counted.append)
    assert sum(counted) == 5
    for a, b in zip(first.samples, again.samples):
        assert all(torch.equal(a[k], b[k]) for k in POOL_KEYS)
    with pytest.raises(ValueError, match="other settings"):
        render_pool(tmp_path / "p", 3, 5, frames=4, size=32, num_tracks=8, chunk=2)


# ------------------------------------------------------------------------------------------ results
def cell(values, direction="higher", units="fraction", metric="t/m"):
    return Cell(metric, direction, units, list(values))


def test_compare_calls_a_win_only_beyond_the_sum_of_the_stds():
    table = {
        "a": {"up": cell([0.50, 0.52, 0.54]), "down": cell([1.0, 1.1, 1.2], "lower", "m"), "tie": cell([0.5, 0.6])},
        "b": {"up": cell([0.40, 0.42, 0.44]), "down": cell([0.5, 0.55, 0.6], "lower", "m"), "tie": cell([0.45, 0.55])},
    }
    res = compare(table, "a", "b", ["up", "down", "tie", "missing"])
    # up: diff 0.10 > 0.02 + 0.02 -> win; down: a is higher (worse), diff 0.55 > 0.1 + 0.05 -> loss;
    # tie: diff 0.05 < std(0.5, 0.6) + std(0.45, 0.55) = 0.0707 + 0.0707.
    assert res["wins"] == ["up"] and res["losses"] == ["down"] and res["ties"] == ["tie"]
    assert math.isclose(res["tasks"]["up"]["spread"], 0.04, rel_tol=1e-9)
    line = verdict_line(res, table)
    assert "better beyond the seeds' spread on 1 of 3 tasks (up)" in line and "worse on 1 (down)" in line
    assert "up better (no per-scene samples) (+10.0 vs spread 4.00)" in line  # fractions shown as percentages
    # Without per-scene samples no bootstrap can be run: a win is never counted.
    assert res["significant_wins"] == [] and res["tasks"]["up"]["interval"] is None


def scenes(values, weights=None):
    """A ``test_samples`` dict: one value (and weight) per scene."""
    out = {"metric": "t/average_jaccard", "indices": list(range(len(values))), "values": list(values)}
    if weights is not None:
        out["weights"] = list(weights)
    return out


def sampled(per_seed, metric="t/average_jaccard", direction="higher", units="fraction"):
    """A Cell whose figure per seed is the mean of its per-scene values."""
    samples = [dict(scenes(v), metric=metric) for v in per_seed]
    return Cell(metric, direction, units, [sum(v) / len(v) for v in per_seed], samples)


def test_a_counted_task_needs_the_spread_the_bootstrap_and_both_floors():
    base = [0.2, 0.4, 0.3, 0.5, 0.6, 0.1, 0.45, 0.35]
    shifted = lambda d, seeds=(0.0, 0.01, 0.02): [[v + d + e for v in base] for e in seeds]  # noqa: E731
    table = {"a": {"t": sampled(shifted(0.2))}, "b": {"t": sampled(shifted(0.0))},
             "trivial": {"t": Cell("t/average_jaccard", "higher", "fraction", [0.3], [scenes(base)])},
             "blank": {"t": sampled(shifted(0.1))}}
    res = compare(table, "a", "b", ["t"], floors=["trivial", "blank"])
    r = res["tasks"]["t"]
    # every scene moved by exactly +0.2: every resample's difference is 0.2
    assert r["interval"]["low"] == pytest.approx(0.2) and r["interval"]["high"] == pytest.approx(0.2)
    assert r["significant"] and r["floors"]["trivial"]["beats"] and r["floors"]["blank"]["beats"]
    assert res["wins_beyond_reference"] == ["t"] and r["counted"]
    # the blank readout as good as the pretrained row: a win over random init that is not counted
    table["blank"] = {"t": sampled(shifted(0.2))}
    res = compare(table, "a", "b", ["t"], floors=["trivial", "blank"])
    assert res["wins"] == ["t"] and res["wins_beyond_reference"] == []
    assert "better but not above the blank row" in verdict_line(res, table)
    # a mean gap carried by one scene: beyond the seeds' spread, but the bootstrap interval includes zero
    noisy = [[v + (4.0 if i == 0 else -0.05) + e for i, v in enumerate(base)] for e in (0.0, 0.01, 0.02)]
    table = {"a": {"t": sampled(noisy)}, "b": {"t": sampled(shifted(0.0))}}
    r = compare(table, "a", "b", ["t"])["tasks"]["t"]
    assert r["outcome"] == "win" and r["interval"]["low"] < 0 < r["interval"]["high"] and not r["significant"]


def test_a_missing_or_non_finite_seed_fails_its_task():
    good = sampled([[0.5, 0.6]] * 3)
    table = {"a": {"t": sampled([[0.9, 0.8], [0.9, 0.8], [float("nan"), 0.8]])}, "b": {"t": good}}
    res = compare(table, "a", "b", ["t"], floors=["b"])
    assert res["failed"] == ["t"] and res["wins_beyond_reference"] == [] and "non-finite" in res["tasks"]["t"]["reason"]
    table["a"]["t"] = Cell("t/average_jaccard", "higher", "fraction", [0.9, 0.9], good.samples[:2], missing=[2])
    res = compare(table, "a", "b", ["t"])
    assert res["failed"] == ["t"] and "seed(s) [2] have no result" in verdict_line(res, table)


def test_the_bootstrap_reduces_a_weighted_metric_by_its_weights():
    from fourds.demo.bootstrap import figures, paired_bootstrap
    from fourds.metrics import metric_spec

    spec = metric_spec("abs_rel")
    a = [{"indices": [0, 1], "values": [0.1, 0.5], "weights": [3.0, 1.0]}]
    b = [{"indices": [0, 1], "values": [0.2, 0.2], "weights": [3.0, 1.0]}]
    whole = figures(a, spec, torch.tensor([[0, 1]]))
    assert float(whole) == pytest.approx((0.1 * 3 + 0.5) / 4)  # the figure the table reports
    ci = paired_bootstrap(a, b, spec, resamples=4000)
    # resamples are {0,0}: -0.1, {1,1}: +0.3, {0,1}: (0.3+0.5)/4 - 0.2 = 0.0: the interval spans [-0.1, 0.3]
    assert ci.low == pytest.approx(-0.1) and ci.high == pytest.approx(0.3) and not ci.excludes_zero_towards("lower")
    with pytest.raises(ValueError, match="different scenes"):
        paired_bootstrap(a, [{**b[0], "indices": [0, 2]}], spec)


def test_the_blank_backbone_gives_zeros_on_the_real_backbones_grid():
    from fourds.demo.blank import BlankBackbone

    real = tiny_backbone()
    blank = BlankBackbone(real)
    video = torch.rand(2, 4, 32, 32, 3)
    want = real.features(video, layers=[1, 2])
    got = blank.features(video, layers=[1, 2])
    assert [g.shape for g in got] == [w.shape for w in want] and all(not g.any() for g in got)
    assert blank.token_grid(video.shape) == tuple(real.token_grid(video.shape)) and blank.num_layers == real.num_layers


def test_table_bolds_the_best_mean_per_column_with_direction_arrows():
    table = {"x": {"t1": cell([0.2, 0.4]), "t2": cell([2.0, 2.0], "lower", "m")},
             "y": {"t1": cell([0.5, 0.5]), "t2": cell([1.0, 3.0], "lower", "m")}}
    assert best_labels(table, "t1") == {"y"} and best_labels(table, "t2") == {"x", "y"}
    md = markdown_table(table, ["t1", "t2"], {"x": 2_000_000, "y": 3_500_000}, {"x": "random", "y": "pretrained"})
    lines = md.splitlines()
    assert "t1 m (%) ↑" in lines[0] and "t2 m ↓" in lines[0]
    assert lines[2] == "| x | random | 2.00 | 30.0 ± 14.1 | **2.00 ± 0.000** |"
    assert lines[3] == "| y | pretrained | 3.50 | **50.0 ± 0.000** | **2.00 ± 1.41** |"


def test_comparisons_pair_each_model_with_its_baselines():
    kinds = {"n-random": "random", "n": "pretrained", "m-random": "random", "m-perframe": "perframe", "m": "pretrained",
             "n-distilled": "distilled"}
    base = {"n-random": "n", "n": "n", "m-random": "m", "m-perframe": "m", "m": "m", "n-distilled": "n"}
    pairs = comparisons(kinds, list(kinds), base)
    assert pairs == [("n", "n-random"), ("m", "m-random"), ("m", "m-perframe"), ("m", "n"), ("n-distilled", "n")]


def test_collect_reads_each_seeds_test_metric(tmp_path):
    for seed, value in ((0, 0.25), (1, 0.75)):
        folder = tmp_path / "lab" / "task" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({
            "primary_metric": "task/acc", "direction": "higher", "primary_units": "fraction",
            "test": {"task/acc": value}}))
    table = collect(tmp_path, ["lab", "absent"], ["task"], [0, 1, 2])
    assert list(table) == ["lab"] and table["lab"]["task"].values == [0.25, 0.75]
    assert math.isclose(table["lab"]["task"].std, math.sqrt(0.125))


# ------------------------------------------------------------------------------------------ end to end
def test_quick_demo_interrupted_resumed_and_rerun(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": SRC, "FOURDS_FAULT_AT_STEP": "3"}
    # SIGKILL inside the first model's pretraining, right before step 3 (after its step-2 checkpoint).
    killed = subprocess.run([sys.executable, "-m", "fourds", "demo", "--quick", "--out", str(out)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    ckpts = sorted(p.name for p in (out / "pretrain" / "nano" / "checkpoints").iterdir())
    assert ckpts and not (out / "pretrain" / "nano" / "model").exists()

    from fourds.cli import main

    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    first = time.perf_counter() - t0
    res = json.loads((out / "results.json").read_text())
    log = (out / "pretrain" / "nano" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log][-1] == 6  # resumed, finished
    labels = ["nano-random", "nano", "micro-random", "micro-perframe", "micro", "blank"]
    tasks = ["synth_tracking", "synth_boxes", "synth_pose", "synth_depth", "synth_motion"]
    assert list(res["table"]) == [*labels, "trivial"]
    assert res["counted_comparison"] == {"a": "micro", "b": "micro-random"}
    assert isinstance(res["wins_beyond_reference"], list) and res["total_s"] > 0
    counted = next(v for v in res["verdicts"] if (v["a"], v["b"]) == ("micro", "micro-random"))
    assert counted["floors"] == ["trivial", "blank"]
    assert all(r["outcome"] == "failed" or r["interval"] is not None for r in counted["tasks"].values())
    assert res["models"].keys() == set(labels)
    trivial = res["table"]["trivial"]
    assert list(trivial) == ["synth_tracking", "synth_boxes", "synth_pose", "synth_depth", "synth_motion"]
    assert all(len(c["values"]) == 1 and math.isfinite(c["values"][0]) for c in trivial.values())
    for label in labels:
        assert list(res["table"][label]) == tasks
        for t in tasks:
            c = res["table"][label][t]
            assert len(c["values"]) == 3 and all(math.isfinite(v) for v in c["values"]), (label, t)
    assert res["readouts"]["synth_depth"]["channels"] == 32
    checks = res["pretraining_check"]
    assert set(checks) == {"nano", "micro"}
    assert all(c["test_loss"] > 0 and c["mean_colour_loss"] > 0 for c in checks.values())
    assert res["verdict_lines"] and all(k in res["timings_s"] for k in ("scenes", "pretrain", "features", "probes"))
    md = (out / "results.md").read_text()
    assert "↑" in md and "↓" in md and "**" in md and "±" in md and "mean-colour loss" in md
    for name in ("pretraining_loss", "tasks_bars", "metric_vs_size"):
        assert (out / "plots" / f"{name}.png").is_file(), name
    assert (out / "pictures" / "mae_reconstruction_micro.png").is_file()
    for t in ("synth_depth", "synth_tracking", "synth_boxes", "synth_pose"):
        assert list((out / "pictures" / t).glob("micro_*.png")), t
    assert not (out / "cache").exists()
    for model in ("nano", "micro"):  # finished stages keep their checkpoints without optimiser state
        from fourds.train.checkpoint import safe_load

        for ckpt in (out / "pretrain" / model / "checkpoints").glob("step_*"):
            state = safe_load(ckpt / "train_state.pt")
            assert "optimizer" not in state and state.get("optimizer_dropped"), ckpt

    stamp = (out / "probes" / "micro" / "synth_depth" / "seed0" / "results.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["table"] == res["table"]
    assert (out / "probes" / "micro" / "synth_depth" / "seed0" / "results.json").stat().st_mtime_ns == stamp
    timings = json.loads((out / "state" / "timings.json").read_text())
    assert timings["pretrain"]["invocations"] == 2 and "features:micro" in timings
    print(f"quick demo: {first:.1f} s after the kill, rerun {time.perf_counter() - t0:.1f} s")

    with pytest.raises(ValueError, match="another recipe"):
        from fourds.demo import default_recipe, run_demo

        run_demo(out, recipe=default_recipe())


# ------------------------------------------------------------------------------------------ trivial answers
def test_trivial_answers_score_perfectly_on_scenes_where_nothing_moves():
    """Static points and boxes, one depth, one class: each task's trivial answer is exact there, and the
    motion answer is the most frequent training class (2 of 3 training labels, half the test labels)."""
    from fourds.demo.pipeline import build_task
    from fourds.demo.scenes import ScenePool
    from fourds.demo.trivial import trivial_metrics
    from fourds.demo import quick_recipe

    recipe = quick_recipe()
    t, s = recipe.frames, recipe.size

    def sample(label: int) -> dict:
        tracks = torch.tensor([[4.5, 6.5], [20.5, 10.5], [12.5, 25.5]])[:, None].expand(3, t, 2).clone()
        boxes = torch.tensor([[2.0, 3, 14, 15], [16, 16, 30, 28]])[:, None].expand(2, t, 4).clone()
        return {"video": torch.zeros(t, s, s, 3, dtype=torch.uint8), "depth": torch.full((t, s, s), 5.0),
                "tracks": tracks, "visible": torch.ones(3, t, dtype=torch.bool), "track_object": torch.zeros(3, dtype=torch.long),
                "boxes": boxes, "box_valid": torch.ones(2, t, dtype=torch.bool), "label": torch.tensor(label),
                "intrinsics": torch.tensor([[30.0, 0, 16], [0, 30, 16], [0, 0, 1]]), "cam_to_world": torch.eye(4).expand(t, 4, 4).clone()}

    train, test = ScenePool([sample(2), sample(2), sample(3)]), ScenePool([sample(2), sample(5)])
    got = {name: trivial_metrics(build_task(recipe, name), train, test) for name in recipe.tasks}
    assert got["synth_tracking"]["synth_tracking/average_jaccard"] == pytest.approx(1.0)
    assert got["synth_boxes"]["synth_boxes/box_iou"] == pytest.approx(1.0)
    assert got["synth_pose"]["synth_pose/pose_epe"] == pytest.approx(0.0, abs=1e-5)
    assert got["synth_depth"]["synth_depth/abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert got["synth_motion"]["synth_motion/top1"] == pytest.approx(0.5)


def test_quick_demo_with_distillation_adds_a_probed_distilled_row(tmp_path):
    from fourds.demo import quick_recipe, run_demo

    recipe = quick_recipe()
    recipe.distill = True
    res = run_demo(tmp_path / "demo", recipe=recipe)
    assert "nano-distilled" in res["table"] and res["models"]["nano-distilled"]["kind"] == "distilled"
    assert all(len(c["values"]) == 3 and all(math.isfinite(v) for v in c["values"])
               for c in res["table"]["nano-distilled"].values())
    assert ("nano-distilled", "nano") in [(v["a"], v["b"]) for v in res["verdicts"]]
    log = (tmp_path / "demo" / "distill" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["step"] == recipe.distill_steps


def test_random_rows_are_exactly_the_pretraining_runs_step_zero_weights(tmp_path):
    import torch

    from fourds.demo import default_recipe
    from fourds.demo.pipeline import entries, pretrain_config
    from fourds.train.distributed import DistInfo
    from fourds.train.pretrain import build_model

    recipe = default_recipe()
    cpu = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    for entry in (e for e in entries(recipe, tmp_path) if e.kind == "random"):
        cfg = pretrain_config(recipe, entry.model, tmp_path).resolved()
        _, start = build_model(cfg, cpu, "none", False)  # the pretraining loop's own construction
        want, got = start.encoder.state_dict(), entry.build().state_dict()
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), (entry.label, key)


# ------------------------------------------------------------------------------------------ recipes
def test_every_preset_follows_the_verdict_rules():
    """The rules of docs/demo.md: >= 3 readout seeds, the random rows and the blank row present, the
    reported tables on the test split, >= 128 test scenes on default and >= 256 on long and gpu."""
    from fourds.demo import RECIPES, get_recipe

    assert set(RECIPES) == {"quick", "default", "long", "gpu"}
    for name in RECIPES:
        recipe = get_recipe(name)
        recipe.validate()
        assert recipe.name == name and len(set(recipe.seeds)) >= 3 and recipe.random_init and recipe.blank, name
        assert recipe.eval_split == "test", name
    assert get_recipe("default").test_scenes >= 128
    assert get_recipe("long").test_scenes >= 256 and get_recipe("gpu").test_scenes >= 256
    with pytest.raises(ValueError, match="unknown demo recipe 'fast'"):
        get_recipe("fast")


def test_the_cli_picks_the_gpu_recipe_where_cuda_is_available(monkeypatch):
    import fourds.demo as demo
    from fourds.cli import main

    ran = []
    monkeypatch.setattr(demo, "run_demo", lambda out, recipe, keep_cache: ran.append(recipe.name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["demo", "--out", "unused"]) == 0 and ran[-1] == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["demo", "--out", "unused"]) == 0 and ran[-1] == "default"
    assert main(["demo", "--quick"]) == 0 and ran[-1] == "quick"
    assert main(["demo", "--recipe", "long"]) == 0 and ran[-1] == "long"
    with pytest.raises(SystemExit):
        main(["demo", "--quick", "--recipe", "gpu"])


def test_learning_curves_probe_each_checkpoint_on_val_and_rerun_skips_what_is_done(tmp_path):
    from fourds.demo import quick_recipe
    from fourds.demo.curves import CurvePlan, learning_curves

    recipe = quick_recipe()
    recipe.eval_split = "val"
    plan = CurvePlan(pretrain_points=(0, 3, 6), readout_steps=(3,), tasks=("synth_pose", "synth_depth"))
    curves = learning_curves(recipe, tmp_path, plan)
    assert (tmp_path / "scenes" / "val").is_dir() and not (tmp_path / "scenes" / "test").exists()
    pose = curves["tasks"]["synth_pose"]
    assert set(pose["pretrained"]["3"]) == {"0", "3", "6"} and pose["direction"] == "lower"
    assert all(len(c["values"]) == 3 and math.isfinite(c["mean"]) for c in pose["pretrained"]["3"].values())
    assert math.isfinite(pose["trivial"]) and len(pose["blank"]["3"]["values"]) == 3
    assert {"slope_per_decade", "clips_needed", "floor", "beats_floor_at_last_point"} <= set(pose["trend"])
    assert (tmp_path / "curves.png").is_file() and set(curves["mae_ratio"]) == {"0", "3", "6"}
    assert all(r > 0 for r in curves["mae_ratio"].values())
    done = tmp_path / "curves" / "probes" / "micro@6" / "r3" / "synth_pose" / "seed0" / "results.json"
    stamp = done.stat().st_mtime_ns
    assert learning_curves(recipe, tmp_path, plan)["tasks"]["synth_pose"] == pose  # nothing re-run
    assert done.stat().st_mtime_ns == stamp


def test_two_worker_processes_give_the_same_table_as_one(tmp_path):
    """The job graph on two worker processes (pretraining side by side, the random and blank rows from the
    start, each pretrained row after its model, the distilled row after the distillation; one torch thread
    each) gives a bit-identical table to the sequential path with one thread; a rerun skips everything."""
    from fourds.demo import quick_recipe, run_demo
    from fourds.demo.parallel import demo_jobs
    from fourds.demo.pipeline import entries

    one = quick_recipe()
    one.threads, one.distill = 1, True
    two = quick_recipe()
    two.threads, two.workers, two.distill = 1, 2, True
    after = {j.name: j.after for j in demo_jobs(two, tmp_path / "two", entries(two, tmp_path / "two"))}
    assert after["probes:micro-random"] == () and after["probes:blank"] == () and after["distill"] == ("pretrain:micro",)
    assert after["probes:micro-perframe"] == ("pretrain:micro",) and after["probes:nano-distilled"] == ("distill",)
    a = run_demo(tmp_path / "one", recipe=one)
    b = run_demo(tmp_path / "two", recipe=two)
    assert a["table"] == b["table"] and "nano-distilled" in b["table"] and "pretrain_and_probes" in b["timings_s"]
    assert list((tmp_path / "two" / "state" / "logs").glob("probes-*.log"))
    timings = json.loads((tmp_path / "two" / "state" / "timings.json").read_text())
    again = run_demo(tmp_path / "two", recipe=two)
    after_rerun = json.loads((tmp_path / "two" / "state" / "timings.json").read_text())
    assert again["table"] == b["table"]
    assert after_rerun["pretrain_and_probes"] == timings["pretrain_and_probes"]  # nothing left to run: stage skipped
