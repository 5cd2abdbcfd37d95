"""The shared base of the dataset readers: "videos of frames; clip ``i`` of video ``v`` at start ``s``".

A reader lists *items* (videos, sequences, segments, scans) and knows how to read any set of frame
indices of an item with its targets. :class:`ClipDataset` turns that into a map-style dataset:

- **Index space.** ``clips=1`` (default): sample ``i`` is the clip of item ``i`` starting at frame
  ``start`` (an int, or ``"center"`` for the centred clip). ``clips=K``: ``K`` evenly spaced clips per
  item (:func:`fourds.data.clips.eval_clip_starts`). ``clips="all"``: every non-overlapping full clip of
  every item (starts ``start, start + span, ...``). ``num_samples=N``: ``N`` seeded random windows,
  sample ``i`` from item ``i mod len(items)`` at a start drawn from a generator seeded by
  ``(seed, name, i)`` (the Waymo evaluation protocol).
- **Clips.** ``num_frames`` frames ``stride`` apart (the dataset's protocol stride when ``None``);
  ``num_frames=None`` reads the whole item. A clip never starts past the last full window (the start
  is clamped to ``max(0, total - span)``); an item shorter than a clip follows the short-video policy
  of :mod:`fourds.data.clips` (``repeat_last`` by default: the tail repeats the last frame).
- **Training windows.** :meth:`ClipDataset.sample` ``(index, generator)`` reads a uniformly random
  window of the item of ``index``, decoding only that window (the probe's ``TrainDraws`` calls it).
  The window is ``window=(frames, stride)`` when given (e.g. K700: whole videos as samples for the
  evaluation protocol, 16 x 2 random windows for training), else ``(num_frames, stride)``.
- **Size.** ``size=None`` keeps the stored resolution; an int resizes the short side to it (aspect
  kept, rounded as :func:`fourds.data.video.short_side_size`); ``(h, w)`` resizes to exactly that. Every
  target moves with the frames (:mod:`fourds.data.geometry` conventions): points and boxes scale, depth
  is resized nearest-neighbour, intrinsics scale.

Every sample holds ``video`` uint8 ``(T, H, W, 3)`` (convert with :func:`fourds.data.to_float` on the
accelerator), ``id`` (str, the dataset's own id of the item), ``frame_indices`` int64 ``(T,)`` (frame
numbers within the item) and ``clip_start`` (int), plus the dataset's targets.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from fourds.data.clips import SHORT_VIDEO_POLICIES, clip_indices, clip_span, eval_clip_starts, random_clip_start
from fourds.data.geometry import Resize, resize_nearest, resize_video, transform_boxes, transform_intrinsics, transform_points
from fourds.data.video import short_side_size
from fourds.seeding import generator as seeded_generator

log = logging.getLogger(__name__)

SizeSpec = int | tuple[int, int] | None
Sample = dict[str, Any]


class DatasetLayoutError(FileNotFoundError, ValueError):
    """A dataset root, file or column is missing or malformed; the message names the path and the
    layout the reader expects (also a ``ValueError``: it is a bad setting)."""


def layout_error(what: str, path: str | os.PathLike | Sequence[str | os.PathLike], expected: str) -> DatasetLayoutError:
    """``DatasetLayoutError("<what>: not found at <path(s)>. Expected layout: ...")``."""
    if isinstance(path, (str, os.PathLike)):
        where = os.fspath(path)
    else:
        where = " or ".join(os.fspath(p) for p in path)
    return DatasetLayoutError(f"{what}: not found at {where}.\nExpected layout:\n{expected.rstrip()}")


def first_existing(candidates: Iterable[Path], kind: str = "any") -> Path | None:
    """The first candidate that exists (``kind`` ``"file"``/``"dir"`` narrows it), else ``None``."""
    for p in candidates:
        if (kind == "file" and p.is_file()) or (kind == "dir" and p.is_dir()) or (kind == "any" and p.exists()):
            return p
    return None


def natural_key(name: str) -> tuple:
    """Sort key treating digit runs as numbers: ``"2.jpg" < "10.jpg"`` (frames numbered without padding)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def resolve_split(name: str, split: str, aliases: dict[str, str]) -> str:
    """The dataset's own split name for ``split`` (aliases such as ``validation`` → ``val``)."""
    key = split.strip().lower()
    if key not in aliases:
        raise ValueError(f"{name}: split {split!r} is not known; choose one of {sorted(set(aliases))}")
    return aliases[key]


