"""Pieces shared by the video decoding backends (:mod:`fourds.data.video_pyav`,
:mod:`fourds.data.video_torchcodec`): the error type, source handling, the decode counter and size
helpers. The public API is :mod:`fourds.data.video`, which re-exports what users need from here.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import IO, Union

VideoSourceLike = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

_counter_lock = threading.Lock()
_decoded_frames = 0


class VideoDecodeError(RuntimeError):
    """A video (or one of its frames) could not be decoded.

    Attributes:
        source: a printable name of the file (its path, or ``<bytes>`` / the file object's name).
        frame: the presentation-order frame index that failed, or ``None`` when the file as a whole did.
    """

    def __init__(self, source: str, message: str, frame: int | None = None) -> None:
        where = f"{source}" if frame is None else f"{source}, frame {frame}"
        super().__init__(f"cannot decode video {where}: {message}")
        self.source = source
        self.frame = frame


def decoded_frame_count() -> int:
    """Frames decoded by this process since start-up (or the last :func:`reset_decoded_frame_count`)."""
    return _decoded_frames


def reset_decoded_frame_count() -> None:
    global _decoded_frames
    with _counter_lock:
        _decoded_frames = 0


def count_decoded(n: int = 1) -> None:
    """Add ``n`` decoded frames to the process counter (backends call it per frame)."""
    global _decoded_frames
    with _counter_lock:
        _decoded_frames += n


def source_name(src: VideoSourceLike) -> str:
    """A printable name for error messages."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)  # type: ignore[return-value]
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return str(getattr(src, "name", "<file object>"))


def open_input(src: VideoSourceLike, name: str) -> IO[bytes] | str:
    """What ``av.open`` takes; checks the cheap failures (missing, empty) with a clear message."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise VideoDecodeError(name, "no such file")
        if path.stat().st_size == 0:
            raise VideoDecodeError(name, "the file is empty (0 bytes)")
        return os.fspath(path)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise VideoDecodeError(name, "no data (0 bytes)")
        return io.BytesIO(bytes(src))
    if not hasattr(src, "read"):
        raise TypeError(f"video source must be a path, bytes or a binary file object, got {type(src).__name__}")
    return src



def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` with the short side ``short_side`` and the aspect ratio kept (rounded)."""
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_range(name: str, indices: list[int], count: int) -> None:
    """Raise :class:`VideoDecodeError` for an empty stream or an index outside ``[0, count)``."""
    if count == 0:
        raise VideoDecodeError(name, "the video stream has no frames")
    bad = [k for k in indices if k < 0 or k >= count]
    if bad:
        raise VideoDecodeError(name, f"the clip needs frame {bad[0]} but the video has {count} frames (0..{count - 1})", frame=bad[0])
