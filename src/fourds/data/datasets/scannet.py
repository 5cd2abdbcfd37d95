"""ScanNet v2 RGB-D scans: raw ``.sens`` files or the common exported folders; depth in metres.

Layout (per scene, ``.sens`` or an export made with ``SensReader/python/reader.py --export_color_images
--export_depth_images --export_poses --export_intrinsics``)::

    ROOT/scannetv2_<split>.txt                  scene list, split = train | val | test
                                                (also ROOT/Tasks/Benchmark/ or ROOT/splits/)
    ROOT/scans/<scene>/<scene>.sens             raw scan (test scenes: ROOT/scans_test/)
    ROOT/scans/<scene>/color/<i>.jpg            or the export: frames i = 0..N-1, no zero padding
    ROOT/scans/<scene>/depth/<i>.png            16-bit PNG, millimetres (depth shift 1000), 0 = invalid
    ROOT/scans/<scene>/pose/<i>.txt             4x4 camera-to-world
    ROOT/scans/<scene>/intrinsic/intrinsic_color.txt (+ intrinsic_depth.txt)   4x4
    (ROOT/<scene>/... is accepted too)

``source="auto"`` uses the export when ``color/`` exists, else the ``.sens`` file, which is parsed
here (:mod:`fourds.data.datasets.sens`) and read frame by frame. Frames are numbered numerically
(``10.jpg`` after ``9.jpg``). Frames whose pose is not finite (ScanNet has ``-inf`` poses) are
skipped; ``invalid_poses(item)`` counts them. Clips index the remaining frames (the stride steps over
*available* frames, so an export made with ``--frame_skip k`` has k times the time step).

Samples: ``video`` uint8 ``(T, H, W, 3)`` on the colour grid (``grid="color"``, 1296x968 for real scans)
or the depth grid (``grid="depth"``, 640x480: colour is resized to it), ``depth`` float32 ``(T, H, W)``
metres = raw / depth_shift, resized nearest-neighbour to the same grid, 0 where invalid; ``intrinsics``
(3, 3) of that grid, ``cam_to_world`` ``(T, 4, 4)``, ``id`` = scene name. Protocol (not stated in the
paper; our choice): 16 frames at stride 2 (about 1 s at 30 fps); the task masks depth outside (0.001, 10) m.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fourds.data.datasets.base import (
    LRU, ClipDataset, SizeSpec, first_existing, layout_error, natural_key, output_hw, resolve_split,
)
from fourds.data.datasets.images import decode_depth_png, decode_rgb, image_size
from fourds.data.datasets.sens import SensFile

log = logging.getLogger(__name__)

SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "valid": "val", "eval": "val",
          "test": "test"}
LAYOUT = """\
  ROOT/scannetv2_<split>.txt          (or ROOT/Tasks/Benchmark/, ROOT/splits/), split = train | val | test
  ROOT/scans/<scene>/<scene>.sens     raw scan, or the SensReader export:
  ROOT/scans/<scene>/{color/<i>.jpg, depth/<i>.png (uint16 mm), pose/<i>.txt, intrinsic/intrinsic_color.txt}"""


def read_matrix(path: Path) -> np.ndarray:
    """A 4x4 text matrix (``np.savetxt`` rows; ``-inf``/``nan`` allowed)."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except (OSError, ValueError) as err:  # the error may quote a token of the file: keep it short
        raise RuntimeError(f"scannet: cannot read the 4x4 matrix {path}: {str(err)[:120]}") from None
    if values.size != 16:
        raise RuntimeError(f"scannet: {path} holds {values.size} numbers; expected a 4x4 matrix")
    return values.reshape(4, 4)


