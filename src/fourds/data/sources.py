"""Where videos come from: a folder, a manifest or WebDataset tar shards, and the corrupt-safe
pretraining source over any of them.

A *collection* is an indexable list of videos (:class:`VideoCollection`): entry ``i`` has a unique
``key``, its ``labels`` (manifest columns or shard JSON) and a ``source(i)`` that
:func:`fourds.data.video.read_clip` takes (a path, or the bytes of a shard member).

- **Folder**: every file under it (recursively) whose extension is in :data:`VIDEO_EXTENSIONS`,
  sorted by relative path (the key).
- **Manifest**: CSV (header row) or JSONL, one video per row: a ``path`` column (relative paths are
  relative to the manifest's folder) and any label columns; the key is ``id`` when given, else the path.
- **Shards**: WebDataset tar files (``<key>.<video ext>`` + ``<key>.json`` members per sample); see
  :mod:`fourds.data.shards`.

:func:`open_collection` resolves a ``--data`` spec and fails at start-up (missing path, empty source),
never inside a worker. :class:`FileVideos` turns a collection into the pretraining ``VideoSource``
with the robustness policy (skip-and-count, see its docstring); :class:`DecodeFailures` is the
loop-side bookkeeping (named once in the log, counted with the scalars, stop above a fraction).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from fourds.data.clips import random_clip
from fourds.data.video import VideoDecodeError, read_frames
from fourds.seeding import derive_seed

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".ts", ".flv", ".wmv", ".3gp")
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".ndjson")


class DataSourceNotFoundError(FileNotFoundError, ValueError):
    """``--data`` names a path that does not exist (a missing file *and* a bad setting value)."""


@dataclass(frozen=True)
class VideoEntry:
    """One video: unique ``key`` and its ``labels`` (strings/numbers as stored)."""

    key: str
    labels: dict[str, Any] = field(default_factory=dict)


class VideoCollection(Protocol):
    """An indexable list of videos."""

    def __len__(self) -> int: ...

    def entry(self, i: int) -> VideoEntry: ...

    def source(self, i: int) -> str | bytes:
        """What :func:`fourds.data.video.read_clip` takes for entry ``i`` (path or bytes)."""
        ...

    def describe(self) -> str: ...


class FileList:
    """Videos as files on disk (from a folder or a manifest)."""

    def __init__(self, paths: Sequence[Path], entries: Sequence[VideoEntry], origin: str) -> None:
        assert len(paths) == len(entries)
        self.paths = [Path(p) for p in paths]
        self.entries = list(entries)
        self.origin = origin

    def __len__(self) -> int:
        return len(self.paths)

    def entry(self, i: int) -> VideoEntry:
        return self.entries[i]

    def source(self, i: int) -> str:
        return str(self.paths[i])

    def describe(self) -> str:
        return f"{len(self)} videos from {self.origin}"

    @classmethod
    def from_folder(cls, root: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> FileList:
        """Every video file under ``root`` (recursive), sorted; the key is the relative path."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"video folder {root} does not exist")
        exts = {e.lower() for e in extensions}
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not paths:
            raise ValueError(
                f"no video files under {root} (searched recursively for {', '.join(sorted(exts))}); "
                f"point --data at a folder of videos, a CSV/JSONL manifest or WebDataset .tar shards"
            )
        return cls(paths, [VideoEntry(p.relative_to(root).as_posix()) for p in paths], f"folder {root}")

    @classmethod
    def from_manifest(cls, manifest: str | Path) -> FileList:
        """Rows of a CSV or JSONL manifest with a ``path`` column plus label columns."""
        manifest = Path(manifest)
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest {manifest} does not exist")
        rows = _read_manifest(manifest)
        if not rows:
            raise ValueError(f"manifest {manifest} lists no videos")
        paths, entries, seen = [], [], set()
        for line, row in enumerate(rows, start=2 if manifest.suffix.lower() == ".csv" else 1):
            if not row.get("path"):
                raise ValueError(f"manifest {manifest}, row {line}: no 'path' value (columns: {sorted(row)})")
            path = Path(row["path"])
            path = path if path.is_absolute() else manifest.parent / path
            labels = {k: _parse_label(v) for k, v in row.items() if k not in ("path", "id")}
            key = str(row.get("id") or row["path"])
            if key in seen:
                raise ValueError(f"manifest {manifest}, row {line}: duplicate key {key!r} (ids/paths must be unique)")
            seen.add(key)
            paths.append(path)
            entries.append(VideoEntry(key, labels))
        if not paths[0].is_file():  # a wrong base folder shows here, at start-up (one stat, not N)
            raise FileNotFoundError(
                f"manifest {manifest}: the first video, {paths[0]}, does not exist (relative paths are relative "
                f"to the manifest's folder)"
            )
        return cls(paths, entries, f"manifest {manifest}")


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    from fourds.textfiles import quote, read_text

    expected = "a manifest: CSV with a 'path' column, or JSON lines with a 'path' key"
    text = read_text(path, expected)
    if path.suffix.lower() == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                got = "an empty file" if reader.fieldnames is None else f"columns {quote(reader.fieldnames)}"
                raise ValueError(f"manifest {path} needs a header row with a 'path' column, got {got}")
            return [dict(r) for r in reader]
        except csv.Error as err:
            raise ValueError(f"manifest {path} is not a readable CSV file ({err}); expected {expected}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"manifest {path}, line {n}: not JSON ({err.msg} at column {err.colno}); expected "
                             f"one JSON object per line with a 'path' key") from None
        if not isinstance(row, dict):
            raise ValueError(f"manifest {path}, line {n}: expected a JSON object with a 'path' key")
        rows.append(row)
    return rows


