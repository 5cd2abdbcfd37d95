"""Pretraining clips, indexed by a global sample id so that resuming never re-reads the past.

Sample ``n`` of a run is a pure function of ``(seed, n)``: which video, which start frame, the crop and
the flip are drawn from a generator seeded by both. Step ``s`` of a run with global batch ``G`` consumes
ids ``s*G .. s*G+G-1``, split over ranks and accumulation micro-batches (:class:`StepBatchSampler`), so
a resumed run continues at ``start_step * G`` without touching earlier samples, and one process or N
ranks with the same global batch see the same clips.

Sources implement :class:`VideoSource`. A loader yields dicts ``{"video": uint8 (b, T, S, S, 3),
"sample_id": int64 (b,)}``; the model side converts with :func:`fourds.data.to_float` after transfer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from fourds.data.geometry import apply_geometry, resize_short_side_crop
from fourds.seeding import derive_seed


def to_uint8(video: Tensor) -> Tensor:
    """float [0, 1] → uint8 (rounded); uint8 passes through."""
    if video.dtype == torch.uint8:
        return video
    return (video.clamp(0, 1) * 255).round_().to(torch.uint8)


class VideoSource(Protocol):
    """Where pretraining clips come from."""

    def clip(self, sample_id: int, num_frames: int, stride: int, generator: torch.Generator) -> Tensor:
        """Frames ``(num_frames, H, W, 3)`` (uint8, or float in [0, 1]) of the clip of ``sample_id``."""
        ...


class InMemoryVideos:
    """A list of ``(T, H, W, 3)`` videos (uint8 or float in [0, 1]); epochs visit each video once in a
    seeded order, the clip start is uniform. Videos shorter than a clip repeat their last frame."""

    def __init__(self, videos: Sequence[Tensor], seed: int = 0) -> None:
        if len(videos) == 0:
            raise ValueError("InMemoryVideos needs at least one video")
        for i, v in enumerate(videos):
            if v.ndim != 4 or v.shape[-1] != 3:
                raise ValueError(f"video {i} has shape {tuple(v.shape)}; expected (T, H, W, 3)")
        self.videos = list(videos)
        self.seed = seed

    def clip(self, sample_id: int, num_frames: int, stride: int, generator: torch.Generator) -> Tensor:
        n = len(self.videos)
        epoch, pos = divmod(sample_id, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
        video = self.videos[int(order[pos])]
        span = (num_frames - 1) * stride + 1
        start = int(torch.randint(0, max(1, video.shape[0] - span + 1), (1,), generator=generator))
        idx = (start + stride * torch.arange(num_frames)).clamp(max=video.shape[0] - 1)
        return video[idx]


class RandomVideos:
    """Procedural "moving squares" clips (no files): textured squares moving at constant velocity over
    a smooth gradient. Cheap, and has motion; for smoke tests and benchmarks that do not care about
    content. ``size`` is the generated frame size (h, w)."""

    def __init__(self, size: tuple[int, int] = (80, 80), num_squares: int = 3) -> None:
        self.size = size
        self.num_squares = num_squares

    def clip(self, sample_id: int, num_frames: int, stride: int, generator: torch.Generator) -> Tensor:
        h, w = self.size
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        base = torch.rand(2, 3, generator=generator)
        frame = base[0] + (base[1] - base[0]) * (xx / w)[..., None]
        video = frame.expand(num_frames, h, w, 3).clone()
        t = torch.arange(num_frames, dtype=torch.float32)[:, None, None] * stride
        for _ in range(self.num_squares):
            colour = torch.rand(3, generator=generator)
            side = float(torch.empty(()).uniform_(0.15, 0.35, generator=generator)) * min(h, w)
            x0, y0 = float(torch.rand((), generator=generator)) * w, float(torch.rand((), generator=generator)) * h
            vx, vy = (torch.rand(2, generator=generator) * 2 - 1).tolist()
            cx, cy = x0 + vx * t, y0 + vy * t
            inside = ((xx - cx).abs() < side / 2) & ((yy - cy).abs() < side / 2)
            checker = (((xx // 4) + (yy // 4)) % 2).bool()
            shade = torch.where(checker, 1.0, 0.6)[None, ..., None] * colour
            video = torch.where(inside[..., None], shade.expand_as(video), video)
        return video.clamp(0, 1)


@dataclass(frozen=True)
class ClipSpec:
    """Clip sampling and augmentation of pretraining (paper Section 3.2)."""

    num_frames: int = 16
    frame_stride: int = 2
    image_size: int = 224
    min_resize: float = 1.15
    max_resize: float | None = None
    flip: bool = True


class PretrainClips(Dataset):
    """Map-style over sample ids: ``ds[n]`` = ``{"video": uint8 (T, S, S, 3), "sample_id": n}``, plus
    ``"key"`` (str) and ``"failed"`` (newline-joined ``"key: reason"`` of skipped bad videos) for sources
    with ``clip_with_info`` (:class:`fourds.data.sources.FileVideos`)."""

    def __init__(self, source: VideoSource, spec: ClipSpec, seed: int = 0) -> None:
        self.source = source
        self.spec = spec
        self.seed = seed

    def __len__(self) -> int:  # the id space is unbounded; the sampler decides what is read
        return 2**62

    def __getitem__(self, sample_id: int) -> dict[str, Tensor | int | str]:
        spec = self.spec
        gen = torch.Generator().manual_seed(derive_seed(self.seed, sample_id))
        info: dict = {}
        if hasattr(self.source, "clip_with_info"):  # file sources: the video's key and skipped bad files
            video, info = self.source.clip_with_info(int(sample_id), spec.num_frames, spec.frame_stride, gen)
        else:
            video = self.source.clip(int(sample_id), spec.num_frames, spec.frame_stride, gen)
        ops = resize_short_side_crop(
            tuple(video.shape[1:3]), spec.image_size, spec.min_resize, spec.max_resize,
            random=True, flip=spec.flip, generator=gen,
        )
        video = apply_geometry(ops, {"video": to_uint8(video)})["video"]
        out: dict[str, Tensor | int | str] = {"video": video, "sample_id": int(sample_id)}
        if info:
            out["key"] = info["key"]
            out["failed"] = "\n".join(info["failed"])  # "key: reason" lines (strings collate to lists)
        return out


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of sample ids for steps ``start_step .. steps-1``.

    Global step ``s`` owns ids ``[s*G, (s+1)*G)``; micro-batch ``m`` of rank ``r`` takes the ``b`` ids
    starting at ``s*G + (m*world + r)*b`` with ``b = G / (world * accum)``.
    """

    def __init__(self, start_step: int, steps: int, global_batch: int, rank: int = 0, world_size: int = 1, accum: int = 1) -> None:
        if global_batch % (world_size * accum):
            raise ValueError(
                f"--batch-size {global_batch} must be divisible by world size x --grad-accum = "
                f"{world_size} x {accum}"
            )
        self.start_step, self.steps = start_step, steps
        self.global_batch, self.rank, self.world, self.accum = global_batch, rank, world_size, accum
        self.micro = global_batch // (world_size * accum)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.steps):
            for m in range(self.accum):
                first = step * self.global_batch + (m * self.world + self.rank) * self.micro
                yield list(range(first, first + self.micro))

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.accum


def make_loader(
    dataset: Dataset, sampler: StepBatchSampler, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """DataLoader over a step sampler (workers persist across the run; prefetch 2 batches each)."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def build_source(spec: str, seed: int = 0, image_size: int = 224) -> VideoSource:
    """Resolve a ``--data`` spec to a :class:`VideoSource`.

    ``random``: :class:`RandomVideos` at ~1.25x the crop size. ``synthetic``: procedural 4D scenes
    (:class:`fourds.data.synthetic.SyntheticVideos`, an infinite stream whose clip ``n`` is a pure
    function of ``(seed, n)``), rendered at ``round(1.15 x image_size)`` square, the
    default resize of pretraining, so the augmentation's resize is a no-op and only crops and flips.
    """
    if spec == "random":
        side = int(round(image_size * 1.25))
        return RandomVideos(size=(side, side))
    if spec == "synthetic":
        from fourds.data.synthetic import SyntheticVideos

        side = round(1.15 * image_size)
        return SyntheticVideos(size=(side, side), seed=seed)
    raise ValueError(
        f"--data {spec!r} is not a known source; use 'synthetic' or 'random' (file sources: see the README)"
    )
