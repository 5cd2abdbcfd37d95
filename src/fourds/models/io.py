"""Model folders: ``config.json`` + ``model.safetensors``, rebuilt from the folder alone.

``config.json`` holds ``kind`` (what to rebuild), the registry ``name`` and the full architecture, so a
folder never depends on the registry's current defaults. Readout heads live in ``heads/<name>/``
sub-folders of the same layout. Other packages add kinds with :func:`register_kind`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fourds import __version__
from fourds.models.simple_mae import MAEConfig, SimpleMAE
from fourds.models.vit import VideoViT, ViTConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_LOADERS: dict[str, Callable[[Path, dict[str, Any]], nn.Module]] = {}


def register_kind(kind: str, loader: Callable[[Path, dict[str, Any]], nn.Module]) -> None:
    """Teach :func:`load_module` to rebuild folders whose config has ``kind``."""
    _LOADERS[kind] = loader


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def save_weights_atomic(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors save via a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def model_config(module: nn.Module) -> dict[str, Any]:
    """The ``config.json`` content describing ``module``."""
    if isinstance(module, SimpleMAE):
        return {
            "kind": "simple_mae",
            "name": module.name,
            "vit": module.encoder.cfg.to_dict(),
            "mae": module.mae_cfg.to_dict(),
        }
    if isinstance(module, VideoViT):
        return {"kind": "video_vit", "name": module.name, "vit": module.cfg.to_dict()}
    to_config = getattr(module, "to_config", None)
    if callable(to_config):
        return to_config()
    raise TypeError(f"cannot describe {type(module).__name__} in config.json (no to_config())")


def save_model(
    module: nn.Module,
    folder: str | Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors``.

    Args:
        module: the model (used for its config; pass ``state_dict`` for a sharded model's full state).
        folder: created if missing.
        state_dict: weights to save (default ``module.state_dict()``).
        extra: more keys for config.json (e.g. training provenance).
    """
    folder = Path(folder)
    config = {**model_config(module), "fourds_version": __version__, **(extra or {})}
    save_weights_atomic(state_dict if state_dict is not None else module.state_dict(), folder / WEIGHTS_NAME)
    write_json_atomic(folder / CONFIG_NAME, config)
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.exists():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a fourds model folder: {CONFIG_NAME} is missing "
            f"(expected {CONFIG_NAME} + {WEIGHTS_NAME}; official .npz files convert with `fourds convert official`)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def load_state_into(module: nn.Module, weights: Path) -> nn.Module:
    """Load safetensors ``weights`` into ``module`` (built on any device), strictly, with clear errors."""
    if not weights.is_file():
        raise FileNotFoundError(f"weights file {weights} is missing")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from err
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        raise ValueError(
            f"{weights} does not match its config: missing {missing[:10]}, unexpected {unexpected[:10]}, "
            f"shape mismatches {shapes[:10]}"
        )
    module.load_state_dict(state, assign=any(p.is_meta for p in module.parameters()))
    return module


def _build_simple_mae(folder: Path, config: dict[str, Any]) -> SimpleMAE:
    with torch.device("meta"):
        model = SimpleMAE(ViTConfig(**config["vit"]), MAEConfig(**config["mae"]), name=config.get("name"))
    return load_state_into(model, folder / WEIGHTS_NAME)


def _build_vit(folder: Path, config: dict[str, Any]) -> VideoViT:
    with torch.device("meta"):
        model = VideoViT(ViTConfig(**config["vit"]), name=config.get("name"))
    return load_state_into(model, folder / WEIGHTS_NAME)


register_kind("simple_mae", _build_simple_mae)
register_kind("video_vit", _build_vit)


def _run_folder_hint(folder: Path, config: dict[str, Any]) -> str | None:
    """The message for a run folder given where a model folder is expected (``None`` if it is not one).

    A pretraining run's ``config.json`` is its run configuration (``model``, ``data``, ``steps``; no
    ``kind``); its model is in ``<run>/model`` (at the end) and in every ``checkpoints/step_*/``. A probe
    run's has ``backbone`` and ``task``.
    """
    if "kind" in config:
        return None
    if {"model", "data", "steps"} <= set(config):
        steps = sorted((folder / "checkpoints").glob("step_*"))
        options = [str(folder / "model")] if (folder / "model" / CONFIG_NAME).is_file() else []
        options += [str(steps[-1])] if steps else []
        where = " or ".join(options) if options else f"{folder / 'model'} (written when the run finishes) or a checkpoint step folder {folder / 'checkpoints' / 'step_XXXXXXXX'}"
        return (f"{folder} is a pretraining run folder (its {CONFIG_NAME} is the run configuration), not a model "
                f"folder; use {where}")
    if {"backbone", "task"} <= set(config):
        return (f"{folder} is a probe run folder (fourds probe --out), not a model folder; its trained readouts "
                f"are in {folder / 'heads'}/<name>/ and finetuned backbones in {folder / 'runs'}/<name>/model")
    return None


def load_module(folder: str | Path) -> nn.Module:
    """Rebuild whatever module the folder describes (any registered ``kind``), in eval mode on CPU."""
    folder = Path(folder)
    config = read_config(folder)
    kind = config.get("kind")
    if kind not in _LOADERS:
        run = _run_folder_hint(folder, config)
        if run:
            raise ValueError(run)
        raise ValueError(f"{folder}/{CONFIG_NAME} has kind={kind!r}; known kinds: {sorted(_LOADERS)}")
    return _LOADERS[kind](folder, config).eval()


def load(path: str | Path) -> nn.Module:
    """Load a model folder as a Backbone: a SimpleMAE folder gives its encoder (the latent grid and the
    pixel decoder are pretraining-only)."""
    module = load_module(path)
    return module.encoder if isinstance(module, SimpleMAE) else module


def load_simple_mae(path: str | Path) -> SimpleMAE:
    """Load the whole pretraining module of a SimpleMAE folder."""
    module = load_module(path)
    if not isinstance(module, SimpleMAE):
        raise ValueError(f"{path} holds a {type(module).__name__}, not a SimpleMAE pretraining module")
    return module
