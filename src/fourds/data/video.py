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

**Backends.** ``pyav`` (default; PyAV's wheels bundle FFmpeg) or ``torchcodec`` (when installed),
chosen per call (``backend=``), per process (:func:`set_backend`) or by the environment variable
``FOURDS_VIDEO_BACKEND``. Display rotation metadata is not applied (frames come out as stored).
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

import numpy as np
import torch
from torch import Tensor

from fourds.data.encode import write_video  # re-exported: fixtures and benchmarks use it

VideoSourceLike = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

BACKENDS = ("pyav", "torchcodec")
BACKEND_ENV = "FOURDS_VIDEO_BACKEND"
THREADS_ENV = "FOURDS_DECODE_THREADS"

__all__ = [
    "VideoDecodeError", "read_clip", "read_frames", "num_frames", "verify", "write_video", "set_backend",
    "get_backend", "decoded_frame_count", "reset_decoded_frame_count", "short_side_size",
]

_backend: str | None = None
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


def decoded_frame_count() -> int:
    """Frames decoded by this process since start-up (or the last :func:`reset_decoded_frame_count`)."""
    return _decoded_frames


def reset_decoded_frame_count() -> None:
    global _decoded_frames
    with _counter_lock:
        _decoded_frames = 0


def _count(n: int = 1) -> None:
    global _decoded_frames
    with _counter_lock:
        _decoded_frames += n


# ---------------------------------------------------------------------------------------- sources
def source_name(src: VideoSourceLike) -> str:
    """A printable name for error messages."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)  # type: ignore[return-value]
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return str(getattr(src, "name", "<file object>"))


def _open_input(src: VideoSourceLike, name: str) -> IO[bytes] | str:
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


@dataclass(frozen=True)
class _Index:
    """Presentation timestamps of every frame, sorted (``None``: the stream has no timestamps)."""

    pts: tuple[int, ...] | None
    count: int


_INDEX_CACHE: OrderedDict[tuple, _Index] = OrderedDict()
_INDEX_CACHE_SIZE = 256


def _cache_key(src: VideoSourceLike) -> tuple | None:
    if isinstance(src, (str, os.PathLike)):
        try:
            st = os.stat(src)
        except OSError:
            return None  # reported by _open_input
        return (os.path.realpath(src), st.st_size, st.st_mtime_ns)
    return None


# ------------------------------------------------------------------------------------------ PyAV
def _pyav_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError, EOFError, UnicodeDecodeError, IndexError)


def _open_container(src: VideoSourceLike, name: str):  # type: ignore[no-untyped-def]
    import av

    target = _open_input(src, name)
    start = target.tell() if hasattr(target, "tell") else None
    try:
        container = av.open(target, mode="r")
    except _pyav_errors() as err:
        raise VideoDecodeError(name, f"not a readable video ({type(err).__name__}: {err})") from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(name, "the file has no video stream")
    return container, target, start


def _pyav_index(container, name: str) -> _Index:  # type: ignore[no-untyped-def]
    """Demux (no decoding) the first video stream and sort its packet timestamps."""
    stream = container.streams.video[0]
    pts: list[int] = []
    missing = discarded = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's final flush packet
                continue
            if packet.is_discard:  # before an edit list's start: decoded but never shown
                discarded += 1
                continue
            if packet.pts is None:
                missing += 1
            else:
                pts.append(packet.pts)
    except _pyav_errors() as err:
        raise VideoDecodeError(name, f"the container is damaged ({type(err).__name__}: {err})") from err
    if missing or not pts:
        return _Index(None, 0)
    pts.sort()
    _check_complete(container, stream, pts, discarded, name)
    return _Index(tuple(pts), len(pts))


def _check_complete(container, stream, pts: list[int], discarded: int, name: str) -> None:  # type: ignore[no-untyped-def]
    """Refuse truncated files whose header promises more than the data holds.

    With B-frames, a cut can drop a frame from the middle of the presentation order, which would shift
    every later index by one; so a file that ends early is an error, not a shorter video. Uses the
    frame count of the header (MP4) or, failing that, its duration (Matroska/WebM), with a tolerance of
    max(5 frame intervals, 2 % of the duration) for rounding and a long last frame.
    """
    declared = int(stream.frames or 0)
    if declared > 0:
        if len(pts) + discarded < declared:
            raise VideoDecodeError(name, f"the file is truncated: {len(pts)} of the {declared} frames its header lists")
        return
    if container.duration is None or stream.time_base is None or len(pts) < 2:
        return
    tb = float(stream.time_base)
    step = float(np.median(np.diff(np.asarray(pts, dtype=np.float64)))) * tb
    start = (stream.start_time if stream.start_time is not None else pts[0]) * tb
    covered = (pts[-1] * tb - start) + step
    duration = container.duration / 1e6
    if duration - covered > max(5 * step, 0.02 * duration):
        raise VideoDecodeError(name, f"the file is truncated: its frames cover {covered:.2f} s of the {duration:.2f} s its header declares")


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` with the short side ``short_side`` and the aspect ratio kept (rounded)."""
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _to_rgb(frame, size: tuple[int, int] | int | None) -> np.ndarray:  # type: ignore[no-untyped-def]
    if size is None:
        return frame.to_ndarray(format="rgb24")
    h, w = short_side_size(frame.height, frame.width, size) if isinstance(size, int) else size
    if (h, w) == (frame.height, frame.width):
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()


def _set_threads(stream, threads: int) -> None:  # type: ignore[no-untyped-def]
    """Before the first decode: 1 = single-threaded; else frame+slice threading (0 = FFmpeg's count)."""
    stream.codec_context.thread_count = threads
    if threads != 1:
        stream.thread_type = "AUTO"


def _pyav_sequential(container, name: str, wanted: list[int], size, threads: int) -> dict[int, np.ndarray]:  # type: ignore[no-untyped-def]
    """Decode from the start counting frames (streams without timestamps)."""
    stream = container.streams.video[0]
    _set_threads(stream, threads)
    want, last = set(wanted), max(wanted)
    got: dict[int, np.ndarray] = {}
    k = 0
    try:
        for frame in container.decode(stream):
            _count()
            if k in want:
                got[k] = _to_rgb(frame, size)
            if k >= last:
                break
            k += 1
    except _pyav_errors() as err:
        raise VideoDecodeError(name, f"decoding failed ({type(err).__name__}: {err})", frame=k) from err
    return got


def _pyav_by_pts(container, name: str, index: _Index, wanted: list[int], size, threads: int) -> dict[int, np.ndarray]:  # type: ignore[no-untyped-def]
    """Seek to the key frame before the first wanted frame, decode until the last one, match by pts."""
    import av

    stream = container.streams.video[0]
    assert index.pts is not None
    pts_of = index.pts
    want = {pts_of[k]: k for k in wanted}
    first_k, last_pts = min(wanted), pts_of[max(wanted)]
    # A seek lands on a key frame whose *decode* timestamp precedes the target; with reordering its
    # presentation time can still be after it. Then we seek again further back (finally: the start).
    _set_threads(stream, threads)
    for back in (0, 4, 32, 256, None):
        seek_k = 0 if back is None else max(0, first_k - back)
        got: dict[int, np.ndarray] = {}
        current: int | None = None
        restart = False
        try:
            # A seek also flushes the decoder: every attempt starts from a clean state.
            container.seek(pts_of[seek_k], stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                _count()
                pts = frame.pts
                if pts is None:
                    raise VideoDecodeError(name, "a decoded frame has no timestamp although its packet had one")
                if current is None and pts > pts_of[first_k] and seek_k > 0:
                    restart = True
                    break
                current = pts
                k = want.get(pts)
                if k is not None:
                    got[k] = _to_rgb(frame, size)
                if pts >= last_pts:
                    break
        except av.error.EOFError:
            pass
        except VideoDecodeError:
            raise
        except _pyav_errors() as err:
            at = _frame_at(pts_of, current)
            raise VideoDecodeError(name, f"decoding failed ({type(err).__name__}: {err})", frame=at) from err
        if not restart:
            return got
    raise AssertionError("unreachable: the last attempt decodes from the start")


def _frame_at(pts_of: Sequence[int], pts: int | None) -> int | None:
    if pts is None:
        return None
    import bisect

    return min(bisect.bisect_right(pts_of, pts), len(pts_of) - 1)


def _pyav_read(src: VideoSourceLike, name: str, indices: Callable[[int], list[int]] | None, size, threads: int) -> tuple[int, dict[int, np.ndarray]]:  # type: ignore[no-untyped-def]
    """``(num_frames, {index: rgb frame})``; ``indices=None`` only counts."""
    key = _cache_key(src)
    container, target, start = _open_container(src, name)

    def reopen():  # type: ignore[no-untyped-def]
        container.close()
        if start is not None:
            target.seek(start)  # type: ignore[union-attr]
        return _open_container(src if start is None else target, name)[0]

    try:
        index = _INDEX_CACHE.get(key) if key is not None else None
        if index is None:
            index = _pyav_index(container, name)
            if index.pts is None:  # no timestamps (raw elementary streams): count by decoding
                container = reopen()
                index = _Index(None, _count_by_decoding(container, name))
                container = reopen()
            if key is not None:
                _INDEX_CACHE[key] = index
                while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
                    _INDEX_CACHE.popitem(last=False)
        if indices is None:
            return index.count, {}
        indices = indices(index.count) if index.count else []
        _check_range(name, indices, index.count)
        if index.pts is None:
            return index.count, _pyav_sequential(container, name, indices, size, threads)
        return index.count, _pyav_by_pts(container, name, index, indices, size, threads)
    finally:
        container.close()


def _count_by_decoding(container, name: str) -> int:  # type: ignore[no-untyped-def]
    n = 0
    try:
        for _ in container.decode(container.streams.video[0]):
            _count()
            n += 1
    except _pyav_errors() as err:
        raise VideoDecodeError(name, f"decoding failed ({type(err).__name__}: {err})", frame=n) from err
    return n


def _check_range(name: str, indices: list[int], count: int) -> None:
    if count == 0:
        raise VideoDecodeError(name, "the video stream has no frames")
    bad = [k for k in indices if k < 0 or k >= count]
    if bad:
        raise VideoDecodeError(name, f"the clip needs frame {bad[0]} but the video has {count} frames (0..{count - 1})", frame=bad[0])


# ----------------------------------------------------------------------------------- torchcodec
def _torchcodec_read(src: VideoSourceLike, name: str, indices: Callable[[int], list[int]] | None, size, threads: int) -> tuple[int, dict[int, np.ndarray]]:  # type: ignore[no-untyped-def]
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as err:
        raise RuntimeError(
            "video backend 'torchcodec' is selected but torchcodec is not installed; `pip install torchcodec` "
            f"or select the default with set_backend('pyav') / {BACKEND_ENV}=pyav"
        ) from err
    target = _open_input(src, name)
    if isinstance(target, io.BytesIO):
        target = target.getvalue()  # type: ignore[assignment]
    try:
        decoder = VideoDecoder(target, seek_mode="exact", num_ffmpeg_threads=threads)
        count = int(decoder.metadata.num_frames or 0)
        if indices is None:
            return count, {}
        indices = indices(count) if count else []
        _check_range(name, indices, count)
        data = decoder.get_frames_at(indices=list(indices)).data  # (N, 3, H, W) uint8
    except (RuntimeError, ValueError, OSError) as err:
        if isinstance(err, VideoDecodeError):
            raise
        raise VideoDecodeError(name, f"torchcodec failed ({type(err).__name__}: {err})") from err
    _count(len(indices))  # torchcodec does not expose its decode count; this is a lower bound
    frames = data.permute(0, 2, 3, 1)
    if size is not None:
        from fourds.data.geometry import resize_video

        if isinstance(size, int):
            size = short_side_size(frames.shape[1], frames.shape[2], size)
        frames = resize_video(frames, size)
    return count, {k: frames[i].numpy() for i, k in enumerate(indices)}


_READERS = {"pyav": _pyav_read, "torchcodec": _torchcodec_read}


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
    name = source_name(src)
    container, _, _ = _open_container(src, name)
    try:
        index = _pyav_index(container, name)
        container.seek(0) if index.pts is None else container.seek(index.pts[0], stream=container.streams.video[0])
        decoded = _count_by_decoding(container, name)
    finally:
        container.close()
    expected = index.count if index.pts is not None else decoded
    if decoded < expected:
        raise VideoDecodeError(name, f"only {decoded} of its {expected} frames decode", frame=decoded)
    if decoded == 0:
        raise VideoDecodeError(name, "the video stream has no frames")
    return expected
