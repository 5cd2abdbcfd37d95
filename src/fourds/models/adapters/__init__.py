"""Adapters: other models behind the Backbone contract, and :func:`build_backbone` for spec strings.

Spec strings (``fourds probe --backbone SPEC``, ``fourds distill --teacher SPEC``):

* ``hf:<hub id or folder>[?image_size=S&num_frames=T&frame_batch=N&revision=R]``: a Hugging Face ``transformers``
  checkpoint from a local folder or the local Hugging Face cache (never downloaded). The family comes
  from ``model_type`` in its ``config.json``: ``dinov2``, ``dinov2_with_registers``, ``siglip``,
  ``siglip_vision_model`` (image models, run per frame, :mod:`.hf_image`); ``videomae``, ``vjepa2``
  (video models, :mod:`.hf_video`). Needs ``pip install 'fourds[baselines]'``.
* ``timm:<name>[?checkpoint=FILE&pretrained=false]``: a timm ViT run per frame (:mod:`.timm_vit`); needs
  ``pip install 'fourds[timm]'`` (and a working torchvision).
* ``perframe:<fourds model folder or registered name>[?seed=S]``: a 4DS model run one frame at a time,
  each frame repeated to fill its tubelet (:mod:`.perframe`).

Options may also be passed as keyword arguments of :func:`build_backbone`. Your own model joins with a
:class:`BackboneAdapter` subclass (see :mod:`.base` and ``docs/baselines.md``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fourds.models.adapters.base import (
    BackboneAdapter,
    MissingExtraError,
    collect_layers,
    normalise,
    pad_frames,
    resample_frames,
    resize_frames,
)
from fourds.models.adapters.hub import Spec, hub_cache_dir, parse_spec, resolve_hf_folder
from fourds.models.adapters.perframe import PerFrame, build_perframe

SCHEMES = ("hf", "timm", "perframe")


def _check_options(spec: str, options: dict[str, Any], valid: set[str]) -> None:
    unknown = set(options) - valid
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in backbone spec {spec!r}; valid: {sorted(valid)}")


def hf_families() -> dict[str, str]:
    """``model_type`` → ``"image"``/``"video"`` for every supported Hugging Face family."""
    from fourds.models.adapters.hf_image import IMAGE_FAMILIES
    from fourds.models.adapters.hf_video import VIDEO_FAMILIES

    return {**{k: "image" for k in IMAGE_FAMILIES}, **{k: "video" for k in VIDEO_FAMILIES}}


def build_hf(target: str, spec: str = "", revision: str = "main", **options: Any) -> BackboneAdapter:
    """``hf:<target>``: resolve the folder offline, detect the family from ``model_type``, load."""
    from fourds.models.adapters.hf_image import IMAGE_FAMILIES, HFImageBackbone
    from fourds.models.adapters.hf_video import VIDEO_FAMILIES, HFVideoBackbone
    from fourds.models.adapters.hub import read_json

    spec = spec or f"hf:{target}"
    folder = resolve_hf_folder(target, revision=str(revision))
    model_type = read_json(folder / "config.json").get("model_type")
    if model_type in IMAGE_FAMILIES:
        _check_options(spec, options, {"image_size", "num_frames", "frame_batch"})
        return HFImageBackbone.from_folder(folder, spec=spec, **options)
    if model_type in VIDEO_FAMILIES:
        _check_options(spec, options, {"image_size", "num_frames"})
        return HFVideoBackbone.from_folder(folder, spec=spec, **options)
    raise ValueError(
        f"{spec}: model_type {model_type!r} (from {folder / 'config.json'}) is not a supported family; "
        f"supported: {', '.join(sorted(hf_families()))}. Other models: subclass "
        "fourds.models.adapters.BackboneAdapter (see docs/baselines.md)"
    )


def build_backbone(spec: str, **options: Any) -> nn.Module:
    """Build the Backbone a spec string names (see the module docstring).

    Args:
        spec: ``hf:...``, ``timm:...`` or ``perframe:...``, with optional ``?key=value`` options.
        options: more options (override those in the spec).

    Raises:
        ValueError: unknown scheme, family or option.
        FileNotFoundError: weights not found locally (the message says where to place them).
        MissingExtraError: the optional dependency is missing (the message names the extra).
    """
    parsed = parse_spec(spec)
    opts = {**parsed.options, **options}
    if parsed.scheme == "hf":
        return build_hf(parsed.target, spec=spec, **opts)
    if parsed.scheme == "timm":
        from fourds.models.adapters.timm_vit import build_timm

        return build_timm(parsed.target, spec=spec, **opts)
    if parsed.scheme == "perframe":
        return build_perframe(parsed.target, spec=spec, **opts)
    raise ValueError(f"backbone spec {spec!r}: unknown scheme {parsed.scheme!r}; use one of {', '.join(SCHEMES)}")


__all__ = [
    "BackboneAdapter",
    "MissingExtraError",
    "PerFrame",
    "SCHEMES",
    "Spec",
    "build_backbone",
    "build_hf",
    "build_perframe",
    "collect_layers",
    "hf_families",
    "hub_cache_dir",
    "normalise",
    "pad_frames",
    "parse_spec",
    "resample_frames",
    "resize_frames",
    "resolve_hf_folder",
]
