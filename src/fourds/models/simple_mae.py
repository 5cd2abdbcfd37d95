"""SimpleMAE (paper Section 3.1): 95% random tubelet masking, a learned latent grid joined before the
last N encoder blocks, a linear patch-wise pixel decoder, plain L2 on raw RGB over all patches."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fourds.models.masking import masking_noise, num_kept, random_masking
from fourds.models.vit import VideoViT, ViTConfig, init_named_parameters, resize_grid_embedding


@dataclass(frozen=True)
class MAEConfig:
    """SimpleMAE hyper-parameters (paper Table 5 defaults).

    Attributes:
        mask_ratio: fraction of tubelets removed per sample (0.95).
        num_latent_layers: N, the last N blocks see the kept tokens plus the latent grid (4; 2 for 4DS-j).
        decoder_patch_size: pixels each latent token decodes to, (2, 16, 16) (4, 32, 32 for 4DS-j);
            the latent grid is ``input_size / decoder_patch_size``.
    """

    mask_ratio: float = 0.95
    num_latent_layers: int = 4
    decoder_patch_size: tuple[int, int, int] = (2, 16, 16)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder_patch_size", tuple(int(v) for v in self.decoder_patch_size))
        num_kept(100, self.mask_ratio)  # validates the ratio
        if self.num_latent_layers < 1:
            raise ValueError(f"num_latent_layers must be >= 1, got {self.num_latent_layers}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MAEOutput:
    """Result of a SimpleMAE forward pass.

    Attributes:
        loss: scalar float32, mean squared error over all pixels of all patches.
        mask: ``(B, N)`` bool over the encoder's token grid (row-major t, h, w), True = removed.
        pred: ``(B, Nl, pt*ph*pw*3)`` float32 decoder output per latent token.
        decoder_patch_size, latent_grid: how ``pred`` tiles the video.

    ``reconstruction`` (``(B, T, H, W, 3)`` float32 decoded video, not clamped) is computed from
    ``pred`` on first access: a training step never pays for the un-patchify copy.
    """

    loss: Tensor
    mask: Tensor
    pred: Tensor
    decoder_patch_size: tuple[int, int, int]
    latent_grid: tuple[int, int, int]

    @functools.cached_property
    def reconstruction(self) -> Tensor:
        return unpatchify(self.pred, self.decoder_patch_size, self.latent_grid)


def patchify(video: Tensor, patch: tuple[int, int, int]) -> Tensor:
    """``(B, T, H, W, C)`` → ``(B, N, pt*ph*pw*C)`` with tokens in row-major (t, h, w) order."""
    pt, ph, pw = patch
    return rearrange(video, "b (t pt) (h ph) (w pw) c -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)


def unpatchify(patches: Tensor, patch: tuple[int, int, int], grid: tuple[int, int, int]) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, N, pt*ph*pw*C)`` → ``(B, T, H, W, C)``."""
    pt, ph, pw = patch
    t, h, w = grid
    return rearrange(
        patches, "b (t h w) (pt ph pw c) -> b (t pt) (h ph) (w pw) c", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw
    )


