"""Waymo Open v2 parquet reader: join of camera_image and camera_box, unordered rows, camera-name variants,
box filtering, streaming reads of long segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dataset_fixtures import waymo_box, write_waymo
from _video_fixtures import decode_index

from fourds.data.datasets import DatasetLayoutError, open_dataset, task_dataset
from fourds.data.datasets.images import decoded_image_count, reset_decoded_image_count
from fourds.data.datasets.waymo import camera_code, image_rows_read, reset_image_rows_read


@pytest.fixture(scope="module")
def waymo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("waymo")
    write_waymo(root, "validation", "seg_a", n=40)
    write_waymo(root, "training", "seg_b", n=40, camera_type="string", seed=1)
    return root


def _xyxy(o: int, k: int) -> list[float]:
    cx, cy, sx, sy = waymo_box(o, k)
    return [cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2]


def test_waymo_frames_sorted_by_timestamp_one_camera(waymo_root):
    ds = open_dataset("waymo", waymo_root, "val", num_frames=6, start=3)  # stride 2 at 10 Hz = 5 fps
    s = ds[0]
    frames = [3, 5, 7, 9, 11, 13]
    assert decode_index(s["video"]) == [100 + k for k in frames]  # rows are shuffled in the file; FRONT = 1
    assert s["timestamps"].tolist() == [1_550_000_000_000_000 + 100_000 * k for k in frames] and s["id"] == "seg_a"
    side = open_dataset("waymo", waymo_root, "validation", num_frames=2, camera="SIDE_LEFT")[0]
    assert decode_index(side["video"]) == [400, 402]


def test_waymo_boxes_joined_filtered_and_ordered(waymo_root):
    s = open_dataset("waymo", waymo_root, "validation", num_frames=6, start=0)[0]
    frames = [0, 2, 4, 6, 8, 10]
    # object 2 covers < 0.5 % of the first frame: dropped; the others by decreasing first-frame area.
    assert s["box_ids"] == ["obj-1", "obj-0"] and s["box_class"].tolist() == [2, 1]
    for row, o in enumerate((1, 0)):
        for t, k in enumerate(frames):
            present = not (o == 1 and 3 <= k <= 5)
            assert bool(s["box_valid"][row, t]) == present
            if present:  # centre + size -> (x0, y0, x1, y1) pixels, this camera's boxes only
                np.testing.assert_allclose(s["boxes"][row, t].numpy(), _xyxy(o, k), rtol=1e-6)
    assert (s["boxes"][0, 2] == 0).all()  # no box on frame 4: zeros, masked
    np.testing.assert_allclose(s["intrinsics"].numpy(), [[100, 0, 48], [0, 101, 32], [0, 0, 1]])
    capped = open_dataset("waymo", waymo_root, "validation", num_frames=2, max_boxes=1, min_box_area=0.0)[0]
    assert capped["box_ids"] == ["obj-1"]
    allboxes = open_dataset("waymo", waymo_root, "validation", num_frames=2, min_box_area=0.0)[0]
    assert allboxes["box_ids"] == ["obj-1", "obj-0", "obj-2"]


@pytest.mark.parametrize("camera_type", ["int32", "string", "dictionary"])
def test_waymo_camera_name_variants(tmp_path, camera_type):
    write_waymo(tmp_path, "validation", "seg", n=6, camera_type=camera_type)
    s = open_dataset("waymo", tmp_path / "validation", "validation", num_frames=3)[0]  # ROOT may be the split folder
    assert decode_index(s["video"]) == [100, 102, 104] and s["box_ids"] == ["obj-1", "obj-0"]


def test_waymo_size_scales_boxes_and_intrinsics(waymo_root):
    full = open_dataset("waymo", waymo_root, "validation", num_frames=2)[0]
    half = open_dataset("waymo", waymo_root, "validation", num_frames=2, size=(32, 48))[0]
    assert half["video"].shape == (2, 32, 48, 3)
    torch.testing.assert_close(half["boxes"], full["boxes"] / 2)
    torch.testing.assert_close(half["intrinsics"][:2], full["intrinsics"][:2] / 2)


def test_waymo_long_segment_streams_only_the_clip(tmp_path):
    """200 frames (20 s at 10 Hz) in row groups of 10 (shuffled inside each): a 16-frame 5 fps clip spans 31
    frames, so it reads the image column of at most 4 row groups and decodes 16 JPEGs."""
    write_waymo(tmp_path, "validation", "long", n=200, cameras=(1,), row_group_size=10, shuffle="local")
    ds = open_dataset("waymo", tmp_path, "validation", num_frames=16, start=120)
    ds.frames(0)  # the key columns, read once per segment
    reset_image_rows_read()
    reset_decoded_image_count()
    s = ds[0]
    assert decode_index(s["video"]) == [100 + k for k in range(120, 152, 2)]
    assert decoded_image_count() == 16 and image_rows_read() <= 40  # of 200 rows in the file


def test_waymo_evaluation_windows_are_seeded(waymo_root):
    a = task_dataset("waymo", "eval", waymo_root, num_samples=6, size=None)
    b = task_dataset("waymo", "validation", waymo_root, num_samples=6, size=None)
    assert len(a) == 6 and [a.locate(i) for i in range(6)] == [b.locate(i) for i in range(6)]
    assert len({a.locate(i)[1] for i in range(6)}) > 1  # different random windows
    c = task_dataset("waymo", "eval", waymo_root, num_samples=6, size=None, seed=1)
    assert [a.locate(i) for i in range(6)] != [c.locate(i) for i in range(6)]
    tr = task_dataset("waymo", "train", waymo_root)  # string camera names in this split
    s = tr.sample(0, torch.Generator().manual_seed(0))
    assert s["video"].shape == (31, 256, 384, 3) and s["id"] == "seg_b"  # one 16 x 2 window at the paper's 256x384


def test_waymo_errors(tmp_path, waymo_root):
    with pytest.raises(DatasetLayoutError, match="camera_image"):
        open_dataset("waymo", tmp_path, "validation")
    with pytest.raises(ValueError, match="camera 'REAR'"):
        camera_code("REAR")
    with pytest.raises(ValueError, match="no image of camera 5"):
        open_dataset("waymo", waymo_root, "validation", camera=5)[0]
    import pyarrow.parquet as pq

    write_waymo(tmp_path, "validation", "seg", n=4)
    box = tmp_path / "validation" / "camera_box" / "seg.parquet"
    pq.write_table(pq.read_table(box).drop(["[CameraBoxComponent].box.center.x"]), box)
    with pytest.raises(DatasetLayoutError, match=r"box\.center\.x"):
        open_dataset("waymo", tmp_path, "validation", num_frames=2)[0]


def test_waymo_slim_rewrite_reads_the_same_and_less(tmp_path):
    """`fourds data waymo-slim`: one camera, sorted, small row groups; the reader returns the same samples."""
    write_waymo(tmp_path / "src", "validation", "seg", n=60, row_group_size=1000)  # one row group, shuffled
    from fourds.cli import main as cli

    assert cli(["data", "waymo-slim", str(tmp_path / "src"), str(tmp_path / "dst"), "--split", "validation"]) == 0
    a = open_dataset("waymo", tmp_path / "src", "validation", num_frames=8, start=20)
    b = open_dataset("waymo", tmp_path / "dst", "validation", num_frames=8, start=20)
    b.frames(0)
    reset_image_rows_read()
    sb = b[0]
    assert image_rows_read() <= 20  # 15 frames of span in row groups of 4 (of 60 rows; the source: all 120)
    sa = a[0]
    assert torch.equal(sa["video"], sb["video"]) and torch.equal(sa["boxes"], sb["boxes"]) and sa["box_ids"] == sb["box_ids"]
    torch.testing.assert_close(sa["intrinsics"], sb["intrinsics"])
