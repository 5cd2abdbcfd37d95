"""The blank row: the demo's readouts trained on constant features, the floor a readout reaches with no
information from a backbone (e.g. a per-pixel depth prior, the occlusion rate, the class frequencies).

A task's *floor* is the better of its trivial answer (:mod:`fourds.demo.trivial`) and this row; a
pretrained row counts on a task only above both (``fourds.demo.results.compare``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fourds.models.backbone import resolve_layers


class BlankBackbone(nn.Module):
    """A Backbone whose every layer's features are zeros on the token grid of a real backbone.

    Args:
        like: the backbone whose contract (``num_layers``, ``dim``, ``patch_size``, ``input_size``, token
            grid) the blank row copies, so the same readouts, layers and widths are trained on it.
    """

    def __init__(self, like: nn.Module) -> None:
        super().__init__()
        self.num_layers = int(like.num_layers)
        self.dim = int(like.dim)
        self.patch_size = tuple(like.patch_size)
        self.input_size = tuple(like.input_size)

    def token_grid(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
        """Tokens ``(T', H', W')`` of a video ``(B, T, H, W, 3)``: its sizes over the tubelet size."""
        t, h, w = video_shape[1:4]
        pt, ph, pw = self.patch_size
        return t // pt, h // ph, w // pw

    @property
    def grid(self) -> tuple[int, int, int]:
        t, h, w = self.input_size
        pt, ph, pw = self.patch_size
        return t // pt, h // ph, w // pw

    @torch.no_grad()
    def features(self, video: Tensor, layers: Sequence[int | float] | None = None) -> list[Tensor]:
        """``video`` ``(B, T, H, W, 3)`` → one zero tensor ``(B, T', H'W', dim)`` per asked layer."""
        wanted = resolve_layers(list(layers), self.num_layers) if layers is not None else list(range(self.num_layers + 1))
        t, h, w = self.token_grid(video.shape)
        zeros = video.new_zeros(video.shape[0], t, h * w, self.dim)
        return [zeros for _ in wanted]
