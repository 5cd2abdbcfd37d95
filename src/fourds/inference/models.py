"""Open a model for the inference commands: a fourds model folder (with its heads) or an official ``.npz``."""

from __future__ import annotations

from pathlib import Path

from torch import nn


def open_model(spec: str | Path) -> tuple[nn.Module, dict[str, nn.Module]]:
    """``(backbone, heads)`` from a model folder (``config.json`` + ``model.safetensors``, heads in
    ``heads/<name>/``) or directly from an official 4DS ``.npz`` (converted in memory)."""
    path = Path(spec)
    from fourds.convert import from_official_npz, load_heads

    if path.is_file() and path.suffix == ".npz":
        return from_official_npz(path)
    if not path.exists():
        raise FileNotFoundError(
            f"model {path} does not exist; pass a fourds model folder (config.json + model.safetensors) "
            "or an official 4DS .npz"
        )
    from fourds.models import load

    return load(path), load_heads(path)
