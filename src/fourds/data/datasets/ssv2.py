"""Something-Something v2: ``{id}.webm`` videos + the JSON split lists + ``labels.json``.

Layout (both namings of the label files are accepted, in ``ROOT`` or ``ROOT/labels/``)::

    ROOT/20bn-something-something-v2/{id}.webm        (or ROOT/videos/, or ROOT/ itself)
    ROOT/something-something-v2-labels.json           (or ROOT/labels/labels.json)
    ROOT/something-something-v2-{train,validation,test}.json   (or ROOT/labels/{train,validation,test}.json)

Classes: ``labels.json`` maps a template to its index **as a string**; a video's class is
``int(labels[template.replace("[", "").replace("]", "")])`` (only the brackets are removed). Templates
that do not match exactly are matched case-insensitively (seen in third-party copies); a template that
still does not match is an error naming it. The test list has no labels: ``label`` is -1 there.
Videos listed but missing on disk are left out and reported (``missing``), not fatal.

Samples: ``video`` uint8 ``(T, H, W, 3)``, ``label`` int64 0-d, ``id`` (the numeric id string),
``template`` (str, "" for test). Protocol: 16 frames at stride 2.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from fourds.data.datasets.base import ClipDataset, SizeSpec, decode_kwargs, first_existing, layout_error, resolve_split
from fourds.data.video import num_frames as video_num_frames
from fourds.data.video import read_frames, verify

log = logging.getLogger(__name__)

SPLITS = {"train": "train", "training": "train", "validation": "validation", "val": "validation", "valid": "validation",
          "test": "test"}
LAYOUT = """\
  ROOT/20bn-something-something-v2/<id>.webm   (videos; also ROOT/videos/ or ROOT/)
  ROOT/something-something-v2-labels.json      (or ROOT/labels/labels.json)
  ROOT/something-something-v2-<split>.json     (or ROOT/labels/<split>.json), split = train | validation | test"""
VIDEO_DIRS = ("20bn-something-something-v2", "videos", ".")


def template_to_class(template: str) -> str:
    """The class name of a template: brackets removed, nothing else changed."""
    return template.replace("[", "").replace("]", "")


def _json(path: Path) -> Any:
    from fourds.textfiles import read_json

    return read_json(path, "an SSv2 annotation file (JSON, as downloaded; layout: docs/datasets.md)")


def _label_file(root: Path, stem: str) -> Path | None:
    return first_existing([root / f"something-something-v2-{stem}.json", root / "labels" / f"{stem}.json",
                           root / "labels" / f"something-something-v2-{stem}.json", root / "annotations" / f"{stem}.json",
                           root / "annotations" / f"something-something-v2-{stem}.json"], "file")


def load_classes(root: Path) -> dict[str, int]:
    """``{class name: index}`` from ``labels.json`` (string indices converted, 0..K-1 checked)."""
    path = _label_file(root, "labels")
    if path is None:
        raise layout_error("ssv2: the class list labels.json", [root / "something-something-v2-labels.json",
                                                                root / "labels" / "labels.json"], LAYOUT)
    data = _json(path)
    if not isinstance(data, dict):
        raise ValueError(f"ssv2: {path} must be a JSON object {{class name: \"index\"}}, got {type(data).__name__}")
    classes = {str(k): int(v) for k, v in data.items()}
    if sorted(classes.values()) != list(range(len(classes))):
        raise ValueError(f"ssv2: the indices in {path} are not 0..{len(classes) - 1}")
    return classes


class SSv2(ClipDataset):
    """Something-Something v2 (see the module docstring).

    Args:
        root: dataset root.
        split: ``train``, ``validation`` (``val``) or ``test``.
        video_dir: override the video folder.
        missing: ``"skip"`` (default: leave out and report videos missing on disk) or ``"error"``.
        decode_threads: decoder threads per video (default 1).
        **clip_args: see :class:`fourds.data.datasets.base.ClipDataset`.
    """

    name = "ssv2"
    protocol_stride = 2

    def __init__(self, root: str | os.PathLike, split: str = "train", num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, video_dir: str | os.PathLike | None = None,
                 missing: str = "skip", decode_threads: int | None = None, **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, **clip_args)
        self.root = Path(root)
        if not self.root.is_dir():
            raise layout_error("ssv2: dataset root", self.root, LAYOUT)
        self.split = resolve_split(self.name, split, SPLITS)
        self.decode_threads = decode_threads
        self.classes = load_classes(self.root)
        self.num_classes = len(self.classes)
        self.class_names = sorted(self.classes, key=self.classes.__getitem__)
        lower = {k.lower(): v for k, v in self.classes.items()}
        list_path = _label_file(self.root, self.split)
        if list_path is None:
            raise layout_error(f"ssv2: the {self.split} list", [self.root / f"something-something-v2-{self.split}.json",
                                                                self.root / "labels" / f"{self.split}.json"], LAYOUT)
        entries = _json(list_path)
        if not isinstance(entries, list):
            raise ValueError(f"ssv2: {list_path} must be a JSON list of {{'id', 'template', ...}}")
        if video_dir is not None:
            self.video_dir = Path(video_dir)
        else:
            found = first_existing([self.root / d for d in VIDEO_DIRS if any((self.root / d).glob("*.webm"))], "dir")
            self.video_dir = found or self.root / VIDEO_DIRS[0]
        on_disk = {p.name for p in os.scandir(self.video_dir)} if self.video_dir.is_dir() else set()
        self.ids: list[str] = []
        self.labels: list[int] = []
        self.templates: list[str] = []
        self.missing: list[str] = []
        for n, e in enumerate(entries):
            if not isinstance(e, dict) or "id" not in e:
                raise ValueError(f"ssv2: entry {n} of {list_path} has no 'id': {e!r}")
            vid = str(e["id"])
            label, template = -1, ""
            if self.split != "test":
                if "template" not in e:
                    raise ValueError(f"ssv2: entry {n} (id {vid}) of {list_path} has no 'template'")
                template = str(e["template"])
                cls = template_to_class(template)
                label = self.classes.get(cls, lower.get(cls.lower(), -1))
                if label < 0:
                    raise ValueError(f"ssv2: the template {template!r} of video {vid} ({list_path}) matches no class "
                                     f"of labels.json (after removing brackets: {cls!r})")
            if f"{vid}.webm" not in on_disk:
                self.missing.append(vid)
                continue
            self.ids.append(vid)
            self.labels.append(label)
            self.templates.append(template)
        if self.missing:
            if missing == "error":
                raise layout_error(f"ssv2: {len(self.missing)} videos of the {self.split} list (e.g. {self.missing[0]}.webm)",
                                   self.video_dir, LAYOUT)
            log.warning("ssv2 %s: %d of %d listed videos are missing under %s (left out; e.g. %s.webm)",
                        self.split, len(self.missing), len(entries), self.video_dir, self.missing[0])
        self.listed = len(entries)

    def path(self, item: int) -> Path:
        return self.video_dir / f"{self.ids[item]}.webm"

    def num_items(self) -> int:
        return len(self.ids)

    def item_id(self, item: int) -> str:
        return self.ids[item]

    def label_of(self, item: int) -> int | None:
        return self.labels[item] if self.labels[item] >= 0 else None

    def frame_count_uncached(self, item: int) -> int:
        return video_num_frames(self.path(item))

    def check_item(self, item: int, quick: bool = False) -> int:
        return (video_num_frames if quick else verify)(self.path(item))

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, None]:
        video = read_frames(self.path(item), indices, threads=self.decode_threads, **decode_kwargs(size))
        return {"video": video, "label": torch.tensor(self.labels[item], dtype=torch.int64),
                "template": self.templates[item]}, None