def output_hw(native: tuple[int, int], size: SizeSpec) -> tuple[int, int]:
    """Frame size ``(h, w)`` of a ``native`` frame under the ``size`` setting (see module docstring)."""
    if size is None:
        return (int(native[0]), int(native[1]))
    if isinstance(size, int):
        return short_side_size(int(native[0]), int(native[1]), size)
    h, w = size
    return (int(h), int(w))


def check_size(size: Any) -> SizeSpec:
    """Validate a ``size`` setting: None, a positive int, or a pair of positive ints."""
    if size is None:
        return None
    if isinstance(size, bool):
        raise ValueError(f"size must be None, an int (short side) or (height, width); got {size!r}")
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size (short side) must be >= 1, got {size}")
        return size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s >= 1 for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"size must be None, an int (short side) or (height, width); got {size!r}")


def resize_targets(sample: Sample, native: tuple[int, int], out: tuple[int, int]) -> Sample:
    """Map every target of ``sample`` from a ``native`` (h, w) frame to an ``out`` frame (not the video).

    Points ``tracks`` (P, T, 2) and boxes ``boxes`` (O, T, 4) scale (raster convention), ``query_points``
    (P, 3) (t, y, x) scale their y and x, ``intrinsics`` scale, ``depth`` (T, h, w) is resized
    nearest-neighbour. Returns a new dict.
    """
    out_sample = dict(sample)
    if tuple(native) == tuple(out) and "depth" not in sample:
        return out_sample
    ops = [Resize(*out)]
    if "tracks" in sample:
        out_sample["tracks"] = transform_points(ops, sample["tracks"], native)
    if "query_points" in sample:
        q = sample["query_points"].clone()
        q[..., 1] *= out[0] / native[0]
        q[..., 2] *= out[1] / native[1]
        out_sample["query_points"] = q
    if "boxes" in sample:
        out_sample["boxes"] = transform_boxes(ops, sample["boxes"], native)
    if "intrinsics" in sample:
        out_sample["intrinsics"] = transform_intrinsics(ops, sample["intrinsics"], native)
    if "depth" in sample and tuple(sample["depth"].shape[-2:]) != tuple(out):
        out_sample["depth"] = resize_nearest(sample["depth"], out)
    return out_sample


