"""Procedural 4D scenes: the sample contract, determinism, and geometry checked independently of the
renderer (unprojection with depth/intrinsics/poses, object motion, boxes, visibility by exact rays)."""

import math
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from fourds.data.synthetic import CONTRACT_KEYS, SceneConfig, SyntheticScenes
from fourds.data.synthetic.camera import rays_through
from fourds.data.synthetic.renderer import FIRST_OBJECT, cast

T, H, W, P, O = 6, 48, 64, 64, 8


@pytest.fixture(scope="module")
def ds() -> SyntheticScenes:
    return SyntheticScenes(num_frames=T, height=H, width=W, seed=3, num_samples=50, num_tracks=P, max_objects=O)


@pytest.fixture(scope="module")
def samples(ds) -> list[dict]:
    return [ds[i] for i in range(6)]


def unproject(xy: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor) -> torch.Tensor:
    """Independent pinhole unprojection: raster (x, y) (N, 2) and z-depth (N,) → world points (N, 3)."""
    k = intrinsics.double()
    cam = torch.stack([(xy[:, 0].double() - k[0, 2]) / k[0, 0], (xy[:, 1].double() - k[1, 2]) / k[1, 1],
                       torch.ones(len(xy), dtype=torch.float64)], -1) * depth.double()[:, None]
    c2w = cam_to_world.double()
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def test_contract_keys_shapes_dtypes_and_batching(ds, samples):
    s = samples[0]
    expected = {
        "video": ((T, H, W, 3), torch.float32), "depth": ((T, H, W), torch.float32),
        "intrinsics": ((3, 3), torch.float32), "cam_to_world": ((T, 4, 4), torch.float32),
        "tracks": ((P, T, 2), torch.float32), "visible": ((P, T), torch.bool), "track_object": ((P,), torch.int64),
        "boxes": ((O, T, 4), torch.float32), "box_valid": ((O, T), torch.bool), "label": ((), torch.int64),
        "segmentation": ((T, H, W), torch.int64), "query_points": ((P, 3), torch.float32),
    }
    assert set(CONTRACT_KEYS) <= set(s)
    for key, (shape, dtype) in expected.items():
        assert tuple(s[key].shape) == shape and s[key].dtype == dtype, key
    assert ds.num_tracks == P and ds.max_objects == O and ds.num_classes == 8 and len(ds) == 50
    assert 0.0 <= float(s["video"].min()) and float(s["video"].max()) <= 1.0
    assert bool(torch.isfinite(s["depth"]).all()) and float(s["depth"].min()) > 0
    assert 0 <= int(s["label"]) < ds.num_classes
    n = int(s["num_objects"])
    assert 3 <= n <= O and not s["box_valid"][n:].any() and bool((s["boxes"][n:] == 0).all())
    assert bool((s["track_object"] < n).all()) and bool((s["track_object"] >= -1).all())
    assert (s["track_object"] >= 0).any() and (s["track_object"] == -1).any()  # both kinds of query points
    batch = next(iter(DataLoader(ds, batch_size=3)))  # fixed P and O: the default collate stacks
    assert batch["boxes"].shape == (3, O, T, 4) and batch["label"].shape == (3,)


