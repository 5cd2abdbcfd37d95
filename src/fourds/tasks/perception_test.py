"""Point tracking: trained on Kubric MOVi-E, evaluated on Perception Test (paper Appendix A.2.4).

Queries. Every track is queried at the clip's first frame; tracks not visible there are dropped (in
training and in evaluation). Reader query points are ignored (the paper's protocol).

Readout (:class:`PointTrackReadout`): the normalised query point ``(x / W, y / H)`` → Fourier features
(16 frequencies per coordinate, :class:`fourds.readouts.FourierQueryEmbedding`) → MLP 512 → 512;
8 replicas of each query, each plus its own learned 512-d temporal embedding, are projected to the
readout's 1024 channels (8 heads); replica ``r`` predicts frames ``2r`` and ``2r + 1``, 4 numbers per
frame: ``(x, y)`` through a sigmoid (normalised position), an occlusion logit and an uncertainty logit
(12,396,552 parameters on a 1024-wide backbone, Table 6).

Loss (TAPIR, the paper's reference [22]): ``100 * Huber(position) + 0.1 * BCE(occlusion) +
0.1 * BCE(uncertainty)``.

- Position: Huber of the Euclidean distance between predicted and true normalised positions, delta
  ``4/256`` (TAPIR's 4 pixels of a 256x256 frame), over the frames where the point is visible.
- Occlusion: BCE of the occlusion logit against "not visible", over every frame of every real track.
- Uncertainty: BCE of the uncertainty logit against "the (detached) position error exceeds 6 pixels
  of a 256x256 frame" (TAPIR's ``expected_dist_thresh``), over visible frames.

Every term is averaged over its valid entries in the batch (padded tracks never count). A point is
predicted visible when ``(1 - sigmoid(occ)) * (1 - sigmoid(unc)) > 0.5``.

Metrics: :func:`fourds.metrics.tapvid` in ``"first"`` mode (query frame 0) with tracks rescaled to the
pixel coordinates of a 256x256 frame, where TAP-Vid's thresholds are defined, whatever the input size;
the primary metric is ``average_jaccard`` (per-video values, plain mean over videos).

Data. Training (MOVi-E): a random window of 16 consecutive frames, an Inception-style crop (area
0.3–1.0, aspect 0.5–2.0) resized to the input size, then 64 tracks sampled among those visible in the
first frame. Evaluation (Perception Test): one centred window of 16 frames at stride 4, the whole frame
resized to the input size (TAP-Vid practice), every track visible in the first frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fourds.data.geometry import Resize, apply_geometry, random_resized_crop
from fourds.device_constants import constant
from fourds.metrics import METRIC_SPECS, TAPVID_THRESHOLDS, tapvid
from fourds.readouts import AttentionReadout, FourierQueryEmbedding
from fourds.tasks.base import Sample, Task, frame_size_of
from fourds.tasks.registry import register

TRACK_FIELDS = ("tracks", "visible", "track_object", "track_valid", "tracks_3d")
"""Per-track keys a track subset must index together."""

TAPVID_KEYS = (
    "average_jaccard",
    "average_pts_within_thresh",
    "occlusion_accuracy",
    *[f"jaccard_{t}" for t in TAPVID_THRESHOLDS],
    *[f"pts_within_{t}" for t in TAPVID_THRESHOLDS],
)

METRIC_FRAME = 256.0
"""TAP-Vid's thresholds are pixels of a 256x256 frame."""


