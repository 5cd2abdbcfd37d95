"""Camera and depth readers: RealEstate10K (camera files + JPEG frames), ScanNet (.sens written byte by byte,
and the SensReader export)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from _dataset_fixtures import (
    RE10K_K, SCANNET_K_COLOR, SCANNET_K_DEPTH, re10k_w2c, scannet_depth_mm, scannet_pose, write_re10k, write_scannet,
    write_sens,
)
from _video_fixtures import decode_index

from fourds.data.datasets import DatasetLayoutError, open_dataset, task_dataset
from fourds.data.datasets.images import decoded_image_count, reset_decoded_image_count
from fourds.data.datasets.sens import SensFile, SensFormatError


def _h(w2c: np.ndarray) -> np.ndarray:
    return np.concatenate([w2c, [[0, 0, 0, 1]]])


@pytest.fixture(scope="module")
def re10k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("re10k")
    write_re10k(root, "train", "seqA", 40, 100, skip=(5,))  # frame 5 was not extracted
    write_re10k(root, "train", "short", 10, 700)  # shorter than one clip span
    write_re10k(root, "test", "seqB", 40, 300)
    return root


# ----------------------------------------------------------------------------------------- RE10k
def test_re10k_poses_are_inverted_world_to_camera_and_frames_match(re10k_root):
    ds = open_dataset("re10k", re10k_root, "train")  # 16 frames, stride 2 over the frames on disk
    assert ds.keys == ["seqA"] and "short" in ds.skipped
    s = ds[0]
    on_disk = [k for k in range(40) if k != 5]
    frames = [on_disk[p] for p in range(0, 32, 2)]
    assert decode_index(s["video"]) == [100 + k for k in frames]
    assert s["timestamps"].tolist() == [1000 + 33366 * k for k in frames]
    for t, k in enumerate(frames):  # camera-to-world = inverse of the stored world-to-camera
        np.testing.assert_allclose(s["cam_to_world"][t].double().numpy() @ _h(re10k_w2c(k)), np.eye(4), atol=1e-5)
    fx, fy, cx, cy = RE10K_K  # normalised by the frame size (96 wide, 64 high)
    np.testing.assert_allclose(s["intrinsics"].numpy(), [[96 * fx, 0, 96 * cx], [0, 64 * fy, 64 * cy], [0, 0, 1]], rtol=1e-6)
    assert float(s["metric_scale"]) == 1.0 and s["id"] == "seqA"


def test_re10k_size_metric_scale_and_splits(re10k_root, tmp_path):
    full = open_dataset("re10k", re10k_root, "validation", num_frames=4)[0]  # validation -> the test split
    half = open_dataset("re10k", re10k_root, "test", num_frames=4, size=32)[0]
    assert full["id"] == "seqB" and half["video"].shape == (4, 32, 48, 3)
    torch.testing.assert_close(half["intrinsics"][:2], full["intrinsics"][:2] / 2)
    scales = tmp_path / "scales.json"
    scales.write_text(json.dumps({"seqB": 2.5}))
    metric = open_dataset("re10k", re10k_root, "test", num_frames=4, scale_file=scales)[0]
    assert float(metric["metric_scale"]) == 2.5
    torch.testing.assert_close(metric["cam_to_world"][:, :3, 3], 2.5 * full["cam_to_world"][:, :3, 3])
    torch.testing.assert_close(metric["cam_to_world"][:, :3, :3], full["cam_to_world"][:, :3, :3])


def test_re10k_layout_and_format_errors(re10k_root, tmp_path):
    with pytest.raises(DatasetLayoutError, match="metadata/RealEstate10K/train"):
        open_dataset("re10k", tmp_path, "train")
    bad = tmp_path / "bad"
    write_re10k(bad, "train", "k", 3, 0)
    cam = bad / "metadata" / "RealEstate10K" / "train" / "k.txt"
    cam.write_text(cam.read_text().splitlines()[0] + "\n1 2 3\n")
    with pytest.raises(ValueError, match="line 2 .* 3 columns; expected 19"):
        open_dataset("re10k", bad, "train", num_frames=1)


# --------------------------------------------------------------------------------------- ScanNet
@pytest.fixture(scope="module")
def scannet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet")
    write_scannet(root)
    return root


def test_sens_parser_reads_header_and_frames_on_demand(scannet_root):
    s = SensFile(scannet_root / "scans" / "scene0000_00" / "scene0000_00.sens")
    h = s.header
    assert (h.version, h.sensor_name, h.color_compression, h.depth_compression) == (4, "StructureSensor", "jpeg", "zlib_ushort")
    assert h.color_size == (96, 128) and h.depth_size == (48, 64) and h.depth_shift == 1000.0 and s.num_frames == 30
    np.testing.assert_allclose(h.intrinsic_color, SCANNET_K_COLOR, rtol=1e-6)
    assert np.isinf(s.camera_to_world[4]).all() and np.isfinite(s.camera_to_world[5]).all()
    color, depth = s.read_frame(7)
    np.testing.assert_array_equal(s.decode_depth(depth, 7), scannet_depth_mm(7))
    assert decode_index(s.decode_color(color, 7)[0][None])[0] == 107


def test_scannet_sens_clip_depth_metres_poses_and_skipped_frames(scannet_root):
    ds = open_dataset("scannet", scannet_root, "train", num_frames=8)  # protocol stride 2
    assert ds.scenes == ["scene0000_00", "scene0001_00"] and ds.missing == ["scene0099_00"]
    s = ds[0]
    valid = [k for k in range(30) if k != 4]  # frame 4 has a -inf pose: skipped
    frames = [valid[p] for p in range(0, 16, 2)]
    assert decode_index(s["video"]) == [100 + k for k in frames] and ds.invalid_poses(0) == 1
    assert s["depth"].shape == (8, 96, 128) and s["depth"].dtype == torch.float32
    for t, k in enumerate(frames):  # millimetres -> metres, depth grid (48x64) -> colour grid (96x128) nearest
        expect = np.repeat(np.repeat(scannet_depth_mm(k) / 1000.0, 2, axis=0), 2, axis=1)
        np.testing.assert_allclose(s["depth"][t].numpy(), expect, rtol=1e-6)
        np.testing.assert_allclose(s["cam_to_world"][t].numpy(), scannet_pose(k), atol=1e-6)
    assert (s["depth"][:, :8, :8] == 0).all()  # invalid depth stays 0
    np.testing.assert_allclose(s["intrinsics"].numpy(), SCANNET_K_COLOR[:3, :3], rtol=1e-6)


def test_scannet_depth_grid_and_size(scannet_root):
    d = open_dataset("scannet", scannet_root, "train", num_frames=4, grid="depth")[0]
    assert d["video"].shape == (4, 48, 64, 3)
    np.testing.assert_allclose(d["depth"][1].numpy(), scannet_depth_mm(2) / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(d["intrinsics"].numpy(), SCANNET_K_DEPTH[:3, :3], rtol=1e-6)
    small = open_dataset("scannet", scannet_root, "train", num_frames=4, size=(48, 64))[0]  # colour grid, halved
    np.testing.assert_allclose(small["intrinsics"][:2].numpy(), SCANNET_K_COLOR[:2, :3] / 2, rtol=1e-6)
    assert small["depth"].shape == (4, 48, 64)


def test_scannet_export_numeric_order_and_invalid_pose(scannet_root):
    ds = open_dataset("scannet", scannet_root, "train", num_frames=None, stride=1)
    s = ds[1]  # the exported scene: 0.jpg .. 11.jpg, frame 2 with a -inf pose
    frames = [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # 10 and 11 after 9 (numeric, not lexicographic)
    assert decode_index(s["video"]) == [300 + k for k in frames] and ds.invalid_poses(1) == 1
    np.testing.assert_allclose(s["depth"][-1].numpy(), np.repeat(np.repeat(scannet_depth_mm(11) / 1000.0, 2, 0), 2, 1), rtol=1e-6)
    np.testing.assert_allclose(s["cam_to_world"][-1].numpy(), scannet_pose(11), atol=1e-5)
    sens_only = open_dataset("scannet", scannet_root, "train", num_frames=2, source="sens")
    assert sens_only.scenes == ["scene0000_00"]


def test_scannet_long_scan_is_read_frame_by_frame(tmp_path, monkeypatch):
    """A 300-frame scan: one 16-frame clip reads and decodes exactly 16 frames."""
    write_sens(tmp_path / "scans" / "scene0500_00" / "scene0500_00.sens", 300, offset=1000)
    (tmp_path / "scannetv2_val.txt").write_text("scene0500_00\n")
    ds = open_dataset("scannet", tmp_path, "val", num_frames=16, stride=2, start=200)
    reads = []
    original = SensFile.read_frame
    monkeypatch.setattr(SensFile, "read_frame", lambda self, i, f=None: (reads.append(i), original(self, i, f))[1])
    reset_decoded_image_count()
    s = ds[0]
    assert sorted(reads) == list(range(200, 232, 2)) and decoded_image_count() == 16
    assert decode_index(s["video"])[0] == 1200
    task = task_dataset("scannet", "train", tmp_path, scenes=["scene0500_00"])
    reads.clear()
    w = task.sample(0, torch.Generator().manual_seed(0))
    assert len(set(reads)) == 31 and w["video"].shape == (31, 48, 64, 3)  # one 16 x 2 window, depth grid


def test_sens_format_errors(tmp_path):
    path = tmp_path / "a.sens"
    write_sens(path, 3)
    data = path.read_bytes()
    (tmp_path / "cut.sens").write_bytes(data[: len(data) // 2])
    with pytest.raises(SensFormatError, match="truncated"):
        SensFile(tmp_path / "cut.sens")
    (tmp_path / "v3.sens").write_bytes(struct.pack("<I", 3) + data[4:])
    with pytest.raises(SensFormatError, match="version 3"):
        SensFile(tmp_path / "v3.sens")
    with pytest.raises(DatasetLayoutError, match="scannetv2_train.txt"):
        open_dataset("scannet", tmp_path, "train")
