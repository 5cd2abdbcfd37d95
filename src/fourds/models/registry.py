"""The 4DS size registry (paper Table 1 and Table 5) and tiny sizes for tests and demos.

Presets are plain data merged with overrides by :func:`create` / :func:`simple_mae`, timm-style:
``fourds.models.create("4ds-b", input_size=(16, 256, 256))``. Each preset carries its architecture, its
SimpleMAE decoding settings and its pretraining defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from fourds.models.simple_mae import MAEConfig, SimpleMAE
from fourds.models.vit import VideoViT, ViTConfig

#: Pretraining defaults shared by the 4DS models up to 4B parameters (paper Table 5, left column).
PAPER_TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 488_282,
    "batch_size": 2048,
    "lr": 1e-4,
    "warmup_steps": 10_000,
    "weight_decay": 0.05,
    "beta1": 0.9,
    "beta2": 0.95,
    "num_frames": 16,
    "frame_stride": 2,
    "image_size": 224,
    "min_resize": 1.15,
}


@dataclass(frozen=True)
class Preset:
    """One registered size: architecture, SimpleMAE decoding and training defaults.

    Attributes:
        vit: keyword arguments of :class:`ViTConfig`.
        mae: keyword arguments of :class:`MAEConfig`.
        train: pretraining defaults (keys of :class:`fourds.train.config.PretrainConfig`).
        table1_params_m: the paper's Table 1 ``#p`` in millions (encoder + latent grid), or None.
        note: one line for ``fourds models``.
    """

    vit: dict[str, Any]
    mae: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    table1_params_m: float | None = None
    note: str = ""

    def train_defaults(self) -> dict[str, Any]:
        return {**PAPER_TRAIN_DEFAULTS, **self.train}


def _paper(dim: int, depth: int, mlp: int, heads: int, params_m: float, **extra: Any) -> Preset:
    return Preset(
        vit={"dim": dim, "depth": depth, "mlp_dim": mlp, "num_heads": heads},
        table1_params_m=params_m,
        note="paper Table 1",
        **extra,
    )


_TINY_TRAIN = {"num_frames": 16, "frame_stride": 2, "min_resize": 1.15, "weight_decay": 0.05}

PRESETS: dict[str, Preset] = {
    "4ds-s": _paper(384, 12, 1536, 6, 23),
    "4ds-b": _paper(768, 12, 3072, 12, 88),
    "4ds-l": _paper(1024, 24, 4096, 16, 306),
    "4ds-h": _paper(1280, 32, 5120, 16, 634),
    "4ds-g": _paper(1664, 48, 8192, 16, 1_848),
    "4ds-e": _paper(1792, 56, 15360, 16, 3_811),
    # The large setting (Table 5 right column, Appendix C): 256x256 input, 2 latent layers and a coarser
    # 4x32x32 decoding patch (latent grid 4x8x8), lr 2e-4, 100k warm-up, 1M steps.
    "4ds-j": Preset(
        vit={"dim": 4096, "depth": 64, "mlp_dim": 32768, "num_heads": 32, "input_size": (16, 256, 256)},
        mae={"num_latent_layers": 2, "decoder_patch_size": (4, 32, 32)},
        train={"lr": 2e-4, "warmup_steps": 100_000, "steps": 1_000_000, "image_size": 256},
        table1_params_m=21_495,
        note="paper Table 1, large setting of Table 5",
    ),
    # Tiny sizes (not in the paper) for tests, CPU smoke runs and the demo.
    "4ds-tiny": Preset(
        vit={"dim": 64, "depth": 4, "mlp_dim": 256, "num_heads": 4, "input_size": (16, 64, 64)},
        mae={"num_latent_layers": 2},
        train={**_TINY_TRAIN, "steps": 200, "batch_size": 8, "lr": 1e-3, "warmup_steps": 20, "image_size": 64},
        note="tests: trains in seconds on a CPU",
    ),
    "4ds-nano": Preset(
        vit={"dim": 192, "depth": 8, "mlp_dim": 768, "num_heads": 3, "input_size": (16, 128, 128)},
        mae={"num_latent_layers": 2},
        train={**_TINY_TRAIN, "steps": 2000, "batch_size": 16, "lr": 5e-4, "warmup_steps": 100, "image_size": 128},
        note="demo: a few M parameters",
    ),
    "4ds-micro": Preset(
        vit={"dim": 384, "depth": 8, "mlp_dim": 1536, "num_heads": 6, "input_size": (16, 128, 128)},
        mae={"num_latent_layers": 2},
        train={**_TINY_TRAIN, "steps": 2000, "batch_size": 16, "lr": 3e-4, "warmup_steps": 100, "image_size": 128},
        note="demo: ~15M parameters",
    ),
}

_VIT_FIELDS = {f.name for f in dataclasses.fields(ViTConfig)}
_MAE_FIELDS = {f.name for f in dataclasses.fields(MAEConfig)}


def list_models() -> list[str]:
    """Registered names, paper sizes first."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(PRESETS)}") from None


def build_configs(name: str, **overrides: Any) -> tuple[ViTConfig, MAEConfig]:
    """Preset ``name`` merged with ``overrides`` (any :class:`ViTConfig` or :class:`MAEConfig` field)."""
    preset = get_preset(name)
    unknown = set(overrides) - _VIT_FIELDS - _MAE_FIELDS
    if unknown:
        raise ValueError(
            f"unknown override(s) {sorted(unknown)} for {name!r}; valid: {sorted(_VIT_FIELDS | _MAE_FIELDS)}"
        )
    vit = ViTConfig(**{**preset.vit, **{k: v for k, v in overrides.items() if k in _VIT_FIELDS}})
    mae = MAEConfig(**{**preset.mae, **{k: v for k, v in overrides.items() if k in _MAE_FIELDS}})
    return vit, mae


def create(name: str, **overrides: Any) -> VideoViT:
    """Build the video ViT (the backbone) of a registered size.

    Works under ``with torch.device("meta"):`` to count parameters of the giant sizes without memory.
    """
    unknown = set(overrides) - _VIT_FIELDS
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)} for create({name!r}); valid: {sorted(_VIT_FIELDS)}")
    vit, _ = build_configs(name, **overrides)
    return VideoViT(vit, name=name)


def simple_mae(name: str, **overrides: Any) -> SimpleMAE:
    """Build the SimpleMAE pretraining module of a registered size (encoder + latent grid + decoder)."""
    vit, mae = build_configs(name, **overrides)
    return SimpleMAE(vit, mae, name=name)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
