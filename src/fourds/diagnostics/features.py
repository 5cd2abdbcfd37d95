"""Feature sources of the learnability ladder: what a readout is given instead of a backbone's features.

Every source maps one synthetic scene (a raw :class:`fourds.data.synthetic.SyntheticScenes` sample,
``video`` ``(T, H, W, 3)`` in [0, 1] plus its ground truth) to a ``(T', N, D)`` float32 token grid, the
shape one layer of ``Backbone.features`` has for one clip:

- :func:`blank_features`: constant zeros on a token grid (what a readout learns with no information);
- :func:`pixel_features`: raw tubelet pixels plus fixed Fourier channels of the token's centre (a ViT
  adds a positional embedding; raw pixels have none, and without one no readout could localise);
- :func:`oracle_features`: ground-truth-derived channels placed at the tokens where the readout's query
  looks (see the function), on a ``1 x p x p`` grid so that no temporal resampling blurs them.

The oracle is built so that a working readout *can* read each task's answer from the right tokens:
it tests the readout, not the features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

POSITION_FREQUENCIES = (1.0, 2.0, 4.0, 8.0)
"""Cycles per frame of the fixed positional channels (8 resolves one 8-pixel token of a 64-px frame)."""


def position_channels(rows: int, cols: int) -> Tensor:
    """``(rows·cols, 2 + 4·len(POSITION_FREQUENCIES))`` channels of each token's centre: ``(x, y)`` in
    [0, 1] of the frame and ``sin/cos(2π f x)``, ``sin/cos(2π f y)``; tokens in row-major order."""
    ys = (torch.arange(rows, dtype=torch.float32) + 0.5) / rows
    xs = (torch.arange(cols, dtype=torch.float32) + 0.5) / cols
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([x.flatten(), y.flatten()], dim=-1)  # (N, 2)
    freqs = torch.tensor(POSITION_FREQUENCIES)
    angles = 2 * math.pi * coords[..., None] * freqs  # (N, 2, F)
    return torch.cat([coords, angles.sin().flatten(1), angles.cos().flatten(1)], dim=-1)


def _check_grid(video: Tensor, patch: tuple[int, int, int]) -> tuple[int, int, int]:
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a clip video (T, H, W, 3), got {tuple(video.shape)}")
    t, h, w = video.shape[:3]
    pt, ph, pw = patch
    if t % pt or h % ph or w % pw:
        raise ValueError(f"patch {patch} does not tile the clip {(t, h, w)}; choose a patch that divides it")
    return t // pt, h // ph, w // pw


def blank_features(video: Tensor, patch: tuple[int, int, int] = (2, 16, 16), dim: int = 64) -> Tensor:
    """Zeros ``(T/pt, (H/ph)·(W/pw), dim)``: the same token grid as a backbone, carrying nothing."""
    t, gh, gw = _check_grid(video, patch)
    return torch.zeros(t, gh * gw, dim)


def pixel_features(video: Tensor, patch: tuple[int, int, int] = (2, 16, 16)) -> Tensor:
    """Raw tubelet pixels ``(T/pt, N, pt·ph·pw·3 + 18)``: each token's pixels (centred, in [-0.5, 0.5])
    followed by :func:`position_channels` of its centre."""
    t, gh, gw = _check_grid(video, patch)
    pt, ph, pw = patch
    pix = rearrange(video.float() - 0.5, "(t pt) (h ph) (w pw) c -> t (h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)
    pos = position_channels(gh, gw).expand(t, -1, -1)
    return torch.cat([pix, pos], dim=-1)


ORACLE_GROUPS = {"synth_tracking": ("tracking",), "synth_boxes": ("boxes",), "synth_pose": ("pose",),
                 "synth_depth": ("depth",), "synth_motion": ("motion",)}
"""Each task's own channel groups, for an oracle without the other tasks' answers as distractors."""


def oracle_features(sample: dict[str, Tensor], patch: int = 8, num_classes: int = 8, max_objects: int = 10,
                    groups: tuple[str, ...] | None = None) -> Tensor:
    """Ground-truth channels on a ``1 x patch x patch`` token grid: ``(T, N, D)`` with ``N = (H/p)(W/p)``.

    Channels of token ``(t, n)`` (``n`` a patch of the frame, row-major):

    - position: :func:`position_channels` of the patch centre (18);
    - tracking: the whole trajectory of the tracks whose frame-0 point lies in patch ``n``: their
      mean displacement ``(track[s] - track[0]) / (W, H)`` and visible fraction for every frame ``s``
      (``3 T``; zeros where none), the same at every ``t``: a query point's answer sits at its own
      patch (one readout query predicts several frames, so each token carries them all);
    - boxes: the whole box trajectory (normalised ``x0, y0, x1, y1`` and validity for every frame,
      ``5 T``) of the object that covers most of patch ``n`` in frame 0 (zeros for the background),
      the same at every ``t`` (one box query predicts all frames);
    - segmentation: the fraction of patch ``n`` at frame ``t`` covered by each object slot and by the
      background (``max_objects + 1``);
    - depth: ``log`` of the patch's depth pixels at frame ``t`` (``patch²``);
    - pose: the relative pose ``inv(cam_to_world[t]) @ cam_to_world[0]`` as 12 numbers (the last
      frame's is the pose task's answer);
    - motion: the one-hot motion label times the main object's (object 0) coverage of the patch
      (``num_classes``).

    ``groups`` keeps only those channel groups (``tracking``, ``boxes``, ``segmentation``, ``depth``,
    ``pose``, ``motion``) after the position channels; None keeps all, in the order above.

    ``sample`` needs ``video``, ``tracks``, ``visible``, ``boxes``, ``box_valid``, ``segmentation``,
    ``depth``, ``cam_to_world`` and ``label``; the more tracks it has, the denser the tracking channels.
    """
    for key in ("video", "tracks", "visible", "boxes", "box_valid", "segmentation", "depth", "cam_to_world", "label"):
        if key not in sample:
            raise ValueError(f"oracle_features: the scene sample has no {key!r}; render it with SyntheticScenes")
    video = sample["video"]
    t, gh, gw = _check_grid(video, (1, patch, patch))
    h, w = video.shape[1:3]
    n = gh * gw
    pos = position_channels(gh, gw).expand(t, -1, -1)

    # Tracking: tracks binned by the patch of their frame-0 point.
    tracks, visible = sample["tracks"].float(), sample["visible"].bool()
    start = visible[:, 0]
    tracks, visible = tracks[start], visible[start]
    px = (tracks[:, 0, 0] / patch).long().clamp(0, gw - 1)
    py = (tracks[:, 0, 1] / patch).long().clamp(0, gh - 1)
    cell = py * gw + px  # (P,)
    disp = (tracks - tracks[:, :1]) / torch.tensor([w, h], dtype=torch.float32)  # (P, T, 2)
    values = torch.cat([disp, visible.float()[..., None]], dim=-1).flatten(1)  # (P, 3T)
    sums = torch.zeros(n, 3 * t).index_add_(0, cell, values)
    counts = torch.zeros(n).index_add_(0, cell, torch.ones(cell.shape[0]))
    track_ch = (sums / counts.clamp_min(1.0)[:, None]).expand(t, n, 3 * t)

    # Segmentation fractions per slot (slot max_objects = background).
    seg = sample["segmentation"].long().clone()
    seg[seg < 0] = max_objects
    onehot = F.one_hot(seg.clamp_max(max_objects), max_objects + 1).float()  # (T, H, W, O+1)
    seg_ch = rearrange(onehot, "t (gh ph) (gw pw) o -> t (gh gw) (ph pw) o", ph=patch, pw=patch).mean(2)

    # Boxes of the object covering most of each patch in frame 0.
    boxes = sample["boxes"].float() / torch.tensor([w, h, w, h], dtype=torch.float32)  # (O, T, 4)
    valid = sample["box_valid"].float()  # (O, T)
    owner = seg_ch[0].argmax(-1)  # (N,)
    box_ch = torch.zeros(n, t, 5)
    is_obj = owner < min(max_objects, boxes.shape[0])
    idx = owner[is_obj]
    box_ch[is_obj, :, :4] = boxes[idx]
    box_ch[is_obj, :, 4] = valid[idx]
    box_ch = box_ch.flatten(1).expand(t, n, 5 * t)

    depth = sample["depth"].float().clamp_min(1e-3).log()
    depth_ch = rearrange(depth, "t (gh ph) (gw pw) -> t (gh gw) (ph pw)", ph=patch, pw=patch)

    c2w = sample["cam_to_world"].double()
    rel = (torch.linalg.inv(c2w) @ c2w[:1])[:, :3, :].reshape(t, 12).float()
    pose_ch = rel[:, None, :].expand(t, n, 12)

    label = F.one_hot(torch.as_tensor(sample["label"]).long(), num_classes).float()
    motion_ch = seg_ch[..., :1] * label  # (T, N, K)

    parts = {"tracking": track_ch, "boxes": box_ch, "segmentation": seg_ch, "depth": depth_ch, "pose": pose_ch,
             "motion": motion_ch}
    if groups is not None and set(groups) - set(parts):
        raise ValueError(f"oracle_features: unknown channel groups {sorted(set(groups) - set(parts))}; "
                         f"groups are {', '.join(parts)}")
    chosen = [parts[g] for g in (groups if groups is not None else parts)]
    return torch.cat([pos, *chosen], dim=-1).contiguous()
