"""Pose EPE and the Procrustes projection: hand cases and a direct numpy computation."""

import math

import numpy as np
import pytest
import roma
import torch

from fourds.metrics import CUBE_POINTS, METRIC_SPECS, cube_points, pose_epe, procrustes_rotation


def _pose(rot: torch.Tensor, t) -> torch.Tensor:
    return torch.cat([rot, torch.as_tensor(t, dtype=rot.dtype).reshape(3, 1)], dim=1)


def numpy_epe(pred: np.ndarray, gt: np.ndarray, points: np.ndarray) -> np.ndarray:
    """EPE for (N, 3, 4) poses with the rotation projected by an explicit SVD."""
    out = []
    for p, g in zip(pred, gt):
        u, _, vt = np.linalg.svd(p[:, :3])
        d = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag([1.0, 1.0, d]) @ vt
        a = points @ rot.T + p[:, 3]
        b = points @ g[:, :3].T + g[:, 3]
        out.append(np.linalg.norm(a - b, axis=1).mean())
    return np.array(out)


def test_cube_points_are_the_papers():
    pts = cube_points()
    assert pts.shape == (8, 3) and len(set(CUBE_POINTS)) == 8
    assert set(pts[:, 0].tolist()) == {-1.0, 1.0} and set(pts[:, 1].tolist()) == {-1.0, 1.0}
    assert set(pts[:, 2].tolist()) == {1.0, 3.0}  # in front of the camera (z forward)


def test_hand_computed_cases():
    eye = torch.eye(3)
    ident = _pose(eye, [0, 0, 0])
    assert pose_epe(ident, ident).item() == 0.0
    # A pure translation error moves every point by the same vector.
    assert pose_epe(_pose(eye, [0.3, 0.0, 0.4]), ident).item() == pytest.approx(0.5)
    # 180 degrees about the optical axis: (x, y, z) -> (-x, -y, z), each corner moves 2 * sqrt(2).
    rz = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))
    assert pose_epe(_pose(rz, [0, 0, 0]), ident).item() == pytest.approx(2 * math.sqrt(2))
    # A scaled rotation is projected back onto the rotation before use.
    r = roma.rotvec_to_rotmat(torch.tensor([0.1, -0.2, 0.3]))
    assert pose_epe(_pose(2.5 * r, [1, 2, 3]), _pose(r, [1, 2, 3])).item() == pytest.approx(0.0, abs=1e-5)
    # Custom points: a single point at the origin only sees translation.
    origin = torch.zeros(1, 3)
    assert pose_epe(_pose(rz, [0, 0, 1]), ident, origin).item() == pytest.approx(1.0)


def test_matches_numpy_svd_on_random_poses():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 5, 3, 4, generator=gen, dtype=torch.float64)
    gt = _random_rigid(10, gen).reshape(2, 5, 3, 4)
    ours = pose_epe(pred, gt)
    assert ours.shape == (2, 5) and ours.dtype == torch.float64
    ref = numpy_epe(pred.reshape(10, 3, 4).numpy(), gt.reshape(10, 3, 4).numpy(), np.array(CUBE_POINTS))
    np.testing.assert_allclose(ours.reshape(10).numpy(), ref, rtol=1e-9, atol=1e-9)
    ours32 = pose_epe(pred.float(), gt.float())
    assert ours32.dtype == torch.float32
    np.testing.assert_allclose(ours32.reshape(10).numpy(), ref, rtol=1e-4, atol=1e-5)


def _random_rigid(n: int, gen: torch.Generator) -> torch.Tensor:
    rot = roma.rotvec_to_rotmat(torch.randn(n, 3, generator=gen, dtype=torch.float64))
    return torch.cat([rot, torch.randn(n, 3, 1, generator=gen, dtype=torch.float64)], dim=-1)


def test_procrustes_rotation_is_nearest_proper_rotation():
    gen = torch.Generator().manual_seed(2)
    m = torch.randn(64, 3, 3, generator=gen, dtype=torch.float64)
    m[0] = torch.diag(
        torch.tensor([3.0, 2.0, -1.0], dtype=torch.float64)
    )  # a reflection; nearest rotation: I
    r = procrustes_rotation(m)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(64, dtype=torch.float64))
    torch.testing.assert_close(r[0], torch.eye(3, dtype=torch.float64))
    for mi, ri in zip(m.numpy(), r.numpy()):
        u, _, vt = np.linalg.svd(mi)
        ref = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
        np.testing.assert_allclose(ri, ref, atol=1e-8)
    # Already a rotation: unchanged.
    rot = roma.rotvec_to_rotmat(torch.randn(4, 3, generator=gen))
    torch.testing.assert_close(procrustes_rotation(rot), rot, atol=1e-5, rtol=0)


def test_errors_and_spec():
    with pytest.raises(ValueError, match=r"unflatten"):
        pose_epe(torch.zeros(2, 12), torch.zeros(2, 12))
    with pytest.raises(ValueError, match="same shape"):
        pose_epe(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4))
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        pose_epe(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        procrustes_rotation(torch.zeros(2, 3, 4))
    spec = METRIC_SPECS["pose_epe"]
    assert spec.direction == "lower" and spec.reducer == "mean"
