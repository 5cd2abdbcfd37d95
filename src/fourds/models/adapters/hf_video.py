"""Hugging Face video models behind the Backbone contract: VideoMAE (v1) and V-JEPA 2.

Both tokenise ``(tubelet, p, p)`` tubelets (2 x 16 x 16 for the released models) and attend over all
tokens. Frames are resized whole (no crop) to the model's resolution and normalised with ImageNet
statistics (or the checkpoint's ``(video_)preprocessor_config.json``). Layer ``k`` is the raw output of
block ``k`` (before any final LayerNorm); layer 0 is the tubelet embedding (plus VideoMAE's fixed
sinusoidal positional embedding; V-JEPA 2 has none: its positions enter every attention as 3-D RoPE).

Frame count:

* ``videomae``: the positional table is fixed to ``config.num_frames`` (16), so the clip is resampled
  to exactly that many frames (nearest frame, centred), and ``T' = num_frames / tubelet``.
* ``vjepa2``: RoPE works for any number of frames, so the clip keeps its own frame count (padded by
  repeating the last frame to a multiple of the tubelet), ``T' = ceil(T / tubelet)``; ``?num_frames=N``
  resamples to N frames instead. The spatial size must stay ``config.crop_size`` (the RoPE position ids
  assume that grid). Only the encoder is kept; the predictor is dropped at load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einops import rearrange
from torch import Tensor, nn

from fourds.models.adapters.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneAdapter,
    check_video,
    collect_layers,
    normalise,
    pad_frames,
    resample_frames,
    resize_frames,
)
from fourds.models.adapters.hf_image import find_submodule
from fourds.models.adapters.hub import load_hf_model, processor_settings, read_json


@dataclass(frozen=True)
class VideoFamily:
    """How to load and feed one family.

    Attributes:
        model_class: the ``transformers`` class.
        input_name: keyword of the pixel tensor ``(B, T, 3, H, W)``.
        size_key: config key of the square resolution.
        frames_key: config key of the trained frame count.
        fixed_frames: the model only accepts ``config[frames_key]`` frames.
    """

    model_class: str
    input_name: str
    size_key: str
    frames_key: str
    fixed_frames: bool


VIDEO_FAMILIES: dict[str, VideoFamily] = {
    "videomae": VideoFamily("VideoMAEModel", "pixel_values", "image_size", "num_frames", True),
    "vjepa2": VideoFamily("VJEPA2Model", "pixel_values_videos", "crop_size", "frames_per_clip", False),
}


class HFVideoBackbone(BackboneAdapter):
    """A Hugging Face video ViT (see the module docstring).

    Args:
        model: the module to call (VideoMAE: the model; V-JEPA 2: its encoder).
        family: its :class:`VideoFamily`.
        config: the model's ``transformers`` config.
        num_frames: frames fed to the model; None keeps the clip's own count (V-JEPA 2 only).
        mean: normalisation mean.
        std: normalisation std.
        spec: the spec string, for logs.
    """

    def __init__(self, model: nn.Module, family: VideoFamily, config: Any, num_frames: int | None,
                 mean: tuple[float, ...], std: tuple[float, ...], spec: str = "") -> None:
        super().__init__()
        self.model = model
        self.family = family
        self.tubelet = int(config.tubelet_size)
        patch = int(config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0])
        trained_frames = int(getattr(config, family.frames_key))
        if family.fixed_frames and num_frames not in (None, trained_frames):
            raise ValueError(
                f"{spec or config.model_type} only takes {trained_frames} frames (fixed positional table); "
                f"drop ?num_frames={num_frames}: clips are resampled to {trained_frames} frames"
            )
        if family.fixed_frames:
            num_frames = trained_frames
        if num_frames is not None and num_frames % self.tubelet:
            raise ValueError(f"num_frames={num_frames} is not a multiple of the tubelet size {self.tubelet}")
        self.num_frames = num_frames
        self.image_size = int(getattr(config, family.size_key))
        self.num_layers = int(config.num_hidden_layers)
        self.dim = int(config.hidden_size)
        self.patch_size = (self.tubelet, patch, patch)
        self.input_size = (num_frames or trained_frames, self.image_size, self.image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self._embed_path = find_submodule(model, ("embeddings",), "tubelet embedding")
        self._blocks_path = find_submodule(model, ("encoder.layer", "layer"), "transformer blocks")
        if len(self.blocks) != self.num_layers:
            raise RuntimeError(f"{type(model).__name__} has {len(self.blocks)} blocks but its config says {self.num_layers}")
        self.spec = spec

    @classmethod
    def from_folder(cls, folder: Path, num_frames: int | None = None, image_size: int | None = None,
                    spec: str = "") -> HFVideoBackbone:
        """Load the checkpoint in ``folder`` (its ``model_type`` must be one of :data:`VIDEO_FAMILIES`)."""
        config = read_json(folder / "config.json")
        family = VIDEO_FAMILIES[config["model_type"]]
        if image_size is not None and int(image_size) != int(config[family.size_key]):
            raise ValueError(
                f"{spec or config['model_type']} runs at {config[family.size_key]} pixels only "
                f"({family.size_key} in its config); drop ?image_size={image_size}"
            )
        proc = processor_settings(folder)
        model = load_hf_model(family.model_class, folder)
        hf_config = model.config
        if config["model_type"] == "vjepa2":
            model = model.encoder  # the predictor is pretraining-only
        return cls(model, family, hf_config, num_frames, proc.get("image_mean", IMAGENET_MEAN),
                   proc.get("image_std", IMAGENET_STD), spec)

    @property
    def embeddings(self) -> nn.Module:
        return self.model.get_submodule(self._embed_path)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self._blocks_path)  # type: ignore[return-value]

    def frames_for(self, t: int) -> int:
        """Frames fed to the model for a clip of ``t`` frames."""
        return self.num_frames if self.num_frames is not None else math.ceil(t / self.tubelet) * self.tubelet

    def token_grid(self, video_shape: Any) -> tuple[int, int, int]:
        p = self.patch_size[1]
        return self.frames_for(int(video_shape[1])) // self.tubelet, self.image_size // p, self.image_size // p

    def preprocess(self, video: Tensor) -> Tensor:
        """``(B, T, H, W, 3)`` [0, 1] → normalised ``(B, T_model, 3, S, S)``."""
        b, t, _, _ = check_video(video)
        video = resample_frames(video.float(), self.num_frames) if self.num_frames is not None else pad_frames(video.float(), self.tubelet)
        frames = resize_frames(rearrange(video, "b t h w c -> (b t) c h w"), (self.image_size, self.image_size))
        frames = normalise(frames, self.mean, self.std, channel_dim=1)
        return rearrange(frames, "(b t) c h w -> b t c h w", b=b)

    def forward_layers(self, inputs: Tensor, layers: list[int], video_shape: tuple[int, ...]) -> dict[int, Tensor]:
        t_grid, h, w = self.token_grid(video_shape)
        call = lambda: self.model(**{self.family.input_name: inputs})  # noqa: E731
        tokens = collect_layers(call, self.embeddings, self.blocks, layers)
        return {k: rearrange(v, "b (t n) c -> b t n c", t=t_grid, n=h * w) for k, v in tokens.items()}
