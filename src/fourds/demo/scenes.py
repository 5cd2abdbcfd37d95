"""A fixed pool of procedural scenes, rendered once into the demo folder and shared by every stage.

Rendering is the demo's most expensive data step (a ray-cast per pixel per frame, plus the point
tracks), so each split is rendered once, in chunks (``<dir>/<split>/chunk_XXXX.safetensors``, written
atomically, so an interrupted run re-renders at most one chunk), and held in memory afterwards:
pretraining reads the ``train`` videos, every probe reads ``train`` and ``test`` samples.

The scenes are those of the synthetic tasks' own splits (``SyntheticScenes`` with the seed
``task.split_seed(split)``), so ``pool[i]`` shows the same clip as ``get_task("synth_depth").dataset(split)[i]``
(only the number of point tracks may differ). Samples keep the keys the five synthetic tasks read;
``video`` is stored as uint8 (the probe converts with :func:`fourds.data.to_float`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fourds.data.pretrain import to_uint8
from fourds.models.io import save_weights_atomic, write_json_atomic

log = logging.getLogger(__name__)

#: The scene fields the synthetic tasks read (``video`` + each task's ``sample_keys``).
POOL_KEYS = ("video", "depth", "intrinsics", "cam_to_world", "tracks", "visible", "track_object", "boxes",
             "box_valid", "label")


class ScenePool(Dataset):
    """Map-style dataset over rendered samples held in memory (each a dict of tensors, see module doc)."""

    def __init__(self, samples: list[dict[str, Tensor]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return dict(self.samples[int(index)])

    def videos(self) -> list[Tensor]:
        """Every clip's frames ``(T, H, W, 3)`` uint8 (for pretraining)."""
        return [s["video"] for s in self.samples]


_DATASET_OPTIONS = ("max_objects", "min_objects", "num_classes", "object_track_fraction", "occlusion_tolerance",
                    "min_box_pixels", "shadows")


def _scene_dataset(split_seed: int, count: int, frames: int, size: int, num_tracks: int, options: dict[str, Any]) -> Any:
    """``SyntheticScenes``; ``options`` holds its own keyword arguments and any :class:`SceneConfig` field
    (plain values, so the settings stay JSON in ``meta.json``)."""
    from fourds.data.synthetic import SceneConfig, SyntheticScenes

    fields = {f.name for f in dataclasses.fields(SceneConfig)}
    unknown = set(options) - fields - set(_DATASET_OPTIONS)
    if unknown:
        raise ValueError(f"unknown scene options {sorted(unknown)}; valid: {sorted(fields | set(_DATASET_OPTIONS))}")
    kwargs = {k: v for k, v in options.items() if k in _DATASET_OPTIONS}
    scene = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k not in _DATASET_OPTIONS}
    config = SceneConfig(**{k: v for k, v in scene.items() if k not in ("max_objects", "min_objects", "num_classes")})
    return SyntheticScenes(num_frames=frames, height=size, width=size, seed=split_seed, num_samples=count,
                           num_tracks=num_tracks, config=config, **kwargs)


def render_pool(folder: str | Path, split_seed: int, count: int, frames: int, size: int, num_tracks: int,
                options: dict[str, Any] | None = None, chunk: int = 32, workers: int = 0,
                progress: Callable[[int], None] | None = None) -> ScenePool:
    """Render (or load what is already rendered of) ``count`` scenes into ``folder``.

    Args:
        folder: the split's folder; ``meta.json`` records the settings, and a folder rendered with other
            settings is refused rather than mixed.
        split_seed: the scenes' seed (``task.split_seed(split)``).
        count: scenes in the split.
        frames, size: clip length and square frame size.
        num_tracks: point tracks per scene.
        options: further ``SyntheticScenes`` options (objects, classes, shadows).
        chunk: scenes per file.
        workers: render in this many worker processes (each scene is a pure function of its index, so
            the result does not depend on it; the renderer is Python-bound, so 2 workers on 2 cores
            render about twice as fast as one process).
        progress: called with the number of scenes just rendered or loaded (a progress bar's update).
    """
    folder = Path(folder)
    options = dict(options or {})
    meta = {"seed": split_seed, "count": count, "frames": frames, "size": size, "num_tracks": num_tracks,
            "options": options, "chunk": chunk, "keys": list(POOL_KEYS)}
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != json.loads(json.dumps(meta)):
            raise ValueError(
                f"{folder} holds scenes rendered with other settings ({old}); use a new --out or delete {folder}"
            )
    else:
        write_json_atomic(meta_path, meta)
    dataset = _PoolScenes(_scene_dataset(split_seed, count, frames, size, num_tracks, options))
    samples: list[dict[str, Tensor]] = []
    todo = []
    for start in range(0, count, chunk):
        path = folder / f"chunk_{start // chunk:04d}.safetensors"
        if not path.is_file():
            todo.extend(range(start, min(count, start + chunk)))
    loader = iter(DataLoader(dataset, batch_size=None, sampler=todo, num_workers=workers if len(todo) > 1 else 0))
    for start in range(0, count, chunk):
        path = folder / f"chunk_{start // chunk:04d}.safetensors"
        stop = min(count, start + chunk)
        if path.is_file():
            flat = load_file(str(path))
            for i in range(start, stop):
                samples.append({k: flat[f"{i}/{k}"] for k in POOL_KEYS})
            if progress:
                progress(stop - start)
            continue
        flat = {}
        for i in range(start, stop):
            # A tensor from a worker process lives in shared memory behind an open file descriptor until
            # it is freed; the pool keeps thousands, so copy each into ordinary memory (on a 16-core host
            # 14 workers otherwise hit "Too many open files", and `ulimit -n` cannot always be raised).
            sample = {k: v.clone() for k, v in next(loader).items()}
            samples.append(sample)
            flat.update({f"{i}/{k}": v for k, v in sample.items()})
            if progress:
                progress(1)
        save_weights_atomic(flat, path)
    return ScenePool(samples)


class _PoolScenes(Dataset):
    """Scene ``i`` restricted to :data:`POOL_KEYS`, video as uint8 (what the pool stores)."""

    def __init__(self, scenes: Any) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        full = self.scenes[int(index)]
        sample = {k: full[k] for k in POOL_KEYS}
        sample["video"] = to_uint8(sample["video"])
        return sample
