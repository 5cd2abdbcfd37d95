"""Point-tracking readers: Perception Test (JSON + MP4), TAP-Vid pickles (DAVIS, Kinetics JPEG shards), MOVi-E npz."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from _dataset_fixtures import (
    pt_point, write_movi_e, write_perception_test, write_tapvid_davis, write_tapvid_kinetics,
)
from _video_fixtures import decode_index

from fourds.data.datasets import DatasetLayoutError, open_dataset, task_dataset
from fourds.data.datasets.images import decoded_image_count, reset_decoded_image_count
from fourds.data.datasets.perception_test import track_points_yx
from fourds.data.datasets.tapvid import safe_load_pickle


@pytest.fixture(scope="module")
def pt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pt")
    info = write_perception_test(root)
    return root, info["visible"]


def _expected(p: int, frames: list[int]) -> np.ndarray:
    return np.array([pt_point(p, k, 64, 96) for k in frames], np.float32)


# ------------------------------------------------------------------------------- Perception Test
def test_perception_test_split_filter_points_orientation_and_visibility(pt_root):
    root, visible = pt_root
    ds = open_dataset("perception_test", root, "validation", num_frames=8)  # protocol stride 4
    # video_3 has no point tracks, video_2 is train, video_7 is annotated but not on disk (reported).
    assert ds.ids == ["video_1"] and ds.missing == ["video_7"] and ds.split == "valid"
    s = ds[0]
    frames = list(range(0, 32, 4))
    assert decode_index(s["video"]) == [100 + k for k in frames] and s["id"] == "video_1"
    # Queries on the clip's first frame: track 1 (visible from frame 3) is dropped.
    assert s["track_ids"].tolist() == [0, 2]
    for row, p in enumerate((0, 2)):
        vis = [k in visible[p] for k in frames]
        assert s["visible"][row].tolist() == vis
        np.testing.assert_allclose(s["tracks"][row][torch.tensor(vis)].numpy(), _expected(p, [k for k, v in zip(frames, vis) if v]),
                                   atol=1e-4)  # stored [[y..], [x..]] normalised -> (x, y) pixels of a 96x64 frame
    x0, y0 = pt_point(0, 0, 64, 96)
    np.testing.assert_allclose(s["query_points"][0].numpy(), [0.0, y0, x0], atol=1e-4)  # (t, y, x)
    assert torch.isfinite(s["tracks"]).all() and s["is_camera_moving"] is True


def test_perception_test_every_clip_as_index_space_and_size(pt_root):
    root, visible = pt_root
    ds = open_dataset("perception_test", root, "valid", num_frames=4, stride=2, clips="all")  # span 7: starts 0, 7, ...
    starts = [s for s in range(0, 34, 7) if any(s in v for v in visible.values())]
    assert [st for _, st in ds.index] == starts == [0, 7, 14, 21]  # the clip at 28 has no query point
    s = ds[3]
    assert s["clip_start"] == 21 and decode_index(s["video"]) == [121, 123, 125, 127] and s["track_ids"].tolist() == [0]
    first = open_dataset("perception_test", root, "valid", num_frames=4, stride=2, clips="all", query="first")
    assert len(first) == 5 and first[4]["track_ids"].tolist() == [2]  # track 2 reappears at frame 30 = clip step 1
    assert first[4]["query_points"][0, 0].item() == 1.0
    half = open_dataset("perception_test", root, "valid", num_frames=4, size=(32, 48))[0]
    full = open_dataset("perception_test", root, "valid", num_frames=4)[0]
    assert half["video"].shape == (4, 32, 48, 3)
    torch.testing.assert_close(half["tracks"], full["tracks"] / 2)
    torch.testing.assert_close(half["query_points"][:, 1:], full["query_points"][:, 1:] / 2)


def test_perception_test_points_layouts_and_errors(pt_root, tmp_path):
    yx = np.array([[0.1, 0.2, 0.3], [0.5, 0.6, 0.7]])
    np.testing.assert_array_equal(track_points_yx(yx.tolist(), 3), yx.T)  # the notebook's [[y..], [x..]]
    np.testing.assert_array_equal(track_points_yx(yx.T.tolist(), 3), yx.T)  # the README's (N, 2)
    with pytest.raises(ValueError, match="do not match 4 frame_ids"):
        track_points_yx(yx.tolist(), 4)
    with pytest.raises(DatasetLayoutError, match="point_tracking_valid.json"):
        open_dataset("perception_test", tmp_path, "valid")
    root, _ = pt_root
    ds = open_dataset("perception_test", root, "valid")
    assert ds.check_item(0) == 40
    ds._videos[0]["meta"]["num_frames"] = 41
    ds._counts.clear()
    with pytest.raises(RuntimeError, match="41"):
        ds.check_item(0, quick=True)


def test_perception_test_task_protocol(pt_root, tmp_path):
    root, _ = pt_root
    write_movi_e(tmp_path / "movi_e")
    (tmp_path / "perception_test").symlink_to(root)
    ev = task_dataset("perception_test", "eval", tmp_path, size=None)  # one folder holding both datasets
    assert ev.name == "perception_test" and ev.protocol_clip == (16, 4) and ev.clips == "all"
    assert ev[0]["video"].shape[0] == 61  # the native frames of one 16 x 4 clip
    tr = task_dataset("perception_test", "train", tmp_path)  # trains on Kubric MOVi-E
    assert tr.name == "movi_e" and tr.protocol_clip == (16, 1) and tr.num_frames == 16
    assert task_dataset("perception_test", "eval", tmp_path)[0]["video"].shape[1:3] == (256, 256)


# ----------------------------------------------------------------------------------------- TAP-Vid
def test_tapvid_davis_pixels_visibility_and_queries(tmp_path):
    write_tapvid_davis(tmp_path)
    ds = open_dataset("tapvid_davis", tmp_path, "test", num_frames=None, stride=1, query="none")
    assert [ds[i]["id"] for i in range(2)] == ["bear", "camel"]
    s = ds[1]
    assert decode_index(s["video"]) == list(range(300, 324)) and s["tracks"].shape == (3, 24, 2)
    np.testing.assert_allclose(s["tracks"][0].numpy(), _expected(0, list(range(24))), atol=1e-3)  # points * (W, H)
    assert s["visible"][1, :4].tolist() == [False] * 4 and s["visible"][1, 4:].all()  # visible = ~occluded
    clip = open_dataset("tapvid_davis", tmp_path, "test", num_frames=8, stride=1)[0]
    assert clip["track_ids"].tolist() == [0, 2]  # track 1 is occluded on the clip's first frame
    first = open_dataset("tapvid_davis", tmp_path, "test", num_frames=8, stride=1, query="first")[0]
    assert first["track_ids"].tolist() == [0, 1, 2] and first["query_points"][1, 0].item() == 4.0


def test_tapvid_kinetics_decodes_only_the_clip(tmp_path):
    write_tapvid_kinetics(tmp_path)
    ds = open_dataset("tapvid_kinetics", tmp_path, "test", num_frames=4, stride=4, start=2)
    assert len(ds) == 4 and [ds.item_id(i) for i in (0, 3)] == ["0000_of_0002/0", "0001_of_0002/1"]
    reset_decoded_image_count()
    s = ds[3]
    assert decoded_image_count() == 4 and decode_index(s["video"]) == [2102, 2106, 2110, 2114]
    np.testing.assert_allclose(s["tracks"][0].numpy(), _expected(0, [2, 6, 10, 14]), atol=1e-3)


def test_tapvid_pickles_that_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (open, (str(marker), "w"))

    with open(tmp_path / "tapvid_davis.pkl", "wb") as f:
        pickle.dump({"bear": {"video": Evil(), "points": 0, "occluded": 0}}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        open_dataset("tapvid_davis", tmp_path, "test")
    assert not marker.exists()
    np.save(tmp_path / "x.npy", np.zeros(2))  # plain NumPy pickles still load
    with open(tmp_path / "ok.pkl", "wb") as f:
        pickle.dump({"a": np.arange(3), "b": [np.bytes_(b"\xff\xd8")]}, f)
    assert safe_load_pickle(tmp_path / "ok.pkl")["a"].tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------------ MOVi-E
def test_movi_e_npz_clip_queries_and_modes(tmp_path):
    write_movi_e(tmp_path)
    ds = open_dataset("movi_e", tmp_path, "train")  # 16 frames, stride 1
    s = ds[1]
    assert decode_index(s["video"]) == list(range(200, 216)) and s["id"] == "000001"
    assert s["track_ids"].tolist() == [0, 2]  # 1 is occluded on frame 0, 3 never visible
    np.testing.assert_allclose(s["tracks"][1].numpy(), _expected(2, list(range(16))), atol=1e-5)
    stored = open_dataset("movi_e", tmp_path, "train", num_frames=8, start=4, query="stored")[0]
    # stored queries (t=0, 5, 2, 0): only track 1's frame 5 is inside the clip 4..11, at clip step 1
    assert stored["track_ids"].tolist() == [1] and stored["query_points"][0, 0].item() == 1.0
    everything = open_dataset("movi_e", tmp_path, "train", query="none")[0]
    assert everything["tracks"].shape[0] == 4 and "query_points" not in everything
    w = ds.sample(0, torch.Generator().manual_seed(5))
    codes = decode_index(w["video"])
    assert codes == list(range(codes[0], codes[0] + 16)) and 100 <= codes[0] <= 108


def test_movi_e_format_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="train"):
        open_dataset("movi_e", tmp_path, "train")
    (tmp_path / "train").mkdir()
    np.savez(tmp_path / "train" / "000000.npz", video=np.zeros((2, 8, 8, 3), np.uint8), target_points=np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="occluded"):
        open_dataset("movi_e", tmp_path, "train", num_frames=2)[0]


def test_movi_e_reader_reads_the_synthetic_exporter(tmp_path):
    """`fourds synth export` writes the same point-track format (branch synth): same pixels, same queries."""
    export = pytest.importorskip("fourds.data.synthetic.export", reason="the synthetic-scenes exporter is not merged yet")
    from fourds.data.synthetic import SyntheticScenes

    scenes = SyntheticScenes(num_frames=8, height=32, width=48, seed=0, num_samples=2, num_tracks=16, shadows=False)
    export.export_point_tracks(scenes, tmp_path, "train", progress=False)
    ds = open_dataset("movi_e", tmp_path, "train", num_frames=8, query="stored")
    assert len(ds) == 2
    truth, got = scenes[1], ds[1]
    expect_video = (truth["video"].clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(got["video"], expect_video)
    keep = got["track_ids"]
    torch.testing.assert_close(got["tracks"], truth["tracks"][keep])  # raster (x, y) pixels, unchanged
    assert torch.equal(got["visible"], truth["visible"][keep])
    torch.testing.assert_close(got["query_points"], truth["query_points"][keep])  # (t, y, x), t a frame index
    assert len(keep) == truth["tracks"].shape[0]  # every synthetic query lies on frame 0, inside the clip