def _parse_label(value: Any) -> Any:
    """CSV cells are strings: integers and floats become numbers, the rest stays as is."""
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def open_collection(spec: str | Path) -> VideoCollection:
    """Resolve a data spec: a folder of videos, a ``.csv``/``.jsonl`` manifest, a ``.tar`` shard, a
    brace pattern of shards (``data/shard-{000000..000099}.tar``) or a folder holding ``.tar`` shards.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the source holds no videos.
    """
    from fourds.data.shards import ShardList, is_shard_spec

    text = str(spec)
    if is_shard_spec(text):
        return ShardList.open(text)
    path = Path(text)
    if not path.exists():
        raise DataSourceNotFoundError(
            f"--data {text!r}: no such file or folder (give a folder of videos, a CSV/JSONL manifest, "
            f"WebDataset .tar shards, or 'synthetic' / 'random')"
        )
    if path.is_file():
        if path.suffix.lower() in MANIFEST_EXTENSIONS:
            return FileList.from_manifest(path)
        raise ValueError(f"--data {text}: a file source must be a manifest ({', '.join(MANIFEST_EXTENSIONS)}) or a .tar shard")
    return FileList.from_folder(path)


class FileVideos:
    """The pretraining ``VideoSource`` over a collection, robust to bad files.

    Sample ``n`` is entry ``order_e[n mod N]`` with ``e = n // N`` and ``order_e`` a permutation seeded
    by ``(seed, e)``: every epoch visits every video once, and sample ``n`` is found without touching
    samples ``< n`` (exact, cheap resume). The clip start is uniform (short videos repeat their last
    frame, :mod:`fourds.data.clips`); frames are resized while decoding so the short side is
    ``decode_short_side`` (``None``: stored size).

    A video that fails to decode (corrupt, truncated, zero bytes, not a video, unsupported codec) is
    skipped: the sample takes the next entry of the same permutation instead (deterministic, so a
    resumed run sees the same sequence) and reports the failure in its info dict; after
    ``max_consecutive_failures`` failures in a row it raises ``RuntimeError``.
    """

    def __init__(
        self,
        collection: VideoCollection,
        seed: int = 0,
        decode_short_side: int | None = None,
        short_video_policy: str = "repeat_last",
        max_consecutive_failures: int = 16,
    ) -> None:
        if len(collection) == 0:
            raise ValueError(f"{collection.describe()}: the source is empty")
        self.collection = collection
        self.seed = seed
        self.decode_short_side = decode_short_side
        self.policy = short_video_policy
        self.max_consecutive_failures = max_consecutive_failures
        self._order: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.collection)

    def entry_index(self, sample_id: int) -> int:
        """Collection index that sample ``sample_id`` starts from (before any skip)."""
        epoch, pos = divmod(int(sample_id), len(self.collection))
        return int(self._epoch_order(epoch)[pos])

    def _epoch_order(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 7))
            self._order = (epoch, torch.randperm(len(self.collection), generator=gen))
        return self._order[1]

    def clip_with_info(self, sample_id: int, num_frames: int, stride: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        """``(frames uint8 (num_frames, H, W, 3), {"key": str, "failed": [str, ...]})``."""
        n = len(self.collection)
        epoch, pos = divmod(int(sample_id), n)
        order = self._epoch_order(epoch)
        failed: list[str] = []
        for attempt in range(min(n, self.max_consecutive_failures)):
            i = int(order[(pos + attempt) % n])
            entry = self.collection.entry(i)
            try:
                frames = read_frames(
                    self.collection.source(i),
                    lambda total: random_clip(total, num_frames, stride, generator, self.policy),
                    short_side=self.decode_short_side,
                )
                return frames, {"key": entry.key, "failed": failed}
            except VideoDecodeError as err:
                failed.append(f"{entry.key}: {err}")
        raise RuntimeError(
            f"{len(failed)} videos in a row failed to decode in {self.collection.describe()} (sample {sample_id}), e.g. "
            f"{failed[:3]}; the source looks broken: run `fourds data check` on it"
        )

    def clip(self, sample_id: int, num_frames: int, stride: int, generator: torch.Generator) -> Tensor:
        return self.clip_with_info(sample_id, num_frames, stride, generator)[0]

    def describe(self) -> str:
        return self.collection.describe()


class DecodeFailures:
    """Loop-side bookkeeping of skipped videos: names each bad video once in the log, counts every
    failed decode attempt, and stops the run when too many of the attempts fail.

    **The stop rule.** A decode *attempt* is one try to read a sample's video: every sample delivered
    costs one successful attempt plus one failed attempt per bad video skipped on the way. The run stops
    when more than ``max_fraction`` of all attempts so far have failed (``--max-decode-failures``,
    default 0.01), but only once at least ``min_failures`` attempts have failed (default 10), so a single
    bad file in a small source does not stop a run on its first encounter. The fraction is over samples
    drawn, not over distinct files: a bad file met once per epoch costs one attempt per epoch.

    **Several ranks.** :meth:`update` records this rank's attempts; :meth:`commit` adds them to the totals,
    summed over ranks by the ``all_reduce`` it is given (the pretraining loop sums two numbers per
    step), so the counts and the stop decision are the same on every rank. Bad files are named by the
    rank that met them.

    Its state (:meth:`state_dict`) goes into the training checkpoint so the counts survive a resume.
    """

    def __init__(self, num_videos: int, max_fraction: float = 0.01, setting: str = "--max-decode-failures",
                 min_failures: int = 10) -> None:
        self.num_videos = num_videos
        self.max_fraction = max_fraction
        self.setting = setting
        self.min_failures = min_failures
        self.skips = 0  # failed attempts (all ranks)
        self.attempts = 0  # all attempts (all ranks)
        self.bad: dict[str, str] = {}
        self._pending = [0, 0]  # this rank's (failed, all) attempts not yet committed

    def update(self, failed: Sequence[str], samples: int = 1, check: bool = True) -> list[str]:
        """Record one draw of ``samples`` samples during which the ``"key: message"`` strings of
        ``failed`` were skipped; returns the newly seen ones (already logged). With ``check`` (one
        process) the counts are committed and the stop rule applied at once."""
        new = []
        failed = [item for item in failed if item]
        for item in failed:
            key, _, message = item.partition(": ")
            if key not in self.bad:
                self.bad[key] = message
                new.append(item)
                log.warning("skipping unreadable video %s", item)
        self._pending[0] += len(failed)
        self._pending[1] += len(failed) + int(samples)
        if check:
            self.commit()
        return new

    def commit(self, all_reduce: Callable[[list[float]], list[float]] | None = None) -> None:
        """Add the recorded attempts to the totals (summed over ranks by ``all_reduce``), then apply
        the stop rule.

        Raises:
            RuntimeError: more than ``max_fraction`` of the attempts failed (and at least
                ``min_failures`` did); names examples and the setting to change.
        """
        counts = [float(c) for c in self._pending]
        if all_reduce is not None:
            counts = all_reduce(counts)
        self._pending = [0, 0]
        self.skips += int(round(counts[0]))
        self.attempts += int(round(counts[1]))
        if self.skips >= self.min_failures and self.skips > self.max_fraction * self.attempts:
            examples = "; ".join(f"{k}: {m}" for k, m in list(self.bad.items())[:3])
            raise RuntimeError(
                f"{self.skips} of {self.attempts} video decode attempts failed ({self.skips / self.attempts:.1%} > "
                f"{self.setting} {self.max_fraction:g}; the rule applies once {self.min_failures} have failed), "
                f"{len(self.bad)} distinct bad videos seen here, e.g. {examples}. Fix or remove them "
                f"(`fourds data check` lists them all), or raise {self.setting}."
            )

    def scalars(self) -> dict[str, float]:
        return {"data/skipped_samples": float(self.skips), "data/bad_videos": float(len(self.bad)),
                "data/failed_fraction": self.skips / self.attempts if self.attempts else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"skips": self.skips, "attempts": self.attempts, "bad": dict(self.bad)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad = dict(state.get("bad", {}))
        if "attempts" in state:
            self.skips, self.attempts = int(state.get("skips", 0)), int(state["attempts"])
        else:  # a checkpoint from before attempts were counted: count afresh
            self.skips = self.attempts = 0


def build_pretrain_source(spec: str, seed: int = 0, image_size: int = 224, decode_short_side: int | None = None) -> Any:
    """The pretraining source of ``--data``: ``synthetic`` / ``random`` (see
    :func:`fourds.data.pretrain.build_source`), else a folder, manifest or shards as :class:`FileVideos`.

    ``decode_short_side`` resizes frames while decoding (the loop passes ``ceil(max_resize x image_size)``
    so the augmentation crops from frames already at their final scale).
    """
    from fourds.data.pretrain import build_source

    if spec in ("synthetic", "random"):
        return build_source(spec, seed=seed, image_size=image_size)
    return FileVideos(open_collection(spec), seed=seed, decode_short_side=decode_short_side)
