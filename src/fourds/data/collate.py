"""The one collate function of fourds: samples (dicts) → a batch, padding variable track and box counts.

Samples follow the conventions of ``docs/conventions.md`` (``video`` ``(T, H, W, 3)``, ``tracks`` ``(P, T, 2)`` with
``visible`` ``(P, T)``, ``boxes`` ``(O, T, 4)`` with ``box_valid`` ``(O, T)``, ``label`` 0-d int64, ...).
:func:`collate_samples`:

- stacks tensors of equal shape along a new batch dimension (0-d tensors become ``(B,)``);
- pads the *count* dimension (dim 0) of the per-track keys (:data:`TRACK_KEYS`) to the batch's largest
  ``P`` and adds ``track_valid`` ``(B, P)`` bool (False on padding, and wherever a sample's own
  ``track_valid`` said so); pads the per-box keys (:data:`BOX_KEYS`) to the largest ``O``, padded rows of
  ``box_valid`` being False. Padding values are 0 / False, so padded entries are finite and are masked
  out of every loss and metric by ``track_valid`` / ``box_valid``;
- turns Python ints, floats and bools into ``(B,)`` tensors (int64, float32, bool);
- keeps strings and anything else (dicts, ``None``) as a list of length ``B``.

Every sample must have the same keys, and tensors outside the padded groups must have the same shape
in every sample (a ``ValueError`` names the key otherwise: run the task's transform first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

TRACK_KEYS = ("tracks", "visible", "track_valid", "track_object", "query_points", "query_frames", "tracks_3d")
"""Keys whose dim 0 counts point tracks ``P``; padded together, ``track_valid`` marks the real ones."""

BOX_KEYS = ("boxes", "box_valid", "box_object", "box_class", "object_valid", "object_shape", "object_size",
            "object_to_world", "object_velocity", "object_angular_velocity")
"""Keys whose dim 0 counts box tracks ``O``; padded together, ``box_valid`` ``(O, T)`` marks real boxes."""

Sample = dict[str, Any]


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    """Pad dim 0 of ``t`` with zeros (False) up to ``rows``."""
    if t.shape[0] == rows:
        return t
    pad = t.new_zeros((rows - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad], dim=0)


def _group_count(samples: Sequence[Sample], keys: Sequence[str], group: str) -> int | None:
    """Largest count of the group in the batch (None if no sample holds any of its keys); checks that
    every key of a sample agrees on that sample's count."""
    present = [k for k in keys if k in samples[0]]
    if not present:
        return None
    largest = 0
    for i, s in enumerate(samples):
        counts = {}
        for k in present:
            v = s[k]
            if not isinstance(v, Tensor) or v.ndim == 0:
                raise ValueError(f"collate: sample {i} {k!r} must be a tensor with a leading {group} dimension, got {v!r}")
            counts[k] = int(v.shape[0])
        if len(set(counts.values())) != 1:
            raise ValueError(f"collate: sample {i} disagrees on its number of {group}s: {counts}")
        largest = max(largest, next(iter(counts.values())))
    return largest


def _stack(key: str, values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, Tensor):
        if not all(isinstance(v, Tensor) for v in values):
            raise ValueError(f"collate: {key!r} is a tensor in some samples and not in others")
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(
                f"collate: {key!r} has different shapes across the batch {sorted(shapes)}; apply the task's "
                "transform (which crops/resizes every clip to the task's input size) before batching"
            )
        return torch.stack(values)
    if all(isinstance(v, bool) for v in values):
        return torch.tensor(values, dtype=torch.bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return torch.tensor(values, dtype=torch.int64)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return torch.tensor(values, dtype=torch.float32)
    return list(values)


def collate_samples(samples: Sequence[Sample]) -> Sample:
    """Batch a list of sample dicts (see the module docstring).

    Args:
        samples: ``B >= 1`` dicts with the same keys.

    Returns:
        The batch dict: stacked ``(B, ...)`` tensors, padded track/box groups plus ``track_valid``
        ``(B, P)`` when the samples have tracks, lists for non-numeric values.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    keys = list(samples[0])
    for i, s in enumerate(samples):
        if set(s) != set(keys):
            raise ValueError(
                f"collate: sample {i} has keys {sorted(s)} but sample 0 has {sorted(keys)}; every sample of a "
                "batch needs the same fields"
            )
    samples = [dict(s) for s in samples]
    if "tracks" in samples[0]:
        for s in samples:
            if "track_valid" not in s:
                s["track_valid"] = torch.ones(s["tracks"].shape[0], dtype=torch.bool)
        if "track_valid" not in keys:
            keys.append("track_valid")
    padded: dict[str, int] = {}
    for group_keys, group in ((TRACK_KEYS, "track"), (BOX_KEYS, "box")):
        count = _group_count(samples, group_keys, group)
        if count is not None:
            padded.update({k: count for k in group_keys if k in samples[0]})
    out: Sample = {}
    for key in keys:
        values = [s[key] for s in samples]
        if key in padded:
            values = [_pad_rows(v, padded[key]) for v in values]
        out[key] = _stack(key, values)
    return out


__all__ = ["BOX_KEYS", "TRACK_KEYS", "collate_samples"]
