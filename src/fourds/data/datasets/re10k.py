"""RealEstate10K: per-sequence camera files + frames extracted by the user.

Layout (``real_estate_10k_tools`` naming; the camera folder may also be ``ROOT/RealEstate10K/<split>``,
``ROOT/cameras/<split>`` or ``ROOT/<split>`` itself, the frames ``ROOT/images/<split>``)::

    ROOT/metadata/RealEstate10K/<split>/<key>.txt   camera file, split = train | test
    ROOT/frames/<split>/<key>/<timestamp>.jpg       extracted frames, stem = integer timestamp (µs)
    ROOT/metric_scales.json                         optional {key: scale} (or .csv with key,scale)

Camera file: line 1 is the video URL; every other line has 19 numbers ``timestamp_us fx fy cx cy k1 k2
p00 .. p23``: intrinsics normalised by the frame size (``K = [[W fx, 0, W cx], [0, H fy, H cy], [0, 0, 1]]``),
two unused distortion zeros, and a row-major **world-to-camera** 3x4 ``[R|t]`` (OpenCV axes). Samples
hold ``cam_to_world`` = ``inverse([R|t; 0 0 0 1])`` ``(T, 4, 4)`` and pixel ``intrinsics`` ``(3, 3)``
(of the first frame of the clip; RE10k intrinsics are constant per sequence).

Frames: only camera lines with an image on disk are used, in timestamp order (extractions that skip
frames are fine); sequences with fewer frames than one clip span are left out and counted
(``skipped``). SfM poses have an arbitrary scale per sequence; a metric scale file (the paper rescales
with 4DiM's method, whose factors are not public) multiplies the translations: samples carry
``metric_scale`` (float32 0-d; 1.0 without a file) so results can say which units they are in.

Protocol (not stated in the paper; our choice): 16 frames at stride 2 (about 1.1 s at 30 fps).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fourds.data.datasets.base import ClipDataset, SizeSpec, first_existing, layout_error, resolve_split
from fourds.data.datasets.images import decode_rgb, image_size

log = logging.getLogger(__name__)

SPLITS = {"train": "train", "training": "train", "test": "test", "validation": "test", "val": "test", "eval": "test"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LAYOUT = """\
  ROOT/metadata/RealEstate10K/<split>/<key>.txt   (or ROOT/RealEstate10K/<split>/, ROOT/cameras/<split>/, ROOT/<split>/)
  ROOT/frames/<split>/<key>/<timestamp_us>.jpg     (or ROOT/images/<split>/<key>/), split = train | test
  ROOT/metric_scales.json                          optional {"<key>": scale}"""


def parse_camera_file(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """``(url, timestamps int64 (N,), intrinsics_norm float64 (N, 4) fx fy cx cy, w2c float64 (N, 3, 4))``."""
    from fourds.textfiles import read_text

    lines = read_text(path, "a RealEstate10K camera file (a URL line, then 19 numbers per frame)").splitlines()
    if not lines:
        raise ValueError(f"re10k: camera file {path} is empty")
    url = lines[0].strip()
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 19:
            raise ValueError(f"re10k: line {n} of {path} has {len(parts)} columns; expected 19 "
                             "(timestamp fx fy cx cy 0 0 and a row-major 3x4 world-to-camera matrix)")
        try:
            rows.append([float(p) for p in parts])
        except ValueError as err:
            raise ValueError(f"re10k: line {n} of {path} is not 19 numbers: {line[:80]!r}") from err
    if not rows:
        raise ValueError(f"re10k: camera file {path} has no camera lines after the URL")
    data = np.asarray(rows, dtype=np.float64)
    ts = np.asarray([int(line.split()[0]) for line in lines[1:] if line.strip()], dtype=np.int64)
    return url, ts, data[:, 1:5], data[:, 7:].reshape(-1, 3, 4)


def w2c_to_c2w(w2c: np.ndarray) -> np.ndarray:
    """``(N, 3, 4)`` world-to-camera → ``(N, 4, 4)`` camera-to-world (exact rigid inverse)."""
    r, t = w2c[:, :, :3], w2c[:, :, 3:]
    c2w = np.zeros((len(w2c), 4, 4), dtype=np.float64)
    c2w[:, :3, :3] = r.transpose(0, 2, 1)
    c2w[:, :3, 3:] = -r.transpose(0, 2, 1) @ t
    c2w[:, 3, 3] = 1.0
    return c2w


def load_scales(path: Path) -> dict[str, float]:
    """``{key: scale}`` from a JSON object or a ``key,scale`` CSV."""
    if path.suffix.lower() == ".json":
        from fourds.textfiles import read_json

        data = read_json(path, 're10k metric scales: a JSON object {"<sequence key>": scale}')
        if not isinstance(data, dict):
            raise ValueError(f"re10k: {path} must be a JSON object {{sequence key: scale}}")
        return {str(k): float(v) for k, v in data.items()}
    from fourds.textfiles import read_text

    text = read_text(path, "re10k metric scales: a key,scale CSV")
    rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() == "key":
        rows = rows[1:]
    return {r[0].strip(): float(r[1]) for r in rows}


class RealEstate10K(ClipDataset):
    """RealEstate10K camera poses (see the module docstring).

    Args:
        root: dataset root.
        split: ``train`` or ``test`` (``validation``/``eval`` → ``test``).
        cameras_dir / frames_dir: override the split's camera-file folder / frame folder.
        scale_file: metric scale per sequence (JSON or CSV); default ``ROOT/metric_scales.{json,csv}`` if present.
        **clip_args: see :class:`fourds.data.datasets.base.ClipDataset`.
    """

    name = "re10k"
    protocol_stride = 2

    def __init__(self, root: str | os.PathLike, split: str = "train", num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, cameras_dir: str | os.PathLike | None = None,
                 frames_dir: str | os.PathLike | None = None, scale_file: str | os.PathLike | None = None,
                 **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, **clip_args)
        self.root = Path(root)
        if not self.root.is_dir():
            raise layout_error("re10k: dataset root", self.root, LAYOUT)
        self.split = resolve_split(self.name, split, SPLITS)
        s = self.split
        cam_candidates = [self.root / "metadata" / "RealEstate10K" / s, self.root / "RealEstate10K" / s,
                          self.root / "cameras" / s, self.root / s]
        cam_dir = Path(cameras_dir) if cameras_dir else first_existing(
            [c for c in cam_candidates if c.is_dir() and any(c.glob("*.txt"))], "dir")
        if cam_dir is None or not cam_dir.is_dir():
            raise layout_error(f"re10k: the {s} camera files (<key>.txt)", cam_candidates, LAYOUT)
        frame_candidates = [self.root / "frames" / s, self.root / "images" / s, self.root / s]
        frames_root = Path(frames_dir) if frames_dir else first_existing(frame_candidates, "dir")
        if frames_root is None:
            raise layout_error(f"re10k: the {s} frame folders (<key>/<timestamp>.jpg)", frame_candidates, LAYOUT)
        self.cameras_dir, self.frames_dir = cam_dir, frames_root
        scale_path = Path(scale_file) if scale_file else first_existing(
            [self.root / "metric_scales.json", self.root / "metric_scales.csv"], "file")
        if scale_file and not Path(scale_file).is_file():
            raise layout_error("re10k: the metric scale file", scale_file, LAYOUT)
        self.scales = load_scales(scale_path) if scale_path else {}
        self.metric = bool(self.scales)
        self.keys: list[str] = []
        self._seq: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        self.missing: list[str] = []
        min_frames = 1 if self.num_frames is None else self.span()
        for cam_file in sorted(cam_dir.glob("*.txt")):
            key = cam_file.stem
            folder = frames_root / key
            if not folder.is_dir():
                self.missing.append(key)
                continue
            images = {}
            for entry in os.scandir(folder):
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in IMAGE_EXTENSIONS and stem.isdigit():
                    images[int(stem)] = entry.name
            _, ts, k_norm, w2c = parse_camera_file(cam_file)
            have = np.asarray([int(t) in images for t in ts], dtype=bool)
            order = np.argsort(ts[have], kind="stable")
            if int(have.sum()) < min_frames:
                self.skipped[key] = f"{int(have.sum())} of {len(ts)} frames on disk, a clip needs {min_frames}"
                continue
            if self.metric and key not in self.scales:
                self.skipped[key] = f"no metric scale in {scale_path}"
                continue
            ts_have = ts[have][order]
            self.keys.append(key)
            self._seq.append({"ts": ts_have, "k": k_norm[have][order], "w2c": w2c[have][order],
                              "files": [images[int(t)] for t in ts_have]})
        if self.missing:
            log.warning("re10k %s: %d sequences have a camera file but no frame folder under %s (e.g. %s)",
                        s, len(self.missing), frames_root, self.missing[0])
        if self.skipped:
            log.warning("re10k %s: %d sequences left out (e.g. %s: %s)", s, len(self.skipped),
                        *next(iter(self.skipped.items())))

    def num_items(self) -> int:
        return len(self.keys)

    def item_id(self, item: int) -> str:
        return self.keys[item]

    def frame_count_uncached(self, item: int) -> int:
        return len(self._seq[item]["ts"])

    def frame_path(self, item: int, k: int) -> Path:
        return self.frames_dir / self.keys[item] / self._seq[item]["files"][k]

    def check_item(self, item: int, quick: bool = False) -> int:
        n = self.frame_count(item)
        if not quick:
            for k in range(n):
                decode_rgb(self.frame_path(item, k))
        else:
            image_size(self.frame_path(item, 0))
        return n

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, tuple[int, int]]:
        seq = self._seq[item]
        frames, native = [], None
        for k in indices:
            arr, nat = decode_rgb(self.frame_path(item, k), size)
            if native is not None and nat != native:
                raise RuntimeError(f"re10k: frames of {self.keys[item]} differ in size ({native} vs {nat} at "
                                   f"{self.frame_path(item, k)}); re-extract them at one size")
            native = nat
            frames.append(arr)
        assert native is not None
        h, w = native
        scale = self.scales.get(self.keys[item], 1.0)
        w2c = seq["w2c"][indices].copy()
        w2c[:, :, 3] *= scale
        fx, fy, cx, cy = seq["k"][indices[0]]
        k = np.array([[w * fx, 0.0, w * cx], [0.0, h * fy, h * cy], [0.0, 0.0, 1.0]])
        return {
            "video": torch.from_numpy(np.stack(frames)),
            "intrinsics": torch.from_numpy(k).float(),
            "cam_to_world": torch.from_numpy(w2c_to_c2w(w2c)).float(),
            "timestamps": torch.from_numpy(seq["ts"][indices].copy()),
            "metric_scale": torch.tensor(scale, dtype=torch.float32),
        }, native
