"""Temporal clip sampling: which frame indices a clip takes from a video of ``total`` frames.

A clip is ``num_frames`` frames ``stride`` apart, spanning ``(num_frames - 1) * stride + 1`` frames.
Training takes a uniformly random start (paper Section 3.2: 16 frames at stride 2); evaluation takes
``K`` evenly spaced clips (K700: 7 clips, softmax averaged).

**Short videos** (fewer frames than the span) never crash; the policy is a setting:

- ``"repeat_last"`` (default, pretraining): the clip starts at 0 and indices past the end repeat the
  last frame (the tail of the clip is a still).
- ``"loop"``: indices wrap around (``k mod total``), as the paper does for K700 evaluation ("we loop
  the video as many times as necessary").
"""

from __future__ import annotations

import torch

SHORT_VIDEO_POLICIES = ("repeat_last", "loop")


def clip_span(num_frames: int, stride: int) -> int:
    """Frames covered by a clip: ``(num_frames - 1) * stride + 1``."""
    return (num_frames - 1) * stride + 1


def clip_indices(total: int, start: int, num_frames: int, stride: int, policy: str = "repeat_last") -> list[int]:
    """Frame indices ``start + i * stride`` (``i < num_frames``), mapped into ``[0, total)`` by ``policy``."""
    if total < 1:
        raise ValueError(f"a video with {total} frames has no clip")
    if policy not in SHORT_VIDEO_POLICIES:
        raise ValueError(f"short-video policy {policy!r}: choose one of {SHORT_VIDEO_POLICIES}")
    idx = [start + i * stride for i in range(num_frames)]
    if policy == "loop":
        return [k % total for k in idx]
    return [min(k, total - 1) for k in idx]


def random_clip_start(total: int, num_frames: int, stride: int, generator: torch.Generator | None = None) -> int:
    """Uniform start in ``[0, total - span]`` (0 when the video is shorter than the span)."""
    high = max(0, total - clip_span(num_frames, stride))
    return int(torch.randint(0, high + 1, (1,), generator=generator))


def random_clip(
    total: int, num_frames: int, stride: int, generator: torch.Generator | None = None, policy: str = "repeat_last"
) -> list[int]:
    """Indices of one training clip (random start, short-video ``policy``)."""
    return clip_indices(total, random_clip_start(total, num_frames, stride, generator), num_frames, stride, policy)


def eval_clip_starts(total: int, num_frames: int, stride: int, num_clips: int = 1) -> list[int]:
    """Starts of ``num_clips`` evenly spaced clips over ``total`` frames (one clip: the centred one)."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    last = max(0, total - clip_span(num_frames, stride))
    if num_clips == 1:
        return [last // 2]
    return [round(i * last / (num_clips - 1)) for i in range(num_clips)]


def eval_clips(
    total: int,
    num_frames: int,
    stride: int,
    num_clips: int = 1,
    policy: str = "repeat_last",
    loop_to: int | None = None,
) -> list[list[int]]:
    """Indices of ``num_clips`` evenly spaced evaluation clips.

    ``loop_to`` (with ``policy="loop"``): first loop the video to at least this many frames, then space
    the clips over that length (the paper's K700 protocol: ``loop_to=250``, 7 clips).
    """
    length = max(total, loop_to) if (loop_to and policy == "loop") else total
    return [clip_indices(total, s, num_frames, stride, policy) for s in eval_clip_starts(length, num_frames, stride, num_clips)]
