"""Qualitative probe figures: every task kind draws, in raster coordinates, with or without predictions."""

from pathlib import Path

import numpy as np
import torch

from fourds.probe.visualize import _as_pose, predictions, visualize_sample


class Named:
    name = "synth"


def test_every_kind_of_sample_is_drawn(tmp_path):
    t, h, w = 4, 32, 32
    video = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8)
    depth = torch.rand(t, h, w) + 1
    tracks = torch.rand(3, t, 2) * 32
    boxes = torch.tensor([[[2.0, 2, 10, 12]] * t])
    c2w = torch.eye(4).repeat(t, 1, 1)
    c2w[:, 0, 3] = torch.arange(t) * 0.1
    rel = torch.linalg.inv(c2w[-1]) @ c2w[0]
    cases = {
        "depth": ({"depth": depth}, {"depth": depth * 1.1}),
        "tracks": ({"tracks": tracks, "visible": torch.ones(3, t, dtype=torch.bool)}, {"tracks": tracks + 1}),
        "boxes": ({"boxes": boxes, "box_valid": torch.ones(1, t, dtype=torch.bool)}, {}),
        "pose": ({"cam_to_world": c2w}, {"relative_pose": rel[:3].reshape(12)}),
        "label": ({"label": torch.tensor(3)}, {"logits": torch.randn(5)}),
    }
    for kind, (labels, pred) in cases.items():
        path = visualize_sample(Named(), {"video": video, **labels}, pred, tmp_path / f"{kind}.png")
        assert path is not None and path.stat().st_size > 1000, kind
    assert visualize_sample(Named(), {"video": video}, {}, tmp_path / "none.png") is None


def test_predictions_come_from_the_task_or_a_dict_of_known_keys():
    class WithPredictions(Named):
        def predictions(self, outputs, batch):
            return {"depth": outputs * 2}

    out = torch.ones(1, 2, 4, 4)
    assert torch.equal(predictions(WithPredictions(), out, {})["depth"], out * 2)
    assert set(predictions(Named(), {"depth": out, "aux": out}, {})) == {"depth"}
    assert predictions(Named(), out, {}) == {}
    np.testing.assert_array_equal(_as_pose(np.arange(12.0))[:3], np.arange(12.0).reshape(3, 4))
