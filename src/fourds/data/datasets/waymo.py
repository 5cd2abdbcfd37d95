"""Waymo Open Dataset v2 (parquet components): camera images + 2-D camera boxes, one camera, 5 fps.

Layout (the v2 bucket's folders, per split)::

    ROOT/<split>/camera_image/<segment>.parquet     split = training | validation | testing
    ROOT/<split>/camera_box/<segment>.parquet       ("train"/"val"/"eval" are accepted; ROOT may be a split folder)
    ROOT/<split>/camera_calibration/<segment>.parquet   optional: adds ``intrinsics``

Columns read: ``key.segment_context_name``, ``key.frame_timestamp_micros``, ``key.camera_name`` (int8
in the v2 schema; ints of other widths, strings such as ``'FRONT'`` and dictionary-encoded strings are
accepted), ``[CameraImageComponent].image`` (JPEG bytes); for boxes ``key.camera_object_id`` (the
track id: stable across frames of a segment), ``[CameraBoxComponent].box.center.{x,y}`` and
``.box.size.{x,y}`` (pixels; axis-aligned centre + size, converted to ``(x0, y0, x1, y1)``) and
``[CameraBoxComponent].type``. Images join boxes on (segment, timestamp, camera); **rows are not
ordered**, frames are sorted by timestamp.

Clips: the camera runs at 10 Hz; the protocol stride 2 gives the paper's 5 fps (16 frames = 3 s).
Objects are those boxed in the clip's first frame whose area is at least ``min_box_area`` (0.5 %) of
that frame, the ``max_boxes`` (25) largest kept; ``boxes`` ``(O, T, 4)`` with ``box_valid`` ``(O, T)``
False where the object has no box (entries there are 0). The task's crop may filter again.

Streaming: a clip reads the key columns once per segment (cached), then only the row groups that hold
its frames, in batches of ``batch_rows`` rows of the image column, and JPEG-decodes only its own
frames (with DCT down-scaling when ``size`` is set). Memory is bounded by one parquet page of the image
column (how the file was written decides its size), never by the segment's decoded frames.

A file written with one large row group (one page of JPEGs for every camera) still has to be read page
by page; :func:`slim_segments` (``fourds data waymo-slim SRC DST``) rewrites a split once into the same
layout with only one camera, rows sorted by time and row groups of a few frames, after which a clip
reads little more than its own frames.

Samples: ``video`` uint8, ``boxes``, ``box_valid``, ``box_class`` ``(O,)`` int64 (``BoxType``: 1 vehicle,
2 pedestrian, 3 sign, 4 cyclist), ``box_ids`` (list of str), ``timestamps`` ``(T,)`` µs, ``intrinsics``
when calibration is present, ``id`` = segment name.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from fourds.data.datasets.base import LRU, ClipDataset, SizeSpec, layout_error, resolve_split
from fourds.data.datasets.images import decode_rgb
from fourds.fileio import atomic_path

T = TypeVar("T")

log = logging.getLogger(__name__)

SPLITS = {"training": "training", "train": "training", "validation": "validation", "val": "validation",
          "eval": "validation", "valid": "validation", "testing": "testing", "test": "testing"}
CAMERAS = {"UNKNOWN": 0, "FRONT": 1, "FRONT_LEFT": 2, "FRONT_RIGHT": 3, "SIDE_LEFT": 4, "SIDE_RIGHT": 5}
SEGMENT = "key.segment_context_name"
TIMESTAMP = "key.frame_timestamp_micros"
CAMERA = "key.camera_name"
OBJECT = "key.camera_object_id"
IMAGE = "[CameraImageComponent].image"
BOX = "[CameraBoxComponent]"
BOX_COLUMNS = [f"{BOX}.box.center.x", f"{BOX}.box.center.y", f"{BOX}.box.size.x", f"{BOX}.box.size.y"]
CALIB = "[CameraCalibrationComponent]"
LAYOUT = """\
  ROOT/<split>/camera_image/<segment>.parquet   columns key.segment_context_name, key.frame_timestamp_micros,
                                                key.camera_name, [CameraImageComponent].image
  ROOT/<split>/camera_box/<segment>.parquet     + key.camera_object_id, [CameraBoxComponent].box.center.{x,y},
                                                [CameraBoxComponent].box.size.{x,y}, [CameraBoxComponent].type
  split = training | validation | testing (ROOT may also be one split folder)"""

_rows_lock = threading.Lock()
_image_rows_read = 0


def image_rows_read() -> int:
    """Rows of the image column this process has materialised (tests: clips read only what they need)."""
    return _image_rows_read


def reset_image_rows_read() -> None:
    global _image_rows_read
    with _rows_lock:
        _image_rows_read = 0


def camera_code(camera: int | str) -> int:
    """``CameraName`` value of ``camera`` (1..5, or a name such as ``"FRONT"``)."""
    if isinstance(camera, (int, np.integer)):
        return int(camera)
    name = str(camera).strip().upper().removeprefix("CAMERANAME.")
    if name.isdigit():
        return int(name)
    if name not in CAMERAS:
        raise ValueError(f"waymo: camera {camera!r} is not known; choose one of {list(CAMERAS)[1:]} or 1..5")
    return CAMERAS[name]


def camera_codes(column: Any, path: Path) -> np.ndarray:
    """A ``key.camera_name`` column (int of any width, string, dictionary) as int64 ``CameraName`` values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_integer(column.type):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        values = pc.unique(column).to_pylist()
        table = {v: camera_code(v) for v in values if v is not None}
        return np.asarray([table.get(v, -1) for v in column.to_pylist()], dtype=np.int64)
    raise ValueError(f"waymo: {path} column {CAMERA} has type {column.type}; expected an integer or a camera name string")


