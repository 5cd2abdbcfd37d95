"""Video decoding: exact frames by presentation-order index, decoding only what a clip needs.

**Frame indices.** Frame ``k`` of a file is the ``k``-th frame of its (first) video stream in
*presentation order*: the order of presentation timestamps (pts), whatever the decode order (B-frames)
and however irregular the timestamps (variable frame rate: "frame" means this index, never a time).
The index is exact: the demuxer lists every packet's pts (cheap: no decoding), frame ``k`` is the
``k``-th smallest, and decoding matches frames to it by pts. Streams without timestamps (raw
elementary streams) fall back to counting decoded frames from the start.

**Decoding only what a clip needs.** :func:`read_clip` seeks to the last key frame at or before the
clip's first frame and stops right after its last frame, so a clip near the end of a long file decodes
at most about (key-frame interval + clip span) frames; :func:`decoded_frame_count` counts decoded frames
in this process (tests use it to check that bound).

**Sources.** A path (``str`` / ``os.PathLike``), the bytes of a file (``bytes``, ``bytearray``,
``memoryview``: a shard member) or a binary file object (read from its current position, which must
be seekable). Every failure (missing, zero-byte, truncated, corrupt, non-video, unsupported codec, a
frame past the end) raises :class:`VideoDecodeError` naming the source and the frame; no function here
ever returns wrong or partial frames.

**Whole videos.** :func:`iter_frames` streams every frame in presentation order (one frame in memory at a
time, the same frames :func:`read_frames` gives by index); :func:`video_info` reads the frame count, size
and frame rate without decoding.

**Backends.** ``pyav`` (default; PyAV's wheels bundle FFmpeg; :mod:`fourds.data.video_pyav`) or
``torchcodec`` (when installed; :mod:`fourds.data.video_torchcodec`), chosen per call (``backend=``), per
process (:func:`set_backend`) or by the environment variable ``FOURDS_VIDEO_BACKEND``; :func:`iter_frames`,
:func:`video_info` and :func:`verify` always use PyAV. Decoder threads: ``threads=`` or
``FOURDS_DECODE_THREADS`` (default 1: DataLoader workers give the parallelism). Display rotation metadata
is not applied (frames come out as stored).
"""


from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from fourds.data import video_pyav, video_torchcodec
from fourds.data.encode import write_video  # re-exported: fixtures and benchmarks use it
from fourds.data.video_base import (
    VideoDecodeError,
    VideoSourceLike,
    decoded_frame_count,
    reset_decoded_frame_count,
    short_side_size,
    source_name,
)
from fourds.data.video_pyav import VideoMeta

BACKENDS = ("pyav", "torchcodec")
BACKEND_ENV = "FOURDS_VIDEO_BACKEND"
THREADS_ENV = "FOURDS_DECODE_THREADS"

__all__ = [
    "VideoDecodeError", "VideoMeta", "VideoSourceLike", "read_clip", "read_frames", "iter_frames", "num_frames",
    "video_info", "verify", "write_video", "set_backend", "get_backend", "decoded_frame_count",
    "reset_decoded_frame_count", "short_side_size", "source_name",
]

_backend: str | None = None


# --------------------------------------------------------------------------------------- settings
def set_backend(name: str | None) -> None:
    """Choose the process-wide decoder (``pyav`` or ``torchcodec``); ``None`` = environment / default."""
    global _backend
    if name is not None and name not in BACKENDS:
        raise ValueError(f"video backend {name!r} is not known; choose one of {BACKENDS}")
    _backend = name


def get_backend() -> str:
    """The decoder in use: :func:`set_backend`, else ``$FOURDS_VIDEO_BACKEND``, else ``pyav``."""
    name = _backend or os.environ.get(BACKEND_ENV) or "pyav"
    if name not in BACKENDS:
        raise ValueError(f"${BACKEND_ENV}={name!r} is not a known video backend; choose one of {BACKENDS}")
    return name


def _threads(threads: int | None) -> int:
    """Decoder threads: 1 by default (DataLoader workers give the parallelism), 0 = FFmpeg's choice."""
    if threads is not None:
        return threads
    return int(os.environ.get(THREADS_ENV, "1"))


_READERS = {"pyav": video_pyav.read, "torchcodec": video_torchcodec.read}


# -------------------------------------------------------------------------------------- public API
def num_frames(src: VideoSourceLike, backend: str | None = None) -> int:
    """Number of frames of the first video stream (exact, by demuxing; see the module docstring).

    Raises:
        VideoDecodeError: unreadable, empty or damaged source, or no video stream.
    """
    name = source_name(src)
    return _READERS[backend or get_backend()](src, name, None, None, _threads(None))[0]


