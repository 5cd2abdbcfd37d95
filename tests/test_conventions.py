"""docs/conventions.md, checked against the code: each test is one rule of that page, hand-computed."""

from __future__ import annotations

import math

import numpy as np
import torch

from fourds.data import to_float
from fourds.data.collate import collate_samples
from fourds.data.synthetic.camera import camera_rays, intrinsics_from_fov, project, world_to_camera
from fourds.models.backbone import layer_index, parse_layer_spec, resolve_layers
from fourds.tasks.re10k import relative_pose


def test_video_uint8_becomes_float_in_0_1():
    video = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 1, 1, 3)
    out = to_float(video)
    assert out.dtype == torch.float32 and torch.allclose(out.flatten(), torch.tensor([0.0, 0.2, 1.0]))


def test_the_ray_through_pixel_i_j_projects_to_its_centre_j_plus_half_i_plus_half():
    h, w = 4, 6
    k = intrinsics_from_fov(math.radians(60), h, w).to(torch.float64)
    c2w = torch.eye(4, dtype=torch.float64)[None]  # camera = world: OpenCV axes, z forward
    rays = camera_rays(k, c2w, h, w)  # (3, T, H, W), camera-z component 1
    i, j = 1, 4
    point = rays[:, 0, i, j] * 3.0  # 3 m along the ray
    assert float(point[2]) == 3.0  # z forward
    xy = project(world_to_camera(point, c2w[0]), k)
    assert torch.allclose(xy, torch.tensor([j + 0.5, i + 0.5], dtype=torch.float64))  # (x, y) = (col, row)
    # x right, y down: the pixel right of and below the centre has positive camera x and y.
    assert float(rays[0, 0, h - 1, w - 1]) > 0 and float(rays[1, 0, h - 1, w - 1]) > 0


def test_boxes_are_x0_y0_x1_y1_with_x1_y1_exclusive():
    from fourds.data.synthetic.ground_truth import FIRST_OBJECT, visible_boxes

    surface = torch.zeros(1, 5, 6, dtype=torch.int64)
    surface[0, 1:3, 2:5] = FIRST_OBJECT  # object 0 on rows 1-2, columns 2-4
    boxes, valid = visible_boxes(surface, max_objects=1, min_pixels=1)
    assert bool(valid[0, 0]) and boxes[0, 0].tolist() == [2.0, 1.0, 5.0, 3.0]


def test_relative_pose_maps_first_camera_points_into_the_last_camera():
    c2w = torch.eye(4).repeat(1, 3, 1, 1)  # (B=1, T=3, 4, 4)
    c2w[0, -1, 0, 3] = 1.0  # the last camera stands 1 m to the right (world x) of the first
    rel = relative_pose(c2w)[0]  # [R | t] (3, 4)
    point_first = torch.tensor([0.0, 0.0, 2.0, 1.0])  # 2 m in front of the first camera
    assert torch.allclose(rel @ point_first, torch.tensor([-1.0, 0.0, 2.0]))  # seen 1 m to the left
    assert relative_pose(c2w).reshape(1, -1).shape == (1, 12)  # carried as 12 row-major numbers


def test_fractional_depths_and_indices():
    assert layer_index(0.75, 56) == 42  # 4DS-e's "layer 42 of 56"
    assert layer_index(0.95, 12) == 11 and layer_index(1.0, 12) == 12 and layer_index(0.0, 12) == 0
    assert parse_layer_spec("0.95,12,-1") == [0.95, 12, -1]  # decimals depths, integers indices
    assert resolve_layers([0, -1, 0.5], 12) == [0, 12, 6]  # 0 = embedding, -1 = the last block


def test_padding_marks_the_padded_tracks_and_boxes_invalid():
    def sample(p: int, o: int) -> dict:
        return {"video": torch.zeros(2, 4, 4, 3), "tracks": torch.ones(p, 2, 2),
                "visible": torch.ones(p, 2, dtype=torch.bool),
                "boxes": torch.ones(o, 2, 4), "box_valid": torch.ones(o, 2, dtype=torch.bool)}

    batch = collate_samples([sample(3, 1), sample(1, 2)])
    assert batch["tracks"].shape == (2, 3, 2, 2) and batch["box_valid"].shape == (2, 2, 2)
    assert batch["track_valid"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["box_valid"][0].tolist() == [[True, True], [False, False]]
    assert float(batch["tracks"][1, 1:].abs().sum()) == 0.0  # padding is 0, finite


def test_synthetic_tracks_are_x_y_queries_t_y_x_and_the_export_stores_occlusion(tmp_path):
    from fourds.data.synthetic import SyntheticScenes
    from fourds.data.synthetic.export import export_point_tracks

    ds = SyntheticScenes(num_frames=3, height=16, width=16, num_samples=1, num_tracks=8, max_objects=2,
                         min_objects=1, seed=0)
    s = ds[0]
    q = s["query_points"]  # (P, 3) (t, y, x), the TAP-Vid order
    first = s["tracks"][torch.arange(len(q)), q[:, 0].long()]  # (P, 2) (x, y) at each query's frame
    assert torch.allclose(first, q[:, [2, 1]])
    assert torch.all((first - first.floor()) == 0.5)  # queries at pixel centres
    assert s["video"].dtype == torch.float32 and 0 <= float(s["video"].min()) <= float(s["video"].max()) <= 1
    path = export_point_tracks(ds, tmp_path, indices=[0])[0]
    with np.load(path) as z:
        assert np.array_equal(z["occluded"], ~s["visible"].numpy())  # stored as occlusion, read back as visible
