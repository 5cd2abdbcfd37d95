"""Metrics: pure functions on tensors returning one value per sample, and their data-set reducers.

Each metric returns per-sample values; :data:`METRIC_SPECS` says for each whether higher or lower is
better and how a data set's figure is formed (:func:`reduce`): a plain mean over samples (top-1,
TAP-Vid, pose EPE) or a mean weighted by a per-sample count (AbsRel by valid pixels,
box IoU by valid pairs), so the figure does not depend on how samples were batched.
"""

from fourds.metrics.boxes import box_iou, box_iou_tracking, box_valid_pair_counts
from fourds.metrics.classification import top1
from fourds.metrics.depth import abs_rel, abs_rel_sums, abs_rel_valid_counts, abs_rel_valid_mask
from fourds.metrics.pose import CUBE_POINTS, cube_points, pose_epe, procrustes_rotation
from fourds.metrics.reducers import METRIC_SPECS, TAPVID_THRESHOLDS, MetricSpec, metric_spec, reduce
from fourds.metrics.tapvid import tapvid, tapvid_eval_mask

__all__ = [
    "CUBE_POINTS",
    "METRIC_SPECS",
    "TAPVID_THRESHOLDS",
    "MetricSpec",
    "abs_rel",
    "abs_rel_sums",
    "abs_rel_valid_counts",
    "abs_rel_valid_mask",
    "box_iou",
    "box_iou_tracking",
    "box_valid_pair_counts",
    "cube_points",
    "metric_spec",
    "pose_epe",
    "procrustes_rotation",
    "reduce",
    "tapvid",
    "tapvid_eval_mask",
    "top1",
]
