"""The six real tasks: Table 6 readout sizes, registry and overrides, forward/backward on hand-made
samples through the tiny backbone, losses and metrics on hand-computed cases, evaluation clips."""

from __future__ import annotations

import math

import pytest
import torch

from fourds.data.collate import collate_samples
from fourds.data.geometry import HFlip, apply_geometry
from fourds.metrics import box_iou_tracking, pose_epe, tapvid
from fourds.models import create
from fourds.tasks import TABLE6_PARAMS, count_readout_params, get_task, list_tasks, relative_pose, select_frames
from fourds.tasks.perception_test import huber, predicted_visible
from fourds.tasks.waymo import filter_boxes
from fourds.probe.metrics import MetricAccumulator

REAL = ["ssv2", "k700", "re10k", "perception_test", "waymo", "scannet"]
SYNTH = ["synth_tracking", "synth_boxes", "synth_pose", "synth_depth", "synth_motion"]
SMALL = dict(num_frames=4, input_size=(32, 32), channels=16, num_heads=2)
EXTRA = {"perception_test": dict(embed_dim=16, num_train_tracks=5), "waymo": dict(embed_dim=16), "ssv2": dict(num_classes=5),
         "k700": dict(num_classes=5)}


def small_task(name: str, **kw):
    return get_task(name, **{**SMALL, **EXTRA.get(name, {}), **kw})


# ------------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("name", REAL)
def test_readout_matches_table6_at_width_1024(name: str) -> None:
    assert count_readout_params(get_task(name), 1024) == TABLE6_PARAMS[name]


def test_registry_names_and_override_validation() -> None:
    assert set(list_tasks()) == set(REAL + SYNTH)
    with pytest.raises(ValueError, match="unknown task 'nope'.*ssv2"):
        get_task("nope")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['chanels'\].*channels"):
        get_task("ssv2", chanels=8)
    with pytest.raises(ValueError, match="divisible"):
        get_task("ssv2", channels=10, num_heads=4)
    task = get_task("ssv2", channels=32, num_heads=4, input_size=[64, 48])
    assert task.input_size == (64, 48) and count_readout_params(task, 64) < count_readout_params(get_task("ssv2"), 64)
    assert get_task("ssv2").layer_fraction == 0.75 and get_task("ssv2").finetune_layer_fraction == 0.95
    assert get_task("k700").finetune_layer_fraction == 0.75
    assert all(get_task(n).layer_fraction == 0.95 for n in ("re10k", "perception_test", "waymo", "scannet"))
    for name in REAL:
        task = get_task(name)
        assert task.primary_metric in task.metric_specs, name
        assert task.primary_metric.startswith(f"{name}/")
    assert get_task("perception_test").data_sources == {"train": "movi_e", "eval": "perception_test"}


def test_real_tasks_need_a_data_root() -> None:
    with pytest.raises(ValueError, match="data_root"):
        get_task("scannet").dataset("train")


