"""Writing synthetic scenes to disk in the point-track ``.npz`` format (fourds export v1).

The format is the one the Kubric MOVi-E reader reads (``../shared/DATASETS.md`` section 5), so the
synthetic export exercises the same code path as real data. One file per video,
``{out}/{split}/{index:06d}.npz``:

- ``video`` uint8 ``(T, H, W, 3)`` RGB
- ``target_points`` float32 ``(N, T, 2)`` (x, y) in raster pixels (pixel i spans [i, i + 1), its
  centre is i + 0.5), given in every frame, occluded or not
- ``occluded`` bool ``(N, T)`` (True = not visible; ``~visible`` of the dataset)
- ``query_points`` float32 ``(N, 3)`` ``(t, y, x)``: ``t`` is an integer frame index (stored as
  float), ``y, x`` raster pixels; here always frame 0 at a pixel centre

With ``extras=True`` the file also holds the rest of the ground truth under the dataset's key names
(``depth``, ``intrinsics``, ``cam_to_world``, ``boxes``, ``box_valid``, ``track_object``,
``segmentation``, ``label``). ``{out}/{split}/meta.json`` records the format and the generator settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from fourds.data.synthetic.dataset import SyntheticScenes
from fourds.fileio import atomic_path, write_text_atomic

FORMAT = "fourds-point-tracks-v1"
EXTRA_KEYS = ("depth", "intrinsics", "cam_to_world", "boxes", "box_valid", "track_object", "segmentation", "label")


def to_point_track_arrays(sample: dict[str, Tensor], extras: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one ``.npz`` file from a :class:`SyntheticScenes` sample."""
    video = (sample["video"].clamp(0, 1) * 255).round().to(torch.uint8)
    arrays = {
        "video": video.numpy(),
        "target_points": sample["tracks"].numpy().astype(np.float32),
        "occluded": (~sample["visible"]).numpy(),
        "query_points": sample["query_points"].numpy().astype(np.float32),
    }
    if extras:
        arrays.update({k: sample[k].numpy() for k in EXTRA_KEYS})
    return arrays


def export_point_tracks(
    dataset: SyntheticScenes,
    out: str | os.PathLike,
    split: str = "train",
    indices: Iterable[int] | None = None,
    extras: bool = False,
    compress: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Write samples of ``dataset`` (all, or ``indices``) to ``{out}/{split}/{index:06d}.npz``.

    Returns the written paths. Files are written to a temporary name and renamed, so an interrupted
    export never leaves a truncated ``.npz`` behind.
    """
    folder = Path(out) / split
    folder.mkdir(parents=True, exist_ok=True)
    chosen = list(range(len(dataset)) if indices is None else indices)
    meta = {
        "format": FORMAT,
        "files": "{index:06d}.npz",
        "keys": {
            "video": "uint8 (T, H, W, 3) RGB",
            "target_points": "float32 (N, T, 2) (x, y) raster pixels: pixel i spans [i, i+1), centre i+0.5",
            "occluded": "bool (N, T), True = not visible",
            "query_points": "float32 (N, 3) (t, y, x): t integer frame index, y, x raster pixels",
        },
        "extras": list(EXTRA_KEYS) if extras else [],
        "generator": {
            "name": "fourds.data.synthetic.SyntheticScenes", "seed": dataset.seed, "num_frames": dataset.num_frames,
            "height": dataset.height, "width": dataset.width, "num_tracks": dataset.num_tracks,
            "max_objects": dataset.max_objects, "num_classes": dataset.num_classes,
        },
        "count": len(chosen),
    }
    write_text_atomic(folder / "meta.json", json.dumps(meta, indent=2) + "\n")
    save = np.savez_compressed if compress else np.savez
    paths = []
    for index in tqdm(chosen, desc=f"export {split}", unit="clip", disable=not progress):
        arrays = to_point_track_arrays(dataset.sample(int(index)), extras)
        path = folder / f"{int(index):06d}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            save(f, **arrays)
        paths.append(path)
    return paths
