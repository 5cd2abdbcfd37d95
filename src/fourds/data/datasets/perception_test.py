"""Perception Test point tracking: the JSON annotations + the ``{video_id}.mp4`` videos.

Layout (the official zips ``point_tracking_<split>_annotations.zip`` / ``point_tracking_<split>_videos.zip``
unpacked into ROOT)::

    ROOT/point_tracking_<split>.json      (or all_<split>.json; also under ROOT/annotations/ or ROOT/data/)
    ROOT/videos/<video_id>.mp4            (or ROOT/<video_id>.mp4)
                                           split = train | valid | test ("validation"/"val"/"eval" → valid)

The JSON maps ``video_id → {"metadata": {"split", "num_frames", "resolution", "is_camera_moving", ...},
"point_tracking": [{"id", "label", "frame_ids", "points"}, ...], ...}``; a video belongs to the split
when ``metadata["split"]`` equals it and it has point tracks. A point is **visible exactly on its
``frame_ids``** and occluded elsewhere. ``points`` is stored as ``[[y ...], [x ...]]`` normalised to
[0, 1] (what the official evaluation notebook reads: ``np.array(points).T`` gives ``(N, 2)`` (y, x) rows;
the README's "[N, 2]" wording also occurs, so an ``(N, 2)`` array is accepted too: ``points_layout``).
Pixels: ``x * W``, ``y * H`` with ``(H, W)`` the video's frame size (raster convention).

Index space: ``clips="all"`` (the evaluation default of :func:`fourds.data.datasets.task_dataset`)
makes every non-overlapping 16-frame, stride-4 clip of every video a sample (clips without a query
point are left out); ``clips=1`` gives one clip per video at ``start``. Queries follow
:mod:`fourds.data.datasets.points` (default ``clip_start``: tracks visible on the clip's first frame,
queried there, the paper's protocol). Samples: ``video`` uint8, ``tracks`` ``(P, T, 2)``, ``visible``
``(P, T)``, ``query_points`` ``(P, 3)`` (t, y, x), ``track_ids`` ``(P,)`` (index into the video's
``point_tracking`` list, which is how submissions are matched), ``is_camera_moving`` (bool).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fourds.data.datasets.base import (
    LRU, ClipDataset, SizeSpec, decode_kwargs, first_existing, layout_error, resolve_split, video_frame_size,
)
from fourds.data.datasets.points import check_query_mode, clip_tracks
from fourds.data.video import num_frames as video_num_frames
from fourds.data.video import read_frames, verify

log = logging.getLogger(__name__)

SPLITS = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "val": "valid",
          "eval": "valid", "test": "test"}
LAYOUT = """\
  ROOT/point_tracking_<split>.json   (or all_<split>.json, also in ROOT/annotations/ or ROOT/data/),
                                     split = train | valid | test
  ROOT/videos/<video_id>.mp4         (or ROOT/<video_id>.mp4)"""


def track_points_yx(points: Any, n: int, layout: str = "auto") -> np.ndarray:
    """A track's stored points as ``(n, 2)`` normalised (y, x) rows (see ``points_layout``)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0 and n == 0:
        return np.zeros((0, 2))
    if layout == "2xN" or (layout == "auto" and arr.shape == (2, n)):
        return arr.T
    if layout == "Nx2" or (layout == "auto" and arr.shape == (n, 2)):
        return arr
    raise ValueError(f"points of shape {arr.shape} do not match {n} frame_ids (expected (2, {n}) [[y..],[x..]] "
                     f"or ({n}, 2); points_layout={layout!r})")


