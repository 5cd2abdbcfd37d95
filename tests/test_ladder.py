"""The readout learnability ladder (issue 17): its pieces, its rungs on tiny scenes, and the look-up
fix (LeCun-initialised readout without the query residual learns to read the token under its query)."""

from __future__ import annotations

import math

import pytest
import torch

from fourds.diagnostics import ladder as L
from fourds.diagnostics.features import oracle_features, pixel_features, position_channels
from fourds.diagnostics.lookup import lookup_probe
from fourds.readouts import AttentionReadout
from fourds.readouts.attention import lecun_normal_

TINY = dict(frames=4, size=32, train_scenes=6, test_scenes=4, label_tracks=8, oracle_tracks=32, steps=20,
            overfit_clips=4, overfit_steps=150, pixel_patch=(2, 8, 8), oracle_patch=8)


def test_lecun_normal_has_variance_one_over_fan_in_and_is_truncated():
    w = torch.empty(600, 400)
    lecun_normal_(w)
    assert w.std().item() == pytest.approx(1 / math.sqrt(400), rel=0.03)
    bound = 2 * math.sqrt(1 / 400) / 0.87962566103423978
    assert w.abs().max().item() <= bound + 1e-6


def test_readout_init_choices_and_query_residual():
    torch.manual_seed(0)
    lecun = AttentionReadout(256, 64, 4, 8, query_dim=32)
    small = AttentionReadout(256, 64, 4, 8, query_dim=32, init="small")
    assert lecun.key.weight.std().item() == pytest.approx(1 / 16, rel=0.1)
    assert small.key.weight.std().item() == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ValueError, match="init must be one of"):
        AttentionReadout(256, 64, 4, 8, query_dim=32, init="xavier")
    # Without the residual the output no longer depends on the query where attention is uniform.
    plain = AttentionReadout(8, 16, 2, 3, query_dim=4, query_residual=False, steps=1)
    feats = torch.zeros(1, 1, 5, 8)  # identical tokens: uniform attention, identical values
    out = plain(feats, torch.randn(1, 6, 4))
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)
    with_res = AttentionReadout(8, 16, 2, 3, query_dim=4, steps=1)
    out = with_res(feats, torch.randn(1, 6, 4))
    assert not torch.allclose(out, out[:, :1].expand_as(out), atol=1e-4)


def test_gap_closed_by_hand():
    boxes = L.build_task(L.LadderConfig(**TINY), "synth_boxes")
    pose = L.build_task(L.LadderConfig(**TINY), "synth_pose")
    assert L.gap_closed(boxes, 0.75, 0.5) == pytest.approx(0.5)  # IoU: higher, perfect 1
    assert L.gap_closed(pose, 0.5, 2.0) == pytest.approx(0.75)  # EPE: lower, perfect 0
    assert L.gap_closed(boxes, 0.4, 0.5) < 0
    assert L.better(boxes, 0.4, 0.5) == 0.5 and L.better(pose, 0.4, 0.5) == 0.4


def test_pixel_features_are_the_tubelets_and_positions():
    video = torch.rand(4, 16, 16, 3)
    f = pixel_features(video, (2, 8, 8))
    assert f.shape == (2, 4, 2 * 8 * 8 * 3 + 18)
    # token (t=1, row 0, col 1) holds frames 2-3, rows 0-7, cols 8-15
    assert torch.allclose(f[1, 1, :384].view(2, 8, 8, 3), video[2:4, :8, 8:16] - 0.5)
    assert torch.allclose(f[1, 1, 384:], position_channels(2, 2)[1])
    with pytest.raises(ValueError, match="does not tile"):
        pixel_features(torch.rand(4, 20, 16, 3), (2, 8, 8))


