"""Preview videos of synthetic samples: what each task sees, drawn next to the RGB.

Each frame is a row of panels, upscaled (nearest) to at least ``min_panel`` pixels high:

1. RGB with the motion label (the main object's direction, an arrow and the class index);
2. point tracks: a filled dot where the point is visible, a hollow ring where it is occluded or off
   its surface's visible side, nothing outside the frame; colour = track, a short trail behind;
3. boxes: each object's visible-extent box where ``box_valid``, in that object's colour;
4. depth: log z-depth, colour mapped (near = bright) with the clip's own range;
5. segmentation: background dark, objects in their box colours.
"""

from __future__ import annotations

import colorsys
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from fourds.data.encode import write_video


def _palette(n: int, saturation: float = 0.9, value: float = 1.0) -> list[tuple[int, int, int]]:
    golden = 0.618033988749895
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * golden) % 1.0, saturation, value)) for i in range(n)]


def _depth_colours(depth: Tensor) -> np.ndarray:
    """``(T, H, W)`` metres → uint8 ``(T, H, W, 3)`` (log depth, turbo, near = warm)."""
    from matplotlib import colormaps

    logd = torch.log(depth.clamp_min(1e-3))
    lo, hi = float(logd.min()), float(logd.max())
    norm = ((hi - logd) / max(hi - lo, 1e-6)).numpy()
    return (colormaps["turbo"](norm)[..., :3] * 255).astype(np.uint8)


def preview_frames(sample: dict[str, Tensor], num_classes: int = 8, min_panel: int = 192, trail: int = 4) -> np.ndarray:
    """uint8 ``(T, h, w, 3)`` preview frames of one :class:`~fourds.data.synthetic.SyntheticScenes`
    sample (``h`` and ``w`` even, ready for H.264); ``num_classes`` orients the label arrow."""
    video = (sample["video"].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    t_, h, w, _ = video.shape
    s = max(1, math.ceil(min_panel / h))
    tracks, visible = sample["tracks"], sample["visible"]
    boxes, box_valid = sample["boxes"], sample["box_valid"]
    segmentation = sample.get("segmentation")
    label = int(sample["label"])
    track_colours = _palette(tracks.shape[0])
    object_colours = _palette(boxes.shape[0], 0.8, 1.0)
    depth = _depth_colours(sample["depth"])
    r = max(1.5, 0.8 * s)

    def up(img: np.ndarray) -> Image.Image:
        return Image.fromarray(img).resize((w * s, h * s), Image.NEAREST)

    frames = []
    for t in range(t_):
        rgb = up(video[t])
        draw = ImageDraw.Draw(rgb)
        angle = 2 * math.pi * label / num_classes  # class 0 = right, counter-clockwise in the image
        cx, cy, length = 14, h * s - 14, 10
        draw.line([(cx, cy), (cx + length * math.cos(angle), cy - length * math.sin(angle))], fill=(255, 255, 255), width=2)
        draw.text((4, 2), f"class {label}", fill=(255, 255, 255))

        pts = up(video[t])
        draw = ImageDraw.Draw(pts)
        for p in range(tracks.shape[0]):
            colour = track_colours[p]
            if visible[p, t]:
                trail_pts = [(float(tracks[p, u, 0]) * s, float(tracks[p, u, 1]) * s)
                             for u in range(max(0, t - trail), t + 1) if visible[p, u]]
                if len(trail_pts) > 1:
                    draw.line(trail_pts, fill=colour, width=1)
            x, y = float(tracks[p, t, 0]) * s, float(tracks[p, t, 1]) * s
            if not (0 <= x < w * s and 0 <= y < h * s):
                continue
            if visible[p, t]:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
            else:
                draw.ellipse([x - r, y - r, x + r, y + r], outline=colour)

        bxs = up(video[t])
        draw = ImageDraw.Draw(bxs)
        for o in range(boxes.shape[0]):
            if box_valid[o, t]:
                x0, y0, x1, y1 = (float(v) * s for v in boxes[o, t])
                draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=object_colours[o], width=max(1, s // 2))
                draw.text((x0 + 2, y0 + 1), str(o), fill=object_colours[o])

        panels = [np.asarray(rgb), np.asarray(pts), np.asarray(bxs), np.asarray(up(depth[t]))]
        if segmentation is not None:
            seg = np.full((h, w, 3), 30, np.uint8)
            ids = segmentation[t].numpy()
            for o in range(boxes.shape[0]):
                seg[ids == o] = object_colours[o]
            panels.append(np.asarray(up(seg)))
        frames.append(np.concatenate(panels, axis=1))
    out = np.stack(frames)
    pad_h, pad_w = out.shape[1] % 2, out.shape[2] % 2
    return np.pad(out, ((0, 0), (0, pad_h), (0, pad_w), (0, 0))) if pad_h or pad_w else out


def write_preview(sample: dict[str, Tensor], path: str | os.PathLike, num_classes: int = 8, fps: int = 8,
                  min_panel: int = 192) -> Path:
    """Encode :func:`preview_frames` of ``sample`` to ``path`` (``.mp4``: H.264; ``.gif``: Pillow)."""
    path = Path(path)
    frames = preview_frames(sample, num_classes, min_panel)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    else:
        write_video(path, frames, fps=fps, crf=18)
    return path
