"""Data-set reducers and the metric registry."""

import math

import pytest
import torch

from fourds.metrics import METRIC_SPECS, MetricSpec, metric_spec, reduce


def test_mean_skips_nan_only_when_asked():
    assert reduce(torch.tensor([1.0, float("nan"), 3.0]), skip_nan=True) == 2.0
    assert math.isnan(reduce(torch.tensor([1.0, float("nan"), 3.0])))
    assert reduce([torch.tensor([1.0]), torch.tensor([2.0, 6.0])]) == 3.0  # per-batch lists concatenate
    assert math.isnan(reduce(torch.tensor([float("nan")]), skip_nan=True))
    assert math.isnan(reduce([]))
    # TAP-Vid NaN means "nothing to evaluate"; a NaN pose EPE means a NaN prediction and must show.
    assert METRIC_SPECS["average_jaccard"].reduce(torch.tensor([0.5, float("nan")])) == 0.5
    assert math.isnan(METRIC_SPECS["pose_epe"].reduce(torch.tensor([0.5, float("nan")])))
    assert math.isnan(METRIC_SPECS["abs_rel"].reduce(torch.tensor([0.5, float("nan")]), torch.tensor([3, 1])))


def test_weighted_is_exact_and_ignores_zero_weight():
    values = torch.tensor([0.5, float("nan"), 0.2])
    weights = torch.tensor([1, 0, 3])
    assert reduce(values, weights) == pytest.approx((0.5 + 0.6) / 4)
    assert math.isnan(reduce(torch.tensor([float("nan")]), torch.tensor([0])))
    with pytest.raises(ValueError, match="must match"):
        reduce(values, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        reduce(values, torch.tensor([1, -1, 2]))


def test_spec_enforces_its_reducer():
    with pytest.raises(ValueError, match="abs_rel_valid_counts"):
        METRIC_SPECS["abs_rel"].reduce(torch.ones(2))
    with pytest.raises(ValueError, match="plain mean"):
        METRIC_SPECS["top1"].reduce(torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="direction"):
        MetricSpec("x", "up", "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight function"):
        MetricSpec("x", "higher", "weighted")


def test_registry_lookup_and_direction():
    assert metric_spec("scannet/abs_rel").name == "abs_rel"
    assert metric_spec("ssv2_top1").name == "top1"
    assert metric_spec("perception_test.average_pts_within_thresh").name == "average_pts_within_thresh"
    assert metric_spec("x_jaccard_16").name == "jaccard_16"
    with pytest.raises(ValueError, match="known metrics"):
        metric_spec("accuracy5")
    assert METRIC_SPECS["abs_rel"].better(0.1, 0.2) and METRIC_SPECS["top1"].better(0.9, 0.8)
    assert not METRIC_SPECS["top1"].better(float("nan"), 0.1)
    for name in ("top1", "pose_epe", "abs_rel", "box_iou", "average_jaccard"):
        assert name in METRIC_SPECS
    weighted = {n for n, s in METRIC_SPECS.items() if s.reducer == "weighted"}
    assert weighted == {"abs_rel", "box_iou"}
    from fourds import metrics

    for name in weighted:  # the declared weight functions exist
        assert callable(getattr(metrics, METRIC_SPECS[name].weight))
