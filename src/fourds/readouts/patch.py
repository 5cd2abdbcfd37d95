"""The dense patch readout: one learned query per decoding patch of an output video.

Used by the depth task (:class:`fourds.tasks.scannet.DepthReadout`) and by the official 4DS depth head
(:class:`fourds.convert.heads.VideoPatchReadout`): an :class:`~fourds.readouts.AttentionReadout` whose
``Q = (T/pt)(H/ph)(W/pw)`` learned queries each predict the ``pt·ph·pw·out_channels`` values of their
patch, un-patchified into the output video.
"""

from __future__ import annotations

import math

from einops import rearrange
from torch import Tensor

from fourds.readouts.attention import AttentionReadout


class PatchReadout(AttentionReadout):
    """Attention readout whose learned queries tile an output video into decoding patches.

    Args:
        dim: backbone feature width D.
        channels: readout width C (divisible by ``num_heads``).
        num_heads: attention heads.
        output_size: ``(T, H, W)`` of the output video; ``T`` is also the number of time steps the
            features are resampled to (the official cubic resize).
        patch_size: ``(pt, ph, pw)`` decoding patch, dividing ``output_size``.
        out_channels: values per output pixel c (1 for depth).
        mlp_ratio, ln_eps: as in :class:`AttentionReadout`.
        who: the class name errors are reported under.

    Shapes:
        ``forward(features)``: ``(B, T', N, D)`` → ``(B, T, H, W, c)``. Query ``q`` covers patch
        ``(q // (h·w), (q // w) % h, q % w)`` of the ``(T/pt, h=H/ph, w=W/pw)`` patch grid; its outputs
        are ordered ``(pt, ph, pw, c)``.
    """

    def __init__(self, dim: int, channels: int, num_heads: int, *, output_size: tuple[int, int, int],
                 patch_size: tuple[int, int, int] = (2, 8, 8), out_channels: int = 1, mlp_ratio: int = 4,
                 ln_eps: float = 1e-6, who: str = "PatchReadout") -> None:
        output_size = tuple(int(v) for v in output_size)  # type: ignore[assignment]
        patch_size = tuple(int(v) for v in patch_size)  # type: ignore[assignment]
        for axis, size, p in zip("THW", output_size, patch_size):
            if p < 1 or size % p:
                raise ValueError(f"{who}: output {axis}={size} is not a multiple of the decoding patch {p}")
        patch_grid = tuple(s // p for s, p in zip(output_size, patch_size))
        super().__init__(dim, channels, num_heads, math.prod(patch_size) * out_channels,
                         num_queries=math.prod(patch_grid), steps=output_size[0], mlp_ratio=mlp_ratio, ln_eps=ln_eps)
        self.output_size: tuple[int, int, int] = output_size  # type: ignore[assignment]
        self.patch_size: tuple[int, int, int] = patch_size  # type: ignore[assignment]
        self.patch_grid: tuple[int, int, int] = patch_grid  # type: ignore[assignment]
        self.out_channels = out_channels
        self.mlp_ratio, self.ln_eps = mlp_ratio, ln_eps

    def patch_video(self, features: Tensor, queries: Tensor | None = None) -> Tensor:
        """``(B, T', N, D)`` features → the output video ``(B, T, H, W, c)``."""
        out = AttentionReadout.forward(self, features, queries)  # (B, Q, pt*ph*pw*c)
        (n0, n1, n2), (p0, p1, p2) = self.patch_grid, self.patch_size
        return rearrange(out, "b (n0 n1 n2) (p0 p1 p2 c) -> b (n0 p0) (n1 p1) (n2 p2) c",
                         n0=n0, n1=n1, n2=n2, p0=p0, p1=p1, p2=p2)

    def forward(self, features: Tensor, queries: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return self.patch_video(features, queries)
