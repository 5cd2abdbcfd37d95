"""Qualitative probe outputs: depth next to ground truth, tracks and boxes on frames, camera trajectories.

Predictions are read in the sample conventions of ``docs/conventions.md`` through ``task.predictions(outputs,
batch) -> dict`` when the task defines it (else the outputs themselves when they are such a dict):
``depth`` ``(B, T, H, W)`` metres; ``tracks`` ``(B, P, T, 2)`` pixel (x, y) and ``visible`` ``(B, P, T)``;
``boxes`` ``(B, O, T, 4)`` pixel (x0, y0, x1, y1); ``relative_pose`` ``(B, 4, 4)`` (or ``(B, 12)``
row-major [R|t]) mapping first-camera to last-camera coordinates; ``label`` ``(B,)`` or ``logits``.
Whatever the task does not predict in these terms is drawn as ground truth only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fourds.fileio import atomic_path
from fourds.tasks.base import TaskContract, class_names, prediction_fn
from fourds.probe.data import collate_fn, task_clips, to_device

log = logging.getLogger(__name__)

#: Image directions every 45 degrees, counter-clockwise from "right" (the synthetic motion classes' order).
COMPASS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")


def motion_class_name(label: int, num_classes: int) -> str:
    """The image direction of a synthetic motion class: class ``c`` of ``C`` moves at ``360 c / C``
    degrees counter-clockwise from "right" (``fourds.data.synthetic.scene.sample_scene``).

    Multiples of 45 degrees get a word (8 classes: 0 "right", 1 "up-right", 2 "up", ... 7 "down-right");
    other angles their degrees, e.g. ``"30°"`` for class 1 of 12.
    """
    if not 0 <= label < num_classes:
        raise ValueError(f"motion class {label} is outside [0, {num_classes}); the synthetic scenes draw "
                         f"labels in [0, num_classes)")
    degrees = 360.0 * label / num_classes
    if abs(degrees / 45 - round(degrees / 45)) < 1e-9:
        return COMPASS[round(degrees / 45) % 8]
    return f"{degrees:g}°"


def class_name(task: TaskContract, label: int) -> str:
    """A readable name for class ``label`` of ``task``: ``task.class_names[label]`` when the task has
    them, the motion direction for the synthetic motion task (``num_classes`` directions), else the
    number as text."""
    names = class_names(task)
    if names is not None and 0 <= label < len(names):
        return str(names[label])
    if task.name == "synth_motion" and getattr(task, "num_classes", 0) > label >= 0:  # a SynthMotionTask field
        return motion_class_name(label, task.num_classes)
    return str(label)


def predictions(task: TaskContract, outputs: Any, batch: dict[str, Any]) -> dict[str, Tensor]:
    """Task outputs → the prediction dict described in the module docstring (may be empty)."""
    fn = prediction_fn(task)
    if fn is not None:
        return dict(fn(outputs, batch))
    if isinstance(outputs, dict):
        return {k: v for k, v in outputs.items() if k in ("depth", "tracks", "visible", "boxes", "relative_pose", "label", "logits")}
    return {}


def _show(ax: Any, image: np.ndarray, **kw: Any) -> None:
    """``imshow`` in raster coordinates: pixel (row i, col j) covers [j, j+1) x [i, i+1)."""
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0), **kw)


def _frames(num: int, count: int = 4) -> list[int]:
    return sorted(set(np.linspace(0, num - 1, min(count, num)).round().astype(int).tolist()))


def draw_depth(ax_rows: Any, video: np.ndarray, gt: np.ndarray, pred: np.ndarray | None) -> None:
    """Rows: frames, ground-truth depth, predicted depth (one colour scale, invalid pixels masked)."""
    frames = _frames(video.shape[0], ax_rows.shape[1])
    valid = np.isfinite(gt) & (gt > 0)
    vmin, vmax = (np.percentile(gt[valid], [2, 98]) if valid.any() else (0.0, 1.0))
    for j, t in enumerate(frames):
        _show(ax_rows[0, j], video[t])
        ax_rows[0, j].set_title(f"frame {t}")
        _show(ax_rows[1, j], np.ma.masked_where(~valid[t], gt[t]), cmap="magma_r", vmin=vmin, vmax=vmax)
        if pred is not None:
            _show(ax_rows[2, j], pred[t], cmap="magma_r", vmin=vmin, vmax=vmax)
    ax_rows[1, 0].set_ylabel("ground truth")
    ax_rows[2, 0].set_ylabel("predicted" if pred is not None else "(no prediction)")


def points_legend(predicted: bool) -> list[Any]:
    """Legend entries of :func:`draw_points`: what the markers and lines mean (colours = tracks)."""
    from matplotlib.lines import Line2D

    grey = "0.25"
    handles = [Line2D([], [], ls="", marker="o", mfc="none", mec=grey, mew=1.2, label="true point (visible ones)")]
    if predicted:
        handles += [Line2D([], [], ls="", marker="x", color=grey, mew=1.2, label="predicted point (predicted visible)"),
                    Line2D([], [], color=grey, lw=0.8, label="error: true to predicted")]
    return handles + [Line2D([], [], ls="", label="one colour per track")]


def boxes_legend(predicted: bool) -> list[Any]:
    """Legend entries of :func:`draw_boxes` (colours = objects)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.25", lw=1.5, label="true box")]
    if predicted:
        handles.append(Line2D([], [], color="0.25", lw=1.5, ls="--", label="predicted box"))
    return handles + [Line2D([], [], ls="", label="one colour per object")]


