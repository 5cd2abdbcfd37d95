"""Procedural 4D scenes: a synthetic video generator with exact ground truth for every task.

Kubric-MOVi-like scenes (textured ground and backdrop, 3-10 spheres and boxes, some sliding and
spinning, a moving look-at camera, one light with shadows) ray-cast in PyTorch on the CPU, with depth,
camera poses, point tracks with visibility, visible-extent object boxes, segmentation and a motion
class. :class:`SyntheticScenes` is the map-style dataset, :class:`SyntheticVideos` the infinite
pretraining source; ``docs/synthetic.md`` documents every key and convention.
"""

from fourds.data.synthetic.dataset import CONTRACT_KEYS, SyntheticScenes, SyntheticVideos, motion_label
from fourds.data.synthetic.renderer import Rendering, render
from fourds.data.synthetic.scene import Scene, SceneConfig, sample_scene

__all__ = [
    "CONTRACT_KEYS",
    "Rendering",
    "Scene",
    "SceneConfig",
    "SyntheticScenes",
    "SyntheticVideos",
    "motion_label",
    "render",
    "sample_scene",
]