class PerceptionTest(ClipDataset):
    """Perception Test single point tracking (see the module docstring).

    Args:
        root: dataset root.
        split: ``valid`` (``validation``), ``train`` or ``test``.
        query: query selection (``clip_start``, ``first``, ``none``).
        points_layout: ``auto``, ``2xN`` ([[y..],[x..]], the notebook) or ``Nx2``.
        annotations / video_dir: override the JSON file / the video folder.
        decode_threads: decoder threads.
        **clip_args: see :class:`fourds.data.datasets.base.ClipDataset` (``clips="all"`` for every clip).
    """

    name = "perception_test"
    protocol_stride = 4

    def __init__(self, root: str | os.PathLike, split: str = "valid", num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, query: str = "clip_start", points_layout: str = "auto",
                 annotations: str | os.PathLike | None = None, video_dir: str | os.PathLike | None = None,
                 decode_threads: int | None = None, **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, **clip_args)
        self.root = Path(root)
        if not self.root.is_dir():
            raise layout_error("perception_test: dataset root", self.root, LAYOUT)
        self.split = resolve_split(self.name, split, SPLITS)
        self.query = check_query_mode(query)
        if self.query == "stored":
            raise ValueError("perception_test has no stored query points; use query='clip_start', 'first' or 'none'")
        if points_layout not in ("auto", "2xN", "Nx2"):
            raise ValueError(f"points_layout {points_layout!r}: choose auto, 2xN or Nx2")
        self.points_layout, self.decode_threads = points_layout, decode_threads
        s = self.split
        cands = [d / f"{p}_{s}.json" for d in (self.root, self.root / "annotations", self.root / "data")
                 for p in ("point_tracking", "all")]
        ann = Path(annotations) if annotations else first_existing(cands, "file")
        if ann is None or not ann.is_file():
            raise layout_error(f"perception_test: the {s} annotations", cands if ann is None else [ann], LAYOUT)
        self.annotations = ann
        from fourds.textfiles import read_json

        data = read_json(ann, "a Perception Test point-tracking annotation file (JSON; layout: docs/datasets.md)")
        if not isinstance(data, dict):
            raise ValueError(f"perception_test: {ann} must be a JSON object video_id -> {{metadata, point_tracking}}")
        vdirs = [Path(video_dir)] if video_dir else [self.root / "videos", self.root / f"point_tracking_{s}_videos",
                                                       self.root / f"{s}_videos", self.root]
        self.ids: list[str] = []
        self.paths: list[Path] = []
        self._videos: list[dict[str, Any]] = []
        self.missing: list[str] = []
        for vid, val in data.items():
            meta = val.get("metadata", {}) if isinstance(val, dict) else {}
            if meta.get("split") != s or not val.get("point_tracking"):
                continue
            video_id = str(meta.get("video_id", vid))
            path = first_existing([d / f"{video_id}.mp4" for d in vdirs], "file")
            if path is None:
                self.missing.append(video_id)
                continue
            if "num_frames" not in meta:
                raise ValueError(f"perception_test: video {video_id} in {ann} has no metadata.num_frames")
            self.ids.append(video_id)
            self.paths.append(path)
            self._videos.append({"meta": meta, "tracks": val["point_tracking"]})
        if not self.ids and not self.missing:
            splits = sorted({str(v.get("metadata", {}).get("split")) for v in data.values() if isinstance(v, dict)})
            raise ValueError(f"perception_test: {ann} has no video with metadata.split == {s!r} and point tracks "
                             f"(splits present: {splits})")
        if self.missing:
            log.warning("perception_test %s: %d annotated videos are not on disk (e.g. %s.mp4 under %s)", s,
                        len(self.missing), self.missing[0], vdirs[0])
        self._tracks = LRU(8)

    def num_items(self) -> int:
        return len(self.ids)

    def item_id(self, item: int) -> str:
        return self.ids[item]

    def frame_count_uncached(self, item: int) -> int:
        return int(self._videos[item]["meta"]["num_frames"])

    def full_tracks(self, item: int, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(tracks (P, N, 2) (x, y) pixels, visible (P, N))`` over all N frames of the video."""
        return self._tracks.get((item, hw), lambda: self._build_tracks(item, hw))

    def _build_tracks(self, item: int, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        n = self.frame_count(item)
        h, w = hw
        ann = self._videos[item]["tracks"]
        tracks = np.zeros((len(ann), n, 2), np.float32)
        visible = np.zeros((len(ann), n), bool)
        for p, track in enumerate(ann):
            ids = np.asarray(track["frame_ids"], dtype=np.int64)
            try:
                yx = track_points_yx(track["points"], len(ids), self.points_layout)
            except ValueError as err:
                raise ValueError(f"perception_test: track {p} of video {self.ids[item]}: {err}") from err
            ok = (ids >= 0) & (ids < n)
            ids, yx = ids[ok], yx[ok]
            tracks[p, ids, 0] = yx[:, 1] * w
            tracks[p, ids, 1] = yx[:, 0] * h
            visible[p, ids] = True
            if len(ids):  # hold the nearest annotated position where the point is occluded (finite, never scored)
                order = np.argsort(ids)
                ids_s, pts = ids[order], tracks[p, ids[order]]
                nearest = np.clip(np.searchsorted(ids_s, np.arange(n)), 0, len(ids_s) - 1)
                tracks[p, ~visible[p]] = pts[nearest[~visible[p]]]
        return tracks, visible

    def frame_hw(self, item: int) -> tuple[int, int]:
        res = self._videos[item]["meta"].get("resolution")
        if isinstance(res, (list, tuple)) and len(res) == 2:
            return int(res[0]), int(res[1])
        return video_frame_size(self.paths[item])

    def keep_clip(self, item: int, indices: list[int]) -> bool:
        if self.query == "none":
            return True
        _, visible = self.full_tracks(item, self.frame_hw(item))
        v = visible[:, indices]
        return bool(v[:, 0].any() if self.query == "clip_start" else v.any())

    def check_item(self, item: int, quick: bool = False) -> int:
        n = (video_num_frames if quick else verify)(self.paths[item])
        expected = self.frame_count(item)
        if n != expected:
            raise RuntimeError(f"{self.paths[item]} has {n} frames but its annotations say {expected} (metadata.num_frames)")
        return n

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, tuple[int, int]]:
        video = read_frames(self.paths[item], indices, threads=self.decode_threads, **decode_kwargs(size))
        native = tuple(video.shape[1:3]) if size is None else video_frame_size(self.paths[item])
        tracks, visible = self.full_tracks(item, native)  # type: ignore[arg-type]
        out = clip_tracks(tracks, visible, indices, self.query)
        out["video"] = video
        out["is_camera_moving"] = bool(self._videos[item]["meta"].get("is_camera_moving", False))
        return out, native  # type: ignore[return-value]
