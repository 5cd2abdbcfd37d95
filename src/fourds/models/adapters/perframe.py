"""A video backbone run one frame at a time: the paper's image-model protocol applied to a 4DS model.

Each frame is repeated to fill the model's temporal tubelet (2 frames for 4DS), encoded on its own, and
the per-frame token grids are stacked in time: ``T' = T``, patch size ``(1, ph, pw)``, and no token ever
sees another frame. The 4DS positional embedding is resized to the one-step grid by the model's own
rule (:func:`fourds.models.vit.resize_grid_embedding`, linear in time), as for any other input size.

This is the "per-frame" baseline: the same weights with the temporal context taken away, which
separates what a video model gains from seeing motion from what it gets from single-frame appearance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from einops import rearrange, repeat
from torch import Tensor, nn

from fourds.models.adapters.base import BackboneAdapter, check_video


class PerFrame(BackboneAdapter):
    """Wrap a video Backbone with a temporal tubelet so it encodes every frame independently.

    Args:
        inner: a Backbone whose ``patch_size[0]`` frames give one token time step (a 4DS ``VideoViT``).
        spec: the spec string, for logs.
    """

    def __init__(self, inner: nn.Module, spec: str = "") -> None:
        super().__init__()
        self.inner = inner
        self.tubelet = int(inner.patch_size[0])
        self.num_layers = int(inner.num_layers)
        self.dim = int(inner.dim)
        self.patch_size = (1, *(int(p) for p in inner.patch_size[1:]))
        self.input_size = tuple(int(s) for s in inner.input_size)  # type: ignore[assignment]
        self.spec = spec or f"perframe:{getattr(inner, 'name', type(inner).__name__)}"

    @property
    def blocks(self) -> Any:
        return getattr(self.inner, "blocks", None)

    def token_grid(self, video_shape: Any) -> tuple[int, int, int]:
        _, t, h, w = (int(s) for s in video_shape[:4])
        inner_grid = getattr(self.inner, "token_grid", None)
        if callable(inner_grid):
            _, gh, gw = inner_grid((1, self.tubelet, h, w, 3))
        else:
            gh, gw = h // self.patch_size[1], w // self.patch_size[2]
        return t, int(gh), int(gw)

    def preprocess(self, video: Tensor) -> Tensor:
        """``(B, T, H, W, 3)`` → ``(B*T, tubelet, H, W, 3)``: every frame repeated ``tubelet`` times."""
        check_video(video)
        return repeat(video, "b t h w c -> (b t) k h w c", k=self.tubelet)

    def forward_layers(self, inputs: Tensor, layers: list[int], video_shape: tuple[int, ...]) -> dict[int, Tensor]:
        b, t = int(video_shape[0]), int(video_shape[1])
        feats = self.inner.features(inputs, layers=layers)
        out = {}
        for k, f in zip(layers, feats):
            if f.shape[1] != 1:
                raise ValueError(
                    f"perframe: {type(self.inner).__name__} returned {f.shape[1]} time steps for one frame repeated "
                    f"{self.tubelet} times; it needs a temporal patch size equal to its tubelet (4DS models)"
                )
            out[k] = rearrange(f[:, 0], "(b t) n c -> b t n c", b=b, t=t)
        return out


def build_perframe(target: str, seed: int = 0, spec: str = "", **overrides: Any) -> PerFrame:
    """``perframe:<target>``: a fourds model folder (``fourds.models.load``) or a registered name
    (random init, per-parameter seeds from ``seed``; ``overrides`` are architecture overrides)."""
    from fourds.models import create, list_models, load

    if Path(target).expanduser().is_dir():
        if overrides:
            raise ValueError(f"perframe:{target}: architecture overrides {sorted(overrides)} only apply to registered names")
        inner = load(Path(target).expanduser())
    elif target in list_models():
        inner = create(target, **overrides)
        inner.init_weights(seed=seed)
    elif "/" in target or "\\" in target or target.startswith((".", "~")):  # a mistyped folder
        from fourds.models.adapters.hub import missing_folder_message

        raise FileNotFoundError(f"perframe:{target}: {missing_folder_message(target)}; perframe: takes a fourds "
                                f"model folder or a registered name ({', '.join(list_models())})")
    else:
        raise ValueError(
            f"perframe:{target!r} is neither a fourds model folder nor a registered model "
            f"({', '.join(list_models())})"
        )
    return PerFrame(inner, spec=spec or f"perframe:{target}")