class PointTrackReadout(nn.Module):
    """Fourier-embedded query points, replicated over time, read out per pair of frames.

    Args:
        dim: backbone width D.
        channels, num_heads: readout width and heads.
        num_frames: frames predicted per track (the readout's time steps too).
        frames_per_query: frames each replica predicts (2 in the paper: 8 replicas for 16 frames).
        frame_size: ``(H, W)`` of the clips, to normalise the query points.
        embed_dim: width of the Fourier MLP (512) and of the replica embeddings.
        num_frequencies: Fourier frequencies per coordinate (16).
        max_frequency: highest Fourier frequency, cycles per frame (128: one pixel of a 256-pixel frame).
        predict_offsets: predict each frame's position as the query point plus an output offset instead
            of ``sigmoid(output)`` (the paper's); a readout then starts from "the point does not move".
        query_residual: keep the readout's ``query +`` residual (the paper's); see
            :class:`fourds.readouts.AttentionReadout`.

    Shapes:
        ``forward(features, batch)`` with ``batch["tracks"]`` ``(B, P, T, 2)`` (the query is frame 0)
        returns ``{"points": (B, P, T, 2)`` normalised (x, y) (in (0, 1) unless ``predict_offsets``), ``"occlusion_logit"`` and
        ``"uncertainty_logit"`` ``(B, P, T)}``.
    """

    def __init__(self, dim: int, channels: int, num_heads: int, num_frames: int = 16, frames_per_query: int = 2,
                 frame_size: tuple[int, int] = (224, 224), embed_dim: int = 512, num_frequencies: int = 16,
                 max_frequency: float = 128.0, predict_offsets: bool = False, query_residual: bool = True) -> None:
        super().__init__()
        self.predict_offsets = predict_offsets
        if num_frames % frames_per_query:
            raise ValueError(
                f"PointTrackReadout: num_frames={num_frames} must be a multiple of frames_per_query={frames_per_query}"
            )
        self.num_frames, self.frames_per_query = num_frames, frames_per_query
        self.frame_size = tuple(frame_size)
        self.embed = FourierQueryEmbedding(2, num_frequencies, hidden_dim=embed_dim, out_dim=embed_dim,
                                           max_frequency=max_frequency)
        self.replica_embedding = nn.Parameter(torch.zeros(num_frames // frames_per_query, embed_dim))
        nn.init.normal_(self.replica_embedding, std=0.02)
        self.readout = AttentionReadout(dim, channels, num_heads, 4 * frames_per_query, query_dim=embed_dim,
                                        steps=num_frames, query_residual=query_residual)
        if predict_offsets:  # start exactly at "nothing moves" (a LeCun-initialised head starts O(1) away)
            nn.init.zeros_(self.readout.head.weight)
            nn.init.zeros_(self.readout.head.bias)

    def forward(self, features: Tensor, batch: Sample) -> dict[str, Tensor]:
        tracks = batch["tracks"]
        b, p = tracks.shape[:2]
        h, w = self.frame_size
        query = tracks[:, :, 0].float() / constant((w, h), torch.float32, tracks.device)
        emb = self.embed(query)[:, :, None] + self.replica_embedding.to(features.dtype)  # (B, P, R, E)
        out = self.readout(features, emb.flatten(1, 2))  # (B, P*R, 4*fpq)
        out = out.reshape(b, p, self.num_frames, 4)
        points = query[:, :, None] + out[..., :2] if self.predict_offsets else torch.sigmoid(out[..., :2])
        return {
            "points": points,
            "occlusion_logit": out[..., 2],
            "uncertainty_logit": out[..., 3],
        }


def predicted_visible(outputs: dict[str, Tensor]) -> Tensor:
    """``(B, P, T)`` bool: ``(1 - sigmoid(occ)) * (1 - sigmoid(unc)) > 0.5``."""
    occ = torch.sigmoid(outputs["occlusion_logit"].float())
    unc = torch.sigmoid(outputs["uncertainty_logit"].float())
    return (1 - occ) * (1 - unc) > 0.5


def huber(dist: Tensor, delta: float) -> Tensor:
    """Huber penalty of non-negative distances: ``d²/2`` below ``delta``, ``delta (d - delta/2)`` above."""
    return torch.where(dist < delta, 0.5 * dist.square(), delta * (dist - 0.5 * delta))


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``; 0 (with a gradient path) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def select_tracks(sample: Sample, keep: Tensor) -> Sample:
    """Keep the tracks ``keep`` (bool ``(P,)`` or indices) in every per-track key."""
    out = dict(sample)
    for key in TRACK_FIELDS:
        if key in sample:
            out[key] = sample[key][keep]
    return out


def first_frame_tracks(sample: Sample, max_tracks: int | None = None, generator: torch.Generator | None = None) -> Sample:
    """Drop tracks not visible in frame 0 (and padding), then keep at most ``max_tracks`` of them:
    a random subset when ``generator`` is given, else the first ones."""
    keep = sample["visible"][:, 0].bool()
    if "track_valid" in sample:
        keep = keep & sample["track_valid"].bool()
    idx = torch.nonzero(keep).flatten()
    if max_tracks is not None and idx.numel() > max_tracks:
        if generator is not None:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:max_tracks]].sort().values
        else:
            idx = idx[:max_tracks]
    return select_tracks(sample, idx)


