"""One way to open a backbone from any spec string: :func:`open_backbone`.

What ``--backbone`` (``fourds probe``), ``--teacher`` (``fourds distill``) and ``fourds extract`` /
``fourds depth`` accept, in the order they are tried:

* an official 4DS ``.npz`` (``scaling4d_dist_b.npz``...): converted in memory (readout heads dropped;
  :func:`fourds.convert.from_official_npz` returns them too);
* a fourds model folder (``config.json`` + ``model.safetensors``, :func:`fourds.models.load`), or a
  Hugging Face ``save_pretrained`` folder given without its ``hf:`` prefix;
* a registered size (``4ds-b``...): **random initialisation**, per-parameter seeds from ``seed``
  (:meth:`fourds.models.vit.VideoViT.init_weights`), built for ``clip_size`` unless ``overrides`` set
  ``input_size``;
* ``hf:...``, ``timm:...``, ``perframe:...`` adapter specs (:func:`fourds.models.adapters.build_backbone`;
  ``perframe:<registered name>`` takes its seed from its own ``?seed=S`` option, default 0, not from
  ``seed``).

The seed rule: only a randomly initialised model reads ``seed``; weights from a file never depend on it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from torch import nn

#: The official ``.npz`` converter (``fourds.convert``, a package above this one), imported on use.
OFFICIAL_NPZ_LOADER = "fourds.convert.official:from_official_npz"


def is_hf_folder(folder: Path) -> bool:
    """A Hugging Face model folder: its ``config.json`` has ``model_type`` and no fourds ``kind``."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config and "kind" not in config


def open_official_npz(path: str | Path) -> tuple[nn.Module, dict[str, nn.Module]]:
    """``(backbone, heads)`` of an official 4DS ``.npz`` (:func:`fourds.convert.from_official_npz`)."""
    module, _, name = OFFICIAL_NPZ_LOADER.partition(":")
    return getattr(importlib.import_module(module), name)(path)


def open_backbone(spec: str | Path, *, seed: int = 0, overrides: dict[str, Any] | None = None,
                  clip_size: tuple[int, int, int] | None = None) -> nn.Module:
    """The Backbone ``spec`` names (the forms and the seed rule: see the module docstring).

    Args:
        spec: an official ``.npz``, a model folder, a registered name or an adapter spec.
        seed: initialisation seed of a registered name (random init); unused otherwise.
        overrides: architecture overrides of a registered name (ignored for weights from a file).
        clip_size: ``(T, H, W)`` of the clips it will see; a registered name is built for this input
            size unless ``overrides`` sets ``input_size``.

    Returns:
        the module behind the Backbone contract (``features(video, layers)`` →
        ``[(B, T', N, C), ...]``), on the CPU.

    Raises:
        FileNotFoundError: a ``.npz`` or folder that does not exist (adapters: weights not found locally).
        ValueError: a spec of none of these forms (the message lists them), or a bad adapter option.
    """
    from fourds.models.io import load
    from fourds.models.registry import create, list_models

    text = str(spec)
    path = Path(text).expanduser()
    if text.endswith(".npz") and not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"official checkpoint {text} does not exist (an official 4DS .npz file)")
        backbone, _ = open_official_npz(path)
        return backbone
    if path.is_dir():
        if is_hf_folder(path):  # a save_pretrained folder given without the hf: prefix
            from fourds.models.adapters import build_backbone

            return build_backbone(f"hf:{text}")
        return load(path)
    if text in list_models():
        kwargs = dict(overrides or {})
        if clip_size is not None:
            kwargs.setdefault("input_size", tuple(clip_size))
        model = create(text, **kwargs)
        model.init_weights(seed=seed)
        return model
    from fourds.models.adapters import build_backbone  # raises for an unknown scheme, naming the valid ones

    return build_backbone(text)
