"""Depth for a whole video with a dense depth head (the official 4DS ScanNet depth readout).

The official head has one learned query per output patch, so it runs at its trained size (16x224x224):
frames are resized in (PIL Lanczos, as the official demo), the video is cut into back-to-back windows of
the head's clip length (the last one aligned to the end, a short video repeats its last frame), and each
window's depth is resized back to the video's size (bilinear, antialiased when shrinking).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fourds.data import to_float
from fourds.inference.extract import window_frame_indices


def find_depth_head(heads: dict[str, nn.Module], where: str) -> nn.Module:
    """The ``depth`` head, with a fix-it message when the model has none."""
    if "depth" in heads:
        return heads["depth"]
    raise ValueError(
        f"{where} has no depth head (heads/depth/; heads found: {sorted(heads) or 'none'}); convert the official "
        "depth checkpoint with `fourds convert official scaling4d_dist_b_depth.npz OUT_DIR` or train a depth readout"
    )


def head_input_size(head: nn.Module) -> tuple[int, int, int]:
    """``(T, H, W)`` a dense head predicts (its ``output_size``)."""
    size = getattr(head, "output_size", None)
    if size is None:
        raise ValueError(f"depth head {type(head).__name__} has no output_size (T, H, W); cannot tile a video with it")
    return tuple(int(v) for v in size)  # type: ignore[return-value]


@torch.inference_mode()
def predict_depth(
    backbone: nn.Module,
    head: nn.Module,
    frames: np.ndarray,
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Depth of every frame at the head's size.

    Args:
        backbone, head: a Backbone and a dense head with ``layer`` and ``output_size`` ``(T, H, W)``.
        frames: ``(F, H, W, 3)`` uint8 RGB already at the head's ``(H, W)``.

    Returns:
        ``(F, H, W)`` float32 raw head outputs (the official head: its depth units). Frames covered by
        two windows (near the end) take the earlier window's value.
    """
    t, h, w = head_input_size(head)
    if frames.ndim != 4 or tuple(frames.shape[1:3]) != (h, w) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (F, {h}, {w}, 3) uint8 for this head, got {frames.shape} {frames.dtype}")
    backbone, head = backbone.to(device).eval(), head.to(device).eval()
    index, valid = window_frame_indices(len(frames), t)
    depth = np.zeros((len(frames), h, w), np.float32)
    done = np.zeros(len(frames), bool)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(index), unit="clip", leave=False)
    for lo in range(0, len(index), batch_size):
        sel = index[lo : lo + batch_size]
        clips = to_float(torch.from_numpy(frames[sel]).to(device))
        feats = backbone.features(clips, [int(head.layer)])[0]
        out = head(feats).float()
        if out.ndim == 5:
            out = out[..., 0]  # (b, T, H, W, 1) -> (b, T, H, W)
        out = out.cpu().numpy()
        for clip_idx, clip_valid, clip_depth in zip(sel, valid[lo : lo + batch_size], out):
            for f, ok, d in zip(clip_idx, clip_valid, clip_depth):
                if ok and not done[f]:
                    depth[f], done[f] = d, True
        if bar is not None:
            bar.update(len(sel))
    if bar is not None:
        bar.close()
    assert done.all(), "windows must cover every frame"
    return depth


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(F, h, w)`` → ``(F, H, W)`` float32, bilinear (antialiased when shrinking)."""
    if tuple(depth.shape[1:]) == tuple(size):
        return depth
    x = torch.from_numpy(depth)[:, None]
    shrink = size[0] < depth.shape[1] or size[1] < depth.shape[2]
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out[:, 0].numpy()


def colourise(depth: np.ndarray, lo: float, hi: float, cmap: str = "turbo") -> np.ndarray:
    """``(..., H, W)`` depth → ``(..., H, W, 3)`` uint8 with a matplotlib colour map over ``[lo, hi]``."""
    from matplotlib import colormaps

    scale = (np.asarray(depth, np.float32) - lo) / max(hi - lo, 1e-12)
    rgba = colormaps[cmap](np.clip(scale, 0.0, 1.0), bytes=True)
    return rgba[..., :3]


def side_by_side(frames: Iterator[np.ndarray], depth: np.ndarray, lo: float, hi: float, cmap: str) -> Iterator[np.ndarray]:
    """Original frames next to their colourised depth (resized to the frame), ``(H, 2W, 3)`` uint8."""
    for frame, d in zip(frames, depth):
        colour = colourise(resize_depth(d[None], frame.shape[:2])[0], lo, hi, cmap)
        yield np.concatenate([frame, colour], axis=1)


def output_paths(out: str | Path, stem: str) -> tuple[Path, Path]:
    """``(mp4, npy)``: ``OUT.mp4`` and ``OUT.npy`` when ``out`` ends in .mp4, else ``OUT/<stem>_depth.*``."""
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        return out, out.with_suffix(".npy")
    return out / f"{stem}_depth.mp4", out / f"{stem}_depth.npy"