def read_frames(
    src: VideoSourceLike,
    indices: Sequence[int] | Callable[[int], Sequence[int]],
    size: tuple[int, int] | None = None,
    backend: str | None = None,
    threads: int | None = None,
    short_side: int | None = None,
) -> Tensor:
    """Frames ``indices`` (presentation order, any order and repeats allowed) as uint8 ``(N, H, W, 3)``.

    Args:
        src: path, bytes or binary file object.
        indices: frame indices in ``[0, num_frames)``, or a function ``num_frames -> indices`` (clip
            sampling that depends on the length, decided after one demux of the file).
        size: optional ``(h, w)``: resize while converting to RGB (FFmpeg area filter, antialiased);
            much cheaper than decoding full size and resizing after. ``None`` keeps the stored size.
        backend: ``pyav`` / ``torchcodec``; default :func:`get_backend`.
        threads: decoder threads (default ``$FOURDS_DECODE_THREADS`` or 1; 0 = FFmpeg's choice).
        short_side: alternative to ``size``: resize (same filter) so that the short side has this many
            pixels, keeping the aspect ratio (:func:`short_side_size`).

    Raises:
        VideoDecodeError: the source cannot be decoded or an index is out of range.
    """
    if size is not None and short_side is not None:
        raise ValueError("read_frames takes size or short_side, not both")
    name = source_name(src)
    reader = _READERS[backend or get_backend()]
    if not callable(indices):
        fixed = [int(k) for k in indices]
        if not fixed:
            raise ValueError("read_frames needs at least one frame index")
        indices = lambda count: fixed  # noqa: E731
    chosen: list[int] = []

    def choose(count: int) -> list[int]:
        chosen.extend(int(k) for k in indices(count))  # type: ignore[operator]
        return sorted(set(chosen))

    _, got = reader(src, name, choose, size if short_side is None else int(short_side), _threads(threads))
    idx = chosen
    missing = [k for k in idx if k not in got]
    if missing:
        raise VideoDecodeError(name, "the decoder produced no frame for this index (damaged stream?)", frame=missing[0])
    return torch.from_numpy(np.stack([got[k] for k in idx]))


def read_clip(
    src: VideoSourceLike,
    start: int = 0,
    num_frames: int = 16,
    stride: int = 2,
    size: tuple[int, int] | None = None,
    backend: str | None = None,
    threads: int | None = None,
    short_side: int | None = None,
) -> Tensor:
    """Frames ``start, start + stride, ..., start + (num_frames - 1) * stride`` as uint8 ``(num_frames, H, W, 3)``.

    Values in [0, 255], RGB, channels last; ``H, W`` the stored size, or ``size`` / ``short_side`` (see
    :func:`read_frames`).
    A clip that runs past the end raises (it never comes back short); sampling policies for short videos
    live in :mod:`fourds.data.clips`.

    Raises:
        VideoDecodeError: unreadable source, damaged frame, or a clip past the end (names file and frame).
    """
    if num_frames < 1 or stride < 1 or start < 0:
        raise ValueError(f"read_clip needs start >= 0, num_frames >= 1, stride >= 1; got {start}, {num_frames}, {stride}")
    return read_frames(src, range(start, start + num_frames * stride, stride), size=size, backend=backend, threads=threads, short_side=short_side)


def verify(src: VideoSourceLike) -> int:
    """Decode every frame once (PyAV, no RGB conversion) and return the frame count.

    Raises:
        VideoDecodeError: the file cannot be opened or decoded, or fewer frames decode than it lists.
    """
    return video_pyav.verify(src, source_name(src))


def iter_frames(
    src: VideoSourceLike,
    size: tuple[int, int] | None = None,
    threads: int | None = None,
    short_side: int | None = None,
) -> Iterator[Tensor]:
    """Stream every frame of a video in presentation order as uint8 ``(H, W, 3)`` (PyAV).

    Frame ``k`` is the frame :func:`read_frames` returns for index ``k``; only the current frame is held,
    so whole long videos stream in constant memory. ``size`` / ``short_side`` resize while converting
    (see :func:`read_frames`); ``threads`` as there (``0``: FFmpeg's choice, fastest for one video).

    Raises:
        VideoDecodeError: the source cannot be opened, or a frame fails to decode or is missing; raised
            when decoding reaches it (the frames yielded before it are correct).
    """
    if size is not None and short_side is not None:
        raise ValueError("iter_frames takes size or short_side, not both")
    target = size if short_side is None else int(short_side)
    for frame in video_pyav.iter_frames(src, source_name(src), target, _threads(threads)):
        yield torch.from_numpy(frame)


def video_info(src: VideoSourceLike) -> VideoMeta:
    """Frame count, stored size and frame rate of the first video stream, without decoding (PyAV).

    Raises:
        VideoDecodeError: unreadable, empty or damaged source, or no video stream.
    """
    return video_pyav.probe(src, source_name(src))
