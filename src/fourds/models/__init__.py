"""Models: the 4DS video ViT, the size registry, SimpleMAE, the Backbone contract, model folders, and
:func:`open_backbone` for every way a backbone is named."""

from fourds.models.backbone import Backbone, layer_index, parse_layer_spec, resolve_layers, token_grid
from fourds.models.io import known_kinds, load, load_module, load_simple_mae, register_kind, save_model
from fourds.models.masking import num_kept, random_masking
from fourds.models.open import open_backbone
from fourds.models.registry import (
    PRESETS,
    Preset,
    build_configs,
    count_parameters,
    create,
    get_preset,
    list_models,
    simple_mae,
)
from fourds.models.simple_mae import MAEConfig, MAEOutput, SimpleMAE, patchify, unpatchify
from fourds.models.vit import VideoViT, ViTConfig, resize_grid_embedding

__all__ = [
    "Backbone",
    "MAEConfig",
    "MAEOutput",
    "PRESETS",
    "Preset",
    "SimpleMAE",
    "VideoViT",
    "ViTConfig",
    "build_configs",
    "count_parameters",
    "create",
    "get_preset",
    "known_kinds",
    "layer_index",
    "list_models",
    "load",
    "load_module",
    "load_simple_mae",
    "num_kept",
    "open_backbone",
    "parse_layer_spec",
    "patchify",
    "random_masking",
    "register_kind",
    "resize_grid_embedding",
    "resolve_layers",
    "save_model",
    "simple_mae",
    "token_grid",
    "unpatchify",
]
