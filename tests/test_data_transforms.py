"""Clip sampling policies, the paper's train/eval transforms (labels move with pixels), colour, batch resize."""

from __future__ import annotations

import pytest
import torch

from fourds.data.clips import clip_indices, eval_clip_starts, eval_clips, random_clip, random_clip_start
from fourds.data.transforms import ColourJitter, adjust_hue, center_crop_batch, eval_transform, resize_batch, train_transform


def test_clip_sampling_and_short_video_policies():
    assert clip_indices(100, 10, 4, 2) == [10, 12, 14, 16]
    assert clip_indices(5, 0, 4, 2) == [0, 2, 4, 4]  # repeat the last frame
    assert clip_indices(5, 0, 4, 2, policy="loop") == [0, 2, 4, 1]
    with pytest.raises(ValueError, match="choose one of"):
        clip_indices(5, 0, 4, 2, policy="pad")
    gen = torch.Generator().manual_seed(0)
    starts = {random_clip_start(40, 16, 2, gen) for _ in range(200)}
    assert min(starts) == 0 and max(starts) == 40 - 31  # uniform over every valid start
    assert random_clip(10, 16, 2, gen)[0] == 0
    assert eval_clip_starts(100, 16, 2, 1) == [34] and eval_clip_starts(100, 16, 2, 3) == [0, 34, 69]
    k700 = eval_clips(100, 16, 2, num_clips=7, policy="loop", loop_to=250)
    assert len(k700) == 7 and k700[-1][-1] == (250 - 1) % 100 and all(0 <= k < 100 for c in k700 for k in c)


def _marked_sample(h=60, w=90):
    video = torch.zeros(2, h, w, 3, dtype=torch.uint8)
    video[:, 20:22, 70:72] = 255  # a 2x2 marked block centred at (x, y) = (71, 21)
    return {
        "video": video,
        "tracks": torch.tensor([[[71.0, 21.0], [71.0, 21.0]]]),
        "visible": torch.ones(1, 2, dtype=torch.bool),
        "boxes": torch.tensor([[[70.0, 20.0, 72.0, 22.0]] * 2]),
        "box_valid": torch.ones(1, 2, dtype=torch.bool),
    }


def _bright_centre(video):
    frame = video[0].float().mean(-1)
    ys, xs = torch.nonzero(frame > 0.5 * frame.max(), as_tuple=True)
    return float(xs.float().mean() + 0.5), float(ys.float().mean() + 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_moves_pixels_and_labels_together(seed):
    out = train_transform(_marked_sample(), torch.Generator().manual_seed(seed), crop=48, flip=True)
    assert out["video"].shape == (2, 48, 48, 3) and out["video"].dtype == torch.uint8
    x, y = out["tracks"][0, 0].tolist()
    if out["visible"][0, 0]:
        px, py = _bright_centre(out["video"])
        assert abs(px - x) < 1.0 and abs(py - y) < 1.0
        bx0, by0, bx1, by1 = out["boxes"][0, 0].tolist()
        assert abs((bx0 + bx1) / 2 - x) < 1e-4 and abs((by0 + by1) / 2 - y) < 1e-4


def test_train_transform_flips_about_half_the_time():
    flips = 0
    for seed in range(40):
        plain = train_transform(_marked_sample(), torch.Generator().manual_seed(seed), crop=48, flip=False)
        maybe = train_transform(_marked_sample(), torch.Generator().manual_seed(seed), crop=48, flip=True)
        x0, x1 = plain["tracks"][0, 0, 0].item(), maybe["tracks"][0, 0, 0].item()
        assert x1 == pytest.approx(x0) or x1 == pytest.approx(48 - x0)  # same crop, maybe mirrored
        flips += x1 != pytest.approx(x0)
    assert 8 < flips < 32


def test_eval_transform_is_a_deterministic_centre_crop():
    a, b = eval_transform(_marked_sample(), crop=48), eval_transform(_marked_sample(), crop=48)
    assert torch.equal(a["video"], b["video"]) and a["video"].shape == (2, 48, 48, 3)
    # resize 60x90 -> 55x83 (short side 1.15 * 48 = 55.2), centre crop offsets (3, 17)
    x, y = a["tracks"][0, 0].tolist()
    assert x == pytest.approx(71 * 83 / 90 - 17, abs=1e-4) and y == pytest.approx(21 * 55 / 60 - 3, abs=1e-4)


def test_batch_resize_matches_per_clip_eval_transform():
    video = torch.randint(0, 256, (3, 2, 60, 90, 3), dtype=torch.uint8)
    batched = center_crop_batch(video, 48)
    for i in range(3):
        assert torch.equal(batched[i], eval_transform({"video": video[i]}, crop=48)["video"])
    assert resize_batch(video.float() / 255, (30, 45)).shape == (3, 2, 30, 45, 3)


def test_colour_jitter_ranges_and_identities():
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(4, 8, 8, 3)
    out = ColourJitter()(video, gen)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1 and out.shape == video.shape
    never = ColourJitter(p=0.0, grayscale_p=0.0)(video, gen)
    assert torch.allclose(never, video)
    gray = ColourJitter(p=0.0, grayscale_p=1.0)(torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8), gen)
    assert torch.allclose(gray[..., 0], gray[..., 1]) and torch.allclose(gray[..., 1], gray[..., 2])
    mid = torch.full((1, 2, 2, 3), 0.5) + torch.tensor([0.1, -0.05, 0.0])
    assert torch.allclose(adjust_hue(mid, 0.0), mid, atol=1e-5)
    assert torch.allclose(adjust_hue(mid, 1.0), mid, atol=1e-5)  # a full turn
    # the same draw for every frame of a clip: frames that were equal stay equal
    same = ColourJitter(p=1.0)(video[:1].expand(3, -1, -1, -1), torch.Generator().manual_seed(1))
    assert torch.allclose(same[0], same[2])
