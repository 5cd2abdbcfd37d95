"""Open a model for the inference commands: its backbone and readout heads, from any backbone spec."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fourds.models.adapters import SCHEMES


def open_model(spec: str | Path) -> tuple[nn.Module, dict[str, nn.Module]]:
    """``(backbone, heads)`` for ``fourds extract`` / ``fourds depth``: a model folder (``config.json`` +
    ``model.safetensors``, heads in ``heads/<name>/``), an official 4DS ``.npz`` (converted in memory, its
    depth head included) or an adapter spec (``hf:``, ``timm:``, ``perframe:``; no heads). Backbones
    open through :func:`fourds.models.open_backbone`."""
    from fourds.models.open import open_backbone, open_official_npz

    text = str(spec)
    path = Path(text)
    if path.is_file() and path.suffix == ".npz":
        return open_official_npz(path)
    if text.partition(":")[0] in SCHEMES and not path.exists():
        return open_backbone(text), {}
    if not path.exists():
        raise FileNotFoundError(
            f"model {path} does not exist; pass a fourds model folder (config.json + model.safetensors), "
            "an official 4DS .npz or a backbone spec (hf:, timm:, perframe:)"
        )
    from fourds.convert import load_heads
    from fourds.models import load

    backbone = open_backbone(path) if path.is_dir() else load(path)  # load() names what a file is not
    return backbone, load_heads(path)
