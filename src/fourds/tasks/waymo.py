"""Box tracking on Waymo Open (paper Appendix A.2.5).

Queries. Every box is given in the clip's first frame; boxes not valid there, or smaller than 0.5% of
that frame's area, are dropped, and at most 25 are kept (the largest first-frame boxes).

Readout (:class:`BoxTrackReadout`): the normalised first-frame box ``(x0/W, y0/H, x1/W, y1/H)`` →
Fourier features (16 frequencies per coordinate) → MLP 512 → 512 → projected to 1024 channels (4
heads); one query predicts the box in all 16 frames (64 numbers, normalised ``(x0, y0, x1, y1)``, no
output activation) (12,482,624 parameters on a 1024-wide backbone, Table 6).

Loss: the paper does not state it; we take the L1 distance of the normalised coordinates, averaged
over the 4 coordinates of every valid (box, frame) pair of the batch, frame 0 included.

Metric: ``box_iou``: per clip the mean IoU over valid (box, frame) pairs excluding frame 0; the data
set's figure is the mean over all its valid pairs (per-clip values weighted by
:func:`fourds.metrics.box_valid_pair_counts`, given as ``waymo/box_iou_weight``).

Data: frames at 5 fps (stride 2 on the 10 Hz camera), the video resized to 256 px high (256x384 for
Waymo's 1280x1920) and centre-cropped to 256x256, in training and evaluation alike; training takes a
random 16-frame window, evaluation the centred one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from fourds.data.geometry import apply_geometry, resize_short_side_crop
from fourds.device_constants import constant
from fourds.metrics import METRIC_SPECS, box_iou_tracking, box_valid_pair_counts
from fourds.readouts import AttentionReadout, FourierQueryEmbedding
from fourds.tasks.base import Sample, Task, frame_size_of
from fourds.tasks.registry import register

BOX_FIELDS = ("boxes", "box_valid", "box_object", "box_class", "object_valid", "object_shape", "object_size",
              "object_to_world", "object_velocity", "object_angular_velocity")
"""Per-box keys a box subset must index together."""


class BoxTrackReadout(nn.Module):
    """Fourier-embedded first-frame boxes as queries; each predicts its box in every frame.

    Args:
        dim: backbone width D.
        channels, num_heads: readout width and heads.
        num_frames: frames predicted per box (the readout's time steps too).
        frame_size: ``(H, W)`` of the clips, to normalise the query boxes.
        embed_dim: Fourier MLP width (512).
        num_frequencies: Fourier frequencies per coordinate (16).
        max_frequency: highest Fourier frequency, cycles per frame (128: one pixel of a 256-pixel frame).
        predict_offsets: predict each frame's box as the query box plus an output offset instead of the
            output itself (the paper's); a readout then starts from "the box does not move".
        query_residual: keep the readout's ``query +`` residual (the paper's); see
            :class:`fourds.readouts.AttentionReadout`.

    Shapes:
        ``forward(features, batch)`` with ``batch["boxes"]`` ``(B, O, T, 4)`` pixels (frame 0 is the
        query) returns normalised boxes ``(B, O, T, 4)``.
    """

    def __init__(self, dim: int, channels: int, num_heads: int, num_frames: int = 16,
                 frame_size: tuple[int, int] = (256, 256), embed_dim: int = 512, num_frequencies: int = 16,
                 max_frequency: float = 128.0, predict_offsets: bool = False, query_residual: bool = True) -> None:
        super().__init__()
        self.predict_offsets = predict_offsets
        self.num_frames = num_frames
        self.frame_size = tuple(frame_size)
        self.embed = FourierQueryEmbedding(4, num_frequencies, hidden_dim=embed_dim, out_dim=embed_dim,
                                           max_frequency=max_frequency)
        self.readout = AttentionReadout(dim, channels, num_heads, 4 * num_frames, query_dim=embed_dim,
                                        steps=num_frames, query_residual=query_residual)
        if predict_offsets:  # start exactly at "nothing moves" (a LeCun-initialised head starts O(1) away)
            nn.init.zeros_(self.readout.head.weight)
            nn.init.zeros_(self.readout.head.bias)

    def forward(self, features: Tensor, batch: Sample) -> Tensor:
        boxes = batch["boxes"]
        b, o = boxes.shape[:2]
        h, w = self.frame_size
        scale = constant((w, h, w, h), torch.float32, boxes.device)
        query = boxes[:, :, 0].float() / scale
        out = self.readout(features, self.embed(query))  # (B, O, 4T)
        out = out.reshape(b, o, self.num_frames, 4)
        return query[:, :, None] + out if self.predict_offsets else out


def filter_boxes(sample: Sample, min_area_fraction: float = 0.005, max_boxes: int = 25) -> Sample:
    """Keep boxes valid in frame 0 whose frame-0 area is at least ``min_area_fraction`` of the frame,
    at most ``max_boxes`` of them (largest first-frame area first)."""
    h, w = frame_size_of(sample)
    boxes = sample["boxes"]
    first = boxes[:, 0]
    area = (first[:, 2] - first[:, 0]).clamp_min(0) * (first[:, 3] - first[:, 1]).clamp_min(0)
    keep = sample["box_valid"][:, 0].bool() & (area >= min_area_fraction * h * w)
    idx = torch.nonzero(keep).flatten()
    idx = idx[torch.argsort(area[idx], descending=True, stable=True)][:max_boxes]
    out = dict(sample)
    for key in BOX_FIELDS:
        if key in sample:
            out[key] = sample[key][idx]
    return out


@register
@dataclass
class WaymoTask(Task):
    """Box tracking (see the module docstring).

    Attributes:
        embed_dim: Fourier MLP width (query embedding).
        query_max_frequency: highest Fourier frequency of the query embedding, cycles per frame (128,
            one pixel of a 256-pixel frame; lower it for small frames or little training data).
        predict_offsets: boxes as query box + predicted offset (False: the paper's direct output).
        query_residual: the readout's ``token = query + ...`` residual (True: the paper's design).
        min_box_fraction: boxes smaller than this fraction of the first frame are dropped.
        max_boxes: boxes kept per clip.
    """

    name: ClassVar[str] = "waymo"
    metric_names: ClassVar[tuple] = (METRIC_SPECS["box_iou"],)
    primary_metric_name: ClassVar[str] = "box_iou"
    data_sources: ClassVar[dict[str, str]] = {"train": "waymo", "eval": "waymo"}

    input_size: tuple[int, int] = (256, 256)
    channels: int = 1024
    num_heads: int = 4
    embed_dim: int = 512
    query_max_frequency: float = 128.0
    predict_offsets: bool = False
    query_residual: bool = True
    min_box_fraction: float = 0.005
    max_boxes: int = 25

    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module:
        return BoxTrackReadout(dim, self.channels, self.num_heads, self.num_frames, self.input_size, self.embed_dim,
                               max_frequency=self.query_max_frequency, predict_offsets=self.predict_offsets,
                               query_residual=self.query_residual)

    # ------------------------------------------------------------------ transforms
    def eval_geometry(self, clip: Sample) -> Sample:
        # Short side to the crop size (Waymo's 1280x1920 → 256x384), then the central crop.
        ops = resize_short_side_crop(frame_size_of(clip), self.input_size, 1.0, random=False)
        return filter_boxes(apply_geometry(ops, clip), self.min_box_fraction, self.max_boxes)

    def train_geometry(self, clip: Sample, generator: torch.Generator) -> Sample:
        return self.eval_geometry(clip)  # the paper's training crop is the central one too

    # ------------------------------------------------------------------ loss and metrics
    def _scale(self, device: torch.device) -> Tensor:
        h, w = self.input_size
        return constant((w, h, w, h), torch.float32, device)

    def loss(self, outputs: Tensor, batch: Sample) -> Tensor:
        gt = batch["boxes"].float() / self._scale(outputs.device)
        mask = batch["box_valid"].bool()[..., None].expand_as(gt).float()
        return ((outputs.float() - gt).abs() * mask).sum() / mask.sum().clamp_min(1.0)

    def metrics(self, outputs: Tensor, batch: Sample) -> dict[str, Tensor]:
        pred = outputs.float() * self._scale(outputs.device)
        valid = batch["box_valid"].bool()
        key = self.key("box_iou")
        return {key: box_iou_tracking(pred, batch["boxes"].float(), valid),
                f"{key}_weight": box_valid_pair_counts(valid)}

    def predictions(self, outputs: Tensor, batch: Sample) -> dict[str, Tensor]:
        """``boxes`` ``(B, O, T, 4)`` pixels of the clip."""
        return {"boxes": outputs.float() * self._scale(outputs.device)}
