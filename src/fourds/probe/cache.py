"""Frozen backbone features cached on disk, for tasks whose training transform is deterministic.

Layout: ``<root>/<key>/`` with ``meta.json`` (what the key hashes: backbone fingerprint, task, its
transforms' settings, layers, dtype) and one folder per cached view (``train`` = training transform,
``train-eval`` / ``eval`` = evaluation clips), each holding ``<index>.safetensors`` per dataset sample
and ``complete.json`` once every sample is written. A sample file stores, per clip ``c``, the layer
features ``c/__feat<L>`` ``(T', N, C)`` and every tensor label of the transformed clip (``c/<key>``);
the video itself is not stored (the probe never needs it from the cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fourds.models.io import read_safetensors, save_weights_atomic, write_json_atomic
from fourds.tasks.base import TaskContract
from fourds.train.distributed import DistInfo, barrier
from fourds.probe.data import EvalClips, ShardSampler, collate_clips, to_device

log = logging.getLogger(__name__)

FEATURE_PREFIX = "__feat"


def fingerprint(module: nn.Module) -> str:
    """A hash of the module's class, parameter names, shapes and values (feature-cache key)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()



def feature_key(layer: int) -> str:
    return f"{FEATURE_PREFIX}{layer}"


def check_deterministic(task: TaskContract, sample: dict[str, Any], draws: int = 8) -> None:
    """Raise ``ValueError`` when ``task.train_transform`` differs between ``draws`` generators (random
    augmentation: caching one draw would silently remove the augmentation)."""
    ref = task.train_transform(dict(sample), torch.Generator().manual_seed(0))
    for seed in range(1, draws):
        other = task.train_transform(dict(sample), torch.Generator().manual_seed(seed))
        for key, va in ref.items():
            vb = other.get(key)
            same = (torch.equal(va, vb) if isinstance(va, Tensor) and isinstance(vb, Tensor)
                    and va.shape == vb.shape else va == vb if not isinstance(va, Tensor) else False)
            if not same:
                raise ValueError(
                    f"--feature-cache: task {task.name!r} applies random augmentation in train_transform "
                    f"(field {key!r} differs between draws); caching features would freeze one draw. "
                    "Run without --feature-cache, or with the task configured without augmentation."
                )


class FeatureCache:
    """Features of one backbone for one task configuration under ``root``.

    Args:
        root: the cache folder (shared by runs).
        key_parts: JSON-serialisable description of everything the features depend on.
    """

    def __init__(self, root: str | Path, key_parts: dict[str, Any]) -> None:
        digest = hashlib.sha256(json.dumps(key_parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.dir = Path(root) / digest
        self.key_parts = key_parts

    def view_dir(self, view: str) -> Path:
        return self.dir / view

    def complete(self, view: str) -> bool:
        return (self.view_dir(view) / "complete.json").is_file()

    def build(self, view: str, load_clips: Callable[[int], list[dict[str, Any]]], indices: Sequence[int],
              features: Callable[[dict[str, Any]], dict[int, Tensor]], info: DistInfo, batch_size: int,
              collate: Callable) -> int:
        """Compute and write the features of ``indices`` (each rank its share); returns batches run."""
        folder = self.view_dir(view)
        if info.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.dir / "meta.json", self.key_parts)
        barrier()
        todo = [i for i in indices if not (folder / f"{i:08d}.safetensors").is_file()]
        dataset = EvalClips(load_clips, todo)
        batch_clips = collate_clips(collate)
        batches = 0
        with torch.no_grad():
            for i_batch in ShardSampler(len(todo), batch_size, info.rank, info.world_size):
                batch, counts = batch_clips([dataset[i] for i in i_batch])
                feats = features(to_device(batch, info.device))
                batches += 1
                row = 0
                for item, count in zip(i_batch, counts):
                    tensors: dict[str, Tensor] = {}
                    extra: dict[str, Any] = {}
                    for c in range(count):
                        for layer, f in feats.items():
                            tensors[f"{c}/{feature_key(layer)}"] = f[row + c].to("cpu", torch.float32)
                        for key, value in batch.items():
                            if key == "video":
                                continue
                            if isinstance(value, Tensor) and value.ndim and value.shape[0] == sum(counts):
                                tensors[f"{c}/{key}"] = value[row + c].cpu()
                            elif isinstance(value, list) and len(value) == sum(counts):
                                extra[f"{c}/{key}"] = value[row + c]
                    meta = {"clips": str(count), "extra": json.dumps(extra, default=str)}
                    save_weights_atomic(tensors, folder / f"{todo[item]:08d}.safetensors", metadata=meta)
                    row += count
        barrier()
        if info.is_main:
            write_json_atomic(folder / "complete.json", {"samples": len(indices)})
        barrier()
        return batches

    def load_clips(self, view: str) -> Callable[[int], list[dict[str, Any]]]:
        """``index → [clip sample with __feat<L> keys]`` reading the cached view."""
        folder = self.view_dir(view)

        def load(index: int) -> list[dict[str, Any]]:
            path = folder / f"{index:08d}.safetensors"
            tensors, meta = read_safetensors(path)  # framing and checksum checked
            extra = json.loads(meta.get("extra", "{}"))
            clips = []
            for c in range(int(meta.get("clips", "1"))):
                prefix = f"{c}/"
                clip = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                clip.update({k[len(prefix):]: v for k, v in extra.items() if k.startswith(prefix)})
                clips.append(clip)
            return clips
        return load

    def load_first(self, view: str) -> Callable[[int], dict[str, Any]]:
        clips = self.load_clips(view)
        return lambda index: clips(index)[0]
