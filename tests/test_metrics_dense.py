"""AbsRel, box IoU and top-1: hand cases, edge cases, and exact data-set figures under any batching."""

import math

import pytest
import torch

from fourds.metrics import (
    METRIC_SPECS,
    abs_rel,
    abs_rel_sums,
    abs_rel_valid_counts,
    box_iou,
    box_iou_tracking,
    box_valid_pair_counts,
    top1,
)

# --- AbsRel -------------------------------------------------------------------------------------


def test_abs_rel_hand_computed_with_strict_bounds():
    gt = torch.tensor([[[2.0, 4.0], [0.0, 10.0]], [[1e-3, 5.0], [12.0, 1.0]]])
    pred = torch.tensor([[[1.0, 5.0], [3.0, 1.0]], [[9.0, 5.5], [1.0, 1.0]]])
    # Sample 0: valid 2 and 4 (0 and 10 are out: the bounds are strict) -> (0.5 + 0.25) / 2.
    # Sample 1: valid 5 and 1 (1e-3 and 12 are out) -> (0.1 + 0) / 2.
    torch.testing.assert_close(abs_rel(pred, gt), torch.tensor([0.375, 0.05]))
    assert abs_rel_valid_counts(gt).tolist() == [2, 2]
    total, _ = abs_rel_sums(pred, gt)
    torch.testing.assert_close(total, torch.tensor([0.75, 0.1]))
    # Custom range.
    torch.testing.assert_close(
        abs_rel(pred, gt, min_depth=0.5, max_depth=20.0)[1], torch.tensor((0.1 + 11 / 12 + 0) / 3)
    )


def test_abs_rel_no_valid_pixel_is_nan_with_zero_weight():
    gt = torch.zeros(2, 3, 4)
    gt[1] = 2.0
    pred = torch.ones(2, 3, 4)
    values = abs_rel(pred, gt)
    assert math.isnan(values[0]) and values[1].item() == pytest.approx(0.5)
    weights = abs_rel_valid_counts(gt)
    assert weights.tolist() == [0, 12]
    assert METRIC_SPECS["abs_rel"].reduce(values, weights) == pytest.approx(0.5)
    assert not torch.isnan(abs_rel_sums(pred, gt)[0]).any()  # invalid pixels never enter the sums


def test_abs_rel_dataset_figure_is_the_pixel_mean_however_batched():
    gen = torch.Generator().manual_seed(5)
    gt = torch.rand(7, 2, 6, 5, generator=gen) * 12  # some pixels above max_depth
    gt[gt < 1.0] = 0.0  # holes
    gt[3] = 0.0  # one sample without valid pixels
    pred = gt + torch.randn(7, 2, 6, 5, generator=gen)
    valid = (gt > 1e-3) & (gt < 10)
    pixel_mean = ((pred - gt).abs() / gt)[valid].double().mean().item()
    spec = METRIC_SPECS["abs_rel"]
    assert spec.direction == "lower" and spec.weight == "abs_rel_valid_counts"
    for split in ([7], [2, 5], [1, 3, 3]):
        chunks = list(zip(pred.split(split), gt.split(split)))
        values = [abs_rel(p, g) for p, g in chunks]
        weights = [abs_rel_valid_counts(g) for _, g in chunks]
        assert spec.reduce(values, weights) == pytest.approx(pixel_mean, rel=1e-6)
    # The plain mean over samples is a different (wrong) figure here.
    assert (
        abs(spec.reduce(abs_rel(pred, gt), abs_rel_valid_counts(gt)) - abs_rel(pred, gt).nanmean().item())
        > 1e-4
    )


def test_abs_rel_errors():
    with pytest.raises(ValueError, match="same shape"):
        abs_rel(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="min_depth"):
        abs_rel(torch.ones(2, 3), torch.ones(2, 3), min_depth=5.0, max_depth=1.0)


# --- box IoU -----------------------------------------------------------------------------------


def test_box_iou_hand_computed_and_degenerate():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 3.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [1.0, 1.0, 1.0, 3.0]])
    # Half overlap: 2 / 6; identical: 1; disjoint: 0; two identical zero-width boxes: 0 by definition.
    torch.testing.assert_close(box_iou(a, b), torch.tensor([1 / 3, 1.0, 0.0, 0.0]))
    # An inverted (x1 < x0) prediction is an empty box, not a negative area.
    assert box_iou(torch.tensor([2.0, 2.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0, 2.0])).item() == 0.0


def test_box_iou_tracking_skips_frame_zero_and_invalid_pairs():
    gt = torch.tensor([0.0, 0.0, 2.0, 2.0]).expand(1, 2, 3, 4).clone()
    pred = gt.clone()
    pred[0, 0, 0] = torch.tensor([50.0, 50.0, 60.0, 60.0])  # frame 0: ignored
    pred[0, 0, 1] = torch.tensor([1.0, 0.0, 3.0, 2.0])  # IoU 1/3
    pred[0, 1, 2] = torch.tensor([9.0, 9.0, 9.0, 9.0])  # degenerate prediction: IoU 0
    valid = torch.tensor([[[True, True, True], [True, False, True]]])
    # Valid pairs with t >= 1: (0,1) 1/3, (0,2) 1, (1,2) 0.
    torch.testing.assert_close(box_iou_tracking(pred, gt, valid), torch.tensor([(1 / 3 + 1 + 0) / 3]))
    assert box_valid_pair_counts(valid).tolist() == [3]


def test_box_dataset_figure_is_mean_over_all_valid_pairs():
    gen = torch.Generator().manual_seed(6)
    xy = torch.rand(5, 4, 6, 2, generator=gen) * 50
    wh = torch.rand(5, 4, 6, 2, generator=gen) * 20 + 1
    gt = torch.cat([xy, xy + wh], -1)
    pred = gt + torch.randn(5, 4, 6, 4, generator=gen) * 3
    valid = torch.rand(5, 4, 6, generator=gen) > 0.4
    valid[2] = False  # a sample with no valid pair
    values = box_iou_tracking(pred, gt, valid)
    assert math.isnan(values[2]) and box_valid_pair_counts(valid)[2] == 0
    # Independent per-pair loop.
    ious = []
    for i in range(5):
        for o in range(4):
            for t in range(1, 6):
                if valid[i, o, t]:
                    p, g = pred[i, o, t].tolist(), gt[i, o, t].tolist()
                    iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
                    ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
                    area = lambda b: max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
                    ious.append(iw * ih / (area(p) + area(g) - iw * ih))
    spec = METRIC_SPECS["box_iou"]
    assert spec.direction == "higher"
    assert spec.reduce(values, box_valid_pair_counts(valid)) == pytest.approx(sum(ious) / len(ious), rel=1e-6)


def test_box_errors():
    with pytest.raises(ValueError, match=r"\(B, O, T\)"):
        box_iou_tracking(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="must match"):
        box_iou_tracking(
            torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 3, dtype=torch.bool)
        )


# --- top-1 -------------------------------------------------------------------------------------


def test_top1():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    # Ties go to the lowest index: sample 2 predicts class 0.
    assert top1(logits, torch.tensor([1, 2, 0])).tolist() == [1.0, 0.0, 1.0]
    assert top1(logits, torch.tensor([1, 2, 1])).tolist() == [1.0, 0.0, 0.0]
    assert METRIC_SPECS["top1"].reduce(top1(logits, torch.tensor([1, 2, 0]))) == pytest.approx(2 / 3)
    assert top1(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).shape == (0,)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        top1(logits, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integer"):
        top1(logits, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        top1(logits[0], torch.tensor([1]))