def draw_points(axes: Sequence[Any], video: np.ndarray, gt: np.ndarray, gt_vis: np.ndarray,
                pred: np.ndarray | None, pred_vis: np.ndarray | None) -> None:
    """Ground-truth tracks (circles, visible only) and predicted tracks (crosses) on frames; the
    legend is :func:`points_legend`."""
    frames = _frames(video.shape[0], len(axes))
    colours = __import__("matplotlib").colormaps["tab20"](np.arange(gt.shape[0]) % 20)
    for ax, t in zip(axes, frames):
        _show(ax, video[t])
        ax.set_title(f"frame {t}")
        v = gt_vis[:, t]
        ax.scatter(gt[v, t, 0], gt[v, t, 1], s=18, facecolors="none", edgecolors=colours[v], linewidths=1.2)
        if pred is not None:
            pv = np.ones(pred.shape[0], bool) if pred_vis is None else pred_vis[:, t]
            ax.scatter(pred[pv, t, 0], pred[pv, t, 1], s=18, marker="x", c=colours[pv], linewidths=1.2)
            for p in np.flatnonzero(v & pv):
                ax.plot([gt[p, t, 0], pred[p, t, 0]], [gt[p, t, 1], pred[p, t, 1]], color=colours[p], lw=0.6)


def draw_boxes(axes: Sequence[Any], video: np.ndarray, gt: np.ndarray, valid: np.ndarray, pred: np.ndarray | None) -> None:
    """Ground-truth boxes (solid) and predicted boxes (dashed) on frames; the legend is :func:`boxes_legend`."""
    from matplotlib.patches import Rectangle

    frames = _frames(video.shape[0], len(axes))
    colours = __import__("matplotlib").colormaps["tab10"](np.arange(gt.shape[0]) % 10)
    for ax, t in zip(axes, frames):
        _show(ax, video[t])
        ax.set_title(f"frame {t}")
        for o in np.flatnonzero(valid[:, t]):
            x0, y0, x1, y1 = gt[o, t]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colours[o], lw=1.5))
            if pred is not None:
                x0, y0, x1, y1 = pred[o, t]
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colours[o], lw=1.5, ls="--"))


def _as_pose(rel: np.ndarray) -> np.ndarray:
    if rel.shape == (12,):
        rel = rel.reshape(3, 4)
    pose = np.eye(4)
    pose[:3, :4] = rel[:3, :4]
    return pose


def draw_cameras(ax: Any, cam_to_world: np.ndarray, pred_rel: np.ndarray | None) -> None:
    """Camera centres of the clip in the first camera's frame (ground truth), the true and predicted
    last camera with their viewing directions (z axis)."""
    first_inv = np.linalg.inv(cam_to_world[0])
    poses = first_inv[None] @ cam_to_world  # camera t → first-camera coordinates
    centres = poses[:, :3, 3]
    ax.plot(centres[:, 0], centres[:, 1], centres[:, 2], "o-", color="tab:green", ms=3, label="true trajectory")
    scale = max(1e-3, float(np.ptp(centres, axis=0).max()) * 0.3)

    def camera(pose: np.ndarray, colour: str, label: str) -> None:
        c, z = pose[:3, 3], pose[:3, 2] * scale
        ax.scatter(*c, color=colour, s=40, label=label)
        ax.quiver(*c, *z, color=colour)

    camera(poses[0], "black", "first camera")
    camera(poses[-1], "tab:green", "true last camera")
    if pred_rel is not None:
        camera(np.linalg.inv(_as_pose(pred_rel)), "tab:red", "predicted last camera")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.legend(fontsize=7)


