"""Encoding frames to a video file with PyAV (test fixtures, benchmarks, examples)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO

import numpy as np
from torch import Tensor


def write_video(
    path: str | os.PathLike | IO[bytes],
    frames: Tensor | np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    keyint: int | None = None,
    bframes: int | None = None,
    crf: int | None = None,
    container_format: str | None = None,
    pts: Sequence[int] | None = None,
    time_base: tuple[int, int] | None = None,
) -> None:
    """Encode uint8 ``(T, H, W, 3)`` RGB frames (fixtures, benchmarks, examples).

    Args:
        path: output file (its extension picks the container) or a binary file object with
            ``container_format`` (e.g. ``mp4``).
        codec: FFmpeg encoder name (``libx264``, ``libvpx-vp9``, ``mpeg4``, ...).
        keyint: key-frame interval (GOP size) in frames; ``None`` = the encoder's default.
        bframes: maximum consecutive B-frames; ``None`` = the encoder's default.
        crf: constant-quality setting for x264/vpx (lower = better).
        pts: optional per-frame timestamps (in ``time_base``) for variable-frame-rate files.
        time_base: ``(num, den)`` of ``pts``; default ``1/fps``.
    """
    import fractions

    import av

    frames = frames.numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video needs uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    target = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    with av.open(target, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        options: dict[str, str] = {}
        if crf is not None and codec in ("libx264", "libvpx-vp9", "libvpx"):
            options["crf"] = str(crf)
            if codec.startswith("libvpx"):
                options["b:v"] = "0"
        if codec == "libvpx-vp9":
            options.setdefault("deadline", "realtime")
            options.setdefault("cpu-used", "8")
        stream.options = options
        if keyint is not None:
            stream.codec_context.gop_size = keyint
            if codec == "libx264":
                options["keyint_min"] = str(keyint)  # fixed GOP, no scene-cut key frames
                options["sc_threshold"] = "0"
                stream.options = options
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if pts is not None:
            stream.codec_context.time_base = fractions.Fraction(*(time_base or (1, fps)))
        for t, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = int(pts[t])
                frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
