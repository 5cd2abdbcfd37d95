"""TAP-Vid metrics: hand-computed cases, edge cases, and an independent numpy re-implementation."""

import math

import numpy as np
import pytest
import torch

from fourds.metrics import METRIC_SPECS, reduce, tapvid, tapvid_eval_mask

KEYS = {
    "occlusion_accuracy",
    "average_jaccard",
    "average_pts_within_thresh",
    *[f"pts_within_{t}" for t in (1, 2, 4, 8, 16)],
    *[f"jaccard_{t}" for t in (1, 2, 4, 8, 16)],
}


def reference_tapvid(query_points, gt_occluded, gt_tracks, pred_occluded, pred_tracks, query_mode):
    """Numpy re-implementation of tapnet's compute_tapvid_metrics, written from reading it.

    Inputs in the reference's own encoding: query points (t, y, x) floats, occlusion flags.
    """
    num_frames = gt_tracks.shape[2]
    eye = np.eye(num_frames, dtype=np.int32)
    if query_mode == "first":
        table = np.cumsum(eye, axis=1) - eye  # row q: ones at columns > q
    elif query_mode == "strided":
        table = 1 - eye  # row q: ones everywhere but column q
    else:
        raise ValueError(query_mode)
    qf = np.round(query_points[..., 0]).astype(np.int32)
    ev = table[qf] > 0  # (b, n, t)
    axes = (1, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = {
            "occlusion_accuracy": np.sum((pred_occluded == gt_occluded) & ev, axis=axes)
            / np.sum(ev, axis=axes)
        }
        vis = ~gt_occluded
        pvis = ~pred_occluded
        jac, within_all = [], []
        for th in (1, 2, 4, 8, 16):
            within = np.sum(np.square(pred_tracks - gt_tracks), axis=-1) < th * th
            correct = within & vis
            frac = np.sum(correct & ev, axis=axes) / np.sum(vis & ev, axis=axes)
            tp = np.sum(correct & pvis & ev, axis=axes)
            gt_pos = np.sum(vis & ev, axis=axes)
            fp = np.sum((((~vis) & pvis) | ((~within) & pvis)) & ev, axis=axes)
            j = tp / (gt_pos + fp)
            res[f"pts_within_{th}"] = frac
            res[f"jaccard_{th}"] = j
            within_all.append(frac)
            jac.append(j)
        res["average_jaccard"] = np.mean(np.stack(jac, axis=1), axis=1)
        res["average_pts_within_thresh"] = np.mean(np.stack(within_all, axis=1), axis=1)
    return res


def _one_track_case():
    """One video, one track over 4 frames (plus a padded track full of garbage)."""
    gt = torch.tensor([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0]])
    pred = gt + torch.tensor([[100.0, 0.0], [0.5, 0.0], [0.0, 0.0], [0.0, 3.0]])
    gt_vis = torch.tensor([True, True, False, True])
    pred_vis = torch.tensor([True, True, True, True])
    garbage = torch.full((4, 2), 1e4)
    return (
        torch.stack([pred, garbage])[None],
        torch.stack([pred_vis, torch.ones(4, dtype=torch.bool)])[None],
        torch.stack([gt, -garbage])[None],
        torch.stack([gt_vis, torch.zeros(4, dtype=torch.bool)])[None],
        torch.tensor([[True, False]]),
    )


def test_hand_computed_first_mode_excludes_query_frame_and_padding():
    pred, pred_vis, gt, gt_vis, valid = _one_track_case()
    m = tapvid(pred, pred_vis, gt, gt_vis, torch.tensor([[0, 0]]), mode="first", track_valid=valid)
    assert set(m) == KEYS
    assert all(v.shape == (1,) and v.dtype == torch.float32 for v in m.values())
    # Frames 1..3 count. Frame 1: visible, 0.5 px off. Frame 2: occluded but predicted visible (FP).
    # Frame 3: visible, 3 px off.
    expected = {
        "occlusion_accuracy": 2 / 3,
        "pts_within_1": 1 / 2, "pts_within_2": 1 / 2,
        "pts_within_4": 1.0, "pts_within_8": 1.0, "pts_within_16": 1.0,
        "jaccard_1": 1 / 4, "jaccard_2": 1 / 4, "jaccard_4": 2 / 3, "jaccard_8": 2 / 3, "jaccard_16": 2 / 3,
        "average_jaccard": (1 / 4 + 1 / 4 + 3 * 2 / 3) / 5,
        "average_pts_within_thresh": 0.8,
    }  # fmt: skip
    for key, value in expected.items():
        assert m[key].item() == pytest.approx(value, abs=1e-6), key


def test_hand_computed_strided_mode_and_late_query():
    pred, pred_vis, gt, gt_vis, valid = _one_track_case()
    # Strided, queried at frame 2: frames 0, 1, 3 count; frame 0 is 100 px off but visible everywhere.
    m = tapvid(pred, pred_vis, gt, gt_vis, torch.tensor([[2, 0]]), mode="strided", track_valid=valid)
    assert m["occlusion_accuracy"].item() == pytest.approx(1.0)
    assert m["pts_within_1"].item() == pytest.approx(1 / 3)
    assert m["pts_within_4"].item() == pytest.approx(2 / 3)
    assert m["jaccard_1"].item() == pytest.approx(1 / 5)  # TP 1 / (3 visible + 2 far)
    assert m["jaccard_16"].item() == pytest.approx(2 / 4)  # TP 2 / (3 visible + 1 far)
    # First mode, queried at frame 2: only frame 3 counts.
    m = tapvid(pred, pred_vis, gt, gt_vis, torch.tensor([[2, 0]]), mode="first", track_valid=valid)
    assert m["pts_within_2"].item() == 0.0 and m["pts_within_4"].item() == 1.0
    assert m["jaccard_2"].item() == 0.0 and m["jaccard_4"].item() == 1.0


