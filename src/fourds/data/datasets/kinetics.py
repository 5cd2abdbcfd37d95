"""Kinetics-700-2020: the annotation CSVs + clips ``{youtube_id}_{start:06d}_{end:06d}.mp4`` in any folder layout.

Layout::

    ROOT/annotations/{train,val,test}.csv    (or ROOT/{train,val,test}.csv; the cvdfoundation downloader's names)
    ROOT/{train,val,test}/**/<clip>.mp4       (flat or per-class folders, any depth; else searched under ROOT)

CSV header ``label,youtube_id,time_start,time_end,split`` (test: no ``label`` column). Clips are found by
walking the split folder recursively and parsing each file name **from the right**
(``stem.rsplit("_", 2)``: YouTube ids contain ``_`` and ``-``), then joined with the CSV on
``(youtube_id, time_start, time_end)``. Labels come from the CSV, never from folder names.

Class index = position of the label in the **sorted list of the training CSV's unique labels** (700
names with spaces, e.g. ``air drumming`` = its index in that list); when ``train.csv`` is absent, the
sorted union of the labels of the CSVs present (a warning says so). Rows whose clip is not on disk are
left out and reported (``missing``), not fatal. Test rows have ``label`` -1.

Samples: ``video`` uint8, ``label`` int64 0-d, ``id`` = ``{youtube_id}_{start:06d}_{end:06d}``,
``label_name`` (str). Protocol: 16 frames at stride 2; evaluation reads whole clips (``num_frames=None``)
that the task loops to 250 frames and cuts into 7 clips.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

import torch

from fourds.data.datasets.base import (
    ClipDataset, SizeSpec, decode_kwargs, first_existing, layout_error, resolve_split,
)
from fourds.data.video import num_frames as video_num_frames
from fourds.data.video import read_frames, verify

log = logging.getLogger(__name__)

SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "valid": "val", "validate": "val",
          "test": "test"}
CLIP_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
LAYOUT = """\
  ROOT/annotations/<split>.csv   (or ROOT/<split>.csv), split = train | val | test;
                                 header label,youtube_id,time_start,time_end,split (test: no label)
  ROOT/<split>/**/<youtube_id>_<start:06d>_<end:06d>.mp4   (flat or per-class folders)"""


def clip_name(youtube_id: str, start: int, end: int) -> str:
    """``{youtube_id}_{start:06d}_{end:06d}`` (the torchvision / ActivityNet / cvdf naming)."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def parse_clip_name(stem: str) -> tuple[str, int, int] | None:
    """``(youtube_id, start, end)`` from a file stem, parsed from the right; None if it is not a clip name."""
    parts = stem.rsplit("_", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit() or not parts[0]:
        return None
    return parts[0], int(parts[1]), int(parts[2])


def _csv_path(root: Path, split: str) -> Path | None:
    names = [split] + (["validate"] if split == "val" else [])
    return first_existing([d / f"{n}.csv" for d in (root / "annotations", root) for n in names], "file")


def read_csv(path: Path) -> list[dict[str, str]]:
    from fourds.textfiles import quote, read_text

    need = {"youtube_id", "time_start", "time_end"}
    text = read_text(path, f"a Kinetics annotation CSV with the columns {sorted(need)} (+ label)")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            found = "an empty file" if reader.fieldnames is None else quote(reader.fieldnames)
            raise ValueError(f"k700: {path} must have the columns {sorted(need)} (+ label); found {found}")
        return list(reader)
    except csv.Error as err:
        raise ValueError(f"k700: {path} is not a readable CSV file ({err}); restore it from the download") from None


def class_list(root: Path) -> tuple[list[str], str]:
    """Sorted unique labels (from train.csv, else the union of the CSVs present) and where they came from."""
    train = _csv_path(root, "train")
    if train is not None:
        return sorted({r["label"] for r in read_csv(train) if r.get("label")}), os.fspath(train)
    labels: set[str] = set()
    used = []
    for split in ("val", "test"):
        p = _csv_path(root, split)
        if p is not None:
            labels |= {r["label"] for r in read_csv(p) if r.get("label")}
            used.append(os.fspath(p))
    return sorted(labels), " + ".join(used)


def index_clips(folder: Path) -> dict[tuple[str, int, int], Path]:
    """Every clip file under ``folder`` (recursively) keyed by its parsed name (first path wins)."""
    found: dict[tuple[str, int, int], Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fn in sorted(filenames):
            stem, ext = os.path.splitext(fn)
            if ext.lower() not in CLIP_EXTENSIONS:
                continue
            key = parse_clip_name(stem)
            if key is not None:
                found.setdefault(key, Path(dirpath) / fn)
    return found


class Kinetics700(ClipDataset):
    """Kinetics-700-2020 (see the module docstring).

    Args:
        root: dataset root.
        split: ``train``, ``val`` (``validation``) or ``test``.
        clips_dir: override the folder searched for clips.
        decode_threads: decoder threads per clip.
        **clip_args: see :class:`fourds.data.datasets.base.ClipDataset`.
    """

    name = "k700"
    protocol_stride = 2

    def __init__(self, root: str | os.PathLike, split: str = "train", num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, clips_dir: str | os.PathLike | None = None,
                 decode_threads: int | None = None, **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, **clip_args)
        self.root = Path(root)
        if not self.root.is_dir():
            raise layout_error("k700: dataset root", self.root, LAYOUT)
        self.split = resolve_split(self.name, split, SPLITS)
        self.decode_threads = decode_threads
        csv_path = _csv_path(self.root, self.split)
        if csv_path is None:
            raise layout_error(f"k700: the {self.split} annotation CSV",
                               [self.root / "annotations" / f"{self.split}.csv", self.root / f"{self.split}.csv"], LAYOUT)
        rows = read_csv(csv_path)
        self.class_names, source = class_list(self.root)
        self.num_classes = len(self.class_names)
        if self.num_classes and self.num_classes != 700:
            log.warning("k700: %d classes in %s (Kinetics-700 has 700): class indices follow this sorted list",
                        self.num_classes, source)
        index = {n: i for i, n in enumerate(self.class_names)}
        folder = Path(clips_dir) if clips_dir is not None else first_existing(
            [self.root / self.split, self.root / "videos" / self.split, self.root / ("validate" if self.split == "val" else self.split)],
            "dir") or self.root
        self.clips_dir = folder
        on_disk = index_clips(folder)
        self.paths: list[Path] = []
        self.ids: list[str] = []
        self.labels: list[int] = []
        self.label_names: list[str] = []
        self.missing: list[str] = []
        for n, r in enumerate(rows):
            try:
                key = (r["youtube_id"], int(float(r["time_start"])), int(float(r["time_end"])))
            except (TypeError, ValueError) as err:
                raise ValueError(f"k700: row {n + 2} of {csv_path} has a bad time_start/time_end: {r}") from err
            name = clip_name(*key)
            if key not in on_disk:
                self.missing.append(name)
                continue
            label_name = (r.get("label") or "").strip()
            if label_name and label_name not in index:
                raise ValueError(f"k700: label {label_name!r} of {name} ({csv_path}) is not in the class list from {source}")
            self.paths.append(on_disk[key])
            self.ids.append(name)
            self.labels.append(index[label_name] if label_name else -1)
            self.label_names.append(label_name)
        self.listed = len(rows)
        if self.missing:
            log.warning("k700 %s: %d of %d clips of %s are not under %s (left out; e.g. %s.mp4)", self.split,
                        len(self.missing), len(rows), csv_path.name, folder, self.missing[0])

    def num_items(self) -> int:
        return len(self.paths)

    def item_id(self, item: int) -> str:
        return self.ids[item]

    def label_of(self, item: int) -> int | None:
        return self.labels[item] if self.labels[item] >= 0 else None

    def frame_count_uncached(self, item: int) -> int:
        return video_num_frames(self.paths[item])

    def check_item(self, item: int, quick: bool = False) -> int:
        return (video_num_frames if quick else verify)(self.paths[item])

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, None]:
        video = read_frames(self.paths[item], indices, threads=self.decode_threads, **decode_kwargs(size))
        return {"video": video, "label": torch.tensor(self.labels[item], dtype=torch.int64),
                "label_name": self.label_names[item]}, None