def _reading(component: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a ``(self, item)`` method that reads ``component``'s parquet file of a segment: a damaged
    file (pyarrow's ``ArrowInvalid`` / ``OSError``, which do not say which file) becomes a RuntimeError
    naming it; fourds' own errors (they start with ``waymo:``) pass unchanged."""
    def wrap(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def inner(self: Any, item: int, *args: Any, **kwargs: Any) -> T:
            try:
                return method(self, item, *args, **kwargs)
            except (OSError, ValueError, RuntimeError) as err:
                if str(err).startswith("waymo:"):
                    raise
                path = self.path(component, item)
                raise RuntimeError(f"waymo: cannot read {path} ({type(err).__name__}: {str(err)[:160]}); the file is "
                                   f"damaged or truncated: download the segment again") from None
        return inner
    return wrap


def _open(path: Path):  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    try:
        # No pre-buffering: row groups are read page by page as batches are consumed.
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"waymo: cannot open {path} as parquet: {str(err)[:160]}") from None


def _need(pf: Any, path: Path, columns: list[str]) -> None:
    names = set(pf.schema_arrow.names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise layout_error(f"waymo: columns {missing} in {path} (it has {sorted(names)})", path, LAYOUT)


class WaymoOpen(ClipDataset):
    """Waymo Open v2 camera boxes (see the module docstring).

    Args:
        root: the dataset root (with ``training/`` / ``validation/``) or one split folder.
        split: ``training`` (``train``), ``validation`` (``val``/``eval``) or ``testing``.
        camera: ``FRONT`` (default; the paper does not say which camera) or another name / 1..5.
        min_box_area: drop objects whose first-frame box covers less than this fraction of the frame.
        max_boxes: keep at most this many objects (the largest at the first frame).
        batch_rows: image-column rows per parquet read batch.
        **clip_args: see :class:`fourds.data.datasets.base.ClipDataset` (``num_samples=4096`` for the
            paper's seeded random evaluation windows).
    """

    name = "waymo"
    protocol_stride = 2

    def __init__(self, root: str | os.PathLike, split: str = "validation", num_frames: int | None = 16,
                 stride: int | None = None, start: int | str = 0, size: SizeSpec = None, camera: int | str = "FRONT",
                 min_box_area: float = 0.005, max_boxes: int = 25, batch_rows: int = 4, **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, **clip_args)
        self.root = Path(root)
        self.split = resolve_split(self.name, split, SPLITS)
        folder = self.root / self.split
        if not (folder / "camera_image").is_dir() and (self.root / "camera_image").is_dir():
            folder = self.root
        if not (folder / "camera_image").is_dir():
            raise layout_error(f"waymo: the {self.split} camera_image folder",
                               [self.root / self.split / "camera_image", self.root / "camera_image"], LAYOUT)
        self.folder = folder
        self.camera = camera_code(camera)
        if not 0.0 <= min_box_area < 1.0 or max_boxes < 1 or batch_rows < 1:
            raise ValueError(f"waymo: need 0 <= min_box_area < 1, max_boxes >= 1, batch_rows >= 1; got "
                             f"{min_box_area}, {max_boxes}, {batch_rows}")
        self.min_box_area, self.max_boxes, self.batch_rows = min_box_area, max_boxes, batch_rows
        segments = sorted(p.stem for p in (folder / "camera_image").glob("*.parquet"))
        if not segments:
            raise layout_error(f"waymo: camera_image/*.parquet of the {self.split} split", folder / "camera_image", LAYOUT)
        has_box = {p.stem for p in (folder / "camera_box").glob("*.parquet")} if (folder / "camera_box").is_dir() else set()
        self.missing = [s for s in segments if s not in has_box]
        self.segments = [s for s in segments if s in has_box]
        if not self.segments:
            raise layout_error(f"waymo: camera_box/*.parquet for the {self.split} segments", folder / "camera_box", LAYOUT)
        if self.missing:
            log.warning("waymo %s: %d segments have camera images but no camera_box file (left out; e.g. %s)",
                        self.split, len(self.missing), self.missing[0])
        self._frames = LRU(64)
        self._boxes = LRU(8)
        self._calib = LRU(64)

    # ---------------------------------------------------------------------------------- indexes
    def path(self, component: str, item: int) -> Path:
        return self.folder / component / f"{self.segments[item]}.parquet"

    def frames(self, item: int) -> dict[str, np.ndarray]:
        """The chosen camera's frames of a segment, by timestamp: ``ts``, ``group``, ``row`` (cached)."""
        return self._frames.get(item, lambda: self._index_frames(item))

    @_reading("camera_image")
    def _index_frames(self, item: int) -> dict[str, np.ndarray]:
        path = self.path("camera_image", item)
        pf = _open(path)
        _need(pf, path, [TIMESTAMP, CAMERA, IMAGE])
        ts, cams, groups, rows = [], [], [], []
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=[TIMESTAMP, CAMERA])
            ts.append(np.asarray(t.column(TIMESTAMP).to_numpy(), dtype=np.int64))
            cams.append(camera_codes(t.column(CAMERA), path))
            groups.append(np.full(t.num_rows, g, np.int64))
            rows.append(np.arange(t.num_rows, dtype=np.int64))
        ts_a, cam_a = np.concatenate(ts), np.concatenate(cams)
        keep = cam_a == self.camera
        if not keep.any():
            raise ValueError(f"waymo: {path} has no image of camera {self.camera} (cameras present: "
                             f"{sorted(set(cam_a.tolist()))}); choose camera=...")
        order = np.argsort(ts_a[keep], kind="stable")
        out = {"ts": ts_a[keep][order], "group": np.concatenate(groups)[keep][order], "row": np.concatenate(rows)[keep][order]}
        dup = np.flatnonzero(np.diff(out["ts"]) == 0)
        if len(dup):
            raise ValueError(f"waymo: {path} has {len(dup)} duplicate timestamps for camera {self.camera} "
                             f"(e.g. {int(out['ts'][dup[0]])})")
        return out

    def boxes_of(self, item: int) -> dict[int, list[tuple[str, float, float, float, float, int]]]:
        """``{timestamp: [(object id, x0, y0, x1, y1, type), ...]}`` for the chosen camera (cached)."""
        return self._boxes.get(item, lambda: self._index_boxes(item))

    @_reading("camera_box")
    def _index_boxes(self, item: int) -> dict[int, list[tuple[str, float, float, float, float, int]]]:
        import pyarrow.parquet as pq

        path = self.path("camera_box", item)
        cols = [TIMESTAMP, CAMERA, OBJECT, *BOX_COLUMNS]
        _need(_open(path), path, cols)
        names = set(pq.read_schema(path).names)
        t = pq.read_table(path, columns=cols + ([f"{BOX}.type"] if f"{BOX}.type" in names else []))
        cam = camera_codes(t.column(CAMERA), path)
        keep = np.flatnonzero(cam == self.camera)
        ts = np.asarray(t.column(TIMESTAMP).to_numpy(), dtype=np.int64)[keep]
        ids = np.asarray(t.column(OBJECT).to_pylist(), dtype=object)[keep]
        cx, cy, sx, sy = (np.asarray(t.column(c).to_numpy(), dtype=np.float64)[keep] for c in BOX_COLUMNS)
        typ = (np.asarray(t.column(f"{BOX}.type").to_numpy(), dtype=np.int64)[keep] if f"{BOX}.type" in names
               else np.zeros(len(keep), np.int64))
        out: dict[int, list] = {}
        for k in range(len(keep)):
            out.setdefault(int(ts[k]), []).append(
                (str(ids[k]), cx[k] - sx[k] / 2, cy[k] - sy[k] / 2, cx[k] + sx[k] / 2, cy[k] + sy[k] / 2, int(typ[k])))
        return out

    def intrinsics_of(self, item: int) -> np.ndarray | None:
        """Pixel intrinsics of the chosen camera from ``camera_calibration`` (None when absent; cached)."""
        return self._calib.get(item, lambda: self._read_intrinsics(item))

    @_reading("camera_calibration")
    def _read_intrinsics(self, item: int) -> np.ndarray | None:
        import pyarrow.parquet as pq

        path = self.path("camera_calibration", item)
        if not path.is_file():
            return None
        cols = [CAMERA] + [f"{CALIB}.intrinsic.{k}" for k in ("f_u", "f_v", "c_u", "c_v")]
        _need(_open(path), path, cols)
        t = pq.read_table(path, columns=cols)
        rows = np.flatnonzero(camera_codes(t.column(CAMERA), path) == self.camera)
        if not len(rows):
            return None
        fu, fv, cu, cv = (float(t.column(c)[int(rows[0])].as_py()) for c in cols[1:])
        return np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])

    # ------------------------------------------------------------------------------- ClipDataset
    def num_items(self) -> int:
        return len(self.segments)

    def item_id(self, item: int) -> str:
        return self.segments[item]

    def frame_count_uncached(self, item: int) -> int:
        return len(self.frames(item)["ts"])

    @_reading("camera_image")
    def read_images(self, item: int, positions: list[int]) -> dict[int, bytes]:
        """JPEG bytes of the chosen camera's frames ``positions`` (sorted-timestamp order), streaming."""
        fr = self.frames(item)
        want: dict[int, dict[int, list[int]]] = {}
        for p in dict.fromkeys(positions):
            want.setdefault(int(fr["group"][p]), {}).setdefault(int(fr["row"][p]), []).append(p)
        path = self.path("camera_image", item)
        pf = _open(path)
        got: dict[int, bytes] = {}
        global _image_rows_read
        for g, rows in sorted(want.items()):
            last, offset = max(rows), 0
            for batch in pf.iter_batches(batch_size=self.batch_rows, row_groups=[g], columns=[IMAGE], use_threads=False):
                with _rows_lock:
                    _image_rows_read += batch.num_rows
                col = batch.column(0)
                for r in range(offset, offset + batch.num_rows):
                    for p in rows.get(r, ()):
                        got[p] = col[r - offset].as_py()
                offset += batch.num_rows
                del batch, col
                if offset > last:
                    break
        missing = [p for p in positions if p not in got]
        if missing:
            raise RuntimeError(f"waymo: {path} row group {int(fr['group'][missing[0]])} ended before frame {missing[0]}")
        return got

    def check_item(self, item: int, quick: bool = False) -> int:
        n = self.frame_count(item)
        self.boxes_of(item)
        if not quick:
            for start in range(0, n, 16):
                for p, data in self.read_images(item, list(range(start, min(n, start + 16)))).items():
                    decode_rgb(data, what=f"{self.path('camera_image', item)} frame {p}")
        return n

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, tuple[int, int]]:
        images = self.read_images(item, indices)
        where = self.path("camera_image", item)
        decoded: dict[int, np.ndarray] = {}
        native = None
        for p in dict.fromkeys(indices):
            decoded[p], native = decode_rgb(images[p], size, what=f"{where} frame {p}")
        assert native is not None
        video = torch.from_numpy(np.stack([decoded[p] for p in indices]))
        ts = self.frames(item)["ts"][indices]
        per_frame = self.boxes_of(item)
        h, w = native
        first = per_frame.get(int(ts[0]), [])
        area = [(x1 - x0) * (y1 - y0) for _, x0, y0, x1, y1, _ in first]
        chosen = [first[k] for k in sorted(range(len(first)), key=lambda k: -area[k])
                  if area[k] >= self.min_box_area * h * w][: self.max_boxes]
        ids = [c[0] for c in chosen]
        slot = {oid: o for o, oid in enumerate(ids)}
        boxes = np.zeros((len(ids), len(indices), 4), np.float32)
        valid = np.zeros((len(ids), len(indices)), bool)
        for t, stamp in enumerate(ts):
            for oid, x0, y0, x1, y1, _ in per_frame.get(int(stamp), []):
                o = slot.get(oid)
                if o is not None:
                    boxes[o, t] = (x0, y0, x1, y1)
                    valid[o, t] = True
        out = {"video": video, "boxes": torch.from_numpy(boxes), "box_valid": torch.from_numpy(valid),
               "box_class": torch.tensor([c[5] for c in chosen], dtype=torch.int64), "box_ids": ids,
               "timestamps": torch.from_numpy(ts.copy())}
        k = self.intrinsics_of(item)
        if k is not None:
            out["intrinsics"] = torch.from_numpy(k).float()
        return out, native


