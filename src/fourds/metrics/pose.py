"""Relative camera pose end-point error (the paper's RE10k metric) and the Procrustes projection.

A pose is a row-major ``[R | t]`` ``(3, 4)`` matrix acting on a point as ``x -> R x + t``; for the
RE10k task it is the clip's relative pose ``inv(cam_to_world[-1]) @ cam_to_world[0]``, mapping points
from the first camera's frame into the last camera's frame (metres, OpenCV axes: x right, y down,
z forward).

The EPE moves a fixed set of points (by default the 8 corners of a virtual cube in front of the first
camera) with the predicted and with the ground-truth pose and averages the distances between the two
results, so rotation and translation errors are measured jointly, in metres.
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

from fourds.device_constants import constant

CUBE_POINTS: tuple[tuple[float, float, float], ...] = tuple(
    (x, y, z) for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (1.0, 3.0)
)
"""The paper's 8 auxiliary points: corners of {-1, 1} x {-1, 1} x {1, 3} in the first camera's frame."""


def cube_points(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """:data:`CUBE_POINTS` as a ``(8, 3)`` tensor, metres (a device-side copy of a cached constant: no host
    copy per call on a GPU)."""
    flat = constant(tuple(v for point in CUBE_POINTS for v in point), dtype, device)
    return flat.view(len(CUBE_POINTS), 3).clone()


def procrustes_rotation(m: Tensor) -> Tensor:
    """The rotation nearest to ``m`` in Frobenius norm (special orthogonal Procrustes).

    ``U diag(1, 1, det(U V^T)) V^T`` from the SVD ``m = U S V^T``, so the result has determinant +1
    even when ``m`` is a reflection; computed by ``roma.special_procrustes``.

    Args:
        m: ``(..., 3, 3)`` any real matrices (e.g. the raw 3x3 block a readout predicts).

    Returns:
        ``(..., 3, 3)`` rotation matrices, same dtype (float32 at least).
    """
    if m.ndim < 2 or tuple(m.shape[-2:]) != (3, 3):
        raise ValueError(f"procrustes_rotation: m must be (..., 3, 3), got {tuple(m.shape)}")
    dtype = torch.promote_types(m.dtype, torch.float32)
    return roma.special_procrustes(m.to(dtype))


def pose_epe(pred: Tensor, gt: Tensor, points: Tensor | None = None) -> Tensor:
    """Mean end-point error between points moved by the predicted and by the ground-truth pose.

    The predicted rotation block is first projected to the nearest rotation
    (:func:`procrustes_rotation`); the ground truth is used as given.

    Args:
        pred: ``(..., 3, 4)`` predicted ``[R | t]`` (a flat 12-vector reshapes with
            ``pred.unflatten(-1, (3, 4))``).
        gt: ``(..., 3, 4)`` ground-truth ``[R | t]``, translation in metres.
        points: ``(K, 3)`` points in the first camera's frame, metres; default :func:`cube_points`.

    Returns:
        ``(...)`` float32 (float64 for float64 inputs) EPE in metres, >= 0; a batch ``(B, 3, 4)``
        gives ``(B,)``. Data-set reducer: plain mean over samples.
    """
    for name, pose in (("pred", pred), ("gt", gt)):
        if pose.ndim < 2 or tuple(pose.shape[-2:]) != (3, 4):
            raise ValueError(
                f"pose_epe: {name} must be (..., 3, 4) [R|t], got {tuple(pose.shape)}; "
                "reshape flat 12-vectors with .unflatten(-1, (3, 4))"
            )
    if pred.shape != gt.shape:
        raise ValueError(
            f"pose_epe: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape"
        )
    dtype = torch.promote_types(torch.promote_types(pred.dtype, gt.dtype), torch.float32)
    if points is None:
        points = cube_points(dtype, pred.device)
    if points.ndim != 2 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise ValueError(f"pose_epe: points must be (K, 3) with K >= 1, got {tuple(points.shape)}")
    pred = pred.to(dtype)
    gt = gt.to(dtype)
    points = points.to(dtype=dtype, device=pred.device)

    rot_pred = procrustes_rotation(pred[..., :3])
    moved_pred = points @ rot_pred.transpose(-1, -2) + pred[..., None, :, 3]  # (..., K, 3)
    moved_gt = points @ gt[..., :3].transpose(-1, -2) + gt[..., None, :, 3]
    return torch.linalg.vector_norm(moved_pred - moved_gt, dim=-1).mean(dim=-1)
