"""The 4DS video ViT: tubelet embedding, learned (t, h, w) positional embedding, pre-norm blocks.

Defaults follow the released 4DS models so an official checkpoint is this class with converted weights:
LayerNorm eps 1e-6, tanh-approximated GELU, separate q/k/v projections with biases, no CLS token,
no final norm, no layer-scale.

Input video is ``(B, T, H, W, 3)`` float in [0, 1], channels last, no mean/std normalisation.
Features leave as ``(B, T', N, D)`` with ``T' = T / pt`` and ``N = (H / ph) * (W / pw)`` tokens in
row-major (h, w) order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from fourds.models.backbone import resolve_layers


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a video ViT.

    Attributes:
        dim: token width D.
        depth: number of transformer blocks L.
        num_heads: attention heads (D must be divisible by it).
        mlp_dim: hidden width of each block's MLP.
        patch_size: tubelet (pt, ph, pw) in (frames, pixels, pixels).
        input_size: (T, H, W) the positional embedding is trained for.
        in_channels: colour channels of the input (3).
        ln_eps: LayerNorm epsilon (1e-6 in the released models).
        gelu_approximate: ``"tanh"`` (released models) or ``"none"``.
        qkv_bias: biases on the q/k/v projections.
    """

    dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: tuple[int, int, int] = (2, 16, 16)
    input_size: tuple[int, int, int] = (16, 224, 224)
    in_channels: int = 3
    ln_eps: float = 1e-6
    gelu_approximate: str = "tanh"
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(v) for v in self.patch_size))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.gelu_approximate not in ("tanh", "none"):
            raise ValueError(f"gelu_approximate={self.gelu_approximate!r}: choose 'tanh' or 'none'")
        for name, size, p in zip("THW", self.input_size, self.patch_size):
            if size % p:
                raise ValueError(
                    f"input_size {name}={size} is not divisible by patch_size {name}={p}; "
                    f"pick an input size that is a multiple of the patch size"
                )

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', h, w) of ``input_size``."""
        return tuple(s // p for s, p in zip(self.input_size, self.patch_size))  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return asdict(self)


class TubeletEmbed(nn.Module):
    """Non-overlapping (pt, ph, pw) tubelets → D, as one linear layer on flattened patches.

    Equivalent to ``Conv3d(C, D, kernel_size=patch, stride=patch)``; the weight is the conv kernel
    flattened in (pt, ph, pw, C) order and transposed, i.e. ``proj.weight`` is ``(D, pt*ph*pw*C)``.
    A linear layer is used because it is faster than a strided 3-D convolution on CPU.
    """

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(math.prod(patch_size) * in_channels, dim)

    def forward(self, video: Tensor) -> Tensor:
        """``(B, T, H, W, C)`` → ``(B, T', h, w, D)``."""
        pt, ph, pw = self.patch_size
        patches = rearrange(
            video, "b (t pt) (h ph) (w pw) c -> b t h w (pt ph pw c)", pt=pt, ph=ph, pw=pw
        )
        return self.proj(patches)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections, on ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, num_queries: int | None = None) -> Tensor:
        """``(B, N, D)`` → ``(B, N, D)``; scale 1/sqrt(head_dim).

        With ``num_queries`` only the last ``num_queries`` tokens query (all N are keys and values) and
        the result is ``(B, num_queries, D)``: exactly those rows of the full output, for less work.
        """
        heads = "b n (h d) -> b h n d"
        xq = x if num_queries is None else x[:, x.shape[1] - num_queries:]
        q = rearrange(self.q(xq), heads, h=self.num_heads)
        k, v = (rearrange(proj(x), heads, h=self.num_heads) for proj in (self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, gelu_approximate: str = "tanh") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.attn = Attention(cfg.dim, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg.dim, cfg.mlp_dim, cfg.gelu_approximate)

    def forward(self, x: Tensor, num_queries: int | None = None) -> Tensor:
        """``(B, N, D)`` → ``(B, N, D)``, or with ``num_queries`` only the last ``num_queries`` output
        tokens ``(B, num_queries, D)`` (every token still attended to; see :meth:`Attention.forward`)."""
        h = self.norm1(x)
        if num_queries is not None:
            x = x[:, x.shape[1] - num_queries:]
        x = x + self.attn(h, num_queries)
        return x + self.mlp(self.norm2(x))


def resize_grid_embedding(embed: Tensor, grid: Sequence[int]) -> Tensor:
    """Resize a learned ``(t, h, w, D)`` grid embedding to ``grid = (t', h', w')``.

    Space is resized with bicubic interpolation (``align_corners=False``, the timm/ViT convention for
    positional embeddings), then time with linear interpolation; a size that already matches is left
    untouched, so the trained grid returns the parameter itself. Used for inputs whose size differs
    from the trained ``input_size`` and for SimpleMAE's latent grid.
    """
    t, h, w, d = embed.shape
    t2, h2, w2 = (int(g) for g in grid)
    out = embed
    if (h, w) != (h2, w2):
        out = rearrange(out, "t h w d -> t d h w")
        out = F.interpolate(out.float(), size=(h2, w2), mode="bicubic", align_corners=False).to(embed.dtype)
        out = rearrange(out, "t d h w -> t h w d")
    if t != t2:
        out = rearrange(out, "t h w d -> (h w) d t")
        out = F.interpolate(out.float(), size=t2, mode="linear", align_corners=False).to(embed.dtype)
        out = rearrange(out, "(h w) d t -> t h w d", h=h2, w=w2)
    return out


def init_named_parameters(module: nn.Module, seed: int | None) -> None:
    """Apply ``module.init_parameter`` to each parameter; see :meth:`VideoViT.init_weights`.

    With ``seed``, every parameter is drawn in full **on the CPU** from its own generator seeded by
    ``(seed, name)`` and then copied into the parameter, wherever it lives: a CUDA tensor (a CPU
    generator cannot draw into it), an FSDP2-sharded ``DTensor`` (each rank keeps its shard of the same
    full tensor) or a plain CPU tensor. The initial weights are therefore bit-identical on every device,
    strategy and world size. Without ``seed`` the parameters are drawn in place from the global RNG of
    their device. Parameters on the meta device are skipped.
    """
    from fourds.seeding import generator

    for name, param in module.named_parameters():
        if param.is_meta:
            continue
        if seed is None:
            module.init_parameter(name, param, None)
            continue
        full = torch.empty(tuple(param.shape), dtype=param.dtype, device="cpu")
        module.init_parameter(name, full, generator(seed, name))
        _copy_full_into(param, full)


@torch.no_grad()
def _copy_full_into(param: Tensor, full: Tensor) -> None:
    """Copy a full CPU tensor into ``param`` (plain tensor on any device, or a sharded ``DTensor``)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        param.copy_(distribute_tensor(full.to(param.device), param.device_mesh, param.placements))
    else:
        param.copy_(full)


class VideoViT(nn.Module):
    """The 4DS video ViT, behind the Backbone contract (see :mod:`fourds.models.backbone`).

    ``features(video)`` returns ``depth + 1`` tensors ``(B, T', N, D)``: index 0 is the embedding
    (after the positional embedding), index k the output of block k.
    """

    def __init__(self, cfg: ViTConfig, name: str | None = None, init: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = name or "video-vit"
        self.patch_embed = TubeletEmbed(cfg.patch_size, cfg.in_channels, cfg.dim)
        self.pos_embed = nn.Parameter(torch.zeros(*cfg.grid, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.grad_checkpointing = False
        if init:
            self.init_weights()

    # ---------------------------------------------------------------- Backbone contract attributes
    @property
    def num_layers(self) -> int:
        return self.cfg.depth

    @property
    def dim(self) -> int:
        return self.cfg.dim

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return self.cfg.patch_size

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.cfg.input_size

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.cfg.grid

    # ---------------------------------------------------------------- initialisation and hooks
    @torch.no_grad()
    def init_parameter(self, name: str, tensor: Tensor, generator: torch.Generator | None = None) -> None:
        """Initialise one parameter (by its name in this module) in place, MAE-style: xavier-uniform
        linear weights (the patch embedding as a flattened kernel), zero biases, LayerNorm (1, 0), the
        positional embedding ~ truncated normal(0.02)."""
        if name == "pos_embed":
            nn.init.trunc_normal_(tensor, std=0.02, a=-0.04, b=0.04, generator=generator)
        elif ".norm" in f".{name}" and name.endswith("weight"):
            nn.init.ones_(tensor)
        elif name.endswith("bias"):
            nn.init.zeros_(tensor)
        elif tensor.ndim == 2:
            nn.init.xavier_uniform_(tensor, generator=generator)
        else:
            raise AssertionError(f"no init rule for parameter {name} {tuple(tensor.shape)}")

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Initialise every parameter (no-op on the meta device). With ``seed``, each parameter draws
        from its own generator seeded by ``(seed, name)``, so the result does not depend on parameter
        order or sharding (FSDP initialises full tensors one at a time with the same rule)."""
        init_named_parameters(self, seed)

    def no_weight_decay(self, include_biases: bool = False) -> set[str]:
        """Parameter names exempt from weight decay: the positional embedding and LayerNorm parameters
        (as in the paper), plus every bias when ``include_biases``."""
        names = {"pos_embed"}
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            if isinstance(module, nn.LayerNorm):
                names.update(prefix + p for p, _ in module.named_parameters(recurse=False))
            elif include_biases and getattr(module, "bias", None) is not None:
                names.add(prefix + "bias")
        return names

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    # ---------------------------------------------------------------- forward pieces
    def token_grid(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
        """Token grid (T', h, w) for a ``(B, T, H, W, C)`` video; raises if sizes do not tile."""
        if len(video_shape) != 5 or video_shape[-1] != self.cfg.in_channels:
            raise ValueError(
                f"expected video of shape (B, T, H, W, {self.cfg.in_channels}) channels-last, "
                f"got {tuple(video_shape)}"
            )
        grid = []
        for name, size, p in zip("THW", video_shape[1:4], self.patch_size):
            if size % p:
                raise ValueError(
                    f"video {name}={size} is not a multiple of the patch size {p}; "
                    f"resize or crop the input to a multiple of {p}"
                )
            grid.append(size // p)
        return tuple(grid)  # type: ignore[return-value]

    def embed(self, video: Tensor) -> Tensor:
        """``(B, T, H, W, 3)`` in [0, 1] → tokens ``(B, T', h, w, D)`` with the positional embedding.

        Inputs whose token grid differs from the trained one use :func:`resize_grid_embedding`.
        """
        grid = self.token_grid(video.shape)
        x = self.patch_embed(video.to(self.patch_embed.proj.weight.dtype))
        return x + resize_grid_embedding(self.pos_embed, grid).to(x.dtype)

    def run_blocks(self, x: Tensor, start: int, stop: int, keep_last: int | None = None) -> Tensor:
        """Apply blocks ``start .. stop-1`` to tokens ``(B, N, D)``.

        ``keep_last``: only the last ``keep_last`` tokens of the result are wanted, so the final block
        computes queries, MLP and output for those alone; returns ``(B, keep_last, D)``, equal to the
        full result's last rows. SimpleMAE uses it: only the latent tokens are decoded.
        """
        blocks = self.blocks[start:stop]
        for i, block in enumerate(blocks):
            nq = keep_last if i == len(blocks) - 1 else None
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, nq, use_reentrant=False)
            else:
                x = block(x, nq)
        return x

    def preprocess(self, video: Tensor) -> Tensor:
        """4DS models take the standard video as it is: ``(B, T, H, W, 3)`` float in [0, 1]."""
        return video

    def features(self, video: Tensor, layers: Sequence[int | float] | None = None) -> list[Tensor]:
        """Per-layer tokens ``(B, T', N, D)``.

        Args:
            video: ``(B, T, H, W, 3)`` float in [0, 1]; T, H, W multiples of the patch size.
            layers: ``None`` for all ``depth + 1`` layers (0 = embedding, k = block k), or a list of
                indices (ints, negatives count from the end) or fractional depths (floats in [0, 1],
                see :func:`fourds.models.backbone.layer_index`); the forward stops after the deepest
                requested layer and the result follows the requested order.
        """
        video = self.preprocess(video)
        indices = resolve_layers(layers, self.num_layers)
        x = self.embed(video)
        b, t, h, w, d = x.shape
        x = x.reshape(b, t * h * w, d)
        wanted = set(indices)
        collected: dict[int, Tensor] = {}
        if 0 in wanted:
            collected[0] = x
        for k in range(1, max(indices) + 1):
            x = self.run_blocks(x, k - 1, k)
            if k in wanted:
                collected[k] = x
        return [collected[i].reshape(b, t, h * w, d) for i in indices]

    def forward(self, video: Tensor) -> Tensor:
        """Last layer's tokens ``(B, T', N, D)``."""
        return self.features(video, layers=[self.num_layers])[0]

    def extra_repr(self) -> str:
        c = self.cfg
        return f"name={self.name}, dim={c.dim}, depth={c.depth}, heads={c.num_heads}, grid={c.grid}"

