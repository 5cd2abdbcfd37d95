"""WebDataset tar shards: writing them, indexing them for random access, streaming them split across
ranks and workers.

Layout (the WebDataset convention): a shard is a plain (uncompressed) tar file; sample ``key`` is the
members ``<key>.<video ext>`` (the video file's bytes, unchanged) and ``<key>.json`` (its labels and
``"source"``: the original key, e.g. the relative path). Keys hold no dots. ``fourds data shard``
writes ``shard-000000.tar, ...`` and an ``index.json`` with every member's byte offset, so opening the
shards for random access reads one small file instead of every tar header.

Two ways to read:

- :class:`ShardList` (a :class:`fourds.data.sources.VideoCollection`): random access by sample index
  via the byte offsets. Pretraining uses it: samples are distributed by id
  (:class:`fourds.data.pretrain.StepBatchSampler` across ranks, the DataLoader across workers), so no
  sample is read twice and a resume reads nothing it skips.
- :class:`ShardStream`: sequential streaming, each shard read start to end by exactly one
  (rank, worker) pair (:func:`split_shards`), for one pass over data too remote for random access.

Both read the tar files with the standard library's :mod:`tarfile`, not the ``webdataset`` package:
its pipelines stream shards sequentially and have no random access by byte offset, which the exact,
decode-nothing-twice resume and the per-sample skip of bad members rely on. The shards stay readable by
``webdataset`` (same layout).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from fourds.data.sources import VIDEO_EXTENSIONS, VideoCollection, VideoEntry
from fourds.fileio import write_text_atomic

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
_VIDEO_EXTS = {e.lstrip(".") for e in VIDEO_EXTENSIONS}


def is_shard_spec(text: str) -> bool:
    """A ``.tar`` file, a brace pattern of them, or a folder whose top level holds ``.tar`` files."""
    if text.endswith(".tar") or ("{" in text and ".tar" in text):
        return True
    path = Path(text)
    return path.is_dir() and any(p.suffix == ".tar" for p in path.iterdir())


def expand_shards(spec: str) -> list[Path]:
    """Shard paths of a spec (see :func:`is_shard_spec`), sorted for folders, in brace order otherwise."""
    path = Path(spec)
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.suffix == ".tar")
    elif "{" in spec:
        from braceexpand import braceexpand

        shards = [Path(s) for s in braceexpand(spec)]
    else:
        shards = [path]
    missing = [s for s in shards if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"--data {spec}: shard {missing[0]} does not exist ({len(missing)} of {len(shards)} missing)")
    if not shards:
        raise ValueError(f"--data {spec}: no .tar shards found")
    return shards


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset rule: the key is the member path up to the first dot of its basename."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def scan_shard(path: Path) -> list[dict[str, Any]]:
    """Samples of one shard: ``{"key", "ext", "offset", "size", "labels"}`` (reads tar headers and the
    small JSON members, seeks past the videos)."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_key(member.name)
                rec = samples.setdefault(key, {"key": key, "ext": None, "offset": 0, "size": 0, "labels": {}})
                if ext in _VIDEO_EXTS:
                    rec.update(ext=ext, offset=member.offset_data, size=member.size)
                elif ext == "json":
                    data = tar.extractfile(member)
                    rec["labels"] = json.loads(data.read()) if data is not None else {}
    except (tarfile.TarError, OSError, ValueError) as err:  # ValueError: a label member that is not JSON / UTF-8
        raise ValueError(f"shard {path} is not a readable WebDataset tar ({type(err).__name__}: {str(err)[:200]}); "
                         f"recreate it with `fourds data shard`") from None
    good = [r for r in samples.values() if r["ext"] is not None]
    if len(good) < len(samples):
        log.warning("shard %s: %d samples have no video member (skipped)", path, len(samples) - len(good))
    return good


class ShardList:
    """Random access to the samples of WebDataset shards (a ``VideoCollection``)."""

    def __init__(self, shards: Sequence[Path], samples: Sequence[Sequence[dict[str, Any]]], spec: str) -> None:
        self.shards = [Path(s) for s in shards]
        self.spec = spec
        self._where: list[tuple[int, int, int]] = []  # (shard, offset, size)
        self._entries: list[VideoEntry] = []
        for s, recs in enumerate(samples):
            for r in recs:
                self._where.append((s, int(r["offset"]), int(r["size"])))
                self._entries.append(VideoEntry(f"{self.shards[s].name}/{r['key']}", dict(r.get("labels") or {})))
        if not self._entries:
            raise ValueError(f"--data {spec}: the shards hold no video samples")

    @classmethod
    def open(cls, spec: str) -> ShardList:
        """Shards of ``spec``; member offsets from their folder's ``index.json`` when it lists them all
        with the right sizes, else from scanning the tar headers."""
        shards = expand_shards(spec)
        samples = _index_from_file(shards)
        if samples is None:
            samples = [scan_shard(s) for s in shards]
        return cls(shards, samples, spec)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, i: int) -> VideoEntry:
        return self._entries[i]

    def source(self, i: int) -> bytes:
        s, offset, size = self._where[i]
        with open(self.shards[s], "rb") as f:
            f.seek(offset)
            return f.read(size)

    def describe(self) -> str:
        return f"{len(self)} videos in {len(self.shards)} shards ({self.spec})"


