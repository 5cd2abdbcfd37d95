"""The PyAV decoding backend of :mod:`fourds.data.video` (the default; PyAV's wheels bundle FFmpeg).

Exact presentation-order frame indices from one demux pass (packet timestamps, sorted, cached per file),
seeking to the key frame before a clip and stopping after its last frame, and a streaming reader of
whole videos (:func:`iter_frames`). See :mod:`fourds.data.video` for the index semantics.
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fourds.data.video_base import (
    VideoDecodeError,
    VideoSourceLike,
    check_range,
    count_decoded,
    open_input,
    short_side_size,
)


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

    target = open_input(src, name)
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
            count_decoded()
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
                count_decoded()
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
    return min(bisect.bisect_right(pts_of, pts), len(pts_of) - 1)


def _count_by_decoding(container, name: str) -> int:  # type: ignore[no-untyped-def]
    n = 0
    try:
        for _ in container.decode(container.streams.video[0]):
            count_decoded()
            n += 1
    except _pyav_errors() as err:
        raise VideoDecodeError(name, f"decoding failed ({type(err).__name__}: {err})", frame=n) from err
    return n


def read(src: VideoSourceLike, name: str, indices: Callable[[int], list[int]] | None, size, threads: int) -> tuple[int, dict[int, np.ndarray]]:  # type: ignore[no-untyped-def]
    """``(num_frames, {index: rgb frame})`` of the frames ``indices(num_frames)`` (``None``: only count).

    ``size`` is ``(h, w)``, a short side (int) or ``None`` (stored size); ``threads`` as
    :func:`fourds.data.video.read_frames`."""
    container, index, _ = _indexed(src, name)
    try:
        if indices is None:
            return index.count, {}
        indices = indices(index.count) if index.count else []
        check_range(name, indices, index.count)
        if index.pts is None:
            return index.count, _pyav_sequential(container, name, indices, size, threads)
        return index.count, _pyav_by_pts(container, name, index, indices, size, threads)  # seeks first
    finally:
        container.close()


def _indexed(src: VideoSourceLike, name: str):  # type: ignore[no-untyped-def]
    """``(container, index, demuxed)``: an open container, the stream's index (cached for paths) and
    whether the container was read to its end to build the index (then it must seek before decoding)."""
    key = _cache_key(src)
    container, target, start = _open_container(src, name)
    index = _INDEX_CACHE.get(key) if key is not None else None
    if index is not None:
        return container, index, False
    try:
        index = _pyav_index(container, name)
        if index.pts is None:  # no timestamps: count by decoding, from a fresh container
            container.close()
            if start is not None:
                target.seek(start)  # type: ignore[union-attr]
            container = _open_container(src if start is None else target, name)[0]
            index = _Index(None, _count_by_decoding(container, name))
    except BaseException:
        container.close()
        raise
    if key is not None:
        _INDEX_CACHE[key] = index
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    if index.pts is None:  # the counting pass consumed this container too
        container.close()
        if start is not None:
            target.seek(start)  # type: ignore[union-attr]
        container = _open_container(src if start is None else target, name)[0]
        return container, index, False
    return container, index, True


def iter_frames(src: VideoSourceLike, name: str, size, threads: int) -> Iterator[np.ndarray]:  # type: ignore[no-untyped-def]
    """Every frame in presentation order, one at a time, as ``(H, W, 3)`` uint8 RGB: frame ``k`` is
    exactly what :func:`read` returns for index ``k``. Only the current frame is held in memory.

    Raises:
        VideoDecodeError: the source cannot be opened, or a frame fails or is missing (raised where it
            happens: the frames yielded before it are correct).
    """
    container, index, demuxed = _indexed(src, name)
    try:
        check_range(name, [], index.count)
        stream = container.streams.video[0]
        _set_threads(stream, threads)
        k = 0
        try:
            if index.pts is not None and demuxed:
                container.seek(index.pts[0], stream=stream, backward=True, any_frame=False)
            shown = None if index.pts is None else set(index.pts)
            for frame in container.decode(stream):
                count_decoded()
                if shown is not None and frame.pts not in shown:
                    continue  # decoded but never shown (before an edit list's start)
                yield _to_rgb(frame, size)
                k += 1
                if k == index.count:
                    break
        except VideoDecodeError:
            raise
        except _pyav_errors() as err:
            raise VideoDecodeError(name, f"decoding failed ({type(err).__name__}: {err})", frame=k) from err
        if k < index.count:
            raise VideoDecodeError(name, f"only {k} of its {index.count} frames decode", frame=k)
    finally:
        container.close()


@dataclass(frozen=True)
class VideoMeta:
    """What a file says about its first video stream, read without decoding.

    Attributes:
        num_frames: exact frame count (presentation-order index, as :func:`fourds.data.video.num_frames`).
        height: stored frame height in pixels.
        width: stored frame width in pixels.
        fps: average frame rate (frames per second); ``None`` when the file does not say.
    """

    num_frames: int
    height: int
    width: int
    fps: float | None


def probe(src: VideoSourceLike, name: str) -> VideoMeta:
    """:class:`VideoMeta` of ``src`` (one demux pass, or the cached index)."""
    container, index, _ = _indexed(src, name)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return VideoMeta(index.count, int(stream.height), int(stream.width), float(rate) if rate else None)
    finally:
        container.close()


def verify(src: VideoSourceLike, name: str) -> int:
    """Decode every frame once (no RGB conversion) and return the frame count."""
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