class _Export:
    """One exported scene folder (``color/``, ``depth/``, ``pose/``, ``intrinsic/``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        color = {os.path.splitext(n)[0]: n for n in os.listdir(folder / "color") if os.path.splitext(n)[0].isdigit()}
        self.stems = sorted(color, key=natural_key)
        self.color = color
        for sub in ("depth", "pose"):
            if not (folder / sub).is_dir():
                raise layout_error(f"scannet: the {sub}/ folder of {folder.name}", folder / sub, LAYOUT)
        self.poses = np.stack([read_matrix(folder / "pose" / f"{s}.txt") for s in self.stems]) if self.stems else np.zeros((0, 4, 4))
        k = first_existing([folder / "intrinsic" / "intrinsic_color.txt"], "file")
        if k is None:
            raise layout_error(f"scannet: intrinsic/intrinsic_color.txt of {folder.name}", folder / "intrinsic", LAYOUT)
        self.k_color = read_matrix(k)[:3, :3]
        kd = folder / "intrinsic" / "intrinsic_depth.txt"
        self.k_depth = read_matrix(kd)[:3, :3] if kd.is_file() else None

    def color_path(self, j: int) -> Path:
        return self.folder / "color" / self.color[self.stems[j]]

    def depth_path(self, j: int) -> Path:
        return self.folder / "depth" / f"{self.stems[j]}.png"


class ScanNet(ClipDataset):
    """ScanNet depth (see the module docstring).

    Args:
        root: dataset root.
        split: ``train``, ``val`` (``validation``/``eval``) or ``test``.
        source: ``auto``, ``sens`` or ``exported``.
        grid: ``color`` (default) or ``depth``: the pixel grid of every returned frame.
        depth_shift: raw depth units per metre for exports (1000: millimetres); ``.sens`` files carry theirs.
        scenes: optional explicit scene list (instead of the split file).
        **clip_args: see :class:`fourds.data.datasets.base.ClipDataset`.
    """

    name = "scannet"
    protocol_stride = 2

    def __init__(self, root: str | os.PathLike, split: str = "train", num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, source: str = "auto", grid: str = "color",
                 depth_shift: float = 1000.0, scenes: list[str] | None = None, **clip_args: Any) -> None:
        super().__init__(num_frames, stride, start, size, **clip_args)
        self.root = Path(root)
        if not self.root.is_dir():
            raise layout_error("scannet: dataset root", self.root, LAYOUT)
        if source not in ("auto", "sens", "exported") or grid not in ("color", "depth"):
            raise ValueError(f"scannet: source must be auto|sens|exported and grid color|depth; got {source!r}, {grid!r}")
        self.split = resolve_split(self.name, split, SPLITS)
        self.source, self.grid, self.depth_shift = source, grid, float(depth_shift)
        if scenes is None:
            cands = [d / f"scannetv2_{self.split}.txt" for d in (self.root, self.root / "Tasks" / "Benchmark", self.root / "splits")]
            split_file = first_existing(cands, "file")
            if split_file is None:
                raise layout_error(f"scannet: the {self.split} scene list", cands, LAYOUT)
            from fourds.textfiles import read_text

            scenes = [ln.strip() for ln in read_text(split_file, "a ScanNet scene list (one scene id per line)")
                      .splitlines() if ln.strip()]
        self.scenes: list[str] = []
        self.folders: list[Path] = []
        self.missing: list[str] = []
        bases = [self.root / "scans", self.root / "scans_test", self.root]
        for scene in scenes:
            folder = None
            for b in bases:
                f = b / scene
                if (source != "sens" and (f / "color").is_dir()) or (source != "exported" and (f / f"{scene}.sens").is_file()):
                    folder = f
                    break
            if folder is None:
                self.missing.append(scene)
                continue
            self.scenes.append(scene)
            self.folders.append(folder)
        if self.missing:
            log.warning("scannet %s: %d of %d scenes not found (e.g. %s under %s)", self.split, len(self.missing),
                        len(scenes), self.missing[0], bases[0])
        self._scan = LRU(4)
        self._valid = LRU(64)

    def is_exported(self, item: int) -> bool:
        return self.source != "sens" and (self.folders[item] / "color").is_dir()

    def scan(self, item: int) -> SensFile | _Export:
        """The parsed ``.sens`` frame table or the export's file lists (cached per process)."""
        def make() -> SensFile | _Export:
            if self.is_exported(item):
                return _Export(self.folders[item])
            return SensFile(self.folders[item] / f"{self.scenes[item]}.sens")
        return self._scan.get(item, make)

    def valid_frames(self, item: int) -> np.ndarray:
        """Indices (into the scan's frames) of the frames with a finite pose."""
        def make() -> np.ndarray:
            s = self.scan(item)
            poses = s.camera_to_world if isinstance(s, SensFile) else s.poses
            return np.flatnonzero(np.isfinite(poses).reshape(len(poses), -1).all(axis=1))
        return self._valid.get(item, make)

    def invalid_poses(self, item: int) -> int:
        """Frames of ``item`` skipped because their pose is not finite."""
        s = self.scan(item)
        total = s.num_frames if isinstance(s, SensFile) else len(s.stems)
        return total - len(self.valid_frames(item))

    def num_items(self) -> int:
        return len(self.scenes)

    def item_id(self, item: int) -> str:
        return self.scenes[item]

    def frame_count_uncached(self, item: int) -> int:
        n = len(self.valid_frames(item))
        if n == 0:
            raise RuntimeError(f"scannet: scene {self.scenes[item]} has no frame with a finite pose")
        return n

    def check_item(self, item: int, quick: bool = False) -> int:
        n = self.frame_count(item)
        if not quick:  # every frame, 16 at a time (bounded memory)
            for a in range(0, n, 16):
                self.read(item, list(range(a, min(n, a + 16))), 64)
        return n

    def read(self, item: int, indices: list[int], size: SizeSpec) -> tuple[dict, tuple[int, int]]:
        s = self.scan(item)
        frames = [int(x) for x in self.valid_frames(item)[indices]]
        sens = isinstance(s, SensFile)
        depths: dict[int, np.ndarray] = {}
        raw_colors: dict[int, bytes] = {}
        with open(s.path, "rb") if sens else _nullcontext() as f:  # type: ignore[union-attr]
            for j in dict.fromkeys(frames):
                if sens:
                    c_bytes, d_bytes = s.read_frame(j, f)  # type: ignore[union-attr]
                    raw_colors[j] = c_bytes
                    depths[j] = s.decode_depth(d_bytes, j)  # type: ignore[union-attr]
                else:
                    depths[j] = decode_depth_png(s.depth_path(j))  # type: ignore[union-attr]
        depth_hw = next(iter(depths.values())).shape
        if sens:
            color_hw, shift = s.header.color_size, s.header.depth_shift  # type: ignore[union-attr]
            k_color = s.header.intrinsic_color[:3, :3].astype(np.float64)  # type: ignore[union-attr]
            k_depth = s.header.intrinsic_depth[:3, :3].astype(np.float64)  # type: ignore[union-attr]
            poses = s.camera_to_world  # type: ignore[union-attr]
        else:
            color_hw, shift = image_size(s.color_path(frames[0])), self.depth_shift  # type: ignore[union-attr]
            k_color, k_depth, poses = s.k_color, s.k_depth, s.poses  # type: ignore[union-attr]
        if self.grid == "color":
            native, k = tuple(color_hw), k_color
        else:
            native = tuple(depth_hw)
            k = k_depth if k_depth is not None else _scale_k(k_color, color_hw, native)
        out_hw = output_hw(native, size)  # type: ignore[arg-type]
        colors: dict[int, np.ndarray] = {}
        for j in dict.fromkeys(frames):
            if sens:
                colors[j], _ = s.decode_color(raw_colors.pop(j), j, out_hw)  # type: ignore[union-attr]
            else:
                colors[j], _ = decode_rgb(s.color_path(j), out_hw)  # type: ignore[union-attr]
        video = torch.from_numpy(np.stack([colors[j] for j in frames]))
        # Raw depth on its sensor grid; the base resizes it (nearest) onto the frame grid.
        depth = torch.from_numpy(np.stack([depths[j] for j in frames]).astype(np.float32) / np.float32(shift))
        return {"video": video, "depth": depth, "intrinsics": torch.from_numpy(np.asarray(k, np.float64)).float(),
                "cam_to_world": torch.from_numpy(np.asarray(poses[frames], np.float64)).float()}, native  # type: ignore[return-value]


def _scale_k(k: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    k = k.copy()
    k[0] *= dst[1] / src[1]
    k[1] *= dst[0] / src[0]
    return k


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
