"""Test fixtures for video decoding: frames that carry their own index in a pattern that survives
lossy compression (16 bits as a 4x4 grid of 16x16-pixel black/white blocks, gray-coded so that neighbouring
indices differ by one block), written with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

BLOCK = 16
GRID = 4


def index_frames(n: int, height: int = 64, width: int = 64, offset: int = 0) -> np.ndarray:
    """uint8 ``(n, H, W, 3)``: frame k encodes ``k + offset`` (H, W >= 64)."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    # A soft gradient elsewhere so encoders see ordinary content.
    frames[...] = (np.arange(width, dtype=np.uint8) * (100 // max(1, width // 64)) // 2)[None, None, :, None] // 2
    for k in range(n):
        code = (k + offset) ^ ((k + offset) >> 1)
        for bit in range(GRID * GRID):
            r, c = divmod(bit, GRID)
            value = 255 if (code >> bit) & 1 else 0
            frames[k, r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = value
    return frames


def decode_index(frames: torch.Tensor | np.ndarray) -> list[int]:
    """Read the index pattern back from uint8 ``(n, H, W, 3)`` frames at their stored size."""
    frames = np.asarray(frames)
    out = []
    for f in frames:
        code = 0
        for bit in range(GRID * GRID):
            r, c = divmod(bit, GRID)
            patch = f[r * BLOCK + 4:(r + 1) * BLOCK - 4, c * BLOCK + 4:(c + 1) * BLOCK - 4]
            if patch.mean() > 127:
                code |= 1 << bit
        k = 0
        while code:  # gray → binary
            k ^= code
            code >>= 1
        out.append(k)
    return out


def write_index_video(path: Path, n: int, codec: str = "libx264", **kwargs) -> Path:
    from fourds.data.video import write_video

    size = kwargs.pop("size", (64, 64))
    write_video(path, index_frames(n, *size), codec=codec, **kwargs)
    return path
