"""Label-aware resize/crop/flip: pixels and labels move together."""

import pytest
import torch

from fourds.data.geometry import (
    Crop,
    HFlip,
    Resize,
    apply_geometry,
    random_resized_crop,
    resize_short_side_crop,
    transform_points,
)

PIPELINES = [
    [Crop(5, 7, 40, 50)],
    [HFlip()],
    [Resize(120, 90)],
    [Resize(60, 80), Crop(4, 10, 48, 48), HFlip()],
    [Crop(3, 2, 50, 60), Resize(100, 100), HFlip(), Crop(10, 0, 64, 64)],
]


def marked_sample(x: int, y: int, h: int = 60, w: int = 70) -> dict:
    video = torch.zeros(2, h, w, 3)
    video[:, y, x] = 1.0
    depth = torch.full((2, h, w), 5.0)
    depth[:, y, x] = 1.0
    centre = torch.tensor([[[x + 0.5, y + 0.5]] * 2])  # (P=1, T=2, 2) pixel centre
    return {"video": video, "depth": depth, "tracks": centre, "visible": torch.ones(1, 2, dtype=torch.bool)}


@pytest.mark.parametrize("ops", PIPELINES)
def test_marked_pixel_and_its_track_move_together(ops):
    out = apply_geometry(ops, marked_sample(31, 23))
    frame = out["video"][0].sum(-1)
    iy, ix = divmod(int(frame.argmax()), frame.shape[1])
    x, y = out["tracks"][0, 0].tolist()
    assert abs(ix + 0.5 - x) <= 1.0 and abs(iy + 0.5 - y) <= 1.0, (ops, (ix, iy), (x, y))
    d = out["depth"][0]
    dy, dx = divmod(int(d.argmin()), d.shape[1])
    assert abs(dx + 0.5 - x) <= 1.0 and abs(dy + 0.5 - y) <= 1.0


@pytest.mark.parametrize("ops", PIPELINES)
def test_boxes_follow_a_painted_rectangle(ops):
    h, w = 60, 70
    video = torch.zeros(1, h, w, 3)
    video[0, 20:35, 10:41] = 1.0  # box (10, 20, 41, 35) exclusive ends
    sample = {"video": video, "boxes": torch.tensor([[[10.0, 20.0, 41.0, 35.0]]]),
              "box_valid": torch.ones(1, 1, dtype=torch.bool)}
    out = apply_geometry(ops, sample)
    mask = out["video"][0].sum(-1) > 1.5  # pixels mostly inside
    ys, xs = mask.nonzero(as_tuple=True)
    x0, y0, x1, y1 = out["boxes"][0, 0].tolist()
    assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5
    assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5


@pytest.mark.parametrize("ops", PIPELINES)
def test_intrinsics_project_onto_the_moved_pixels(ops):
    k = torch.tensor([[50.0, 0.0, 35.0], [0.0, 55.0, 30.0], [0.0, 0.0, 1.0]])
    pts = torch.tensor([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0], [0.0, 0.0, 1.5]])  # camera frame, OpenCV axes
    proj = (pts @ k.T)
    pix = proj[:, :2] / proj[:, 2:]
    video = torch.zeros(1, 60, 70, 3)
    out = apply_geometry(ops, {"video": video, "intrinsics": k, "tracks": pix[:, None]})
    flipped = sum(isinstance(op, HFlip) for op in ops) % 2 == 1
    cam = pts * torch.tensor([-1.0, 1.0, 1.0]) if flipped else pts  # the mirrored camera sees x -> -x
    proj2 = cam @ out["intrinsics"].T
    torch.testing.assert_close(proj2[:, :2] / proj2[:, 2:], out["tracks"][:, 0], atol=1e-4, rtol=1e-4)


def test_flip_keeps_poses_proper_and_mirrors_relative_pose():
    import roma

    rot = roma.random_rotmat(2, generator=torch.Generator().manual_seed(0))
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[:, :3, :3] = rot
    c2w[:, :3, 3] = torch.tensor([[0.1, 0.2, 0.3], [1.0, -0.5, 0.2]])
    out = apply_geometry([HFlip()], {"video": torch.zeros(2, 8, 8, 3), "cam_to_world": c2w})["cam_to_world"]
    assert torch.allclose(torch.det(out[:, :3, :3]), torch.ones(2), atol=1e-5)
    rel = torch.linalg.inv(c2w[1]) @ c2w[0]
    rel2 = torch.linalg.inv(out[1]) @ out[0]
    m = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(rel2, m @ rel @ m, atol=1e-5, rtol=1e-5)


def test_tracks_leaving_the_crop_become_invisible_and_boxes_are_clipped():
    sample = {
        "video": torch.zeros(1, 50, 50, 3),
        "tracks": torch.tensor([[[5.0, 5.0]], [[30.0, 30.0]]]),
        "visible": torch.ones(2, 1, dtype=torch.bool),
        "boxes": torch.tensor([[[0.0, 0.0, 8.0, 8.0]], [[15.0, 15.0, 45.0, 45.0]]]),
        "box_valid": torch.ones(2, 1, dtype=torch.bool),
    }
    out = apply_geometry([Crop(20, 20, 20, 20)], sample)
    assert out["visible"].flatten().tolist() == [False, True]
    assert out["box_valid"].flatten().tolist() == [False, True]
    assert out["boxes"][1, 0].tolist() == [0.0, 0.0, 20.0, 20.0]
    assert torch.isfinite(out["tracks"]).all()


def test_paper_recipes_sizes_and_determinism():
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    a = resize_short_side_crop((360, 640), 224, 1.15, random=True, flip=True, generator=g1)
    b = resize_short_side_crop((360, 640), 224, 1.15, random=True, flip=True, generator=g2)
    assert a == b and a[0] == Resize(258, 458) and a[1].height == a[1].width == 224
    centre = resize_short_side_crop((240, 320), 224, 239 / 224, random=False)
    assert centre == [Resize(239, 319), Crop(7, 47, 224, 224)]
    ops = random_resized_crop((256, 256), (256, 256), generator=torch.Generator().manual_seed(1))
    assert isinstance(ops[-1], Resize)
    corners = transform_points(ops, torch.tensor([[0.0, 0.0], [256.0, 256.0]]), (256, 256))
    assert corners.min() <= 0.0 + 1e-4 and corners.max() >= 256 - 1e-4  # the crop fills the frame


def test_crop_outside_the_frame_is_rejected():
    with pytest.raises(ValueError, match="does not fit"):
        apply_geometry([Crop(0, 0, 100, 10)], {"video": torch.zeros(1, 50, 50, 3)})