@register
@dataclass
class PerceptionTestTask(Task):
    """Point tracking (see the module docstring).

    Attributes:
        train_stride: stride of the training windows (MOVi-E: consecutive frames).
        frames_per_query: frames each query replica predicts.
        embed_dim: Fourier MLP width (query embedding).
        query_max_frequency: highest Fourier frequency of the query embedding, cycles per frame (128,
            one pixel of a 256-pixel frame; lower it for small frames or little training data).
        predict_offsets: positions as query + predicted offset (False: the paper's sigmoid output).
        query_residual: the readout's ``token = query + ...`` residual (True: the paper's design).
        num_train_tracks: tracks sampled per training clip.
        max_eval_tracks: cap on the tracks of an evaluation clip (None: all).
        crop_area: area range of the training crop (fraction of the frame).
        crop_aspect: aspect-ratio range (w/h) of the training crop.
        huber_delta: Huber delta of the position loss, pixels of a 256x256 frame.
        uncertainty_threshold: error above which the uncertainty target is 1, pixels of a 256x256 frame.
        position_weight, occlusion_weight, uncertainty_weight: loss weights.
    """

    name: ClassVar[str] = "perception_test"
    metric_names: ClassVar[tuple] = tuple(METRIC_SPECS[k] for k in TAPVID_KEYS)
    primary_metric_name: ClassVar[str] = "average_jaccard"
    data_sources: ClassVar[dict[str, str]] = {"train": "movi_e", "eval": "perception_test"}

    frame_stride: int = 4
    channels: int = 1024
    num_heads: int = 8
    train_stride: int = 1
    frames_per_query: int = 2
    embed_dim: int = 512
    query_max_frequency: float = 128.0
    predict_offsets: bool = False
    query_residual: bool = True
    num_train_tracks: int = 64
    max_eval_tracks: int | None = None
    crop_area: tuple[float, float] = (0.3, 1.0)
    crop_aspect: tuple[float, float] = (0.5, 2.0)
    huber_delta: float = 4.0
    uncertainty_threshold: float = 6.0
    position_weight: float = 100.0
    occlusion_weight: float = 0.1
    uncertainty_weight: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.crop_area = tuple(float(v) for v in self.crop_area)  # type: ignore[assignment]
        self.crop_aspect = tuple(float(v) for v in self.crop_aspect)  # type: ignore[assignment]
        if self.num_frames % self.frames_per_query:
            raise ValueError(
                f"task {self.name}: num_frames={self.num_frames} must be a multiple of "
                f"frames_per_query={self.frames_per_query}"
            )

    @property
    def train_frame_stride(self) -> int:
        return self.train_stride

    def build_readout(self, dim: int, grid: tuple[int, int, int]) -> nn.Module:
        return PointTrackReadout(dim, self.channels, self.num_heads, self.num_frames, self.frames_per_query,
                                 self.input_size, self.embed_dim, max_frequency=self.query_max_frequency,
                                 predict_offsets=self.predict_offsets, query_residual=self.query_residual)

    # ------------------------------------------------------------------ transforms
    def train_geometry(self, clip: Sample, generator: torch.Generator) -> Sample:
        ops = random_resized_crop(frame_size_of(clip), self.input_size, self.crop_area, self.crop_aspect, generator)
        return first_frame_tracks(apply_geometry(ops, clip), self.num_train_tracks, generator)

    def eval_geometry(self, clip: Sample) -> Sample:
        out = apply_geometry([Resize(*self.input_size)], clip)
        return first_frame_tracks(out, self.max_eval_tracks)

    # ------------------------------------------------------------------ loss and metrics
    def _scale(self, device: torch.device) -> Tensor:
        h, w = self.input_size
        return constant((w, h), torch.float32, device)

    def loss(self, outputs: dict[str, Tensor], batch: Sample) -> Tensor:
        points = outputs["points"].float()
        gt = batch["tracks"].float() / self._scale(points.device)
        visible = batch["visible"].bool()
        valid = batch["track_valid"].bool()[..., None].expand_as(visible)
        dist = torch.sqrt((points - gt).square().sum(-1) + 1e-12)  # normalised units
        position = _masked_mean(huber(dist, self.huber_delta / METRIC_FRAME), visible & valid)
        occlusion = _masked_mean(
            F.binary_cross_entropy_with_logits(outputs["occlusion_logit"].float(), (~visible).float(), reduction="none"),
            valid,
        )
        far = (dist.detach() * METRIC_FRAME > self.uncertainty_threshold).float()
        uncertainty = _masked_mean(
            F.binary_cross_entropy_with_logits(outputs["uncertainty_logit"].float(), far, reduction="none"),
            visible & valid,
        )
        return (self.position_weight * position + self.occlusion_weight * occlusion
                + self.uncertainty_weight * uncertainty)

    def metrics(self, outputs: dict[str, Tensor], batch: Sample) -> dict[str, Tensor]:
        points = outputs["points"].float()
        gt = batch["tracks"].float() / self._scale(points.device)
        b, p = gt.shape[:2]
        values = tapvid(
            points * METRIC_FRAME,
            predicted_visible(outputs),
            gt * METRIC_FRAME,
            batch["visible"].bool(),
            torch.zeros(b, p, dtype=torch.long, device=gt.device),
            mode="first",
            track_valid=batch["track_valid"].bool(),
        )
        return {self.key(k): v for k, v in values.items()}

    def predictions(self, outputs: dict[str, Tensor], batch: Sample) -> dict[str, Tensor]:
        """``tracks`` ``(B, P, T, 2)`` pixels of the clip and ``visible`` ``(B, P, T)``."""
        return {"tracks": outputs["points"].float() * self._scale(outputs["points"].device),
                "visible": predicted_visible(outputs)}