def test_perfect_prediction_scores_one():
    gt = torch.rand(2, 5, 6, 2) * 256
    vis = torch.rand(2, 5, 6) > 0.3
    vis[:, :, 1] = True
    m = tapvid(gt, vis, gt, vis, torch.zeros(2, 5, dtype=torch.long))
    for key in KEYS:
        assert torch.equal(m[key], torch.ones(2)), key


def test_eval_mask():
    q = torch.tensor([[0, 2]])
    assert tapvid_eval_mask(q, 4, "first").tolist() == [
        [[False, True, True, True], [False, False, False, True]]
    ]
    assert tapvid_eval_mask(q, 4, "strided").tolist() == [
        [[False, True, True, True], [True, True, False, True]]
    ]


def test_edge_cases_give_nan_not_crash():
    t = 5
    gt = torch.zeros(3, 2, t, 2)
    pred = gt.clone()
    gt_vis = torch.zeros(3, 2, t, dtype=torch.bool)  # video 0: nothing visible, nothing predicted visible
    pred_vis = torch.zeros(3, 2, t, dtype=torch.bool)
    pred_vis[1] = True  # video 1: nothing visible, everything predicted visible
    valid = torch.tensor([[True, True], [True, True], [False, False]])  # video 2: only padding
    m = tapvid(pred, pred_vis, gt, gt_vis, torch.zeros(3, 2, dtype=torch.long), track_valid=valid)
    # No visible ground truth: pts_within undefined; jaccard 0/0 -> NaN, or 0 when there are false positives.
    assert m["occlusion_accuracy"][0].item() == 1.0 and m["occlusion_accuracy"][1].item() == 0.0
    assert math.isnan(m["pts_within_1"][0]) and math.isnan(m["pts_within_1"][1])
    assert math.isnan(m["average_jaccard"][0]) and m["average_jaccard"][1].item() == 0.0
    assert all(math.isnan(v[2]) for v in m.values())
    # The mean reducer skips undefined videos.
    assert reduce(m["average_jaccard"], skip_nan=True) == 0.0
    assert METRIC_SPECS["average_jaccard"].reduce(m["average_jaccard"]) == 0.0
    # Query on the last frame in first mode: no evaluated frame at all.
    last = tapvid(pred[:1], pred_vis[:1], gt[:1], gt_vis[:1], torch.full((1, 2), t - 1))
    assert math.isnan(last["occlusion_accuracy"])


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_matches_reference_reimplementation(mode):
    gen = np.random.default_rng(3 if mode == "first" else 4)
    b, p, t = 6, 20, 12
    gt = gen.uniform(0, 256, (b, p, t, 2))
    scale = np.exp(gen.uniform(np.log(0.2), np.log(40), (b, p, t, 1)))
    pred = gt + gen.normal(size=(b, p, t, 2)) * scale
    gt_occ = gen.random((b, p, t)) < 0.3
    pred_occ = gen.random((b, p, t)) < 0.3
    qf = gen.integers(0, t, (b, p))
    valid = gen.random((b, p)) < 0.8
    valid[:, 0] = True
    ours = tapvid(
        torch.from_numpy(pred).float(),
        torch.from_numpy(~pred_occ),
        torch.from_numpy(gt).float(),
        torch.from_numpy(~gt_occ),
        torch.from_numpy(qf),
        mode=mode,
        track_valid=torch.from_numpy(valid),
    )
    for i in range(b):  # the reference has no padding: give it only each video's valid tracks
        keep = valid[i]
        query_points = np.stack(
            [qf[i][keep], gen.uniform(0, 256, keep.sum()), gen.uniform(0, 256, keep.sum())], -1
        )
        ref = reference_tapvid(
            query_points[None].astype(np.float32),
            gt_occ[i][keep][None],
            gt[i][keep][None].astype(np.float32),
            pred_occ[i][keep][None],
            pred[i][keep][None].astype(np.float32),
            mode,
        )
        assert set(ref) == set(ours)
        for key in ref:
            np.testing.assert_allclose(ours[key][i].item(), ref[key][0], rtol=1e-6, atol=1e-7, err_msg=key)
    assert 0.05 < ours["average_jaccard"].mean() < 0.95  # the random case exercises every threshold


def test_errors_name_the_problem():
    x = torch.zeros(1, 2, 3, 2)
    v = torch.ones(1, 2, 3, dtype=torch.bool)
    q = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="mode"):
        tapvid(x, v, x, v, q, mode="last")
    with pytest.raises(ValueError, match="gt_visible"):
        tapvid(x, v, x, v[..., :2], q)
    with pytest.raises(ValueError, match="integer"):
        tapvid(x, v, x, v, q.float())
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        tapvid(x, v, x, v, torch.tensor([[0, 3]]))
    # An out-of-range query on a padded track is fine.
    tapvid(x, v, x, v, torch.tensor([[0, 99]]), track_valid=torch.tensor([[True, False]]))


def test_every_key_has_a_spec():
    assert KEYS <= set(METRIC_SPECS)
    assert all(METRIC_SPECS[k].direction == "higher" and METRIC_SPECS[k].reducer == "mean" for k in KEYS)