def test_oracle_features_put_the_answer_at_the_query_tokens():
    cfg = L.LadderConfig(**TINY)
    scene = L.render(cfg, "train", 1)[0]
    f = oracle_features(scene, 8)
    t, h = scene["video"].shape[:2]
    g = h // 8
    assert f.shape[:2] == (t, g * g)
    off = 18  # position channels first
    # tracking: the patch of a track's frame-0 point holds the mean trajectory of that patch's tracks
    vis0 = scene["visible"][:, 0]
    tracks = scene["tracks"][vis0]
    cell = (tracks[:, 0, 1] // 8).long() * g + (tracks[:, 0, 0] // 8).long()
    c = int(cell[0])
    mine = tracks[cell == c]
    disp = ((mine - mine[:, :1]) / torch.tensor([float(h), float(h)])).mean(0)  # (T, 2)
    got = f[0, c, off:off + 3 * t].view(t, 3)
    assert torch.allclose(got[:, :2], disp, atol=1e-5)
    assert torch.equal(f[0, c, off:off + 3 * t], f[-1, c, off:off + 3 * t])  # the same at every frame
    # pose: the last frame's channels are the pose task's answer
    from fourds.tasks.re10k import relative_pose

    pose_at = off + 3 * t + 5 * t + 11 + 64
    assert torch.allclose(f[-1, 0, pose_at:pose_at + 12], relative_pose(scene["cam_to_world"][None])[0].flatten(), atol=1e-4)
    # depth: log depth of the patch
    depth_at = off + 3 * t + 5 * t + 11
    assert torch.allclose(f[2, 0, depth_at:depth_at + 64], scene["depth"][2, :8, :8].clamp_min(1e-3).log().flatten())
    only_pose = oracle_features(scene, 8, groups=("pose",))
    assert only_pose.shape[-1] == off + 12 and torch.equal(only_pose[..., off:], f[..., pose_at:pose_at + 12])
    with pytest.raises(ValueError, match="unknown channel groups"):
        oracle_features(scene, 8, groups=("flow",))
    with pytest.raises(ValueError, match="no 'segmentation'"):
        oracle_features({k: v for k, v in scene.items() if k != "segmentation"}, 8)


def test_the_demo_drops_the_query_residual_the_tasks_keep_the_papers():
    from fourds.tasks import get_task

    assert get_task("synth_tracking").build_readout(32, (8, 4, 4)).readout.query_residual is True
    assert get_task("waymo").build_readout(32, (8, 4, 4)).readout.query_residual is True
    for name in ("synth_tracking", "synth_boxes"):
        ov = L.demo_task_overrides()[name]
        assert ov["query_residual"] is False
        assert get_task(name, **ov).build_readout(32, (8, 4, 4)).readout.query_residual is False


def test_oracle_ceiling_reads_the_answer_exactly_where_the_patch_holds_one_object():
    """On a scene, the perfect reader of the oracle channels scores far above the trivial answer with
    4-pixel patches (the ladder's default) and not above it with 32-pixel patches (one token per frame)."""
    cfg = L.LadderConfig(**{**TINY, "oracle_patch": 4, "label_tracks": 32, "oracle_tracks": 256})
    scenes = L.render(cfg, "test", 3)
    task = L.build_task(cfg, "synth_tracking")
    fine = L.oracle_ceiling(cfg, task, scenes)
    coarse = L.oracle_ceiling(L.LadderConfig(**{**TINY, "oracle_patch": 32, "label_tracks": 32, "oracle_tracks": 256}),
                              task, scenes)
    trivial = L.evaluate(task, L.trivial_head(task, scenes), None, [L.label_sample(cfg, task, s) for s in scenes])
    assert fine > trivial["synth_tracking/average_jaccard"] + 0.2 > coarse + 0.2, (fine, coarse, trivial)
    assert L.oracle_ceiling(cfg, L.build_task(cfg, "synth_pose"), scenes) is None


def test_config_validation_names_the_setting():
    with pytest.raises(ValueError, match="unknown tasks"):
        L.LadderConfig(tasks=("nope",)).validate()
    with pytest.raises(ValueError, match="overfit_clips=9 exceeds"):
        L.LadderConfig(train_scenes=4, overfit_clips=9).validate()


@pytest.fixture(scope="module")
def tiny_scenes():
    cfg = L.LadderConfig(**TINY)
    return L.render(cfg, "train", cfg.train_scenes), L.render(cfg, "test", cfg.test_scenes)


@pytest.mark.parametrize("name", ["synth_boxes", "synth_pose", "synth_motion"])
def test_overfit_rung_passes(name, tiny_scenes):
    """Each readout memorises 4 tiny clips: loss <= 10% of the trivial answer's, >= 80% of the gap."""
    cfg = L.LadderConfig(**TINY, tasks=(name,), rungs=("trivial", "overfit"))  # the demo's readouts
    rows = L.run_task(cfg, name, *tiny_scenes, {}, log=lambda _m: None)
    fit = rows[-1]
    assert fit.rung == "overfit"
    assert fit.passed, (fit.metric, fit.gap, fit.extra["loss_ratio"])


def test_overfit_rung_fails_for_a_readout_that_cannot_learn(tiny_scenes):
    """The rung can fail: with a learning rate of 0 the readout stays at its initial answer."""
    cfg = L.LadderConfig(**{**TINY, "lr": 0.0}, tasks=("synth_pose",), rungs=("trivial", "overfit"))
    fit = L.run_task(cfg, "synth_pose", *tiny_scenes, {}, log=lambda _m: None)[-1]
    assert fit.passed is False and fit.extra["loss_ratio"] > 0.5


def test_lookup_needs_lecun_init_and_no_query_residual():
    """A box readout reads the token under its query in 300 steps only with LeCun init (the official
    readout's) and without the query residual; the paper's residual or the old 0.02 init stay at the
    mean answer (docs/ladder.md)."""
    fixed = lookup_probe(query_residual=False)
    assert fixed.ratio < 0.4, fixed
    assert lookup_probe(query_residual=True).ratio > 0.8
    assert lookup_probe(query_residual=False, init="small").ratio > 0.8
