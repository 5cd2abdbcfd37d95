"""Whole videos for the inference commands (``fourds extract``, ``fourds depth``), on top of the data
pipeline: decoding is :func:`fourds.data.video.iter_frames` (streaming, presentation order, exact
frames), encoding :class:`fourds.data.encode.VideoWriter`, folder listing
:meth:`fourds.data.sources.FileList.from_folder`.

Frames are resized one at a time as they arrive, so a long video costs only its resized frames in
memory. The resize reproduces the official 4DS demo's preprocessing (``mediapy.resize_video`` on uint8
RGB = ``PIL.Image.resize(..., LANCZOS)``, aspect ratio not kept). Besides video files, ``.npy`` arrays
``(T, H, W, 3)`` (uint8, or float in [0, 1]) are accepted everywhere a video is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fourds.data.sources import VIDEO_EXTENSIONS, FileList
from fourds.data.video import VideoDecodeError, video_info
from fourds.data.video import iter_frames as decode_frames

ARRAY_SUFFIX = ".npy"
#: What a folder given to ``fourds extract`` is searched for: the data pipeline's video extensions,
#: animated GIFs and ``.npy`` arrays.
INPUT_EXTENSIONS = (*VIDEO_EXTENSIONS, ".gif", ARRAY_SUFFIX)
DEFAULT_FPS = 25.0
#: Errors of a video that cannot be read (decoding, or a malformed ``.npy``): skipped by ``fourds extract``.
UNREADABLE = (VideoDecodeError, ValueError, OSError)


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


def _load_array(path: Path) -> np.ndarray:
    try:
        video = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        # numpy calls any file without the .npy magic "pickled (object) data": say what it looks like instead
        from fourds.textfiles import looks_like

        raise ValueError(f"{path} is not a readable .npy video array ({str(err)[:80]}); it looks like "
                         f"{looks_like(path)}. Save the video with numpy.save as uint8 (T, H, W, 3)") from None
    if not isinstance(video, np.ndarray):  # an .npz archive under an .npy name
        raise ValueError(f"{path} is an .npz archive, not a .npy video array (T, H, W, 3)")
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"{path}: expected a video array (T, H, W, 3), got shape {video.shape}")
    return video


def iter_frames(path: str | Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Frames of a video file or a ``.npy`` array ``(T, H, W, 3)``, each ``(h, w, 3)`` uint8 RGB, resized
    to ``size = (h, w)`` when given; streamed (one decoded frame in memory at a time).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoDecodeError: the video cannot be decoded (raised where decoding fails).
        ValueError: a ``.npy`` file that is not a video array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    if path.suffix.lower() == ARRAY_SUFFIX:
        for frame in _as_uint8(_load_array(path), str(path)):
            yield resize_frame(np.ascontiguousarray(frame), size)
        return
    for frame in decode_frames(path, threads=0):  # threads=0: FFmpeg's choice, one video at a time
        yield resize_frame(frame.numpy(), size)


def probe_video(path: str | Path) -> tuple[float, int, int]:
    """``(fps, height, width)`` of a video without decoding it (``.npy``: the default fps)."""
    path = Path(path)
    if path.suffix.lower() == ARRAY_SUFFIX:
        shape = _load_array(path).shape
        return DEFAULT_FPS, int(shape[1]), int(shape[2])
    meta = video_info(path)
    return (meta.fps or DEFAULT_FPS), meta.height, meta.width


def read_video(path: str | Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, VideoInfo]:
    """The whole video as ``(T, h, w, 3)`` uint8 (resized to ``size`` if given) and its :class:`VideoInfo`
    (original size and fps)."""
    fps, height, width = probe_video(path)
    frames = list(iter_frames(path, size))
    if not frames:
        raise ValueError(f"{path} contains no frames")
    return np.stack(frames), VideoInfo(str(path), len(frames), height, width, fps)


def find_videos(inputs: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Expand files and folders (searched recursively for :data:`INPUT_EXTENSIONS`) into ``(path, output
    stem)`` pairs; stems keep the folder structure (``a/b.mp4`` → ``a__b``).

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: nothing to read, or two inputs would write the same output name.
    """
    inputs = list(inputs)
    found: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_file():
            found.append((item, item.stem))
        elif item.is_dir():
            try:
                listing = FileList.from_folder(item, INPUT_EXTENSIONS)
            except ValueError:  # an empty folder; reported below if every input is empty
                continue
            for i, path in enumerate(listing.paths):
                found.append((path, "__".join(Path(listing.entry(i).key).with_suffix("").parts)))
        else:
            raise FileNotFoundError(f"{item} is neither a video file nor a folder")
    if not found:
        raise ValueError(f"no videos found in {[str(i) for i in inputs]} (looked for {', '.join(INPUT_EXTENSIONS)})")
    stems = [s for _, s in found]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"several inputs would write the same output name(s) {duplicates}; pass them separately")
    return found


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Encode ``(H, W, 3)`` uint8 RGB frames, streamed, as H.264 (``libx264``, else MPEG-4, crf 18) into
    ``path``; odd sizes are padded by one black row/column (yuv420p needs even sizes). Returns the number
    of frames written."""
    from fourds.data.encode import VideoWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps=float(fps), codec=None, crf=18, pad_odd=True) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.count
