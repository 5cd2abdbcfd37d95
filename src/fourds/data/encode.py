"""Encoding frames to a video file with PyAV (test fixtures, benchmarks, examples, inference outputs).

:class:`VideoWriter` takes frames one at a time (constant memory for long videos); :func:`write_video`
writes a whole ``(T, H, W, 3)`` array.
"""

from __future__ import annotations

import fractions
import os
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
from torch import Tensor


def default_codec() -> str:
    """``libx264`` (H.264) when this FFmpeg build has it, else ``mpeg4``."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class VideoWriter:
    """Encode uint8 ``(H, W, 3)`` RGB frames one at a time; the stream is created at the first frame.

    Use as a context manager (``with VideoWriter(path, fps=25) as w: w.write(frame)``), or call
    :meth:`close`. Frames must keep the first frame's size; yuv420p needs even sizes, so with
    ``pad_odd`` an odd height/width gets one black row/column (else it is an error).

    Args:
        path: output file (its extension picks the container) or a binary file object with
            ``container_format`` (e.g. ``mp4``).
        fps: frame rate (an int, or a float such as 29.97, kept as a fraction).
        codec: FFmpeg encoder name (``libx264``, ``libvpx-vp9``, ``mpeg4``, ...); ``None``:
            :func:`default_codec`.
        keyint: key-frame interval (GOP size) in frames; ``None`` = the encoder's default.
        bframes: maximum consecutive B-frames; ``None`` = the encoder's default.
        crf: constant-quality setting for x264/vpx (lower = better).
        time_base: ``(num, den)`` of explicit per-frame ``pts`` given to :meth:`write`; default ``1/fps``.
    """

    def __init__(
        self,
        path: str | os.PathLike | IO[bytes],
        fps: float = 25,
        codec: str | None = "libx264",
        keyint: int | None = None,
        bframes: int | None = None,
        crf: int | None = None,
        container_format: str | None = None,
        time_base: tuple[int, int] | None = None,
        pad_odd: bool = False,
    ) -> None:
        import av

        self.fps = fractions.Fraction(fps).limit_denominator(1001) if isinstance(fps, float) else int(fps)
        self.codec = codec or default_codec()
        self.keyint, self.bframes, self.crf, self.time_base, self.pad_odd = keyint, bframes, crf, time_base, pad_odd
        target = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
        self.container = av.open(target, mode="w", format=container_format)
        self.stream: Any = None
        self.count = 0
        self._explicit_pts = False

    def _open_stream(self, h: int, w: int, explicit_pts: bool) -> None:
        stream = self.container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        options: dict[str, str] = {}
        if self.crf is not None and self.codec in ("libx264", "libvpx-vp9", "libvpx"):
            options["crf"] = str(self.crf)
            if self.codec.startswith("libvpx"):
                options["b:v"] = "0"
        if self.codec == "libvpx-vp9":
            options.setdefault("deadline", "realtime")
            options.setdefault("cpu-used", "8")
        if self.keyint is not None:
            stream.codec_context.gop_size = self.keyint
            if self.codec == "libx264":
                options["keyint_min"] = str(self.keyint)  # fixed GOP, no scene-cut key frames
                options["sc_threshold"] = "0"
        stream.options = options
        if self.bframes is not None:
            stream.codec_context.max_b_frames = self.bframes
        if explicit_pts:
            fps = self.fps if isinstance(self.fps, int) else round(float(self.fps))
            stream.codec_context.time_base = fractions.Fraction(*(self.time_base or (1, fps)))
        self.stream, self._explicit_pts = stream, explicit_pts

    def write(self, frame: Tensor | np.ndarray, pts: int | None = None) -> None:
        """Append one uint8 ``(H, W, 3)`` RGB frame (``pts`` in ``time_base`` units for variable frame rates)."""
        import av

        image = frame.numpy() if isinstance(frame, Tensor) else np.asarray(frame)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"VideoWriter needs uint8 (H, W, 3) frames, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if (h % 2 or w % 2) and self.pad_odd:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)))
        if self.stream is None:
            self._open_stream(*image.shape[:2], explicit_pts=pts is not None)
        elif (self.stream.height, self.stream.width) != image.shape[:2]:
            raise ValueError(f"frame {self.count} is {image.shape[:2]}, the video is "
                             f"{(self.stream.height, self.stream.width)}; every frame must have the same size")
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if pts is not None:
            out.pts = int(pts)
            out.time_base = self.stream.codec_context.time_base
        for packet in self.stream.encode(out):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> int:
        """Flush the encoder and close the file; returns the number of frames written."""
        if self.container is not None:
            try:
                if self.stream is not None:
                    for packet in self.stream.encode(None):
                        self.container.mux(packet)
            finally:
                self.container.close()
                self.container = None
        return self.count

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
    frames = frames.numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video needs uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    with VideoWriter(path, fps, codec, keyint, bframes, crf, container_format, time_base) as writer:
        for t, image in enumerate(frames):
            writer.write(image, None if pts is None else int(pts[t]))
