"""Kubric MOVi-E point tracks in the fourds export format (also what ``fourds synth export`` writes).

Format ("fourds point-track export v1"), one ``.npz`` per video::

    ROOT/<split>/<index:06d>.npz      split = train | validation | test  (any *.npz, sorted by name)
      video          uint8   (T, H, W, 3)
      target_points  float32 (P, T, 2)   (x, y) raster pixels: pixel (i, j) covers [j, j+1) x [i, i+1)
      occluded       bool    (P, T)      True = occluded (converted once: visible = ~occluded)
      query_points   float32 (P, 3)      optional (t, y, x): t an integer frame index, y, x raster pixels

``scripts/export_movi_e.py`` writes it from TFDS ``movi_e/256x256`` with Kubric's own track code
(``add_tracks`` without random crop, many tracks per video), so fourds can crop, subsample tracks and
pick queries in PyTorch. Training (the paper, App. A.2.4): 16 frames (stride 1) out of 24, queries on
the first frame, tracks not visible there dropped; the task then samples 64 tracks and the random crop.

Samples: ``video`` uint8, ``tracks`` ``(P, T, 2)``, ``visible`` ``(P, T)``, ``query_points`` per
:mod:`fourds.data.datasets.points` (default ``clip_start``; ``stored`` uses the file's queries),
``track_ids``, ``id`` (file stem). Memory: one file is read per sample (a MOVi-E video is ~5 MB).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fourds.data.datasets.base import ClipDataset, SizeSpec, layout_error, output_hw, resolve_split
from fourds.data.datasets.points import check_query_mode, clip_tracks
from fourds.data.geometry import resize_video

SPLITS = {"train": "train", "training": "train", "validation": "validation", "val": "validation", "valid": "validation",
          "eval": "validation", "test": "test"}
REQUIRED = ("video", "target_points", "occluded")
LAYOUT = """\
  ROOT/<split>/<index:06d>.npz   split = train | validation | test, keys:
    video uint8 (T, H, W, 3); target_points float32 (P, T, 2) (x, y) px; occluded bool (P, T);
    optional query_points float32 (P, 3) (t, y, x)
  (written by scripts/export_movi_e.py or `fourds synth export`)"""


_NPZ_ERRORS = (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, KeyError)  # damaged/foreign files


def _unreadable(path: Path, err: BaseException) -> RuntimeError:
    # numpy calls any file that is not a zip "pickled (object) data": say what the file looks like instead
    from fourds.textfiles import looks_like

    return RuntimeError(f"movi_e: cannot read {path} as an .npz export ({type(err).__name__}: {str(err)[:100]}); "
                        f"it looks like {looks_like(path)}. Export it again (scripts/export_movi_e.py)")


def _arrays(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The members ``keys`` (default: all) of the .npz at ``path``, present ones only."""
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            return {k: z[k] for k in z.files if keys is None or k in keys}
    except _NPZ_ERRORS as err:
        raise _unreadable(path, err) from None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one export file, checked against the format."""
    data = _arrays(path)
    files = list(data)
    missing = [k for k in REQUIRED if k not in files]
    if missing:
        raise ValueError(f"movi_e: {path} lacks {missing} (has {sorted(files)[:20]}).\nExpected:\n{LAYOUT}")
    v, tp, occ = data["video"], data["target_points"], data["occluded"]
    if v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"movi_e: {path} video must be uint8 (T, H, W, 3), got {v.dtype} {v.shape}")
    t = v.shape[0]
    if tp.ndim != 3 or tp.shape[1:] != (t, 2) or occ.shape != tp.shape[:2]:
        raise ValueError(f"movi_e: {path} target_points {tp.shape} / occluded {occ.shape} do not match (P, {t}, 2) / (P, {t})")
    if "query_points" in data and data["query_points"].shape != (tp.shape[0], 3):
        raise ValueError(f"movi_e: {path} query_points {data['query_points'].shape} must be ({tp.shape[0]}, 3)")
    return data


class MoviE(ClipDataset):
    """Kubric MOVi-E point-track exports (see the module docstring).

    Args:
        root: export root (holding ``train/``, ``validation/``, ...), or a split folder itself.
        split: ``train``, ``validation`` or ``test``.
        query: ``clip_start`` (default), ``first``, ``stored`` or ``none``.
        **clip_args: see :class:`fourds.data.datasets.base.ClipDataset`.
    """

    name = "movi_e"
    protocol_stride = 1

    def __init__(self, root: str | os.PathLike, split: str = "train", num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, query: str = "clip_start", **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, **clip_args)
        self.root = Path(root)
        self.split = resolve_split(self.name, split, SPLITS)
        self.query = check_query_mode(query)
        folder = self.root / self.split
        if not folder.is_dir() and self.root.is_dir() and any(self.root.glob("*.npz")):
            folder = self.root
        if not folder.is_dir():
            raise layout_error(f"movi_e: the {self.split} folder", self.root / self.split, LAYOUT)
        self.folder = folder
        # Not the temporary files of an interrupted export (".000001.tmp.npz", "000001.tmp.npz").
        self.files = sorted(p for p in folder.glob("*.npz") if not p.name.startswith(".") and not p.name.endswith(".tmp.npz"))
        if not self.files:
            raise layout_error(f"movi_e: .npz files of the {self.split} split", folder / "*.npz", LAYOUT)

    def num_items(self) -> int:
        return len(self.files)

    def item_id(self, item: int) -> str:
        return self.files[item].stem

    def frame_count_uncached(self, item: int) -> int:
        data = _arrays(self.files[item], ("occluded",))  # reads one (small) member only
        if "occluded" not in data:
            raise ValueError(f"movi_e: {self.files[item]} lacks 'occluded'.\nExpected:\n{LAYOUT}")
        occluded = data["occluded"]
        if occluded.ndim != 2:
            raise ValueError(f"movi_e: {self.files[item]} occluded must be (P, T), got {occluded.shape}")
        return int(occluded.shape[1])

    def check_item(self, item: int, quick: bool = False) -> int:
        return self.frame_count(item) if quick else read_npz(self.files[item])["video"].shape[0]

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, tuple[int, int]]:
        data = read_npz(self.files[item])
        video = data["video"]
        hw = (video.shape[1], video.shape[2])
        out = clip_tracks(data["target_points"], ~data["occluded"].astype(bool), indices, self.query,
                          data.get("query_points"))
        frames = torch.from_numpy(np.ascontiguousarray(video[indices]))
        out["video"] = resize_video(frames, output_hw(hw, size)) if size is not None else frames
        return out, hw
