"""The five synthetic tasks on SyntheticScenes: data and splits, forward/backward, overfitting a fixed
batch on frozen features, and label-consistent augmentation (tracks, boxes and depth still match the
pixels after crop / flip / resize)."""

from __future__ import annotations

import pytest
import torch

from fourds.data import to_float
from fourds.data.collate import collate_samples
from fourds.data.geometry import HFlip, Resize, apply_geometry, random_resized_crop, resize_short_side_crop
from fourds.models import create
from fourds.tasks import get_task

SYNTH = ["synth_tracking", "synth_boxes", "synth_pose", "synth_depth", "synth_motion"]
TINY = dict(num_frames=8, height=32, width=32, channels=32, num_heads=2, num_samples=6, num_eval_samples=3)
TINY_EXTRA = {"synth_tracking": dict(embed_dim=64, channels=64), "synth_boxes": dict(embed_dim=32)}


def tiny(name: str, **kw):
    return get_task(name, **{**TINY, **TINY_EXTRA.get(name, {}), **kw})


@pytest.fixture(scope="module")
def backbone():
    model = create("4ds-tiny", depth=2, input_size=(8, 32, 32))
    model.init_weights(seed=0)
    return model.eval()


def test_datasets_splits_and_sizes() -> None:
    task = tiny("synth_depth", num_samples=5, num_eval_samples=2)
    train, test = task.dataset("train"), task.dataset("test")
    assert len(train) == 5 and len(test) == 2 and len(task.dataset("val")) == 2
    a, b = train[0], test[0]
    assert a["video"].shape == (8, 32, 32, 3) and a["depth"].shape == (8, 32, 32)
    assert not torch.equal(a["video"], b["video"]), "splits must come from different seeds"
    assert torch.equal(train[1]["video"], task.dataset("train")[1]["video"]), "scenes are deterministic"
    assert task.split_seed("train") != task.split_seed("val") != task.split_seed("test")
    with pytest.raises(ValueError, match="unknown split"):
        task.dataset("training")
    assert tiny("synth_pose", height=48, width=40).input_size == (48, 40)
    assert get_task("synth_depth").input_size == (64, 64) and get_task("synth_depth").num_frames == 16
    motion = tiny("synth_motion", num_classes=4)
    labels = {int(motion.dataset("train")[i]["label"]) for i in range(6)}
    assert labels <= set(range(4))


@pytest.mark.parametrize("name", SYNTH)
def test_forward_backward_on_a_synthetic_batch(name: str, backbone) -> None:
    task = tiny(name)
    data = task.dataset("train")
    g = torch.Generator().manual_seed(0)
    batch = collate_samples([task.train_transform(data[i], g) for i in range(3)])
    with torch.no_grad():
        (features,) = backbone.features(to_float(batch["video"]), layers=[2])
    readout = task.build_readout(backbone.dim, backbone.grid)
    outputs = readout(features, batch)
    loss = task.loss(outputs, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in readout.parameters())
    metrics = task.metrics(outputs, batch)
    assert all(v.shape == (3,) for v in metrics.values())
    assert torch.isfinite(metrics[task.primary_metric]).all(), metrics
    eval_batch = collate_samples([task.eval_transform(c) for c in task.evaluate_clips(task.dataset("test")[0])])
    assert eval_batch["video"].shape[1:4] == (8, 32, 32)


@pytest.fixture()
def one_thread():
    """Tiny ops run far faster on one thread when the CI cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", SYNTH)
def test_readout_overfits_a_fixed_batch_on_frozen_features(name: str, backbone, one_thread) -> None:
    task = tiny(name)
    data = task.dataset("train", num_tracks=32)
    batch = collate_samples([task.eval_transform(data[i]) for i in range(4)])
    with torch.no_grad():
        (features,) = backbone.features(to_float(batch["video"]), layers=[2])
    torch.manual_seed(0)
    readout = task.build_readout(backbone.dim, backbone.grid)
    opt = torch.optim.AdamW(readout.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(300):
        opt.zero_grad()
        loss = task.loss(readout(features, batch), batch)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    with torch.no_grad():
        last = float(task.loss(readout(features, batch), batch))
    assert last < first / 10, f"{name}: loss {first:.4g} -> {last:.4g}"


# ------------------------------------------------------------------------------------------ label consistency
def coordinate_video(sample: dict) -> dict:
    """Replace the video by a code of each pixel's own coordinates: R = x/W, G = y/H at pixel centres
    (smooth, so bilinear resampling keeps it decodable), B = the frame index / T."""
    t, h, w = sample["video"].shape[:3]
    y, x = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    frames = torch.arange(t, dtype=torch.float32)[:, None, None].expand(t, h, w) / t
    return {**sample, "video": torch.stack([x.expand(t, h, w), y.expand(t, h, w), frames], -1)}


def decode(video: torch.Tensor, size: tuple[int, int], points: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Original ``(x, y)`` encoded at ``points`` (nearest pixel) of frames ``frames`` of a coordinate video."""
    h, w = video.shape[1:3]
    col = points[:, 0].floor().long().clamp(0, w - 1)
    row = points[:, 1].floor().long().clamp(0, h - 1)
    code = video[frames, row, col]
    return code[:, :2] * torch.tensor([size[1], size[0]], dtype=torch.float32)


