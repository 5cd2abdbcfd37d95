"""Dense video readout heads (the official 4DS depth head) and their ``heads/<name>/`` folders.

The official depth readout is the dense patch readout :class:`fourds.readouts.PatchReadout` (one
learned query per output tubelet, un-patchified into a ``(pt, ph, pw, c)`` block of the output video,
the readout of the depth task too). :class:`VideoPatchReadout` adds the ``layer`` of the backbone's
feature list it reads and its provenance, so ``head(backbone.features(video, [head.layer])[0])`` is the
official model's output.

A model folder keeps its heads in ``heads/<name>/`` sub-folders of the same layout (``config.json`` +
``model.safetensors``); :func:`save_heads` / :func:`load_heads` write and read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from fourds.models.io import CONFIG_NAME, WEIGHTS_NAME, load_module, load_state_into, save_model
from fourds.readouts.patch import PatchReadout

HEADS_DIR = "heads"
KIND = "video_patch_readout"


class VideoPatchReadout(PatchReadout):
    """The official depth head: the dense patch readout (:class:`fourds.readouts.PatchReadout`) plus the
    backbone ``layer`` it reads and its provenance, stored in a ``heads/<name>/`` folder.

    Args:
        dim, channels, num_heads, output_size, patch_size, out_channels, mlp_ratio, ln_eps: as in
            :class:`fourds.readouts.PatchReadout` (``output_size`` ``(T, H, W)``, one query per
            ``patch_size`` patch with ``pt·ph·pw·out_channels`` outputs).
        layer: index into ``Backbone.features`` (0 = embedding, k = block k) this head reads.
        token_grid: ``(T', h, w)`` token grid of the backbone features it was trained on (recorded, not
            enforced: keys and values work for any grid; the time axis is resampled to ``T``).
        name: the head's name (its sub-folder, e.g. ``"depth"``).
        meta: provenance kept in ``config.json`` (e.g. the official feature index).

    Shapes:
        ``forward(features)``: ``(B, T', N, D)`` → ``(B, T, H, W, out_channels)`` float, raw outputs in
        the units the head was trained for (the official depth head: its ScanNet depth, no activation).
        Query ``q`` covers patch ``(q // (h·w), (q // w) % h, q % w)`` of the ``(T/pt, h=H/ph, w=W/pw)``
        patch grid; its outputs are ordered ``(pt, ph, pw, c)``.
    """

    def __init__(
        self,
        dim: int,
        channels: int,
        num_heads: int,
        *,
        output_size: tuple[int, int, int],
        patch_size: tuple[int, int, int] = (2, 8, 8),
        out_channels: int = 1,
        layer: int,
        token_grid: tuple[int, int, int] | None = None,
        mlp_ratio: int = 4,
        ln_eps: float = 1e-6,
        name: str = "depth",
        meta: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(layer, bool) or int(layer) < 0:
            raise ValueError(f"VideoPatchReadout: layer must be a feature index >= 0, got {layer!r}")
        super().__init__(dim, channels, num_heads, output_size=output_size, patch_size=patch_size,
                         out_channels=out_channels, mlp_ratio=mlp_ratio, ln_eps=ln_eps, who="VideoPatchReadout")
        self.layer = int(layer)
        self.token_grid = None if token_grid is None else tuple(int(v) for v in token_grid)
        self.name = name
        self.meta = dict(meta or {})

    def to_config(self) -> dict[str, Any]:
        """``config.json`` content: everything needed to rebuild this head."""
        return {
            "kind": KIND,
            "name": self.name,
            "readout": {
                "dim": self.dim,
                "channels": self.channels,
                "num_heads": self.num_heads,
                "output_size": list(self.output_size),
                "patch_size": list(self.patch_size),
                "out_channels": self.out_channels,
                "layer": self.layer,
                "token_grid": None if self.token_grid is None else list(self.token_grid),
                "mlp_ratio": self.mlp_ratio,
                "ln_eps": self.ln_eps,
            },
            "meta": self.meta,
        }

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, layer={self.layer}, dim={self.dim}, channels={self.channels}, "
            f"heads={self.num_heads}, output_size={self.output_size}, patch_size={self.patch_size}"
        )


def load_video_patch_readout(folder: Path, config: dict[str, Any]) -> VideoPatchReadout:
    """Rebuild a ``video_patch_readout`` head folder from its ``config`` (the loader of that kind for
    :func:`fourds.models.load_module`)."""
    cfg = dict(config["readout"])
    head = VideoPatchReadout(
        **{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()},
        name=config.get("name", folder.name),
        meta=config.get("meta"),
    )
    return load_state_into(head, Path(folder) / WEIGHTS_NAME)


def save_heads(heads: dict[str, nn.Module], folder: str | Path) -> list[Path]:
    """Write each head to ``folder/heads/<name>/`` (``config.json`` + ``model.safetensors``)."""
    written = []
    for name, head in heads.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad head name {name!r}: use a plain folder name such as 'depth'")
        written.append(save_model(head, Path(folder) / HEADS_DIR / name))
    return written


def load_heads(folder: str | Path) -> dict[str, nn.Module]:
    """Every head in ``folder/heads/*/`` by sub-folder name (empty dict when there are none), in eval
    mode on the CPU. Any kind :func:`fourds.models.load_module` knows loads."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    root = folder / HEADS_DIR
    if not root.is_dir():
        return {}
    return {sub.name: load_module(sub) for sub in sorted(root.iterdir()) if (sub / CONFIG_NAME).is_file()}
