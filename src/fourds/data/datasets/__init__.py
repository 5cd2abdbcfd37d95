"""Readers of the real datasets of the paper's evaluation suite, in their distribution formats.

``open_dataset(name, root, split, num_frames=16, stride=None, start=0, size=None, **options)`` returns a
map-style dataset whose sample ``i`` is the deterministic clip of video ``i`` starting at frame
``start`` (``"center"``: the centred clip) with the dataset's protocol stride unless given, at the
stored resolution unless ``size`` (an int short side or ``(h, w)``). Samples are dicts in the
conventions of ``SyntheticScenes`` / ``docs/conventions.md``: ``video`` uint8 ``(T, H, W, 3)`` (convert with
:func:`fourds.data.to_float`), ``id`` (str), and per dataset ``label`` int64 0-d; ``intrinsics`` (3, 3)
pixels and ``cam_to_world`` (T, 4, 4) OpenCV; ``tracks`` (P, T, 2) (x, y) pixels with ``visible``
(P, T) and ``query_points`` (P, 3) (t, y, x); ``boxes`` (O, T, 4) (x0, y0, x1, y1) pixels with
``box_valid`` (O, T); ``depth`` (T, H, W) metres. See :mod:`fourds.data.datasets.base` for the clip
options every reader shares (``clips``, ``num_samples``, ``window``, ``short_policy``).

:func:`task_dataset` gives each evaluation task its training / evaluation dataset at the paper's
protocol (:mod:`fourds.data.datasets.tasks`). ``docs/datasets.md`` describes each layout.
"""

from __future__ import annotations

import os
from typing import Any

from fourds.data.datasets.base import ClipDataset, DatasetLayoutError, SizeSpec
from fourds.data.datasets.kinetics import Kinetics700
from fourds.data.datasets.movi_e import MoviE
from fourds.data.datasets.perception_test import PerceptionTest
from fourds.data.datasets.re10k import RealEstate10K
from fourds.data.datasets.scannet import ScanNet
from fourds.data.datasets.ssv2 import SSv2
from fourds.data.datasets.tapvid import TapVidDavis, TapVidKinetics
from fourds.data.datasets.waymo import WaymoOpen

DATASETS: dict[str, type[ClipDataset]] = {
    "ssv2": SSv2,
    "k700": Kinetics700,
    "re10k": RealEstate10K,
    "perception_test": PerceptionTest,
    "tapvid_davis": TapVidDavis,
    "tapvid_kinetics": TapVidKinetics,
    "movi_e": MoviE,
    "waymo": WaymoOpen,
    "scannet": ScanNet,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`open_dataset`."""
    return list(DATASETS)


def open_dataset(name: str, root: str | os.PathLike, split: str, num_frames: int | None = 16, stride: int | None = None,
                 start: int | str = 0, size: SizeSpec = None, **options: Any) -> ClipDataset:
    """Open dataset ``name`` at ``root`` (see the module docstring and ``docs/datasets.md``).

    Raises:
        ValueError: unknown name, split or option.
        DatasetLayoutError: the root or a file the layout needs is missing (the message shows the layout).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list_datasets()}")
    if root is None:
        raise DatasetLayoutError(f"{name}: no dataset root given (root=None); pass the folder that holds the data")
    try:
        return DATASETS[name](root, split, num_frames=num_frames, stride=stride, start=start, size=size, **options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ValueError(f"{name}: {err}") from err
        raise


from fourds.data.datasets.tasks import TASK_PROTOCOLS, task_dataset  # noqa: E402  (uses open_dataset)

__all__ = ["DATASETS", "TASK_PROTOCOLS", "ClipDataset", "DatasetLayoutError", "list_datasets", "open_dataset",
           "task_dataset"]
