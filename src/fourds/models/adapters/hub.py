"""Spec strings and offline weight resolution (local folders and the local Hugging Face cache).

A spec is ``<scheme>:<target>[?key=value&key=value]``, e.g. ``hf:facebook/dinov2-large``,
``hf:/models/dinov2-large?image_size=448``, ``perframe:runs/pretrain/model``, ``timm:vit_base_patch16_224``.
Option values are parsed as JSON when they can be (``448`` → int, ``true`` → bool), else kept as text.

Nothing is ever downloaded. A Hugging Face hub id resolves to a snapshot folder of the local cache,
laid out as ``huggingface_hub`` writes it: ``<cache>/models--<org>--<name>/snapshots/<commit>/`` with
``refs/<revision>`` holding the commit of a branch or tag. The cache root follows huggingface_hub's
environment variables, read at call time: ``HF_HUB_CACHE``, else ``HUGGINGFACE_HUB_CACHE``, else
``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HASH = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Spec:
    """A parsed spec string.

    Attributes:
        scheme: ``hf``, ``timm`` or ``perframe``.
        target: the hub id, folder or model name after the scheme.
        options: ``?key=value`` options (JSON-parsed values).
    """

    scheme: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)


SCHEME_HELP = "hf:<hub id or folder>, timm:<name> or perframe:<4ds model folder or registered name>"


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.startswith((".", "~"))


def missing_folder_message(spec: str) -> str:
    """Why ``spec``, meant as a folder, is not one: the deepest part of the path that exists, and the
    names in it closest to the next (mistyped) part."""
    import difflib

    path = Path(spec).expanduser()
    if path.is_file():
        return f"{spec} is a file, not a model folder (give the folder that holds config.json + model.safetensors)"
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    msg = f"no such folder: {spec}"
    if parent.exists() and parent != path:
        missing = path.relative_to(parent).parts[0]
        try:
            names = sorted(p.name for p in parent.iterdir() if p.is_dir())
        except OSError:
            names = []
        close = difflib.get_close_matches(missing, names, n=3, cutoff=0.6)
        where = f"{parent}{'/' if str(parent) != '/' else ''}"
        msg += f" ({where} exists but has no {missing!r}"
        msg += f"; did you mean {' or '.join(repr(str(parent / c)) for c in close)}?)" if close else ")"
    return msg


def parse_spec(spec: str) -> Spec:
    """``"hf:org/name?image_size=448"`` → ``Spec("hf", "org/name", {"image_size": 448})``."""
    if ":" not in spec:
        if _looks_like_path(spec):  # a mistyped folder: say so first, then what else a spec can be
            raise FileNotFoundError(f"--backbone {missing_folder_message(spec)}. A backbone is a fourds model "
                                    f"folder, a registered name (`fourds models`), or an adapter spec: {SCHEME_HELP}")
        raise ValueError(f"backbone spec {spec!r} has no scheme; use {SCHEME_HELP} (or a fourds model folder / "
                         f"registered name: `fourds models` lists them)")
    scheme, rest = spec.split(":", 1)
    target, _, query = rest.partition("?")
    if not target:
        raise ValueError(f"backbone spec {spec!r} names no model after {scheme!r}:")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        if "=" not in item:
            raise ValueError(f"option {item!r} in spec {spec!r}: expected key=value (e.g. ?image_size=448)")
        key, value = item.split("=", 1)
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return Spec(scheme.strip().lower(), target.strip(), options)


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache root (see the module docstring for the variables read)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def repo_folder_name(repo_id: str) -> str:
    """``"facebook/dinov2-large"`` → ``"models--facebook--dinov2-large"`` (huggingface_hub's layout)."""
    return "models--" + repo_id.replace("/", "--")


def snapshot_folder(repo_dir: Path, revision: str) -> Path | None:
    """The snapshot of ``revision`` (a commit, or a branch/tag named in ``refs/``) in a cached repo folder."""
    snapshots = repo_dir / "snapshots"
    if _HASH.match(revision) and (snapshots / revision).is_dir():
        return snapshots / revision
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        if (snapshots / commit).is_dir():
            return snapshots / commit
    if revision == "main" and snapshots.is_dir():
        # No refs (a cache copied without them): accept a single snapshot, or the newest one.
        candidates = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if candidates:
            return candidates[-1]
    return None


def missing_weights_message(repo_id: str, cache: Path, what: str = "Hugging Face model") -> str:
    return (
        f"{what} {repo_id!r} is neither a local folder nor in the local Hugging Face cache "
        f"(looked for {cache / repo_folder_name(repo_id)}/snapshots/<commit>/); fourds never downloads "
        f"weights. To place them: on a machine with internet run `huggingface-cli download {repo_id}` "
        f"(or `hf download {repo_id}`) and copy its {repo_folder_name(repo_id)} folder into {cache}; or point "
        f"HF_HUB_CACHE / HF_HOME at a cache that has it; or save the model with "
        f"`.save_pretrained(FOLDER)` and pass hf:FOLDER."
    )


def resolve_hf_folder(name: str, revision: str = "main", need: str = "config.json") -> Path:
    """A local folder holding ``need`` for ``name`` (a folder path or a hub id in the local cache).

    Raises:
        FileNotFoundError: neither a folder nor cached, with how to place the weights.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / need).is_file():
            raise FileNotFoundError(
                f"{path} has no {need}: a Hugging Face model folder holds {need} and the weights "
                f"(model.safetensors), as written by `.save_pretrained(FOLDER)`"
            )
        return path
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:  # a path, not an org/name hub id
        raise FileNotFoundError(f"model folder {path} does not exist")
    cache = hub_cache_dir()
    snap = snapshot_folder(cache / repo_folder_name(name), str(revision))
    if snap is None or not (snap / need).is_file():
        raise FileNotFoundError(missing_weights_message(name, cache))
    return snap


# ------------------------------------------------------------------------------------------ HF folders
def read_json(path: Path) -> dict[str, Any]:
    from fourds.textfiles import read_json as read

    data = read(path, "a Hugging Face model folder's JSON file (config.json, preprocessor_config.json)")
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}; expected an object (a Hugging Face config)")
    return data


def processor_settings(folder: Path) -> dict[str, Any]:
    """``image_mean``, ``image_std`` and ``crop_size`` (an int) from the folder's (video) preprocessor
    config, when it has one; the adapters use these instead of their family defaults."""
    out: dict[str, Any] = {}
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        cfg = read_json(path)
        for key in ("image_mean", "image_std"):
            if key in cfg and key not in out:
                out[key] = tuple(float(v) for v in cfg[key])
        crop = cfg.get("crop_size")
        if crop is not None and "crop_size" not in out:
            out["crop_size"] = int(crop["height"] if isinstance(crop, dict) else crop)
    return out


def load_hf_model(class_name: str, folder: Path) -> Any:
    """``transformers.<class_name>.from_pretrained(folder)`` offline, in float32 and eval mode.

    Checkpoints stored in bf16/fp16 are upcast (exactly) so features come out in float32; use autocast
    for reduced-precision inference.
    """
    from fourds.models.adapters.base import quiet_transformers, require

    transformers = require("transformers", "baselines", "hf: backbones (Hugging Face transformers models)")
    cls = getattr(transformers, class_name, None)
    if cls is None:
        raise RuntimeError(
            f"transformers {transformers.__version__} has no {class_name}; upgrade it "
            f"(pip install -U 'fourds[baselines]')"
        )
    with quiet_transformers():
        model = cls.from_pretrained(str(folder), local_files_only=True)
    return model.float().eval()
