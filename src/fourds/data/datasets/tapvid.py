"""TAP-Vid pickles: DAVIS (one dict) and Kinetics (shards of lists with JPEG-encoded frames).

Layout (as unzipped from the TAP-Vid release / written by ``generate_tapvid.py``)::

    ROOT/tapvid_davis.pkl                 {video_name: {"video" uint8 (T, H, W, 3), "points" (N, T, 2), "occluded" (N, T)}}
    ROOT/<shard>_of_<num_shards>.pkl      Kinetics: a list of such dicts, "video" = array of JPEG bytes
                                           (also ROOT/tapvid_kinetics/ or ROOT/kinetics/)

``points`` are (x, y) normalised to [0, 1]; pixels are ``points * (W, H)`` (what tapnet's readers do;
raster convention). ``occluded`` is converted once into ``visible = ~occluded``. There is one split
(``"test"``; ``"eval"``/``"validation"`` are accepted). Kinetics frames are JPEG-decoded only for the
clip's frames, and one shard is held in memory at a time (read the dataset in order for speed).

**Pickles run code when loaded**; these readers use a restricted unpickler that only builds NumPy
arrays, dtypes and plain containers, and refuses anything else (:func:`safe_load_pickle`).

Samples: ``video`` uint8, ``tracks`` ``(P, T, 2)``, ``visible`` ``(P, T)``, ``query_points`` ``(P, 3)``
(t, y, x) per :mod:`fourds.data.datasets.points` (default ``clip_start``), ``track_ids``, ``id`` (the DAVIS
video name; ``<shard stem>/<position>`` for Kinetics). Protocol (ours, matching the Perception Test
evaluation): 16 frames at stride 4; ``num_frames=None`` reads whole videos (the TAP-Vid benchmark).
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fourds.data.datasets.base import LRU, ClipDataset, SizeSpec, first_existing, layout_error, output_hw, resolve_split
from fourds.data.datasets.images import decode_rgb
from fourds.data.datasets.points import check_query_mode, clip_tracks
from fourds.data.geometry import resize_video

SPLITS = {"test": "test", "eval": "test", "validation": "test", "val": "test", "valid": "test"}
DAVIS_LAYOUT = "  ROOT/tapvid_davis.pkl   (dict video_name -> {video, points, occluded}; or ROOT is the .pkl)"
KINETICS_LAYOUT = "  ROOT/<shard>_of_<n>.pkl   (e.g. 0000_of_0010.pkl; also ROOT/tapvid_kinetics/ or ROOT/kinetics/)"

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("collections", "OrderedDict"), ("builtins", "bytearray"),
}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle that references a class or function beyond NumPy arrays and plain containers."""


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module[:60]}.{name[:60]}: TAP-Vid pickles hold only NumPy "
                                f"arrays (fourds never runs pickled code)")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a file that may only contain NumPy arrays, dtypes, bytes and plain containers.

    Raises:
        UnsafePickleError: (a ``pickle.UnpicklingError`` and ``ValueError``) the pickle references any
            other class or function (it could run code); nothing of it ran.
        ValueError: the file is not a pickle, or a damaged or truncated one (the message names the file).
    """
    with open(path, "rb") as f:
        try:
            return _NumpyUnpickler(f).load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                MemoryError, OverflowError, struct.error) as err:  # what a damaged pickle stream raises
            damage = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    from fourds.textfiles import looks_like

    raise ValueError(f"{path} is not a readable TAP-Vid pickle ({damage[:120]}; it looks like {looks_like(path)}): "
                     f"the file is damaged or truncated; download it again")


def _video_record(rec: Any, where: str) -> dict:
    if not isinstance(rec, dict) or not {"video", "points", "occluded"} <= set(rec):
        keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
        raise ValueError(f"tapvid: {where} must be a dict with 'video', 'points', 'occluded'; got {keys}")
    return rec


class _TapVid(ClipDataset):
    protocol_stride = 4

    def __init__(self, num_frames: int | None, stride: int | None, start: int | str, size: SizeSpec, query: str,
                 **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, **clip_args)
        self.query = check_query_mode(query)
        if self.query == "stored":
            raise ValueError(f"{self.name} has no stored query points; use clip_start, first or none")

    def keep_clip(self, item: int, indices: list[int]) -> bool:
        if self.query == "none":
            return True
        v = ~np.asarray(self.record(item)["occluded"], bool)[:, indices]
        return bool(v[:, 0].any() if self.query == "clip_start" else v.any())

    def record(self, item: int) -> dict:
        raise NotImplementedError

    def _targets(self, rec: dict, indices: list[int], hw: tuple[int, int]) -> dict:
        pts = np.asarray(rec["points"], dtype=np.float64) * np.array([hw[1], hw[0]])
        visible = ~np.asarray(rec["occluded"], dtype=bool)
        return clip_tracks(pts.astype(np.float32), visible, indices, self.query)


class TapVidDavis(_TapVid):
    """TAP-Vid DAVIS (``tapvid_davis.pkl``; see the module docstring). The pickle is held in memory."""

    name = "tapvid_davis"

    def __init__(self, root: str | os.PathLike, split: str = "test", num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, query: str = "clip_start", **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, query, **clip_args)
        resolve_split(self.name, split, SPLITS)
        root = Path(root)
        path = root if root.is_file() else first_existing([root / "tapvid_davis.pkl", root / "tapvid_davis" / "tapvid_davis.pkl"], "file")
        if path is None:
            raise layout_error("tapvid_davis: the pickle", [root / "tapvid_davis.pkl"], DAVIS_LAYOUT)
        data = safe_load_pickle(path)
        if not isinstance(data, dict):
            raise ValueError(f"tapvid_davis: {path} must hold a dict video_name -> record, got {type(data).__name__}")
        self.path = path
        self.names = [str(k) for k in data]
        self.records = [_video_record(data[k], f"{path}[{k!r}]") for k in data]

    def num_items(self) -> int:
        return len(self.names)

    def item_id(self, item: int) -> str:
        return self.names[item]

    def record(self, item: int) -> dict:
        return self.records[item]

    def frame_count_uncached(self, item: int) -> int:
        return int(np.asarray(self.records[item]["video"]).shape[0])

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, tuple[int, int]]:
        rec = self.records[item]
        frames = np.asarray(rec["video"])
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(f"tapvid_davis: video {self.names[item]} must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        hw = (frames.shape[1], frames.shape[2])
        video = torch.from_numpy(np.ascontiguousarray(frames[indices]))
        if size is not None:
            video = resize_video(video, output_hw(hw, size))
        out = self._targets(rec, indices, hw)
        out["video"] = video
        return out, hw


class TapVidKinetics(_TapVid):
    """TAP-Vid Kinetics shards (see the module docstring)."""

    name = "tapvid_kinetics"

    def __init__(self, root: str | os.PathLike, split: str = "test", num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, query: str = "clip_start", **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, query, **clip_args)
        resolve_split(self.name, split, SPLITS)
        root = Path(root)
        folder = first_existing([d for d in (root, root / "tapvid_kinetics", root / "kinetics") if any(d.glob("*_of_*.pkl"))], "dir")
        if folder is None:
            raise layout_error("tapvid_kinetics: the shards *_of_*.pkl", [root, root / "tapvid_kinetics"], KINETICS_LAYOUT)
        self.shards = sorted(folder.glob("*_of_*.pkl"))
        self._items: list[tuple[int, int, int]] = []  # (shard, position, frames)
        for s, path in enumerate(self.shards):
            data = self._load_shard(s, path)
            for pos, rec in enumerate(data):
                self._items.append((s, pos, len(rec["video"])))
        self._cache = LRU(1)

    @staticmethod
    def _load_shard(s: int, path: Path) -> list[dict]:
        data = safe_load_pickle(path)
        if isinstance(data, dict):  # eval readers accept a dict too
            data = list(data.values())
        if not isinstance(data, list):
            raise ValueError(f"tapvid_kinetics: {path} must hold a list of records, got {type(data).__name__}")
        return [_video_record(r, f"{path}[{i}]") for i, r in enumerate(data)]

    def num_items(self) -> int:
        return len(self._items)

    def item_id(self, item: int) -> str:
        s, pos, _ = self._items[item]
        return f"{self.shards[s].stem}/{pos}"

    def record(self, item: int) -> dict:
        s, pos, _ = self._items[item]
        return self._cache.get(s, lambda: self._load_shard(s, self.shards[s]))[pos]

    def frame_count_uncached(self, item: int) -> int:
        return self._items[item][2]

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, tuple[int, int]]:
        rec = self.record(item)
        frames = rec["video"]
        if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4:
            hw = (frames.shape[1], frames.shape[2])
            video = torch.from_numpy(np.ascontiguousarray(frames[indices]))
            if size is not None:
                video = resize_video(video, output_hw(hw, size))
        else:  # JPEG bytes per frame: decode only the clip's frames (each distinct frame once)
            decoded: dict[int, np.ndarray] = {}
            hw = None
            for k in dict.fromkeys(indices):
                arr, nat = decode_rgb(bytes(frames[k]), size, what=f"{self.item_id(item)} frame {k}")
                decoded[k], hw = arr, nat
            video = torch.from_numpy(np.stack([decoded[k] for k in indices]))
        out = self._targets(rec, indices, hw)  # type: ignore[arg-type]
        out["video"] = video
        return out, hw  # type: ignore[return-value]