def test_same_seed_and_index_is_bit_identical_across_processes_and_threads(ds, samples, tmp_path):
    again = SyntheticScenes(num_frames=T, height=H, width=W, seed=3, num_samples=50, num_tracks=P, max_objects=O)[1]
    assert all(torch.equal(samples[1][k], again[k]) for k in samples[1])
    other = SyntheticScenes(num_frames=T, height=H, width=W, seed=4, num_samples=50, num_tracks=P, max_objects=O)[1]
    assert not torch.equal(other["video"], again["video"])
    path = tmp_path / "s.pt"
    code = (
        "import torch, sys; torch.set_num_threads(1); from fourds.data.synthetic import SyntheticScenes; "
        f"s = SyntheticScenes(num_frames={T}, height={H}, width={W}, seed=3, num_samples=50, num_tracks={P}, "
        f"max_objects={O})[1]; torch.save(s, sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    theirs = torch.load(path, weights_only=True)
    assert all(torch.equal(samples[1][k], theirs[k]) for k in samples[1])
    loaded = next(iter(DataLoader(torch.utils.data.Subset(ds, [1]), batch_size=None, num_workers=1)))
    assert torch.equal(loaded["video"], samples[1]["video"]) and torch.equal(loaded["visible"], samples[1]["visible"])


def test_poses_are_proper_rigid_transforms_and_camera_moves(samples):
    for s in samples:
        for poses in (s["cam_to_world"], s["object_to_world"].flatten(0, 1)):
            rot = poses[:, :3, :3].double()
            eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
            assert torch.allclose(rot.transpose(1, 2) @ rot, eye, atol=1e-5)
            assert torch.allclose(torch.linalg.det(rot), torch.ones(len(rot), dtype=torch.float64), atol=1e-5)
            assert bool((poses[:, 3] == torch.tensor([0.0, 0.0, 0.0, 1.0])).all())
        c2w = s["cam_to_world"].double()
        travel = (c2w[-1, :3, 3] - c2w[0, :3, 3]).norm()
        assert 1.4 <= float(travel) <= 4.1  # SceneConfig.camera_travel
        assert float(c2w[:, :3, 3].norm(dim=-1).min()) >= 8.0 - 1e-4  # camera_min_distance
        assert float(c2w[:, 2, 0].abs().max()) < 1e-6  # no roll: the camera x axis is horizontal
        k = s["intrinsics"]
        assert float(k[0, 2]) == W / 2 and float(k[1, 2]) == H / 2 and float(k[0, 0]) == float(k[1, 1])


def test_depth_unprojects_onto_the_scene_surfaces(samples):
    """Every pixel centre unprojected with its z-depth lies on the ground, the backdrop or its object."""
    xs, ys = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    xy = torch.stack([xs.flatten(), ys.flatten()], -1)
    for s in samples[:3]:
        for t in (0, T - 1):
            p = unproject(xy, s["depth"][t].flatten(), s["intrinsics"], s["cam_to_world"][t])
            seg = s["segmentation"][t].flatten()
            bg = seg < 0
            on_ground = p[bg, 2].abs() < 1e-3 * s["depth"][t].flatten()[bg]
            on_backdrop = (p[bg].norm(dim=-1) - SceneConfig().backdrop_radius).abs() < 1e-3 * 40
            assert bool((on_ground | on_backdrop).all())
            for o in seg.unique().tolist():
                if o < 0:
                    continue
                pose = s["object_to_world"][o, t].double()
                local = (p[seg == o] - pose[:3, 3]) @ pose[:3, :3]
                half = s["object_size"][o].double()
                if int(s["object_shape"][o]) == 0:
                    residual = local.norm(dim=-1) - half[0]
                else:
                    residual = (local.abs() / half).amax(dim=-1) - 1.0
                assert float(residual.abs().max()) < 2e-3, (o, int(s["object_shape"][o]))


def test_visible_tracks_unproject_onto_their_surface_point_moved_by_its_object(samples):
    """Frame-0 query → 3-D point (depth[0]) → object frame → moved by object_to_world[t]; it must project
    onto tracks[:, t] and, where visible, the depth at that pixel must unproject onto it."""
    checked = 0
    for s in samples:
        q = s["query_points"]
        assert bool((q[:, 0] == 0).all()) and torch.equal(q[:, 1:].flip(-1), s["tracks"][:, 0])
        col, row = q[:, 2].long(), q[:, 1].long()
        p0 = unproject(q[:, [2, 1]], s["depth"][0, row, col], s["intrinsics"], s["cam_to_world"][0])
        obj = s["track_object"]
        poses = torch.where((obj >= 0)[:, None, None, None], s["object_to_world"][obj.clamp_min(0)],
                            torch.eye(4).expand(len(obj), T, 4, 4)).double()
        local = torch.einsum("pji,pj->pi", poses[:, 0, :3, :3], p0 - poses[:, 0, :3, 3])
        assert bool(s["visible"][:, 0].all())
        for t in range(T):
            expected = torch.einsum("pij,pj->pi", poses[:, t, :3, :3], local) + poses[:, t, :3, 3]
            c2w = s["cam_to_world"][t].double()
            cam = (expected - c2w[:3, 3]) @ c2w[:3, :3]
            k = s["intrinsics"].double()
            proj = torch.stack([k[0, 0] * cam[:, 0] / cam[:, 2] + k[0, 2], k[1, 1] * cam[:, 1] / cam[:, 2] + k[1, 2]], -1)
            assert torch.allclose(proj, s["tracks"][:, t].double(), atol=2e-2), t
            vis = s["visible"][:, t]
            xy = s["tracks"][vis, t]
            ix, iy = xy[:, 0].long(), xy[:, 1].long()
            d = s["depth"][t]
            # Depth is sampled at the pixel (centre); allow its variation over one pixel (neighbours).
            pad = torch.nn.functional.pad(d[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
            slope = torch.stack([(pad[iy + 1 + dy, ix + 1 + dx] - d[iy, ix]).abs()
                                 for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]).amax(0)
            got = unproject(xy, d[iy, ix], s["intrinsics"], s["cam_to_world"][t])
            along = (got - expected[vis]).norm(dim=-1) / (got - c2w[:3, 3]).norm(dim=-1)
            assert bool((along <= 0.02 + slope.double() / cam[vis, 2]).all()), t
            checked += int(vis.sum())
    assert checked > 0.6 * len(samples) * P * T  # most tracks are visible most of the time


def _normals(s: dict, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World normals (P, 3) of the track points at frame t, from the object poses, shapes and sizes,
    and each point's distance (m) to the nearest edge of its box face (inf off boxes)."""
    p = s["tracks_3d"][:, t].double()
    normal = torch.where(p[:, 2:].abs() < 1e-3, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), -p / p.norm(dim=-1, keepdim=True))
    to_edge = torch.full((len(p),), math.inf, dtype=torch.float64)
    for i in torch.nonzero(s["track_object"] >= 0).flatten().tolist():
        o = int(s["track_object"][i])
        pose = s["object_to_world"][o, t].double()
        local = pose[:3, :3].T @ (p[i] - pose[:3, 3])
        if int(s["object_shape"][o]) == 0:
            n_local = local / local.norm()
        else:
            half = s["object_size"][o].double()
            face = int((local.abs() / half).argmax())
            n_local = torch.zeros(3, dtype=torch.float64)
            n_local[face] = torch.sign(local[face])
            to_edge[i] = min(float(half[k] - local[k].abs()) for k in range(3) if k != face)
        normal[i] = pose[:3, :3] @ n_local
    return normal, to_edge


def test_visibility_agrees_with_exact_ray_casts(ds, samples):
    """A ray through a track's exact position hits its point first iff the track is visible, except
    where the pixel grid decides: next to a silhouette, a depth edge or a box edge, or at grazing
    incidence."""
    agree = total = 0
    for i, s in enumerate(samples[:4]):
        scene = ds.scene(i)
        seg = torch.nn.functional.pad(s["segmentation"][:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]
        dep = torch.nn.functional.pad(s["depth"][:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        for t in range(T):
            xy = s["tracks"][:, t]
            inside = (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
            assert not bool(s["visible"][~inside, t].any())
            c2w = s["cam_to_world"][t]
            d = rays_through(xy, s["intrinsics"], c2w.expand(len(xy), 4, 4))  # (P, 3), camera z = 1
            frame = type(scene)(**{**scene.__dict__, "cam_to_world": scene.cam_to_world[t:t + 1],
                                   "object_to_world": scene.object_to_world[:, t:t + 1]})
            lam, surf = cast(frame, c2w[None, :3, 3], d.t().reshape(3, 1, len(xy), 1), windows=False)
            lam, surf = lam.flatten(), surf.flatten()
            z = ((s["tracks_3d"][:, t] - c2w[:3, 3]) @ c2w[:3, :3])[:, 2]
            own = torch.where(s["track_object"] >= 0, s["track_object"] + FIRST_OBJECT, -1)
            first = ((lam - z).abs() <= 1e-3 * z) & ((surf == own) | (own < 0))
            ix, iy = xy[:, 0].clamp(0, W - 1).long() + 1, xy[:, 1].clamp(0, H - 1).long() + 1
            near = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            edge = torch.stack([(seg[t, iy + dy, ix + dx] != seg[t, iy, ix])
                                | ((dep[t, iy + dy, ix + dx] - dep[t, iy, ix]).abs() > 0.05 * dep[t, iy, ix])
                                for dy, dx in near]).any(0)
            normal, to_edge = _normals(s, t)
            cos = (normal * d.double()).sum(-1).abs() / d.double().norm(dim=-1)
            near_box_edge = to_edge * float(s["intrinsics"][0, 0]) / z.double() < 2.0  # within ~2 px of a face edge
            explained = edge | (cos < 0.3) | near_box_edge
            differ = (first != s["visible"][:, t]) & inside
            assert not bool((differ & ~explained).any()), torch.nonzero(differ & ~explained)
            agree += int((~differ & inside).sum())
            total += int(inside.sum())
    assert agree >= 0.9 * total, (agree, total)


def test_boxes_are_the_visible_extent_and_contain_visible_track_points(samples):
    for s in samples:
        seg = s["segmentation"]
        for o in range(O):
            for t in range(T):
                ys, xs = torch.nonzero(seg[t] == o, as_tuple=True)
                if len(xs) >= 4:
                    assert bool(s["box_valid"][o, t])
                    expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
                    assert torch.equal(s["boxes"][o, t], expected)
                else:
                    assert not bool(s["box_valid"][o, t]) and bool((s["boxes"][o, t] == 0).all())
        for p in torch.nonzero(s["track_object"] >= 0).flatten().tolist():
            o = int(s["track_object"][p])
            for t in torch.nonzero(s["visible"][p] & s["box_valid"][o]).flatten().tolist():
                x, y = s["tracks"][p, t].tolist()
                x0, y0, x1, y1 = s["boxes"][o, t].tolist()
                assert x0 <= x < x1 and y0 <= y < y1


def test_labels_are_balanced_and_are_the_main_objects_image_direction(ds):
    labels = torch.tensor([ds.label(i) for i in range(400)])
    assert torch.equal(torch.bincount(labels, minlength=8), torch.full((8,), 50))  # 400 = 50 blocks of 8
    assert len({tuple(labels[i:i + 8].tolist()) for i in range(0, 400, 8)}) > 10  # order varies by block
    sector = 2 * math.pi / 8
    for i in range(40):
        scene = ds.scene(i)
        # The main object's first and last centre, both seen by the first camera (its own motion).
        c2w, k = scene.cam_to_world[0].double(), scene.intrinsics.double()
        ends = (scene.object_to_world[0, [0, -1], :3, 3].double() - c2w[:3, 3]) @ c2w[:3, :3]
        x = k[0, 0] * ends[:, 0] / ends[:, 2] + k[0, 2]
        y = k[1, 1] * ends[:, 1] / ends[:, 2] + k[1, 2]
        angle = math.atan2(-float(y[1] - y[0]), float(x[1] - x[0])) % (2 * math.pi)  # counter-clockwise, y up
        assert int(((angle + sector / 2) // sector) % 8) == ds.label(i)
        offset = (angle / sector - ds.label(i) + 0.5) % 1.0 - 0.5
        assert abs(offset) <= 0.3 + 1e-4  # SceneConfig.class_jitter: a margin to the class boundaries
        assert float(scene.velocity[0, 2]) == 0.0 and float(scene.size[0].min()) >= 0.9  # slides; the big one


def test_options_and_errors():
    small = SyntheticScenes(num_frames=2, height=16, width=24, num_tracks=8, num_samples=2, max_objects=4,
                            min_objects=1, num_classes=4, shadows=False)
    s = small[1]
    assert s["video"].shape == (2, 16, 24, 3) and s["boxes"].shape == (4, 2, 4) and 0 <= int(s["label"]) < 4
    assert small[-1]["index"] == 1
    with pytest.raises(IndexError):
        small[2]
    with pytest.raises(ValueError, match="num_tracks"):
        SyntheticScenes(height=8, width=8, num_tracks=65)
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticScenes(min_objects=5, max_objects=4)
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticScenes(num_classes=1)
