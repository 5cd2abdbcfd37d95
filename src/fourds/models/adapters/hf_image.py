"""Hugging Face image models behind the Backbone contract: DINOv2 and SigLIP, run per frame.

The paper's image-model protocol (Appendix A.3.4): every frame is encoded independently and the
per-frame token grids are stacked in time, so ``T' = T`` and the patch size is ``(1, p, p)``. Each frame
is resized whole (no crop) to the model's resolution and normalised with the model's statistics.
Layer ``k`` is the raw output of block ``k`` (before the model's final LayerNorm, like every other
backbone in fourds); layer 0 is the patch embedding plus the positional embedding. Prefix tokens (CLS,
registers) are dropped, so ``N = (S / p)^2`` spatial tokens per frame in row-major order.

Families, detected from ``model_type`` in the checkpoint's ``config.json``:

============================  =======================  ================  ======================
model_type                    class                    resolution        mean / std
============================  =======================  ================  ======================
``dinov2``                    ``Dinov2Model``          224 (paper)       ImageNet
``dinov2_with_registers``     ``Dinov2WithRegisters``  224               ImageNet
``siglip`` (vision tower)     ``SiglipVisionModel``    config image_size 0.5 / 0.5
``siglip_vision_model``       ``SiglipVisionModel``    config image_size 0.5 / 0.5
============================  =======================  ================  ======================

A ``preprocessor_config.json`` next to the weights overrides mean/std (and the DINOv2 crop size);
``?image_size=S`` overrides the resolution (DINOv2 interpolates its positional embedding, SigLIP is
called with ``interpolate_pos_encoding=True``); ``?frame_batch=N`` encodes at most N frames per forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from fourds.models.adapters.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneAdapter,
    check_video,
    collect_layers,
    normalise,
    resize_frames,
)
from fourds.models.adapters.hub import load_hf_model, processor_settings, read_json


@dataclass(frozen=True)
class ImageFamily:
    """How to load and feed one family.

    Attributes:
        model_class: the ``transformers`` class.
        mean: default normalisation mean (RGB).
        std: default normalisation std.
        default_size: default square resolution; None = the config's ``image_size``.
        interpolates: the model resizes its positional embedding itself for other resolutions.
    """

    model_class: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_size: int | None
    interpolates: bool


IMAGE_FAMILIES: dict[str, ImageFamily] = {
    "dinov2": ImageFamily("Dinov2Model", IMAGENET_MEAN, IMAGENET_STD, 224, True),
    "dinov2_with_registers": ImageFamily("Dinov2WithRegistersModel", IMAGENET_MEAN, IMAGENET_STD, 224, True),
    "siglip": ImageFamily("SiglipVisionModel", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None, False),
    "siglip_vision_model": ImageFamily("SiglipVisionModel", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None, False),
}

_EMBEDDINGS = ("embeddings", "vision_model.embeddings")
_BLOCKS = ("encoder.layer", "encoder.layers", "vision_model.encoder.layers")


def find_submodule(model: nn.Module, paths: tuple[str, ...], what: str) -> str:
    """The first of ``paths`` that exists in ``model`` (attribute layouts differ across transformers
    versions, e.g. SigLIP's ``vision_model.`` level). Adapters keep the path, not a second reference,
    so the submodule is registered once (``state_dict`` has no duplicate keys)."""
    for path in paths:
        try:
            model.get_submodule(path)
            return path
        except AttributeError:
            continue
    raise RuntimeError(f"cannot find the {what} of {type(model).__name__} (looked for {', '.join(paths)})")


class HFImageBackbone(BackboneAdapter):
    """A Hugging Face image ViT run per frame (see the module docstring).

    Args:
        model: the loaded ``transformers`` model.
        family: its :class:`ImageFamily`.
        image_size: square resolution the frames are resized to.
        mean: normalisation mean.
        std: normalisation std.
        num_frames: nominal clip length reported in ``input_size`` (any T works).
        frame_batch: encode at most this many frames per forward (``?frame_batch=N``; bounds the memory of
            large models on long batches); None: all ``B * T`` frames at once.
        spec: the spec string, for logs.
    """

    def __init__(self, model: nn.Module, family: ImageFamily, image_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], num_frames: int = 16, frame_batch: int | None = None, spec: str = "") -> None:
        super().__init__()
        cfg = getattr(model.config, "vision_config", None) or model.config
        patch = int(cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0])
        if image_size % patch:
            raise ValueError(f"image_size={image_size} is not a multiple of the patch size {patch} of {spec or 'the model'}")
        self.model = model
        self.family = family
        self._embed_path = find_submodule(model, _EMBEDDINGS, "patch embedding")
        self._blocks_path = find_submodule(model, _BLOCKS, "transformer blocks")
        self.num_layers = int(cfg.num_hidden_layers)
        if len(self.blocks) != self.num_layers:
            raise RuntimeError(f"{type(model).__name__} has {len(self.blocks)} blocks but its config says {self.num_layers}")
        self.dim = int(cfg.hidden_size)
        self.patch_size = (1, patch, patch)
        self.image_size = int(image_size)
        self.input_size = (int(num_frames), self.image_size, self.image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.prefix_tokens = (1 + int(getattr(cfg, "num_register_tokens", 0))) if "dinov2" in cfg.model_type else 0
        self.native_size = int(cfg.image_size)
        if frame_batch is not None and int(frame_batch) < 1:
            raise ValueError(f"frame_batch must be a positive number of frames, got {frame_batch}")
        self.frame_batch = None if frame_batch is None else int(frame_batch)
        self.spec = spec

    @classmethod
    def from_folder(cls, folder: Path, image_size: int | None = None, num_frames: int = 16,
                    frame_batch: int | None = None, spec: str = "") -> HFImageBackbone:
        """Load the checkpoint in ``folder`` (its ``model_type`` must be one of :data:`IMAGE_FAMILIES`)."""
        config = read_json(folder / "config.json")
        family = IMAGE_FAMILIES[config["model_type"]]
        proc = processor_settings(folder)
        vision = config.get("vision_config", config)
        native = int(vision.get("image_size", 224))
        size = image_size or (proc.get("crop_size") if family.interpolates else None) or family.default_size or native
        model = load_hf_model(family.model_class, folder)
        return cls(model, family, int(size), proc.get("image_mean", family.mean), proc.get("image_std", family.std),
                   num_frames, frame_batch, spec)

    @property
    def embeddings(self) -> nn.Module:
        """The patch + positional embedding module (its output is layer 0)."""
        return self.model.get_submodule(self._embed_path)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (the probe freezes those after a finetuned readout's layer)."""
        return self.model.get_submodule(self._blocks_path)  # type: ignore[return-value]

    def token_grid(self, video_shape: Any) -> tuple[int, int, int]:
        p = self.patch_size[1]
        return int(video_shape[1]), self.image_size // p, self.image_size // p

    def preprocess(self, video: Tensor) -> Tensor:
        """``(B, T, H, W, 3)`` [0, 1] → normalised frames ``(B*T, 3, S, S)``."""
        check_video(video)
        frames = rearrange(video.float(), "b t h w c -> (b t) c h w")
        frames = resize_frames(frames, (self.image_size, self.image_size))
        return normalise(frames, self.mean, self.std, channel_dim=1)

    def forward_layers(self, inputs: Tensor, layers: list[int], video_shape: tuple[int, ...]) -> dict[int, Tensor]:
        b, t = int(video_shape[0]), int(video_shape[1])
        kwargs = {}
        if not self.family.interpolates and self.image_size != self.native_size:
            kwargs["interpolate_pos_encoding"] = True
        chunks = inputs.split(self.frame_batch) if self.frame_batch else (inputs,)
        parts = [collect_layers(lambda x=x: self.model(pixel_values=x, **kwargs), self.embeddings, self.blocks, layers)
                 for x in chunks]
        return {k: rearrange(torch.cat([p[k] for p in parts])[:, self.prefix_tokens:], "(b t) n c -> b t n c", b=b, t=t)
                for k in layers}
