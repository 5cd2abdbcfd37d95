"""Features of whole videos: sliding windows of clips through any Backbone, with the metadata that maps
every token back to source frames and pixels.

A video of ``F`` frames is cut into windows of ``T`` frames (the backbone's clip length) taken every
``frame_step`` frames, one window every ``window_stride`` frames (default: back to back); the last window
is aligned to the end of the video so every frame is covered, and a video shorter than one window repeats
its last frame (``frame_valid`` is False there).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fourds.fileio import atomic_path, write_text_atomic
from fourds.models.backbone import resolve_layers

Allocate = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


def window_frame_indices(
    num_frames: int, clip_frames: int, frame_step: int = 1, window_stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Source frame numbers of every window.

    Args:
        num_frames: frames in the video (>= 1).
        clip_frames: frames per window T.
        frame_step: distance between consecutive frames of a window (temporal subsampling).
        window_stride: distance between window starts (default ``clip_frames * frame_step``: windows
            back to back).

    Returns:
        ``indices`` ``(num_windows, T)`` int64 frame numbers (clamped to the last frame) and ``valid``
        ``(num_windows, T)`` bool (False where clamping repeated the last frame).
    """
    for name, value in (("num_frames", num_frames), ("clip_frames", clip_frames), ("frame_step", frame_step)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    span = (clip_frames - 1) * frame_step + 1
    stride = window_stride if window_stride is not None else clip_frames * frame_step
    if stride < 1:
        raise ValueError(f"window stride must be >= 1, got {stride}")
    last = max(num_frames - span, 0)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)  # end-aligned, so the tail of the video is covered
    raw = np.asarray(starts)[:, None] + frame_step * np.arange(clip_frames)[None, :]
    return np.minimum(raw, num_frames - 1).astype(np.int64), raw < num_frames