class LRU:
    """A tiny least-recently-used cache (per process; never pickled with the dataset)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        value = make()
        self.data[key] = value
        while len(self.data) > self.size:
            self.data.popitem(last=False)
        return value


class ClipDataset(Dataset):
    """Base of every reader (see the module docstring for the index space, clips, windows and sizes).

    Subclasses set ``name``, ``protocol_stride`` and implement :meth:`num_items`, :meth:`item_id`,
    :meth:`frame_count` and :meth:`read`; optionally :meth:`keep_clip`, :meth:`label_of`,
    :meth:`check_item`.

    Args:
        num_frames: frames per clip (None: the whole item).
        stride: frame step (None: the dataset's protocol stride).
        start: first frame of the clip (``clips=1``), or ``"center"`` for the centred clip.
        size: None, short side (int) or (h, w).
        clips: 1, K evenly spaced clips per item, or ``"all"`` non-overlapping clips.
        num_samples: if set, that many seeded random windows (overrides ``clips``).
        seed: seed of the random windows of ``num_samples``.
        short_policy: ``repeat_last`` or ``loop`` for items shorter than a clip.
        window: ``(frames, stride)`` of :meth:`sample`'s random training windows (default: the clip's).
        drop_keys: sample keys to leave out (e.g. ``frame_indices`` for consumers that re-window samples).
    """

    name: ClassVar[str] = "dataset"
    protocol_stride: ClassVar[int] = 1
    num_classes: int | None = None

    def __init__(self, num_frames: int | None = 16, stride: int | None = None, start: int | str = 0, size: SizeSpec = None,
                 clips: int | str = 1, num_samples: int | None = None, seed: int = 0,
                 short_policy: str = "repeat_last", window: tuple[int, int] | None = None,
                 drop_keys: tuple[str, ...] | list[str] = ()) -> None:
        if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
            raise ValueError(f"{self.name}: num_frames must be a positive int or None (whole item), got {num_frames!r}")
        stride = self.protocol_stride if stride is None else stride
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"{self.name}: stride must be a positive int, got {stride!r}")
        if not (start == "center" or (isinstance(start, int) and start >= 0)):
            raise ValueError(f"{self.name}: start must be a frame index >= 0 or 'center', got {start!r}")
        if not (clips == "all" or (isinstance(clips, int) and clips >= 1)):
            raise ValueError(f"{self.name}: clips must be a positive int or 'all', got {clips!r}")
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
            raise ValueError(f"{self.name}: num_samples must be a positive int, got {num_samples!r}")
        if short_policy not in SHORT_VIDEO_POLICIES:
            raise ValueError(f"{self.name}: short_policy {short_policy!r}: choose one of {SHORT_VIDEO_POLICIES}")
        if num_frames is None and (clips != 1 or num_samples is not None):
            raise ValueError(f"{self.name}: num_frames=None (whole items) takes clips=1 and no num_samples")
        self.num_frames, self.stride, self.start, self.size = num_frames, stride, start, check_size(size)
        self.clips, self.num_samples, self.seed, self.short_policy = clips, num_samples, seed, short_policy
        if window is not None:
            if (not isinstance(window, (tuple, list)) or len(window) != 2
                    or not all(isinstance(v, int) and v >= 1 for v in window)):
                raise ValueError(f"{self.name}: window must be (frames, stride) positive ints, got {window!r}")
            window = (int(window[0]), int(window[1]))
        self.window = window
        self.drop_keys = tuple(drop_keys)
        self._index: list[tuple[int, int]] | None = None
        self._counts: dict[int, int] = {}

    # ----------------------------------------------------------------------------- to implement
    def num_items(self) -> int:
        raise NotImplementedError

    def item_id(self, item: int) -> str:
        raise NotImplementedError

    def frame_count_uncached(self, item: int) -> int:
        """Frames available in ``item`` (may open a file; cached by :meth:`frame_count`)."""
        raise NotImplementedError

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[Sample, tuple[int, int] | None]:
        """Frames ``indices`` of ``item`` with their targets: ``(sample, native (h, w))``.

        ``sample["video"]`` is uint8 ``(T, h, w, 3)``, either at native size or already at
        ``output_hw(native, size)`` (readers that resize while decoding); targets are in native pixels.
        ``native=None``: the video is already at the output size and there are no pixel targets.
        """
        raise NotImplementedError

    def keep_clip(self, item: int, indices: list[int]) -> bool:
        """Whether an enumerated clip (``clips=K`` / ``"all"``) is kept (e.g. it has a query point)."""
        return True

    def label_of(self, item: int) -> int | None:
        """The class of ``item`` without decoding (classification datasets), else None."""
        return None

    def check_item(self, item: int, quick: bool = False) -> int:
        """Open ``item`` (and unless ``quick`` read its first clip); returns its frame count. Raises on failure."""
        total = self.frame_count(item)
        if not quick:
            self.read(item, self._indices(total, self._clamp_start(total, 0)), None)
        return total

    # ------------------------------------------------------------------------------------ clips
    def frame_count(self, item: int) -> int:
        if item not in self._counts:
            self._counts[item] = int(self.frame_count_uncached(item))
        return self._counts[item]

    def span(self) -> int:
        return 0 if self.num_frames is None else clip_span(self.num_frames, self.stride)

    def _clamp_start(self, total: int, start: int | str) -> int:
        if self.num_frames is None:
            return 0
        last = max(0, total - self.span())
        if start == "center":
            return eval_clip_starts(total, self.num_frames, self.stride, 1)[0]
        return min(int(start), last)

    def _indices(self, total: int, start: int) -> list[int]:
        if self.num_frames is None:
            return list(range(0, total, self.stride))
        return clip_indices(total, start, self.num_frames, self.stride, self.short_policy)

    def _starts(self, item: int) -> list[int]:
        total = self.frame_count(item)
        if self.clips == "all":
            first = self._clamp_start(total, self.start)
            return list(range(first, max(first, total - self.span()) + 1, self.span()))
        if self.clips == 1:
            return [self._clamp_start(total, self.start)]
        return eval_clip_starts(total, self.num_frames, self.stride, int(self.clips))  # type: ignore[arg-type]

    @property
    def index(self) -> list[tuple[int, int]] | None:
        """``(item, start)`` per sample when clips are enumerated (``clips`` != 1), else None."""
        if self._index is None and self.clips != 1 and self.num_samples is None:
            index = []
            for item in range(self.num_items()):
                for s in self._starts(item):
                    if self.keep_clip(item, self._indices(self.frame_count(item), s)):
                        index.append((item, s))
            self._index = index
        return self._index

    def locate(self, i: int) -> tuple[int, int]:
        """``(item, start)`` of sample ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: sample {i} out of range (dataset has {n})")
        i %= n
        if self.num_samples is not None:
            item = i % self.num_items()
            total = self.frame_count(item)
            if self.num_frames is None:
                return item, 0
            g = seeded_generator(self.seed, self.name, "window", i)
            return item, random_clip_start(total, self.num_frames, self.stride, g)
        if self.index is not None:
            return self.index[i]
        return i, self._clamp_start(self.frame_count(i), self.start)

    def item_of(self, i: int) -> int:
        """The item that sample ``i`` reads."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: sample {i} out of range (dataset has {n})")
        i %= n
        if self.num_samples is not None:
            return i % self.num_items()
        if self.index is not None:
            return self.index[i][0]
        return i

    # --------------------------------------------------------------------------------- protocol
    def __len__(self) -> int:
        if self.num_samples is not None:
            return self.num_samples if self.num_items() else 0
        if self.clips != 1:
            return len(self.index)  # type: ignore[arg-type]
        return self.num_items()

    def __getitem__(self, i: int) -> Sample:
        item, start = self.locate(i)
        return self._clip(item, start)

    def sample(self, index: int, generator: torch.Generator) -> Sample:
        """A uniformly random training window of the item of sample ``index`` (see ``window``)."""
        item = self.item_of(index)
        total = self.frame_count(item)
        if self.window is not None:
            frames, stride = self.window
            start = random_clip_start(total, frames, stride, generator)
            return self._clip(item, start, clip_indices(total, start, frames, stride, self.short_policy))
        start = 0 if self.num_frames is None else random_clip_start(total, self.num_frames, self.stride, generator)
        return self._clip(item, start)

    def _clip(self, item: int, start: int, indices: list[int] | None = None) -> Sample:
        total = self.frame_count(item)
        indices = self._indices(total, start) if indices is None else indices
        sample, native = self.read(item, indices, self.size)
        if native is not None:  # None: the video is already at the output size and nothing else moves
            out = output_hw(native, self.size)
            video = sample["video"]
            if tuple(video.shape[1:3]) != tuple(out):
                sample["video"] = resize_video(video, out)
            sample = resize_targets(sample, native, out)
        sample["id"] = self.item_id(item)
        sample["frame_indices"] = torch.tensor(indices, dtype=torch.int64)
        sample["clip_start"] = int(indices[0]) if indices else 0
        for key in self.drop_keys:
            sample.pop(key, None)
        return sample

    # ------------------------------------------------------------------------------------ misc
    def __getstate__(self) -> dict:
        # Per-process caches (open files, decoded tables) stay out of DataLoader worker pickles.
        state = dict(self.__dict__)
        for key, value in list(state.items()):
            if isinstance(value, LRU):
                state[key] = LRU(value.size)
        return state

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, items={self.num_items()}, samples={len(self)}, "
                f"num_frames={self.num_frames}, stride={self.stride}, size={self.size})")


def video_frame_size(path: str | os.PathLike) -> tuple[int, int]:
    """Stored ``(h, w)`` of a video file's first video stream (opens the header only)."""
    import av

    from fourds.data.video import VideoDecodeError

    try:
        with av.open(os.fspath(path)) as c:
            s = c.streams.video[0]
            return (int(s.codec_context.height), int(s.codec_context.width))
    except (av.FFmpegError, OSError, IndexError) as err:
        raise VideoDecodeError(os.fspath(path), f"cannot read the frame size ({err})") from err


def decode_kwargs(size: SizeSpec) -> dict:
    """``read_frames`` keyword for a ``size`` setting (``size=(h, w)`` or ``short_side=int``)."""
    if size is None:
        return {}
    return {"size": size} if isinstance(size, tuple) else {"short_side": size}


def as_uint8_video(frames: Sequence[np.ndarray] | np.ndarray) -> Tensor:
    """Stack ``(h, w, 3)`` uint8 frames into a ``(T, h, w, 3)`` tensor (checks shapes agree)."""
    arr = np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr))
