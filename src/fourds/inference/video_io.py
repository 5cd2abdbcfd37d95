"""Whole-video decoding and encoding for the inference commands (``fourds extract``, ``fourds depth``).

Decoding streams frames through PyAV and resizes each one as it arrives, so a long video costs only its
resized frames in memory. The resize reproduces the official 4DS demo's preprocessing
(``mediapy.resize_video`` on uint8 RGB = ``PIL.Image.resize(..., LANCZOS)``, aspect ratio not kept).

TODO: switch the decoding to ``fourds.data.video.read_clip`` once it is on main (it reads clips, not
whole videos, so this streaming reader may stay for whole-video inference).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
ARRAY_SUFFIX = ".npy"
DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class VideoInfo:
    """What the commands record about a source video: frame count, original size in pixels, fps."""

    path: str
    num_frames: int
    height: int
    width: int
    fps: float


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``(H, W, 3)`` uint8 → ``(h, w, 3)`` uint8 with PIL Lanczos (the official demo's resize); ``size`` is
    ``(h, w)``; ``None`` or the same size returns the frame untouched."""
    if size is None or tuple(frame.shape[:2]) == tuple(size):
        return frame
    image = Image.fromarray(frame).resize((int(size[1]), int(size[0])), resample=Image.Resampling.LANCZOS)
    return np.asarray(image)


def _as_uint8(video: np.ndarray, source: str) -> np.ndarray:
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"{source}: expected a video array (T, H, W, 3), got shape {video.shape}")
    if video.dtype == np.uint8:
        return video
    if np.issubdtype(video.dtype, np.floating):
        return np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"{source}: video array must be uint8 in [0, 255] or float in [0, 1], got {video.dtype}")


def iter_frames(path: str | Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Frames of a video file (PyAV) or a ``.npy`` array ``(T, H, W, 3)``, each ``(h, w, 3)`` uint8 RGB,
    resized to ``size = (h, w)`` when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    if path.suffix.lower() == ARRAY_SUFFIX:
        for frame in _as_uint8(np.load(path, mmap_mode="r", allow_pickle=False), str(path)):
            yield resize_frame(np.ascontiguousarray(frame), size)
        return
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise ValueError(f"{path} is not a readable video ({err})") from err
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield resize_frame(frame.to_ndarray(format="rgb24"), size)
        except av.error.FFmpegError as err:
            raise ValueError(f"{path}: decoding failed ({err}); the file may be corrupt") from err


def probe_video(path: str | Path) -> tuple[float, int, int]:
    """``(fps, height, width)`` of a video file without decoding it (``.npy``: the default fps)."""
    path = Path(path)
    if path.suffix.lower() == ARRAY_SUFFIX:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        return DEFAULT_FPS, int(shape[1]), int(shape[2])
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            return (float(rate) if rate else DEFAULT_FPS), int(stream.height), int(stream.width)
    except av.error.FFmpegError as err:
        raise ValueError(f"{path} is not a readable video ({err})") from err


def read_video(path: str | Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, VideoInfo]:
    """The whole video as ``(T, h, w, 3)`` uint8 (resized to ``size`` if given) and its :class:`VideoInfo`
    (original size and fps)."""
    fps, height, width = probe_video(path)
    frames = list(iter_frames(path, size))
    if not frames:
        raise ValueError(f"{path} contains no frames")
    return np.stack(frames), VideoInfo(str(path), len(frames), height, width, fps)


def find_videos(inputs: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Expand files and folders (searched recursively for video files and ``.npy`` arrays) into
    ``(path, output stem)`` pairs; stems keep the folder structure (``a/b.mp4`` → ``a__b``)."""
    found: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_file():
            found.append((item, item.stem))
        elif item.is_dir():
            for p in sorted(item.rglob("*")):
                if p.is_file() and p.suffix.lower() in (*VIDEO_SUFFIXES, ARRAY_SUFFIX):
                    found.append((p, "__".join(p.relative_to(item).with_suffix("").parts)))
        else:
            raise FileNotFoundError(f"{item} is neither a video file nor a folder")
    if not found:
        raise ValueError(f"no videos found in {[str(i) for i in inputs]} (looked for {', '.join(VIDEO_SUFFIXES)}, .npy)")
    stems = [s for _, s in found]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"several inputs would write the same output name(s) {duplicates}; pass them separately")
    return found


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Encode ``(H, W, 3)`` uint8 RGB frames as H.264 (``libx264``, else MPEG-4) into ``path``; odd sizes are
    padded by one black row/column (yuv420p needs even sizes). Returns the number of frames written."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
            if stream is None:
                from fractions import Fraction

                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": "18"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count