class SimpleMAE(nn.Module):
    """Encoder (a :class:`VideoViT`) + learned latent grid + linear pixel decoder.

    The first ``depth - N`` blocks see only the kept tokens; the latent tokens (one learned vector per
    grid position, so no positional embedding is added to them) are concatenated before the last N
    blocks; after the last block the latent tokens are decoded linearly, patch-wise, to pixels. For
    downstream use the latent tokens are dropped and ``encoder`` is the backbone.
    """

    def __init__(self, vit_cfg: ViTConfig, mae_cfg: MAEConfig, name: str | None = None) -> None:
        super().__init__()
        if mae_cfg.num_latent_layers > vit_cfg.depth:
            raise ValueError(
                f"num_latent_layers={mae_cfg.num_latent_layers} exceeds the encoder depth {vit_cfg.depth}"
            )
        for name_, size, p in zip("THW", vit_cfg.input_size, mae_cfg.decoder_patch_size):
            if size % p:
                raise ValueError(
                    f"input_size {name_}={size} is not divisible by decoder_patch_size {name_}={p}"
                )
        self.mae_cfg = mae_cfg
        self.encoder = VideoViT(vit_cfg, name=name, init=False)
        self.latent_grid = tuple(s // p for s, p in zip(vit_cfg.input_size, mae_cfg.decoder_patch_size))
        self.latent_tokens = nn.Parameter(torch.zeros(*self.latent_grid, vit_cfg.dim))
        self.decoder = nn.Linear(vit_cfg.dim, math.prod(mae_cfg.decoder_patch_size) * vit_cfg.in_channels)
        self.init_weights()

    @property
    def name(self) -> str:
        return self.encoder.name

    @torch.no_grad()
    def init_parameter(self, name: str, tensor: Tensor, generator: torch.Generator | None = None) -> None:
        """Encoder rules for ``encoder.*``; latent tokens ~ normal(0.02); decoder xavier-uniform, zero bias."""
        if name.startswith("encoder."):
            self.encoder.init_parameter(name[len("encoder."):], tensor, generator)
        elif name == "latent_tokens":
            nn.init.normal_(tensor, std=0.02, generator=generator)
        elif name == "decoder.weight":
            nn.init.xavier_uniform_(tensor, generator=generator)
        elif name == "decoder.bias":
            nn.init.zeros_(tensor)
        else:
            raise AssertionError(f"no init rule for parameter {name}")

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """See :meth:`VideoViT.init_weights`."""
        init_named_parameters(self, seed)

    def no_weight_decay(self, include_biases: bool = False, include_latents: bool = False) -> set[str]:
        """Names exempt from weight decay (see :meth:`VideoViT.no_weight_decay`); optionally the biases
        and the latent tokens too."""
        names = {f"encoder.{n}" for n in self.encoder.no_weight_decay(include_biases)}
        if include_biases:
            names.add("decoder.bias")
        if include_latents:
            names.add("latent_tokens")
        return names

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

    def num_tokens(self, video_shape: tuple[int, ...]) -> int:
        """Encoder tokens N of a ``(B, T, H, W, 3)`` video."""
        return math.prod(self.encoder.token_grid(video_shape))

    def forward(
        self,
        video: Tensor,
        noise: Tensor | None = None,
        sample_seeds: list[int] | Tensor | None = None,
    ) -> MAEOutput:
        """Masked auto-encoding of ``video`` ``(B, T, H, W, 3)`` float in [0, 1].

        Masking noise ``(B, N)`` is taken from ``noise``, else drawn from one seeded stream per sample
        (``sample_seeds``), else from the global RNG.
        """
        enc = self.encoder
        b = video.shape[0]
        grid = enc.token_grid(video.shape)  # validates the shape
        n = math.prod(grid)
        if noise is None:
            if sample_seeds is not None:
                noise = masking_noise(sample_seeds, n, device=video.device)
            else:
                noise = torch.rand(b, n, device=video.device)
        video = video.to(enc.patch_embed.proj.weight.dtype)
        # Mask raw tubelets, then embed only the kept ones (5% of the clip): the embedding is per-token,
        # so this equals embedding everything and masking the tokens, for 1/20 of the work.
        patches = patchify(video, enc.patch_embed.patch_size)  # (B, N, pt*ph*pw*3), the embedding's layout
        kept_patches, mask, ids_keep, _ = random_masking(patches, num_kept(n, self.mae_cfg.mask_ratio), noise)
        pos = resize_grid_embedding(enc.pos_embed, grid).flatten(0, 2)  # (N, D)
        kept = enc.patch_embed.proj(kept_patches) + pos[ids_keep].to(kept_patches.dtype)

        split = enc.num_layers - self.mae_cfg.num_latent_layers
        x = enc.run_blocks(kept, 0, split)
        dec_patch = self.mae_cfg.decoder_patch_size
        latent_grid = tuple(s // p for s, p in zip(video.shape[1:4], dec_patch))
        latents = resize_grid_embedding(self.latent_tokens, latent_grid).flatten(0, 2)
        x = torch.cat([x, latents.to(x.dtype).expand(b, -1, -1)], dim=1)
        # Only the latent tokens are decoded: the last block computes queries and MLP for them alone.
        x = enc.run_blocks(x, split, enc.num_layers, keep_last=latents.shape[0])
        pred = self.decoder(x).float()

        target = patches if tuple(dec_patch) == tuple(enc.patch_embed.patch_size) else patchify(video, dec_patch)
        loss = F.mse_loss(pred, target.float())
        return MAEOutput(loss=loss, mask=mask, pred=pred, decoder_patch_size=tuple(dec_patch),
                         latent_grid=latent_grid)  # type: ignore[arg-type]