def _index_from_file(shards: Sequence[Path]) -> list[list[dict[str, Any]]] | None:
    index_path = shards[0].parent / INDEX_NAME
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text())
        by_name = {s["name"]: s for s in index["shards"]}
        out = []
        for shard in shards:
            rec = by_name.get(shard.name)
            if rec is None or rec["bytes"] != shard.stat().st_size:
                return None  # stale or partial index: scan instead
            out.append(rec["samples"])
        return out
    except (ValueError, KeyError, TypeError):  # ValueError: not JSON, or not UTF-8
        log.warning("ignoring unreadable %s (scanning the shards instead)", index_path)
        return None


# ------------------------------------------------------------------------------------------ writing
def write_shards(
    collection: VideoCollection,
    out: str | Path,
    shard_size: int = 1000,
    verify: bool = True,
    prefix: str = "shard",
    progress: bool = True,
) -> dict[str, Any]:
    """Write the collection as WebDataset shards of ``shard_size`` samples into folder ``out``.

    Args:
        verify: open each video first (demux only, no decoding) and leave out the unreadable ones.
    Returns:
        ``{"shards": [paths], "samples": n, "skipped": {key: reason}}``; also writes ``out/index.json``.
    """
    from tqdm import tqdm

    from fourds.data.video import VideoDecodeError, num_frames

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob(f"{prefix}-*.tar")):
        raise ValueError(f"{out} already holds {prefix}-*.tar shards; choose an empty output folder")
    written: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    tar: tarfile.TarFile | None = None
    current: dict[str, Any] = {}
    count = 0

    def close() -> None:
        nonlocal tar
        if tar is None:
            return
        tar.close()
        tmp = out / f".{current['name']}.tmp"
        os.replace(tmp, out / current["name"])
        current["bytes"] = (out / current["name"]).stat().st_size
        written.append(dict(current))
        tar = None

    for i in tqdm(range(len(collection)), desc=f"sharding into {out}", unit="video", disable=not progress):
        entry = collection.entry(i)
        try:
            src = collection.source(i)
            data = Path(src).read_bytes() if isinstance(src, str) else bytes(src)
            if verify:
                num_frames(data)
        except (VideoDecodeError, OSError) as err:
            skipped[entry.key] = str(err)
            log.warning("leaving out %s: %s", entry.key, err)
            continue
        if tar is None:
            name = f"{prefix}-{len(written):06d}.tar"
            current = {"name": name, "samples": []}
            tar = tarfile.open(out / f".{name}.tmp", mode="w", format=tarfile.USTAR_FORMAT)
        key = f"{count:09d}"
        ext = Path(src).suffix.lstrip(".").lower() if isinstance(src, str) else "mp4"
        ext = ext if ext in _VIDEO_EXTS else "mp4"  # any video extension works: the decoder probes the bytes
        offset = tar.offset + tarfile.BLOCKSIZE  # data follows its 512-byte header
        _write(tar, f"{key}.{ext}", data)
        labels = {**entry.labels, "source": entry.key}
        _write(tar, f"{key}.json", json.dumps(labels, sort_keys=True).encode())
        current["samples"].append({"key": key, "ext": ext, "offset": offset, "size": len(data), "labels": labels})
        count += 1
        if len(current["samples"]) == shard_size:
            close()
    close()
    index = {"format": "fourds-webdataset-1", "shards": written, "skipped": skipped}
    write_text_atomic(out / INDEX_NAME, json.dumps(index))
    return {"shards": [out / w["name"] for w in written], "samples": count, "skipped": skipped}


def _write(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------- streaming
def split_shards(shards: Sequence[Any], rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1) -> list[Any]:
    """This (rank, worker)'s shards: shard ``i`` goes to global worker ``i mod (world_size * num_workers)``,
    with global worker ``rank * num_workers + worker``. Disjoint and complete over all pairs."""
    slots = world_size * num_workers
    me = rank * num_workers + worker
    return list(shards[me::slots])


class ShardStream(IterableDataset):
    """Streams ``{"key", "video" (bytes), "labels"}`` from this rank's and worker's shards, each read
    sequentially once per pass (:func:`split_shards`; with fewer shards than rank x worker slots some
    workers idle)."""

    def __init__(self, spec: str, rank: int = 0, world_size: int = 1) -> None:
        self.shards = expand_shards(spec)
        self.rank, self.world_size = rank, world_size
        if len(self.shards) < world_size:
            log.warning("%d shards for %d ranks: some ranks get no data", len(self.shards), world_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for shard in split_shards(self.shards, self.rank, self.world_size, worker, num_workers):
            yield from _stream_shard(shard)


def _stream_shard(path: Path) -> Iterator[dict[str, Any]]:
    """Samples of one shard in order; a sample's members are adjacent (the WebDataset convention), so
    each is yielded as soon as the next key starts and only one sample is held in memory."""
    rec: dict[str, Any] | None = None
    with tarfile.open(path, mode="r|") as tar:  # pure streaming: no seeks
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split_key(member.name)
            if rec is not None and rec["_key"] != key:
                if rec["video"] is not None:
                    yield _public(rec)
                rec = None
            if rec is None:
                rec = {"_key": key, "key": f"{path.name}/{key}", "video": None, "labels": {}}
            data = tar.extractfile(member)
            payload = data.read() if data is not None else b""
            if ext in _VIDEO_EXTS:
                rec["video"] = payload
            elif ext == "json":
                try:
                    rec["labels"] = json.loads(payload)
                except ValueError as err:
                    raise ValueError(f"shard {path}: member {member.name[:100]!r} is not JSON ({str(err)[:100]})") from None
    if rec is not None and rec["video"] is not None:
        yield _public(rec)


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if not k.startswith("_")}