def slim_segments(src: str | os.PathLike, dst: str | os.PathLike, split: str = "validation", camera: int | str = "FRONT",
                  row_group_size: int = 4, progress: bool = True) -> list[Path]:
    """Rewrite one split's ``camera_image`` files for streaming: one camera, sorted by timestamp, small row
    groups and pages, no dictionary encoding; ``camera_box`` / ``camera_calibration`` are copied.

    The output (``DST/<split>/...``) is a Waymo v2 layout the reader reads like the original. Segments
    already in ``DST`` are skipped (resume). Returns the written ``camera_image`` files.
    """
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from tqdm import tqdm

    split = resolve_split("waymo", split, SPLITS)
    code = camera_code(camera)
    src_dir = Path(src) / split if (Path(src) / split / "camera_image").is_dir() else Path(src)
    if not (src_dir / "camera_image").is_dir():
        raise layout_error(f"waymo: the {split} camera_image folder", [Path(src) / split / "camera_image"], LAYOUT)
    out_dir = Path(dst) / split
    written = []
    files = sorted((src_dir / "camera_image").glob("*.parquet"))
    for path in tqdm(files, desc=f"waymo-slim {split}", unit="segment", disable=not progress):
        target = out_dir / "camera_image" / path.name
        for comp in ("camera_box", "camera_calibration"):
            other = src_dir / comp / path.name
            if other.is_file() and not (out_dir / comp / path.name).exists():
                (out_dir / comp).mkdir(parents=True, exist_ok=True)
                shutil.copy2(other, out_dir / comp / path.name)
        if target.exists():
            continue
        pf = _open(path)
        _need(pf, path, [TIMESTAMP, CAMERA, IMAGE])
        parts = []
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g)
            parts.append(t.filter(pa.array(camera_codes(t.column(CAMERA), path) == code)))
            del t
        table = pa.concat_tables(parts)
        table = table.take(pc.sort_indices(table, [(TIMESTAMP, "ascending")]))
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp, row_group_size=row_group_size, write_batch_size=row_group_size,
                           use_dictionary=[c for c in table.column_names if c != IMAGE])
        written.append(target)
    return written