@dataclass
class Extraction:
    """Features of one video: ``features[k]`` ``(num_windows, T', N, C)`` for each requested layer ``k``,
    the windows' ``frame_indices`` / ``frame_valid`` ``(num_windows, T)``, and JSON-able ``meta``."""

    features: dict[int, np.ndarray]
    frame_indices: np.ndarray
    frame_valid: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _np_empty(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype)


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    frames: np.ndarray,
    layers: Sequence[int | float] | None,
    *,
    clip_frames: int | None = None,
    frame_step: int = 1,
    window_stride: int | None = None,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    out_dtype: np.dtype = np.dtype(np.float32),
    progress: bool = True,
    allocate: Allocate = _np_empty,
) -> Extraction:
    """Run ``backbone.features`` over every window of ``frames``.

    Args:
        backbone: any Backbone (``features(video, layers)``, ``num_layers``, ``input_size``, ``patch_size``).
        frames: ``(F, H, W, 3)`` uint8 RGB at the size the backbone should see.
        layers: indices or fractional depths (see :func:`fourds.models.resolve_layers`); None = all.
        clip_frames: frames per window (default ``backbone.input_size[0]``).
        frame_step, window_stride: see :func:`window_frame_indices`.
        batch_size: windows per forward pass.
        device: where the backbone runs (it is moved there).
        out_dtype: dtype of the stored features (float32 or float16).
        allocate: makes the output arrays (e.g. ``numpy.lib.format.open_memmap`` to stream to disk).

    Returns:
        :class:`Extraction`; ``meta`` has the layer indices, token grid, patch size and window layout.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    indices = resolve_layers(layers, backbone.num_layers)
    clip_frames = clip_frames or int(backbone.input_size[0])
    frame_idx, frame_valid = window_frame_indices(len(frames), clip_frames, frame_step, window_stride)
    backbone = backbone.to(device).eval()
    num_windows = len(frame_idx)
    outputs: dict[int, np.ndarray] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_windows, unit="clip", leave=False)
    for lo in range(0, num_windows, batch_size):
        sel = frame_idx[lo : lo + batch_size]
        clips = torch.from_numpy(frames[sel]).to(device).float().div_(255.0)  # (b, T, H, W, 3) in [0, 1]
        feats = backbone.features(clips, indices)
        for k, f in zip(indices, feats):
            if k not in outputs:
                outputs[k] = allocate(f"layer_{k}", (num_windows, *f.shape[1:]), out_dtype)
            outputs[k][lo : lo + len(sel)] = f.float().cpu().numpy().astype(out_dtype, copy=False)
        if bar is not None:
            bar.update(len(sel))
    if bar is not None:
        bar.close()
    grid = tuple(next(iter(outputs.values())).shape[1:3])
    meta = {
        "layers": indices,
        "num_layers": int(backbone.num_layers),
        "clip_frames": clip_frames,
        "frame_step": frame_step,
        "window_stride": window_stride if window_stride is not None else clip_frames * frame_step,
        "input_size": [clip_frames, int(frames.shape[1]), int(frames.shape[2])],
        "patch_size": [int(p) for p in backbone.patch_size],
        "feature_shape": "(num_windows, T', N, C)",
        "tokens_per_step": grid[1],
        "steps_per_window": grid[0],
    }
    return Extraction(outputs, frame_idx, frame_valid, meta)


def token_boxes(input_hw: tuple[int, int], patch_hw: tuple[int, int], video_hw: tuple[int, int]) -> np.ndarray:
    """Pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive, raster coordinates of the original video) of each
    spatial token, ``(h·w, 4)`` float32 in row-major token order; the model saw the video resized from
    ``video_hw`` to ``input_hw`` without crop."""
    (h_in, w_in), (ph, pw), (h0, w0) = input_hw, patch_hw, video_hw
    gh, gw = h_in // ph, w_in // pw
    sy, sx = h0 / h_in, w0 / w_in
    i, j = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    boxes = np.stack([j * pw * sx, i * ph * sy, (j + 1) * pw * sx, (i + 1) * ph * sy], axis=-1)
    return boxes.reshape(-1, 4).astype(np.float32)


def describe_tokens(meta: dict[str, Any]) -> str:
    """One sentence on how a token maps to frames and pixels (stored with the features)."""
    pt = meta["patch_size"][0]
    return (
        "layer_<k>[w, s, n] is the token of window w, time step s, spatial token n (row-major over the "
        f"token grid); it covers source frames frame_indices[w, s*{pt}:(s+1)*{pt}] and the pixel box "
        "token_boxes[n] = (x0, y0, x1, y1) of the original video (x1, y1 exclusive); layer index 0 is the "
        "embedding, k the output of block k"
    )


def save_extraction(result: Extraction, out: Path, fmt: str = "safetensors") -> Path:
    """Write ``out.safetensors`` (tensors + JSON metadata under the key ``fourds``) or, for ``fmt="npy"``,
    the folder ``out/`` with ``layer_<k>.npy``, ``frame_indices.npy``, ``frame_valid.npy``,
    ``token_boxes.npy`` and ``meta.json`` (layer arrays may already be there, written by ``allocate``)."""
    extras = {
        "frame_indices": result.frame_indices,
        "frame_valid": result.frame_valid,
        "token_boxes": np.asarray(result.meta["token_boxes"], np.float32),
    }
    meta = {k: v for k, v in result.meta.items() if k != "token_boxes"}
    if fmt == "safetensors":
        from fourds.models.io import save_weights_atomic

        path = out.with_suffix(".safetensors")
        tensors = {f"layer_{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in result.features.items()}
        tensors.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in extras.items()})
        save_weights_atomic(tensors, path, metadata={"fourds": json.dumps(meta)})
        return path
    if fmt != "npy":
        raise ValueError(f"unknown output format {fmt!r}: choose safetensors or npy")
    out.mkdir(parents=True, exist_ok=True)
    for k, v in result.features.items():
        if not isinstance(v, np.memmap):
            with atomic_path(out / f"layer_{k}.npy") as tmp:
                np.save(tmp, v)
        else:
            v.flush()
    for k, v in extras.items():
        with atomic_path(out / f"{k}.npy") as tmp:
            np.save(tmp, v)
    write_text_atomic(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    return out

