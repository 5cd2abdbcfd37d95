"""TAP-Vid point-tracking metrics (Average Jaccard and friends), per video.

Same semantics as ``compute_tapvid_metrics`` in google-deepmind/tapnet
(``tapnet/tapvid/evaluation_datasets.py``), with fourds' conventions on the inputs:

================================  =====================================================
reference argument                fourds argument
================================  =====================================================
``query_points[..., 0]`` (t)      ``query_frames`` (integer frame index; the reference
                                  rounds its float t, and ignores the query's y, x)
``gt_occluded``                   ``~gt_visible``
``pred_occluded``                 ``~pred_visible``
``gt_tracks``, ``pred_tracks``    the same, ``(x, y)`` pixels
(no equivalent)                   ``track_valid``: padded tracks count nowhere
================================  =====================================================

Which frames are evaluated for a track queried at frame ``q``: in ``"first"`` mode the frames
``t > q`` (the query frame and the frames before it are excluded: the protocol assumes the point is
unseen before its first visible frame); in ``"strided"`` mode every frame ``t != q``. Counts are summed
over all tracks and evaluated frames of a video, then divided (a per-video pooled ratio, not a mean
over tracks); the benchmark figure is the plain mean of the per-video values over videos.

A position is "within" threshold ``d`` pixels when its squared distance to the ground truth is
``< d**2`` (strict), for ``d`` in 1, 2, 4, 8, 16.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fourds.metrics.reducers import TAPVID_THRESHOLDS

_MODES = ("first", "strided")


def tapvid_eval_mask(query_frames: Tensor, num_frames: int, mode: str = "first") -> Tensor:
    """Frames that count for each track.

    Args:
        query_frames: ``(B, P)`` int frame index of each track's query, in ``[0, num_frames)``.
        num_frames: ``T``.
        mode: ``"first"`` (frames after the query) or ``"strided"`` (all frames but the query).

    Returns:
        ``(B, P, T)`` bool.
    """
    if mode not in _MODES:
        raise ValueError(f"tapvid: mode must be one of {_MODES}, got {mode!r}")
    t = torch.arange(num_frames, device=query_frames.device)
    q = query_frames.to(torch.long).unsqueeze(-1)
    return t > q if mode == "first" else t != q


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` in float32 with NaN where ``den == 0`` (what numpy's 0/0 gives the reference)."""
    num = num.to(torch.float64)
    den = den.to(torch.float64)
    out = num / den.clamp_min(1)
    return torch.where(den > 0, out, torch.full_like(out, float("nan"))).to(torch.float32)


def tapvid(
    pred_tracks: Tensor,
    pred_visible: Tensor,
    gt_tracks: Tensor,
    gt_visible: Tensor,
    query_frames: Tensor,
    mode: str = "first",
    track_valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """TAP-Vid metrics of each video in a batch.

    Positions are in whatever pixel frame the caller uses; the thresholds are in pixels of that frame,
    and the benchmark's figures assume 256x256 frames, so tasks rescale tracks to 256x256 before
    calling this.

    Args:
        pred_tracks: ``(B, P, T, 2)`` predicted ``(x, y)`` pixel positions.
        pred_visible: ``(B, P, T)`` bool, predicted visibility.
        gt_tracks: ``(B, P, T, 2)`` ground-truth ``(x, y)`` pixel positions.
        gt_visible: ``(B, P, T)`` bool, ground-truth visibility.
        query_frames: ``(B, P)`` int, the frame of each track's query point, in ``[0, T)``.
        mode: ``"first"`` or ``"strided"`` (see the module docstring for the frames each evaluates).
        track_valid: ``(B, P)`` bool, False for padding; padded tracks are ignored. Default: all valid.

    Returns:
        Per-video ``(B,)`` float32 values in [0, 1] under the keys ``occlusion_accuracy``,
        ``pts_within_{1,2,4,8,16}``, ``jaccard_{1,2,4,8,16}``, ``average_jaccard`` and
        ``average_pts_within_thresh``. A ratio whose denominator is zero is NaN, as in the reference:
        ``occlusion_accuracy`` when a video has no evaluated frame, ``pts_within_*`` when no evaluated
        frame is visible in the ground truth, ``jaccard_*`` when additionally nothing is predicted
        visible; the averages are NaN if any of their terms is. The TAP-Vid specs in
        :data:`fourds.metrics.METRIC_SPECS` leave NaN videos out of the data-set mean (the reference's
        plain numpy mean would turn the whole figure into NaN).
    """
    if pred_tracks.ndim != 4 or pred_tracks.shape[-1] != 2:
        raise ValueError(f"tapvid: pred_tracks must be (B, P, T, 2), got {tuple(pred_tracks.shape)}")
    b, p, t, _ = pred_tracks.shape
    expected = {
        "gt_tracks": (gt_tracks, (b, p, t, 2)),
        "pred_visible": (pred_visible, (b, p, t)),
        "gt_visible": (gt_visible, (b, p, t)),
        "query_frames": (query_frames, (b, p)),
    }
    if track_valid is not None:
        expected["track_valid"] = (track_valid, (b, p))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"tapvid: {name} must have shape {shape} to match pred_tracks, got {tuple(tensor.shape)}"
            )
    if query_frames.is_floating_point():
        raise ValueError(
            "tapvid: query_frames must be integer frame indices (round (t, y, x) query times first)"
        )
    if mode not in _MODES:
        raise ValueError(f"tapvid: mode must be one of {_MODES}, got {mode!r}")

    valid = (
        torch.ones(b, p, dtype=torch.bool, device=pred_tracks.device)
        if track_valid is None
        else track_valid.bool()
    )
    q = query_frames.to(torch.long)
    bad = valid & ((q < 0) | (q >= t))
    if bool(bad.any()):
        raise ValueError(
            f"tapvid: query_frames must lie in [0, {t}) for valid tracks, got {q[bad].tolist()[:5]}"
        )

    evaluated = tapvid_eval_mask(q, t, mode) & valid.unsqueeze(-1)  # (B, P, T)
    gt_vis = gt_visible.bool()
    pr_vis = pred_visible.bool()

    def count(mask: Tensor) -> Tensor:
        return (mask & evaluated).sum(dim=(1, 2))

    out: dict[str, Tensor] = {
        "occlusion_accuracy": _safe_ratio(count(pr_vis == gt_vis), evaluated.sum(dim=(1, 2)))
    }

    dtype = torch.promote_types(pred_tracks.dtype, torch.float32)
    sq_dist = (pred_tracks.to(dtype) - gt_tracks.to(dtype)).square().sum(-1)  # (B, P, T)
    visible_count = count(gt_vis)
    within_all, jaccard_all = [], []
    for thresh in TAPVID_THRESHOLDS:
        within = sq_dist < thresh**2
        correct = within & gt_vis
        frac = _safe_ratio(count(correct), visible_count)
        true_pos = count(correct & pr_vis)
        # TP + FN is simply the number of visible ground-truth points; FP are predicted-visible points
        # that are occluded in the ground truth or too far.
        false_pos = count(pr_vis & (~gt_vis | ~within))
        jac = _safe_ratio(true_pos, visible_count + false_pos)
        out[f"pts_within_{thresh}"] = frac
        out[f"jaccard_{thresh}"] = jac
        within_all.append(frac)
        jaccard_all.append(jac)
    out["average_jaccard"] = torch.stack(jaccard_all, dim=1).mean(dim=1)
    out["average_pts_within_thresh"] = torch.stack(within_all, dim=1).mean(dim=1)
    return out