def pipelines(size: tuple[int, int]) -> list[list]:
    g = torch.Generator().manual_seed(3)
    return [
        [Resize(48, 40)],
        [HFlip()],
        resize_short_side_crop(size, (24, 24), 1.15, random=True, flip=True, generator=g),
        random_resized_crop(size, (40, 40), generator=g) + [HFlip()],
    ]


@pytest.mark.parametrize("case", range(4))
def test_augmented_labels_still_match_the_pixels(case: int) -> None:
    task = tiny("synth_tracking")
    data = task.dataset("train")
    h, w = data[0]["video"].shape[1:3]
    ops = pipelines((h, w))[case]
    for i in range(len(data)):  # a scene with a box left in view after the crop
        scene = data[i]
        out = apply_geometry(ops, coordinate_video(scene))
        if bool(out["box_valid"].any()):
            break
    nh, nw = out["video"].shape[1:3]
    scale = max(h / nh, w / nw, 1.0)

    # Tracks: the pixel under each visible transformed point encodes (about) the original point.
    vis = out["visible"]
    p_idx, t_idx = torch.nonzero(vis, as_tuple=True)
    assert p_idx.numel() > 0
    decoded = decode(out["video"], (h, w), out["tracks"][p_idx, t_idx], t_idx)
    err = (decoded - scene["tracks"][p_idx, t_idx]).norm(dim=-1)
    assert float(err.max()) < 1.5 * scale + 0.75, float(err.max())
    # points that left the frame are no longer visible
    inside = ((out["tracks"] >= 0) & (out["tracks"] < torch.tensor([nw, nh]))).all(-1)
    assert not (vis & ~inside).any()

    # Depth: moves with the pixels (the depth under a decoded coordinate is the original depth there).
    rows, cols = torch.meshgrid(torch.arange(nh), torch.arange(nw), indexing="ij")
    centres = torch.stack([cols.flatten() + 0.5, rows.flatten() + 0.5], -1)
    zeros = torch.zeros(centres.shape[0], dtype=torch.long)
    orig = decode(out["video"], (h, w), centres, zeros).floor().long()
    orig_depth = scene["depth"][0, orig[:, 1].clamp(0, h - 1), orig[:, 0].clamp(0, w - 1)]
    same = torch.isclose(out["depth"][0].flatten(), orig_depth, rtol=1e-4)
    assert float(same.float().mean()) > 0.9  # mismatches only at depth edges (nearest vs bilinear)

    # Boxes: each transformed box is the box of the pixels whose original position was in the box.
    checked = 0
    for t in range(out["boxes"].shape[1]):
        code = decode(out["video"], (h, w), centres, torch.full_like(zeros, t))
        for o in range(out["boxes"].shape[0]):
            if not bool(out["box_valid"][o, t]):
                continue
            x0, y0, x1, y1 = scene["boxes"][o, t]
            inside_box = (code[:, 0] > x0) & (code[:, 0] < x1) & (code[:, 1] > y0) & (code[:, 1] < y1)
            if int(inside_box.sum()) < 4:
                continue
            px = centres[inside_box]
            box = torch.stack([px[:, 0].min() - 0.5, px[:, 1].min() - 0.5, px[:, 0].max() + 0.5, px[:, 1].max() + 0.5])
            assert torch.allclose(box, out["boxes"][o, t], atol=1.0 * scale + 1.0), (o, t, box, out["boxes"][o, t])
            checked += 1
    assert checked > 0


