"""``timm`` ViTs behind the Backbone contract (optional: ``pip install 'fourds[timm]'``).

Any timm model with ``forward_intermediates`` and a ``blocks`` list (``VisionTransformer``, EVA, ...)
runs per frame like the Hugging Face image models: frames resized whole to the model's ``img_size``,
normalised with its ``pretrained_cfg`` mean/std, time stacked. Layer ``k`` comes from
``forward_intermediates(indices=[k-1], norm=False, output_fmt="NLC", stop_early=True)`` (block outputs
without the final norm, prefix tokens removed); layer 0 is the output of ``norm_pre`` (the patch
embedding plus positional embedding), captured with a forward hook during the same pass.

timm depends on torchvision. On the CPU machines of this project the PyPI torchvision wheel does not
import next to the CPU torch, which is why timm is an extra of its own and never part of the default
or test installation.

Weights are never downloaded: ``timm:<name>`` loads ``timm/<name>`` from the local Hugging Face cache
(the full name with its tag, e.g. ``vit_base_patch16_224.augreg2_in21k_ft_in1k``), ``?checkpoint=FILE``
loads a local ``.safetensors``/``.pth`` file, and ``?pretrained=false`` builds a random-init model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from einops import rearrange
from torch import Tensor, nn

from fourds.models.adapters.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneAdapter,
    MissingExtraError,
    check_video,
    normalise,
    resize_frames,
)
from fourds.models.adapters.hub import hub_cache_dir, missing_weights_message, repo_folder_name, snapshot_folder

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def import_timm() -> Any:
    """``import timm`` or a :class:`MissingExtraError` that says why (missing, or torchvision broken)."""
    try:
        import timm
    except Exception as err:  # timm imports torchvision, whose broken wheel raises RuntimeError, not ImportError
        raise MissingExtraError(
            f"timm: backbones need timm, which is not importable ({type(err).__name__}: {err}). Install it with "
            "pip install 'fourds[timm]' on a machine where torchvision matches torch (the PyPI torchvision "
            "wheel does not import next to the CPU-only torch wheel)"
        ) from err
    return timm


def cached_timm_weights(name: str) -> Path | None:
    """The weights file of ``timm/<name>`` in the local Hugging Face cache, if present."""
    snap = snapshot_folder(hub_cache_dir() / repo_folder_name(f"timm/{name}"), "main")
    if snap is None:
        return None
    return next((snap / f for f in _WEIGHT_FILES if (snap / f).is_file()), None)


class TimmBackbone(BackboneAdapter):
    """A timm ViT run per frame (see the module docstring).

    Args:
        model: the timm model (with ``forward_intermediates``, ``blocks``, ``patch_embed``, ``norm_pre``).
        num_frames: nominal clip length reported in ``input_size`` (any T works).
        spec: the spec string, for logs.
    """

    def __init__(self, model: nn.Module, num_frames: int = 16, spec: str = "") -> None:
        super().__init__()
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
            raise ValueError(f"timm model {type(model).__name__} has no forward_intermediates/blocks; use a ViT")
        self.model = model.eval()
        pe = model.patch_embed
        ph, pw = (int(p) for p in pe.patch_size)
        h, w = (int(s) for s in pe.img_size)
        self.num_layers = len(model.blocks)
        self.dim = int(getattr(model, "embed_dim", getattr(model, "num_features", 0)))
        self.patch_size = (1, ph, pw)
        self.image_hw = (h, w)
        self.input_size = (int(num_frames), h, w)
        self.prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        cfg = getattr(model, "pretrained_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(cfg.get("std", IMAGENET_STD))
        self.spec = spec

    @property
    def blocks(self) -> nn.Module:
        return self.model.blocks

    def token_grid(self, video_shape: Any) -> tuple[int, int, int]:
        return int(video_shape[1]), self.image_hw[0] // self.patch_size[1], self.image_hw[1] // self.patch_size[2]

    def preprocess(self, video: Tensor) -> Tensor:
        """``(B, T, H, W, 3)`` [0, 1] → normalised frames ``(B*T, 3, H_m, W_m)``."""
        check_video(video)
        frames = resize_frames(rearrange(video.float(), "b t h w c -> (b t) c h w"), self.image_hw)
        return normalise(frames, self.mean, self.std, channel_dim=1)

    def forward_layers(self, inputs: Tensor, layers: list[int], video_shape: tuple[int, ...]) -> dict[int, Tensor]:
        b, t = int(video_shape[0]), int(video_shape[1])
        captured: dict[int, Tensor] = {}
        handle = None
        if 0 in layers:
            handle = self.model.norm_pre.register_forward_hook(lambda m, a, out: captured.__setitem__(0, out))
        block_layers = [k for k in layers if k > 0]
        try:
            inter = self.model.forward_intermediates(
                inputs, indices=[k - 1 for k in block_layers] or [0], norm=False, output_fmt="NLC",
                intermediates_only=True, stop_early=True,
            )
        finally:
            if handle is not None:
                handle.remove()
        tokens = dict(zip(block_layers, inter))
        if 0 in layers:
            tokens[0] = captured[0][:, self.prefix_tokens:]
        return {k: rearrange(v, "(b t) n c -> b t n c", b=b, t=t) for k, v in tokens.items()}


def build_timm(name: str, pretrained: bool | None = None, checkpoint: str | None = None, num_frames: int = 16,
               spec: str = "", **kwargs: Any) -> TimmBackbone:
    """``timm:<name>``: weights from ``checkpoint``, else the local HF cache (``timm/<name>``), else random
    init when ``pretrained`` is False; ``kwargs`` go to ``timm.create_model`` (e.g. ``img_size``)."""
    timm = import_timm()
    file: Path | None = None
    if checkpoint is not None:
        file = Path(checkpoint).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"timm checkpoint {file} does not exist")
    elif pretrained is not False:
        file = cached_timm_weights(name)
        if file is None:
            raise FileNotFoundError(
                missing_weights_message(f"timm/{name}", hub_cache_dir(), what="timm model")
                + " Or pass ?checkpoint=FILE, or ?pretrained=false for random weights."
            )
    if file is not None:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs)
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    return TimmBackbone(model, num_frames=num_frames, spec=spec)
