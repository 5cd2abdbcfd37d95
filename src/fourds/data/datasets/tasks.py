"""The dataset each evaluation task trains and evaluates on, at the paper's protocol (App. A.2).

``task_dataset(task_name, split, data_root, **kw)``: ``split="train"`` gives the training set,
``"validation"``, ``"val"``, ``"eval"`` and ``"test"`` all give the task's *labelled evaluation split*
(the public test sets of SSv2 and K700 have no labels, RE10k's evaluation split is called ``test``);
use :func:`fourds.data.datasets.open_dataset` for any other split. Keyword arguments override the
protocol (``num_frames``, ``stride``, ``size``, reader options); ``<dataset>_root`` overrides the root
of one dataset (``movi_e_root=`` for the Perception Test task, which trains on Kubric MOVi-E).

**Frames.** ``fourds.tasks`` takes each clip's frames out of a sample itself (``frame_stride`` counts
frames *of the sample*), so by default (``frames="span"``) a sample holds the consecutive native
frames of exactly one protocol clip: ``(num_frames - 1) * stride + 1`` of them (31 for 16 frames at
stride 2), from which the task's window at its stride is that clip. ``frames="clip"`` yields the
``num_frames`` strided frames instead (for consumers that use a sample as the clip). Whole-video samples
(K700 evaluation) are the same in both modes. Task samples leave out ``frame_indices`` and
``track_ids`` (per-frame / per-track bookkeeping the tasks' re-windowing and padding do not carry);
``ds.protocol_clip`` records ``(num_frames, stride)``.

Every training set implements ``sample(index, generator)``: a random window of the protocol clip's
span, decoding only that window; its ``__getitem__`` is the deterministic evaluation-style sample
(used for the held-out selection slice).

| task | train | evaluation | clips |
|---|---|---|---|
| ssv2 | ssv2 train | ssv2 validation | 16 x stride 2; eval one centred clip |
| k700 | k700 train | k700 val | windows 16 x 2; samples are whole clips (short side 256) that the task loops to 250 frames (7 clips) |
| re10k | re10k train | re10k test | 16 x 2 (our choice); eval one centred clip |
| perception_test | movi_e train (16 x 1 windows of 24) | perception_test valid | eval every non-overlapping 16 x 4 clip, 256 x 256 |
| waymo | waymo training | waymo validation | 16 x 2 at 10 Hz = 5 fps, 256 x 384; eval 4096 seeded random windows |
| scannet | scannet train | scannet val | 16 x 2 (our choice), depth grid (640 x 480); eval one centred clip |

When ``data_root`` holds a sub-folder named after the dataset (``ROOT/movi_e``, ``ROOT/perception_test``)
that sub-folder is used, so one folder can hold both datasets of a task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fourds.data.clips import clip_span
from fourds.data.datasets.base import ClipDataset, DatasetLayoutError

TRAIN_SPLITS = ("train", "training")
EVAL_SPLITS = ("validation", "val", "valid", "eval", "test", "testing")

# task -> {"train"/"eval": (dataset, split, options)}
TASK_PROTOCOLS: dict[str, dict[str, tuple[str, str, dict[str, Any]]]] = {
    "ssv2": {
        "train": ("ssv2", "train", {"num_frames": 16, "stride": 2, "start": "center"}),
        "eval": ("ssv2", "validation", {"num_frames": 16, "stride": 2, "start": "center"}),
    },
    "k700": {
        "train": ("k700", "train", {"num_frames": None, "stride": 1, "size": 256, "window": (16, 2)}),
        "eval": ("k700", "val", {"num_frames": None, "stride": 1, "size": 256}),
    },
    "re10k": {
        "train": ("re10k", "train", {"num_frames": 16, "stride": 2, "start": "center"}),
        "eval": ("re10k", "test", {"num_frames": 16, "stride": 2, "start": "center"}),
    },
    "perception_test": {
        "train": ("movi_e", "train", {"num_frames": 16, "stride": 1, "start": 0}),
        "eval": ("perception_test", "valid", {"num_frames": 16, "stride": 4, "clips": "all", "size": (256, 256)}),
    },
    "waymo": {
        "train": ("waymo", "training", {"num_frames": 16, "stride": 2, "start": "center", "size": (256, 384)}),
        "eval": ("waymo", "validation", {"num_frames": 16, "stride": 2, "num_samples": 4096, "seed": 0,
                                         "size": (256, 384)}),
    },
    "scannet": {
        "train": ("scannet", "train", {"num_frames": 16, "stride": 2, "start": "center", "grid": "depth"}),
        "eval": ("scannet", "val", {"num_frames": 16, "stride": 2, "start": "center", "grid": "depth"}),
    },
}


def _root_for(dataset: str, data_root: Any, kw: dict[str, Any]) -> Path:
    override = kw.pop(f"{dataset}_root", None)
    if override is not None:
        return Path(override)
    if isinstance(data_root, dict):
        if dataset not in data_root:
            raise DatasetLayoutError(f"data_root has no entry for {dataset!r} (keys: {sorted(data_root)})")
        return Path(data_root[dataset])
    root = Path(data_root)
    return root / dataset if (root / dataset).is_dir() else root


def task_dataset(task_name: str, split: str, data_root: str | os.PathLike | dict | None, **kw: Any) -> ClipDataset:
    """The dataset task ``task_name`` trains (``split="train"``) or evaluates on (see the module docstring).

    Args:
        task_name: ``ssv2``, ``k700``, ``re10k``, ``perception_test``, ``waymo`` or ``scannet``.
        split: ``train``, or ``validation``/``val``/``eval``/``test`` for the labelled evaluation split.
        data_root: the dataset folder (``fourds probe --data-root``), or ``{dataset: folder}``.
        **kw: overrides of the protocol options and ``<dataset>_root``.

    Raises:
        DatasetLayoutError: no ``data_root``, or the data is not where the layout expects it.
        ValueError: unknown task or split.
    """
    from fourds.data.datasets import open_dataset

    if task_name not in TASK_PROTOCOLS:
        raise ValueError(f"no real-data protocol for task {task_name!r}; known: {sorted(TASK_PROTOCOLS)}")
    key = split.strip().lower()
    if key in TRAIN_SPLITS:
        phase = "train"
    elif key in EVAL_SPLITS:
        phase = "eval"
    else:
        raise ValueError(f"task {task_name}: split {split!r}: use 'train' or one of {EVAL_SPLITS} (the labelled "
                         "evaluation split); other splits: fourds.data.datasets.open_dataset")
    dataset, ds_split, options = TASK_PROTOCOLS[task_name][phase]
    kw = dict(kw)
    if data_root is None and f"{dataset}_root" not in kw:
        raise DatasetLayoutError(
            f"task {task_name!r} reads the real {dataset} dataset: pass its folder with "
            f"`fourds probe --task {task_name} --data-root DIR` (or data_kwargs={{'data_root': DIR}}); "
            "docs/datasets.md describes the layout")
    root = _root_for(dataset, data_root, kw)
    for other in TASK_PROTOCOLS:  # roots meant for the other dataset of the task are not reader options
        for _, (name, _, _) in TASK_PROTOCOLS[other].items():
            if name != dataset:
                kw.pop(f"{name}_root", None)
    frames = kw.pop("frames", "span")
    if frames not in ("span", "clip"):
        raise ValueError(f"task {task_name}: frames={frames!r}: choose 'span' (native frames of one clip) or 'clip'")
    args = {**options, **kw}
    if kw.get("num_frames") is not None and "window" in options and "window" not in kw:
        # An explicit clip length replaces the whole-video + window scheme (at the window's stride).
        if "stride" not in kw:
            args["stride"] = options["window"][1]
        args.pop("window")
    if phase == "train" and args.get("num_frames") is None and "window" not in args:
        raise ValueError(f"task {task_name}: num_frames=None in training needs window=(frames, stride)")
    protocol = (args.get("num_frames"), args.get("stride"))
    if frames == "span":
        if args.get("num_frames") is not None:
            args["num_frames"], args["stride"] = clip_span(args["num_frames"], args["stride"]), 1
        if args.get("window") is not None:
            args["window"] = (clip_span(*args["window"]), 1)
    args.setdefault("drop_keys", ("frame_indices", "track_ids"))
    ds = open_dataset(dataset, root, ds_split, **args)
    ds.protocol_clip = protocol if protocol[0] is not None else tuple(options.get("window", protocol))
    return ds
