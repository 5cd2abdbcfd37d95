"""AdamW with the model's own weight-decay exemptions, and the warm-up + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def param_groups(
    model: nn.Module, weight_decay: float, no_decay: Iterable[str], lr_scale: float = 1.0
) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    ``no_decay`` are parameter names as the *model* reports them (its ``no_weight_decay()``); names of
    wrapped modules (DDP ``module.``, compile ``_orig_mod.``) are matched after stripping those parts,
    so the trainer never string-matches layer names itself.
    """
    exempt = set(no_decay)
    decay, no_wd = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        clean = name.replace("module.", "").replace("_orig_mod.", "")
        (no_wd if clean in exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale}]
    if no_wd:
        groups.append({"params": no_wd, "weight_decay": 0.0, "lr_scale": lr_scale})
    return groups


def warmup_cosine(step: int, total: int, warmup: int, peak: float, final: float = 0.0, start: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear from ``start`` to ``peak`` over ``warmup`` steps,
    then cosine from ``peak`` to ``final`` at ``total``; constant ``final`` afterwards."""
    if warmup > 0 and step < warmup:
        return start + (peak - start) * step / warmup
    if step >= total:
        return final
    progress = (step - warmup) / max(1, total - warmup)
    return final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr * group['lr_scale']`` (per-group scales, e.g. a finetuned backbone)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def build_adamw(groups: list[dict], lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel (CUDA and CPU; on this 2-core CPU it saves ~10% of a 4ds-s step
    over ``foreach``), the ``foreach`` implementation on other devices."""
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **kwargs)
