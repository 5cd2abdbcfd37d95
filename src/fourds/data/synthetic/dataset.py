"""The map-style dataset of procedural 4D scenes and the infinite pretraining source over them.

Sample ``i`` of ``SyntheticScenes(seed=s)`` is a pure function of ``(s, i)`` and the constructor's
settings: every draw comes from a ``torch.Generator`` seeded with ``derive_seed(s, i)`` and every
product is written out element-wise, so it is bit-identical in any process, worker or thread count.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.utils.data import Dataset

from fourds.data.synthetic.ground_truth import point_tracks, visible_boxes
from fourds.data.synthetic.renderer import FIRST_OBJECT, render
from fourds.data.synthetic.scene import Scene, SceneConfig, sample_scene
from fourds.seeding import derive_seed, generator

CONTRACT_KEYS = ("video", "depth", "intrinsics", "cam_to_world", "tracks", "visible", "track_object", "boxes",
                 "box_valid", "label")


def motion_label(seed: int, index: int, num_classes: int) -> int:
    """The motion class of sample ``index``: each aligned block of ``num_classes`` consecutive indices
    holds every class once, in an order drawn from ``(seed, block)``, so classes are exactly balanced
    over any such block and not predictable from the index."""
    block, pos = divmod(int(index), num_classes)
    order = torch.randperm(num_classes, generator=generator(seed, block, "label"))
    return int(order[pos])


class SyntheticScenes(Dataset):
    """Procedural 4D scenes with exact ground truth (see ``docs/synthetic.md``).

    ``ds[i]`` is a dict of tensors (``T = num_frames``, ``P = num_tracks``, ``O = max_objects``):

    - ``video`` ``(T, H, W, 3)`` float32 in [0, 1]
    - ``depth`` ``(T, H, W)`` float32, metres along the optical axis (z-depth)
    - ``intrinsics`` ``(3, 3)`` float32 (pixels, raster convention: pixel centres at +0.5)
    - ``cam_to_world`` ``(T, 4, 4)`` float32 (OpenCV camera axes; world z up, ground z = 0)
    - ``tracks`` ``(P, T, 2)`` float32 (x, y) pixels, ``visible`` ``(P, T)`` bool
    - ``track_object`` ``(P,)`` int64 (object index, ``-1`` = static background)
    - ``boxes`` ``(O, T, 4)`` float32 (x0, y0, x1, y1) visible-extent pixels, ``box_valid`` ``(O, T)`` bool
    - ``label`` 0-d int64, the main object's motion direction (``num_classes`` classes)

    and extras: ``segmentation`` ``(T, H, W)`` int64 (object index, ``-1`` background),
    ``query_points`` ``(P, 3)`` float32 (t, y, x), ``tracks_3d`` ``(P, T, 3)`` float32 world metres,
    ``object_valid`` ``(O,)`` bool, ``object_shape`` ``(O,)`` int64 (0 sphere, 1 box, -1 absent),
    ``object_size`` ``(O, 3)`` half-extents (m), ``object_to_world`` ``(O, T, 4, 4)`` (identity when
    absent), ``object_velocity`` ``(O, 3)`` m/frame, ``object_angular_velocity`` ``(O, 3)`` rad/frame
    (axis times rate), ``num_objects`` and ``index`` (0-d int64).

    Args:
        num_frames: frames per clip (any ``>= 1``; 16 to 32 is the intended range).
        height, width: frame size in pixels.
        seed: dataset seed; use different seeds for train/validation/test splits.
        num_samples: ``len(ds)``; indices beyond it are still valid scenes (``scene(i)``).
        num_tracks: ``P``, query points per clip.
        max_objects: ``O``, the object slots (and the most objects a scene holds).
        min_objects: the fewest objects a scene holds.
        num_classes: motion directions of the label (sectors of ``360 / num_classes`` degrees).
        object_track_fraction: share of query points drawn on objects (the rest on the background).
        occlusion_tolerance: relative depth tolerance of the visibility test.
        min_box_pixels: fewest visible pixels for a valid box.
        shadows: render cast shadows.
        config: further scene ranges (:class:`SceneConfig`); ``max_objects``, ``min_objects`` and
            ``num_classes`` override its fields.
    """

    def __init__(
        self,
        num_frames: int = 16,
        height: int = 128,
        width: int = 128,
        seed: int = 0,
        num_samples: int = 1000,
        num_tracks: int = 256,
        max_objects: int = 10,
        min_objects: int = 3,
        num_classes: int = 8,
        object_track_fraction: float = 0.5,
        occlusion_tolerance: float = 0.02,
        min_box_pixels: int = 4,
        shadows: bool = True,
        config: SceneConfig | None = None,
    ) -> None:
        if num_frames < 1 or height < 1 or width < 1:
            raise ValueError(f"num_frames, height and width must be >= 1, got {num_frames}, {height}, {width}")
        if num_samples < 0:
            raise ValueError(f"num_samples={num_samples} must be >= 0")
        if not 0 < num_tracks <= height * width:
            raise ValueError(f"num_tracks={num_tracks} must lie in [1, H*W = {height * width}]")
        if not 0.0 <= object_track_fraction <= 1.0:
            raise ValueError(f"object_track_fraction={object_track_fraction} must lie in [0, 1]")
        cfg = dataclasses.replace(config or SceneConfig(), max_objects=max_objects, min_objects=min_objects,
                                  num_classes=num_classes)
        cfg.validate()
        self.config = cfg
        self.num_frames, self.height, self.width = num_frames, height, width
        self.seed, self.num_samples, self.num_tracks = seed, num_samples, num_tracks
        self.object_track_fraction, self.occlusion_tolerance = object_track_fraction, occlusion_tolerance
        self.min_box_pixels, self.shadows = min_box_pixels, shadows

    @property
    def max_objects(self) -> int:
        return self.config.max_objects

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def __len__(self) -> int:
        return self.num_samples

    def label(self, index: int) -> int:
        """The motion class of sample ``index`` (cheap: no rendering)."""
        return motion_label(self.seed, index, self.num_classes)

    def scene(self, index: int) -> Scene:
        """The sampled (unrendered) scene of ``index`` (any ``index >= 0``)."""
        gen = generator(self.seed, int(index))
        return sample_scene(gen, self.num_frames, self.height, self.width, self.config, self.label(index))

    def render_video(self, index: int) -> Tensor:
        """Only the frames ``(T, H, W, 3)`` float32 of sample ``index`` (skips the ground truth)."""
        return render(self.scene(index), shadows=self.shadows).video

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        index = int(index)
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} is out of range for {self.num_samples} samples")
        return self.sample(index)

    def sample(self, index: int) -> dict[str, Tensor]:
        """Sample ``index`` (any ``index >= 0``, also beyond ``len``): the dict described above."""
        gen = generator(self.seed, index)
        scene = sample_scene(gen, self.num_frames, self.height, self.width, self.config, self.label(index))
        rendering = render(scene, shadows=self.shadows)
        tracks = point_tracks(scene, rendering, gen, self.num_tracks, self.object_track_fraction,
                              self.occlusion_tolerance)
        o_max, t_, n = self.max_objects, self.num_frames, scene.num_objects
        boxes, box_valid = visible_boxes(rendering.surface, o_max, self.min_box_pixels)
        object_to_world = torch.eye(4).repeat(o_max, t_, 1, 1)
        object_to_world[:n] = scene.object_to_world

        def pad(values: Tensor, fill: float = 0.0) -> Tensor:
            out = torch.full((o_max, *values.shape[1:]), fill, dtype=values.dtype)
            out[:n] = values
            return out

        return {
            "video": rendering.video,
            "depth": rendering.depth,
            "intrinsics": scene.intrinsics,
            "cam_to_world": scene.cam_to_world,
            "tracks": tracks.tracks,
            "visible": tracks.visible,
            "track_object": tracks.track_object,
            "boxes": boxes,
            "box_valid": box_valid,
            "label": torch.tensor(scene.label, dtype=torch.int64),
            "segmentation": (rendering.surface - FIRST_OBJECT).clamp_min_(-1),
            "query_points": tracks.query_points,
            "tracks_3d": tracks.points_3d,
            "object_valid": torch.arange(o_max) < n,
            "object_shape": pad(scene.shape, -1),
            "object_size": pad(scene.size),
            "object_to_world": object_to_world,
            "object_velocity": pad(scene.velocity),
            "object_angular_velocity": pad(scene.angular_velocity),
            "num_objects": torch.tensor(n, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }


class SyntheticVideos:
    """Infinite pretraining :class:`~fourds.data.pretrain.VideoSource` of procedural scenes.

    The clip of sample id ``n`` is the video of ``SyntheticScenes(seed=derive_seed(seed, "pretrain"))``
    scene ``n`` at ``size`` — a stream separate from the small-integer seeds that evaluation splits use.
    A scene's motion spans its clip whatever the frame count, so ``stride`` has no meaning here and is
    ignored, as is the clip ``generator`` (the augmentation that follows uses it).
    """

    def __init__(self, size: tuple[int, int] = (74, 74), seed: int = 0, **scene_options) -> None:
        self.size = size
        self.seed = seed
        self.scene_options = scene_options
        self._datasets: dict[int, SyntheticScenes] = {}

    def _dataset(self, num_frames: int) -> SyntheticScenes:
        if num_frames not in self._datasets:
            h, w = self.size
            self._datasets[num_frames] = SyntheticScenes(
                num_frames, h, w, seed=derive_seed(self.seed, "pretrain"), num_samples=0, num_tracks=1,
                **self.scene_options)
        return self._datasets[num_frames]

    def clip(self, sample_id: int, num_frames: int, stride: int, generator: torch.Generator) -> Tensor:
        """Frames ``(num_frames, H, W, 3)`` uint8 of scene ``sample_id``."""
        video = self._dataset(num_frames).render_video(int(sample_id))
        return (video * 255).round_().to(torch.uint8)