def _np(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


def visualize_sample(task: TaskContract, sample: dict[str, Any], pred: dict[str, Tensor], path: Path) -> Path | None:
    """One figure for one sample (index 0 of the batch dims already removed); None if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    video = sample["video"]
    video = (video.float() / 255.0 if video.dtype == torch.uint8 else video.float()).clamp(0, 1).cpu().numpy()
    cols = min(4, video.shape[0])
    fig = None
    legend: list[Any] = []
    title = f"{task.name}: {path.stem}"
    if "depth" in sample:
        fig, axes = plt.subplots(3, cols, figsize=(3 * cols, 8), squeeze=False)
        draw_depth(axes, video, _np(sample["depth"]), _np(pred.get("depth")))
    elif "tracks" in sample:
        fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.4), squeeze=False)
        keep = _np(sample.get("track_valid", torch.ones(sample["tracks"].shape[0], dtype=torch.bool))).astype(bool)
        pred_t, pred_v = _np(pred.get("tracks")), _np(pred.get("visible"))
        draw_points(axes[0], video, _np(sample["tracks"])[keep], _np(sample["visible"]).astype(bool)[keep],
                    None if pred_t is None else pred_t[keep], None if pred_v is None else pred_v.astype(bool)[keep])
        legend = points_legend(pred_t is not None)
    elif "boxes" in sample:
        fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.4), squeeze=False)
        draw_boxes(axes[0], video, _np(sample["boxes"]), _np(sample["box_valid"]).astype(bool), _np(pred.get("boxes")))
        legend = boxes_legend(pred.get("boxes") is not None)
    elif "cam_to_world" in sample:
        fig = plt.figure(figsize=(10, 4))
        for j, t in enumerate(_frames(video.shape[0], 2)):
            ax = fig.add_subplot(1, 3, j + 1)
            _show(ax, video[t])
            ax.set_title(f"frame {t}")
            ax.axis("off")
        draw_cameras(fig.add_subplot(1, 3, 3, projection="3d"), _np(sample["cam_to_world"]).astype(np.float64),
                     None if pred.get("relative_pose") is None else _np(pred["relative_pose"]).astype(np.float64))
    elif "label" in sample:
        fig, axes = plt.subplots(1, cols, figsize=(3 * cols, 3.2), squeeze=False)
        for ax, t in zip(axes[0], _frames(video.shape[0], cols)):
            _show(ax, video[t])
            ax.set_title(f"frame {t}")
            ax.axis("off")
        guess = pred.get("label", pred["logits"].argmax(-1) if "logits" in pred else None)
        true = int(sample["label"])
        title += f" — true: {class_name(task, true)} ({true})"
        if guess is not None:
            mark = "right" if int(guess) == true else "wrong"
            title += f", predicted: {class_name(task, int(guess))} ({int(guess)}, {mark})"
    if fig is None:
        return None
    for ax in fig.axes:
        if ax.name != "3d":
            ax.set_xticks([])
            ax.set_yticks([])
    # Room for the title above and the legend below the panels (tight_layout alone ignores both).
    height = fig.get_size_inches()[1]
    top = 1 - 0.25 / height
    bottom = 0.25 / height if legend else 0.0
    fig.suptitle(title, fontsize=9, y=1 - 0.08 / height, va="top")
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=7, frameon=False,
                   handletextpad=0.4, columnspacing=1.2)
    fig.tight_layout(rect=(0, bottom, 1, top))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


@torch.no_grad()
def visualize(task: TaskContract, predict: Callable[[dict], Any], dataset: Any, indices: Sequence[int], folder: Path,
              device: torch.device) -> list[Path]:
    """Run ``predict`` (the chosen readout) on the first clip of each sample and draw it."""
    load = task_clips(task, dataset)
    collate = collate_fn()
    written = []
    for i in indices:
        clip = load(i)[0]
        batch = to_device(collate([clip]), device)
        outputs = predict(batch)
        pred = {k: v[0] for k, v in predictions(task, outputs, batch).items() if isinstance(v, Tensor)}
        path = visualize_sample(task, clip, pred, folder / f"{task.name}_{i:05d}.png")
        if path is not None:
            written.append(path)
    return written
