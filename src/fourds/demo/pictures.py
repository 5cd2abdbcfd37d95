"""The demo's pictures: MAE reconstructions of masked test clips (paper Fig. 4a) and the probes'
qualitative figures (depth vs ground truth, tracks and boxes on frames, camera trajectories)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from fourds.data import to_float
from fourds.demo.config import DemoRecipe
from fourds.demo.pipeline import Entry, Pools, probe_dir
from fourds.demo.plots import save_figure
from fourds.seeding import derive_seed


@torch.no_grad()
def mae_reconstruction(model_folder: Path, pool: Pools | None, indices: list[int], path: Path, title: str,
                       videos: list[torch.Tensor] | None = None) -> Path | None:
    """Rows per clip: the frames, what the encoder sees (masked tubelets greyed out), the decoded
    reconstruction; four frames across. ``videos`` (uint8 or float ``(T, H, W, 3)``) overrides the pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fourds.models import load_simple_mae

    mae = load_simple_mae(model_folder).eval()
    clips = videos if videos is not None else [pool.test[i]["video"] for i in indices]  # type: ignore[union-attr]
    if not clips:
        return None
    pt, ph, pw = mae.encoder.patch_embed.patch_size
    cols = 4
    fig, axes = plt.subplots(3 * len(clips), cols, figsize=(2.0 * cols, 2.1 * 3 * len(clips)), squeeze=False)
    for c, (clip, index) in enumerate(zip(clips, indices)):
        video = to_float(clip)[None]
        result = mae(video, sample_seeds=[derive_seed(0, "demo-reconstruction", int(index))])
        t, h, w = mae.encoder.token_grid(video.shape)
        removed = result.mask[0].reshape(t, h, w)
        removed = removed.repeat_interleave(pt, 0).repeat_interleave(ph, 1).repeat_interleave(pw, 2).numpy()
        frames = video[0].numpy()
        recon = result.reconstruction[0].clamp(0, 1).numpy()
        shown = np.where(removed[..., None], 0.35, frames)  # removed tubelets in grey
        times = np.linspace(0, frames.shape[0] - 1, cols).round().astype(int)
        for j, ti in enumerate(times):
            for r, (image, name) in enumerate(((frames, "clip"), (shown, f"input ({result.mask[0].float().mean():.0%} masked)"),
                                              (recon, "reconstruction"))):
                ax = axes[3 * c + r, j]
                ax.imshow(image[ti], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(name, fontsize=7)
                if r == 0:
                    ax.set_title(f"test clip {index}, frame {ti}", fontsize=7)
    return save_figure(fig, path, title, dpi=90, fontsize=9)


def gather_probe_figures(out: Path, recipe: DemoRecipe, rows: list[Entry]) -> list[Path]:
    """Copy each task's qualitative figures (seed 0 of the visualised models) to ``pictures/<task>/``."""
    written = []
    for entry in rows:
        if entry.label not in recipe.visualize_models:
            continue
        for task in recipe.tasks:
            folder = probe_dir(out, entry.label, task, recipe.seeds[0]) / "visualizations"
            if not folder.is_dir():
                continue
            for png in sorted(folder.glob("*.png")):
                dest = out / "pictures" / task / f"{entry.label}_{png.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, dest)
                written.append(dest)
    return written


def draw_pictures(out: Path, recipe: DemoRecipe, rows: list[Entry], pools: Pools) -> list[Path]:
    """Write ``<out>/pictures/``; returns the paths."""
    written: list[Path] = []
    indices = list(range(min(recipe.reconstructions, len(pools.test))))
    for model in recipe.models:
        folder = out / "pretrain" / model.label / "model"
        if indices and (folder / "model.safetensors").is_file():
            path = mae_reconstruction(folder, pools, indices, out / "pictures" / f"mae_reconstruction_{model.label}.png",
                                      f"SimpleMAE {model.label}: masked test clips and their reconstructions")
            if path is not None:
                written.append(path)
    return written + gather_probe_figures(out, recipe, rows)
