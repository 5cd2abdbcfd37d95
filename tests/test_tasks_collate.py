"""fourds.data.collate.collate_samples: stacking, padding of tracks and boxes with masks, scalars, errors."""

from __future__ import annotations

import pytest
import torch

from fourds.data.collate import collate_samples
from fourds.probe.data import collate_fn


def sample(p: int, o: int, t: int = 3, label: int = 1, name: str = "a") -> dict:
    return {
        "video": torch.rand(t, 4, 4, 3),
        "tracks": torch.rand(p, t, 2) + 1.0,
        "visible": torch.ones(p, t, dtype=torch.bool),
        "track_object": torch.arange(p),
        "boxes": torch.rand(o, t, 4) + 1.0,
        "box_valid": torch.ones(o, t, dtype=torch.bool),
        "label": label,
        "scale": 0.5,
        "flag": True,
        "name": name,
    }


def test_pads_tracks_and_boxes_to_the_batch_maximum() -> None:
    a, b = sample(3, 1, name="a"), sample(5, 2, label=4, name="b")
    batch = collate_samples([a, b])
    assert batch["video"].shape == (2, 3, 4, 4, 3)
    assert batch["tracks"].shape == (2, 5, 3, 2) and batch["visible"].shape == (2, 5, 3)
    assert batch["track_valid"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert torch.equal(batch["tracks"][0, :3], a["tracks"]) and torch.equal(batch["tracks"][0, 3:], torch.zeros(2, 3, 2))
    assert not batch["visible"][0, 3:].any() and batch["track_object"].shape == (2, 5)
    assert batch["boxes"].shape == (2, 2, 3, 4) and not batch["box_valid"][0, 1].any() and batch["box_valid"][1].all()
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [1, 4]
    assert batch["scale"].dtype == torch.float32 and batch["flag"].dtype == torch.bool
    assert batch["name"] == ["a", "b"]


def test_existing_track_valid_is_kept_and_zero_tracks_work() -> None:
    a = {**sample(2, 1), "track_valid": torch.tensor([True, False])}
    b = {**sample(0, 0), "track_valid": torch.zeros(0, dtype=torch.bool)}
    batch = collate_samples([a, b])
    assert batch["track_valid"].tolist() == [[True, False], [False, False]]
    assert batch["boxes"].shape == (2, 1, 3, 4) and not batch["box_valid"][1].any()
    empty = collate_samples([sample(0, 0), sample(0, 0)])
    assert empty["tracks"].shape == (2, 0, 3, 2) and empty["track_valid"].shape == (2, 0)


def test_zero_dim_tensors_stack_and_the_probe_uses_this_collate() -> None:
    batch = collate_samples([{"label": torch.tensor(3)}, {"label": torch.tensor(5)}])
    assert batch["label"].tolist() == [3, 5]
    assert collate_fn() is collate_samples


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="different shapes"):
        collate_samples([{"video": torch.zeros(2, 4, 4, 3)}, {"video": torch.zeros(2, 5, 4, 3)}])
    with pytest.raises(ValueError, match="same fields"):
        collate_samples([{"video": torch.zeros(1)}, {"label": 1}])
    bad = sample(3, 1)
    bad["visible"] = bad["visible"][:2]
    with pytest.raises(ValueError, match="number of tracks"):
        collate_samples([bad])
    with pytest.raises(ValueError, match="empty batch"):
        collate_samples([])