def test_task_transforms_keep_labels_consistent() -> None:
    """The tasks' own random train transforms (crop, flip, resize, track and box selection)."""
    for name, key in (("synth_tracking", "tracks"), ("synth_boxes", "boxes"), ("synth_depth", "depth")):
        task = tiny(name)
        scene = task.dataset("train")[1]
        h, w = scene["video"].shape[1:3]
        for seed in range(3):
            out = task.train_transform(coordinate_video(scene), torch.Generator().manual_seed(seed))
            assert out["video"].shape[1:3] == task.input_size
            if key == "tracks":
                assert bool(out["visible"][:, 0].all()), "every kept track is visible at its query frame"
                p_idx, t_idx = torch.nonzero(out["visible"], as_tuple=True)
                decoded = decode(out["video"], (h, w), out["tracks"][p_idx, t_idx], t_idx)
                # the decoded original positions lie on some original track at that frame
                dist = (decoded[:, None] - scene["tracks"][:, t_idx].transpose(0, 1)).norm(dim=-1).min(1).values
                assert float(dist.max()) < 4.0
            elif key == "boxes":
                assert bool(out["box_valid"][:, 0].all()) and out["boxes"].shape[0] <= task.max_boxes
            else:
                assert out["depth"].shape == (task.num_frames, *task.input_size)
                assert torch.isfinite(out["depth"]).all()


def test_pose_flip_stays_consistent_with_static_points() -> None:
    """Static background tracks, unprojected with depth and intrinsics in the first frame and moved by
    the relative pose, land on the same track in the last frame, before and after a flip and crop."""
    from fourds.tasks import relative_pose

    task = tiny("synth_pose")
    scene = task.dataset("train")[2]
    if "track_object" not in scene:
        pytest.skip("scenes without track_object")
    h, w = scene["video"].shape[1:3]
    ops = resize_short_side_crop((h, w), (24, 24), 1.15, random=True, flip=True, generator=torch.Generator().manual_seed(1))
    if not any(isinstance(op, HFlip) for op in ops):
        ops.append(HFlip())
    for sample in (scene, apply_geometry(ops, scene)):
        static = (sample["track_object"] < 0) & sample["visible"][:, 0] & sample["visible"][:, -1]
        if int(static.sum()) < 3:
            pytest.skip("too few static background tracks visible at both ends")
        pts = sample["tracks"][static]
        k = sample["intrinsics"].double()
        _, dh, dw = sample["depth"].shape
        z = sample["depth"][0, pts[:, 0, 1].floor().long().clamp(0, dh - 1), pts[:, 0, 0].floor().long().clamp(0, dw - 1)]
        z = z.double()
        homo = torch.cat([pts[:, 0].double(), torch.ones(len(pts), 1, dtype=torch.double)], -1)
        cam0 = (torch.linalg.inv(k) @ homo.T).T * z[:, None]
        rel = relative_pose(sample["cam_to_world"][None])[0].double()
        cam_last = cam0 @ rel[:, :3].T + rel[:, 3]
        proj = (k @ cam_last.T).T
        proj = proj[:, :2] / proj[:, 2:]
        err = (proj - pts[:, -1].double()).norm(dim=-1)
        assert float(err.median()) < 1.5, err


@pytest.mark.parametrize(
    ("name", "real", "paper"),
    [("synth_tracking", "perception_test", dict(channels=1024, embed_dim=512)),
     ("synth_boxes", "waymo", dict(channels=1024, embed_dim=512, input_size=(256, 256))),
     ("synth_pose", "re10k", dict(channels=256)), ("synth_depth", "scannet", dict(channels=1024)),
     ("synth_motion", "ssv2", dict(channels=768, num_classes=174))],
)
def test_synthetic_tasks_use_their_real_counterparts_design(name: str, real: str, paper: dict) -> None:
    from fourds.tasks import TABLE6_PARAMS, count_readout_params

    synth, counterpart = get_task(name), get_task(real)
    assert synth.num_heads == counterpart.num_heads and synth.layer_fraction == counterpart.layer_fraction
    assert synth.metric_specs[synth.primary_metric].direction == counterpart.metric_specs[counterpart.primary_metric].direction
    at_paper_size = get_task(name, **{"input_size": (224, 224), **paper})
    assert count_readout_params(at_paper_size, 1024) == TABLE6_PARAMS[real]


def test_augment_false_makes_training_deterministic_for_the_feature_cache() -> None:
    from fourds.probe.cache import check_deterministic

    sample = tiny("synth_depth").dataset("train")[0]
    check_deterministic(tiny("synth_depth", augment=False), sample, draws=3)
    with pytest.raises(ValueError, match="random augmentation"):
        check_deterministic(tiny("synth_depth"), sample, draws=3)