# ------------------------------------------------------------------------------------------ samples
def make_sample(name: str, frames: int = 12, size: tuple[int, int] = (40, 48), seed: int = 0, tracks: int = 6) -> dict:
    """A hand-made sample in the task's documented format, longer than the task's clip."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    s: dict = {"video": torch.randint(0, 256, (frames, h, w, 3), generator=g, dtype=torch.uint8), "id": f"clip{seed}"}
    if name in ("ssv2", "k700"):
        s["label"] = torch.tensor(seed % 5)
    elif name == "re10k":
        angle = torch.linspace(0, 0.3, frames)
        c2w = torch.eye(4).repeat(frames, 1, 1)
        c2w[:, 0, 0], c2w[:, 0, 2], c2w[:, 2, 0], c2w[:, 2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
        c2w[:, :3, 3] = torch.stack([torch.linspace(0, 1, frames), torch.zeros(frames), torch.linspace(0, 0.5, frames)], -1)
        s["cam_to_world"] = c2w
        s["intrinsics"] = torch.tensor([[40.0, 0, w / 2], [0, 40.0, h / 2], [0, 0, 1]])
    elif name == "perception_test":
        start = torch.rand(tracks, 1, 2, generator=g) * torch.tensor([w, h])
        s["tracks"] = start + torch.arange(frames)[None, :, None] * 0.5
        s["visible"] = torch.rand(tracks, frames, generator=g) > 0.2
        s["visible"][: tracks // 2] = True
    elif name == "waymo":
        x0 = torch.tensor([2.0, 10.0, 20.0, 30.0])[:, None] + torch.arange(frames) * 0.3
        y0 = torch.tensor([4.0, 8.0, 12.0, 1.0])[:, None].expand(-1, frames)
        wh = torch.tensor([12.0, 9.0, 1.0, 8.0])[:, None]
        s["boxes"] = torch.stack([x0, y0, x0 + wh, y0 + wh], -1)
        s["box_valid"] = torch.ones(4, frames, dtype=torch.bool)
    elif name == "scannet":
        s["depth"] = 0.5 + 3 * torch.rand(frames, h // 2, w // 2, generator=g)  # lower-resolution depth, like ScanNet
        s["depth"][:, 0] = 0.0  # invalid rows
    return s


@pytest.fixture(scope="module")
def backbone():
    model = create("4ds-tiny", depth=1, input_size=(4, 32, 32))
    model.init_weights(seed=0)
    return model.eval()


@pytest.mark.parametrize("name", REAL)
def test_forward_backward_on_a_batch(name: str, backbone) -> None:
    task = small_task(name)
    g = torch.Generator().manual_seed(0)
    samples = [task.train_transform(make_sample(name, seed=i), g) for i in range(2)]
    for s in samples:
        assert s["video"].shape[:3] == (4, 32, 32), name
    batch = collate_samples(samples)
    from fourds.data import to_float

    with torch.no_grad():
        (features,) = backbone.features(to_float(batch["video"]), layers=[1])
    readout = task.build_readout(backbone.dim, backbone.grid)
    outputs = readout(features, batch)
    loss = task.loss(outputs, batch)
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss), name
    loss.backward()
    grads = [p.grad for p in readout.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads), name
    metrics = task.metrics(outputs, batch)
    assert set(metrics) >= {task.primary_metric}
    for key, value in metrics.items():
        assert value.shape == (2,), (name, key)
    assert torch.isfinite(metrics[task.primary_metric]).all(), name
    acc = MetricAccumulator(task)
    acc.add(outputs, batch)
    assert math.isfinite(acc.reduce()[task.primary_metric])
    preds = task.predictions(outputs, batch)
    assert preds, name

    # Evaluation: clips of the raw sample through the deterministic transform.
    raw = make_sample(name, frames=30, seed=3)
    clips = [task.eval_transform(c) for c in task.evaluate_clips(raw)]
    assert all(c["video"].shape[:3] == (4, 32, 32) for c in clips)
    again = [task.eval_transform(c) for c in task.evaluate_clips(raw)]
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(clips, again))


def test_prediction_keys_follow_the_visualisation_conventions(backbone) -> None:
    shapes = {}
    for name in REAL:
        task = small_task(name)
        batch = collate_samples([task.eval_transform(make_sample(name, seed=i)) for i in range(2)])
        features = torch.randn(2, *backbone.grid[:1], math.prod(backbone.grid[1:]), backbone.dim)
        preds = task.predictions(task.build_readout(backbone.dim, backbone.grid)(features, batch), batch)
        shapes[name] = {k: tuple(v.shape) for k, v in preds.items()}
    assert shapes["scannet"] == {"depth": (2, 4, 32, 32)}
    p = shapes["perception_test"]["tracks"][1]
    assert shapes["perception_test"] == {"tracks": (2, p, 4, 2), "visible": (2, p, 4)}
    o = shapes["waymo"]["boxes"][1]
    assert shapes["waymo"] == {"boxes": (2, o, 4, 4)}
    assert shapes["re10k"] == {"relative_pose": (2, 4, 4)}
    assert shapes["ssv2"] == {"logits": (2, 5), "label": (2,)}


# ------------------------------------------------------------------------------------------ clips
def test_train_window_takes_a_random_window_of_a_longer_sample() -> None:
    task = small_task("ssv2", frame_stride=3, augment=True, colour_augment=False)
    sample = make_sample("ssv2", frames=40)
    sample["video"] = torch.arange(40, dtype=torch.uint8)[:, None, None, None].expand(40, 40, 48, 3).clone()
    starts = set()
    for seed in range(20):
        clip = task.train_window(sample, torch.Generator().manual_seed(seed))
        frames = clip["video"][:, 0, 0, 0].tolist()
        assert frames == list(range(frames[0], frames[0] + 12, 3))
        starts.add(frames[0])
    assert len(starts) > 5 and max(starts) <= 40 - 10
    # a sample shorter than the clip repeats its last frame
    short = {"video": sample["video"][:5], "label": sample["label"]}
    assert task.train_window(short, torch.Generator())["video"][:, 0, 0, 0].tolist() == [0, 3, 4, 4]


def test_select_frames_indexes_every_time_axis() -> None:
    sample = {**make_sample("perception_test", frames=6), **{k: v for k, v in make_sample("waymo", frames=6).items() if k != "video"}}
    sample["query_points"] = torch.zeros(6, 3)
    out = select_frames(sample, [1, 3])
    assert out["video"].shape[0] == 2 and out["tracks"].shape[1] == 2 and out["boxes"].shape[1] == 2
    assert torch.equal(out["tracks"][:, 1], sample["tracks"][:, 3]) and "query_points" not in out
    with pytest.raises(ValueError, match="must lie in"):
        select_frames(sample, [6])


def test_k700_loops_to_250_frames_and_averages_the_softmax() -> None:
    task = small_task("k700", num_frames=16, frame_stride=2)
    sample = make_sample("k700", frames=100, size=(8, 8))
    sample["video"] = torch.arange(100, dtype=torch.uint8)[:, None, None, None].expand(100, 8, 8, 3).clone()
    clips = task.evaluate_clips(sample)
    assert len(clips) == 7
    firsts = [int(c["video"][0, 0, 0, 0]) for c in clips]
    # 7 starts evenly spaced over the 250-frame loop: round(i * (250 - 31) / 6) mod 100
    assert firsts == [round(i * 219 / 6) % 100 for i in range(7)]
    assert int(clips[-1]["video"][-1, 0, 0, 0]) == (219 + 30) % 100
    logits = torch.tensor([[2.0, 0.0, 0.0, 0, 0], [0.0, 5.0, 0.0, 0, 0], [0.0, 0.0, 1.0, 0, 0]])
    merged = task.merge_clip_outputs(logits, [2, 1])
    expected = torch.stack([torch.softmax(logits[:2], -1).mean(0), torch.softmax(logits[2], -1)])
    torch.testing.assert_close(merged.exp(), expected)
    # the first sample's mean softmax picks class 1 although clip 0 alone says class 0
    assert merged.argmax(-1).tolist() == [1, 2]
    assert len(small_task("ssv2").evaluate_clips(sample)) == 1


# ------------------------------------------------------------------------------------------ losses and metrics
def test_classification_loss_and_top1() -> None:
    task = small_task("ssv2")
    logits = torch.tensor([[3.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0]])
    batch = {"label": torch.tensor([0, 2])}
    torch.testing.assert_close(task.loss(logits, batch), torch.nn.functional.cross_entropy(logits, batch["label"]))
    assert task.metrics(logits, batch)["ssv2/top1"].tolist() == [1.0, 0.0]


def test_pose_target_loss_and_metric() -> None:
    task = small_task("re10k")
    sample = make_sample("re10k", frames=4)
    c2w = sample["cam_to_world"][None]
    rel = relative_pose(c2w)
    # maps a point from camera 0 into camera T-1: world point of camera 0's origin seen from camera T-1
    origin0_in_last = torch.linalg.inv(c2w[0, -1]) @ c2w[0, 0] @ torch.tensor([0.0, 0, 0, 1])
    torch.testing.assert_close(rel[0, :, 3], origin0_in_last[:3])
    batch = {"cam_to_world": c2w}
    perfect = rel.flatten(1)
    assert float(task.loss(perfect, batch)) < 1e-10
    assert float(task.metrics(perfect, batch)["re10k/pose_epe"]) < 1e-5
    shifted = perfect.clone()
    shifted[:, 3] += 0.5  # translation x off by 0.5 m: every cube point moves by 0.5
    torch.testing.assert_close(task.metrics(shifted, batch)["re10k/pose_epe"], torch.tensor([0.5]))
    torch.testing.assert_close(task.loss(shifted, batch), torch.tensor(0.25 / 12))
    # a flip mirrors the relative pose: P -> M P M
    flipped = apply_geometry([HFlip()], sample)
    m = torch.diag(torch.tensor([-1.0, 1, 1, 1]))
    full = torch.eye(4)
    full[:3] = rel[0]
    torch.testing.assert_close(relative_pose(flipped["cam_to_world"][None])[0], (m @ full @ m)[:3], atol=1e-6, rtol=0)


def test_tracking_loss_hand_case_and_visibility_rule() -> None:
    task = small_task("perception_test", input_size=(64, 128))
    gt = torch.tensor([[[[32.0, 16.0], [64.0, 32.0]]]])  # (B=1, P=1, T=2, 2) pixels
    visible = torch.tensor([[[True, False]]])
    points = gt / torch.tensor([128.0, 64.0])
    points = points + torch.tensor([[[[0.1, 0.0], [0.3, 0.0]]]])  # frame 0 off by 0.1 (normalised)
    occ = torch.tensor([[[-2.0, 3.0]]])
    unc = torch.tensor([[[1.0, 0.0]]])
    outputs = {"points": points, "occlusion_logit": occ, "uncertainty_logit": unc}
    batch = {"tracks": gt, "visible": visible, "track_valid": torch.tensor([[True]])}
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    delta = 4 / 256
    position = delta * (0.1 - delta / 2)  # only the visible frame 0 counts, 0.1 > delta: linear branch
    occlusion = (bce(occ[0, 0, 0], torch.tensor(0.0)) + bce(occ[0, 0, 1], torch.tensor(1.0))) / 2
    uncertainty = bce(unc[0, 0, 0], torch.tensor(1.0))  # 0.1 * 256 = 25.6 px > 6 px
    expected = 100 * position + 0.1 * occlusion + 0.1 * uncertainty
    torch.testing.assert_close(task.loss(outputs, batch), torch.tensor(float(expected)), atol=1e-6, rtol=1e-5)
    assert torch.equal(huber(torch.tensor([0.5, 3.0]), 1.0), torch.tensor([0.125, 2.5]))
    # (1 - σ(-2)) (1 - σ(1)) = 0.881 * 0.269 < 0.5: predicted occluded; (1 - σ(-5)) (1 - σ(-5)) > 0.5
    assert predicted_visible(outputs).tolist() == [[[False, False]]]
    sure = {**outputs, "occlusion_logit": torch.full((1, 1, 2), -5.0), "uncertainty_logit": torch.full((1, 1, 2), -5.0)}
    assert predicted_visible(sure).all()


def test_tracking_metrics_are_in_256_pixel_units_and_ignore_padding() -> None:
    task = small_task("perception_test", input_size=(32, 64))
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 3, 4, 2, generator=g) * torch.tensor([64.0, 32.0])
    visible = torch.ones(1, 3, 4, dtype=torch.bool)
    norm = gt / torch.tensor([64.0, 32.0])
    pred = norm + torch.tensor([3.0 / 256, 0.0])  # 3 px off in 256-pixel units: inside 4, 8, 16, not 1, 2
    sure = torch.full((1, 3, 4), -9.0)
    outputs = {"points": pred, "occlusion_logit": sure, "uncertainty_logit": sure}
    batch = {"tracks": gt, "visible": visible, "track_valid": torch.ones(1, 3, dtype=torch.bool)}
    m = task.metrics(outputs, batch)
    assert m["perception_test/pts_within_2"].item() == 0.0 and m["perception_test/pts_within_4"].item() == 1.0
    torch.testing.assert_close(m["perception_test/average_jaccard"], torch.tensor([0.6]))
    # the same through an independent call of the metric in 256x256 pixels
    ref = tapvid(pred * 256, torch.ones_like(visible), norm * 256, visible, torch.zeros(1, 3, dtype=torch.long))
    torch.testing.assert_close(m["perception_test/average_jaccard"], ref["average_jaccard"])
    # a padded (invalid) track with garbage never changes the figure
    pad = lambda t, v: torch.cat([t, v], 1)
    padded_out = {"points": pad(pred, torch.full((1, 1, 4, 2), 0.9)), "occlusion_logit": pad(sure, torch.full((1, 1, 4), -9.0)),
                  "uncertainty_logit": pad(sure, torch.full((1, 1, 4), -9.0))}
    padded = {"tracks": pad(gt, torch.zeros(1, 1, 4, 2)), "visible": pad(visible, torch.zeros(1, 1, 4, dtype=torch.bool)),
              "track_valid": torch.tensor([[True, True, True, False]])}
    mp = task.metrics(padded_out, padded)
    assert all(torch.equal(mp[k], m[k]) for k in m)
    assert torch.equal(task.loss(padded_out, padded), task.loss(outputs, batch))


def test_box_filter_loss_and_weighted_metric() -> None:
    task = small_task("waymo", input_size=(100, 100))
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 5, 5], [0, 0, 2, 2], [0, 0, 20, 20]])[:, None].repeat(1, 3, 1)
    valid = torch.ones(4, 3, dtype=torch.bool)
    valid[1, 0] = False  # not given in the first frame: dropped
    sample = {"video": torch.zeros(3, 100, 100, 3), "boxes": boxes, "box_valid": valid}
    kept = filter_boxes(sample, 0.005, 25)  # 2x2 = 4 px < 0.5% of 10^4 = 50 px: dropped
    assert kept["boxes"][:, 0].tolist() == [[0, 0, 20, 20], [0, 0, 10, 10]]  # largest first
    assert filter_boxes(sample, 0.005, 1)["boxes"].shape[0] == 1
    batch = collate_samples([kept, {**kept, "boxes": kept["boxes"][:1], "box_valid": kept["box_valid"][:1]}])
    assert batch["box_valid"].shape == (2, 2, 3) and not batch["box_valid"][1, 1].any()
    perfect = batch["boxes"] / 100.0
    assert float(task.loss(perfect, batch)) == 0.0
    m = task.metrics(perfect, batch)
    torch.testing.assert_close(m["waymo/box_iou"], torch.tensor([1.0, 1.0]))
    assert m["waymo/box_iou_weight"].tolist() == [4, 2]  # valid pairs with frame >= 1
    torch.testing.assert_close(m["waymo/box_iou"], box_iou_tracking(perfect * 100, batch["boxes"], batch["box_valid"]))
    acc = MetricAccumulator(task)
    half = perfect.clone()
    half[0, :, :, 2] = half[0, :, :, 0] + (half[0, :, :, 2] - half[0, :, :, 0]) / 2  # IoU 0.5 in sample 0
    acc.add(half, batch)
    assert acc.reduce()["waymo/box_iou"] == pytest.approx((0.5 * 4 + 1.0 * 2) / 6)


def test_depth_loss_metric_and_weights() -> None:
    task = small_task("scannet")
    gt = torch.full((2, 4, 32, 32), 2.0)
    gt[0, :, :16] = 0.0  # half of sample 0 invalid
    gt[1, 0, 0, 0] = 20.0  # beyond max_depth
    pred = torch.full_like(gt, 2.5)
    pred[gt == 0] = float("nan")  # predictions at invalid pixels never matter
    batch = {"depth": gt}
    torch.testing.assert_close(task.loss(pred, batch), torch.tensor(0.25))
    m = task.metrics(pred, batch)
    torch.testing.assert_close(m["scannet/abs_rel"], torch.tensor([0.25, 0.25]))
    assert m["scannet/abs_rel_weight"].tolist() == [4 * 16 * 32, 4 * 32 * 32 - 1]
    assert task.metric_specs["scannet/abs_rel"].reducer == "weighted"


def test_depth_readout_loads_the_official_head_layout() -> None:
    from fourds.convert.heads import VideoPatchReadout

    task = small_task("scannet")
    ours = task.build_readout(8, (2, 2, 2))
    official = VideoPatchReadout(8, 16, 2, output_size=(4, 32, 32), layer=1)
    ours.load_state_dict(official.state_dict())
    features = torch.randn(1, 2, 4, 8)
    torch.testing.assert_close(ours(features, {}), official(features)[..., 0])


def test_pose_epe_of_predictions_matches_metric() -> None:
    task = small_task("re10k")
    raw = torch.randn(3, 12)
    c2w = torch.eye(4).repeat(3, 2, 1, 1)
    pred = task.predictions(raw, {"cam_to_world": c2w})["relative_pose"]
    torch.testing.assert_close(torch.linalg.det(pred[:, :3, :3]), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(pose_epe(pred[:, :3], relative_pose(c2w)), task.metrics(raw, {"cam_to_world": c2w})["re10k/pose_epe"])


@pytest.mark.parametrize("name", ["perception_test", "waymo"])
def test_query_readouts_can_predict_offsets_from_the_query_and_take_a_lower_top_frequency(name: str) -> None:
    """``predict_offsets``: with the final layer zeroed the readout predicts "nothing moves" (the query
    point or first box in every frame); ``query_max_frequency`` sets the Fourier embedding's top
    frequency. Neither changes the parameter count (Table 6)."""
    paper = small_task(name)
    task = small_task(name, predict_offsets=True, query_max_frequency=8.0)
    readout = task.build_readout(32, (2, 2, 2))
    assert sum(p.numel() for p in readout.parameters()) == sum(p.numel() for p in paper.build_readout(32, (2, 2, 2)).parameters())
    assert float(readout.embed.frequencies.max()) == 8.0 and float(paper.build_readout(32, (2, 2, 2)).embed.frequencies.max()) == 128.0
    head = readout.readout.head
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    features = torch.randn(2, 2, 4, 32)
    if name == "perception_test":
        tracks = torch.rand(2, 3, 4, 2) * 32
        out = readout(features, {"tracks": tracks})["points"]
        torch.testing.assert_close(out, (tracks[:, :, :1] / 32).expand_as(out))
    else:
        first = torch.tensor([[2.0, 3, 10, 12], [5, 5, 30, 20]])
        boxes = first[None, :, None].expand(2, 2, 4, 4).clone()
        out = readout(features, {"boxes": boxes})
        torch.testing.assert_close(out, (boxes[:, :, :1] / 32).expand_as(out))
        assert float(task.loss(out.detach(), {"boxes": boxes, "box_valid": torch.ones(2, 2, 4, dtype=torch.bool)})) == pytest.approx(0.0, abs=1e-6)
