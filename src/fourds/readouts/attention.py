"""The attention readout of the 4DS paper: cross-attention from queries to one layer's features.

Design (the official ``readout.py`` of ``google-deepmind/representations4d``, Section 3.3 and Table 6
of the paper)::

    features (B, T', N, D) ──resample time to `steps`──► (B, T, N, D)
        → LayerNorm(D) → + temporal embedding (T, 1, D) → flatten to (B, T·N, D)
        → key, value projections D → C (with biases)
    queries: learned (Q, C) used as they are (no projection), or given (B, Q, E) projected E → C
        → multi-head attention (h heads of C / h) from the queries to the T·N tokens
        → token = query + Dense(C → C)(attention output)   (``query_residual=False``: no ``query +``)
        → token = token + MLP(LayerNorm(token))       (C → 4C → C, tanh GELU)
        → Dense(C → out)                              → (B, Q, out)

The parameter count of this module for a 1024-wide backbone and 16 steps is exactly the paper's
Table 6 figure for every task (the tests in ``tests/test_readouts.py`` and ``tests/test_tasks.py``
check it): e.g. SSv2 (C=768, 12 heads, one learned query, 174 outputs) has 7,041,966 parameters.

Dense layers are initialised as flax's ``nn.Dense`` (the official code's): LeCun normal, variance
1 / fan_in, truncated at 2 std; biases zero.

Temporal resampling uses :func:`fourds.readouts.resample.resample_time`, the official code's cubic
resize (Keys a=-0.5, half-pixel centres, antialiased downsampling), and only runs when ``T' != steps``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fourds.readouts.resample import resample_time


INITS = ("lecun", "small", "torch")
"""Weight initialisations of the readouts' dense layers: ``lecun`` (flax ``nn.Dense``'s default, the
official readout's: truncated normal of variance 1 / fan_in), ``small`` (truncated normal, std 0.02) or
``torch`` (``nn.Linear``'s own default, left as it is)."""


def lecun_normal_(weight: Tensor) -> Tensor:
    """flax's ``lecun_normal``: a normal truncated at 2 std, rescaled so its variance is ``1 / fan_in``
    (``weight`` is ``(out, in)``, as ``nn.Linear`` stores it)."""
    std = math.sqrt(1.0 / weight.shape[1]) / 0.87962566103423978
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def init_dense_(module: nn.Module, init: str = "lecun") -> None:
    """Initialise every ``nn.Linear`` of ``module`` (weights per ``init``, zero biases) and every
    ``nn.LayerNorm`` (ones, zeros)."""
    if init not in INITS:
        raise ValueError(f"readout init must be one of {INITS}, got {init!r}")
    if init == "torch":
        return
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            if init == "lecun":
                lecun_normal_(sub.weight)
            else:
                nn.init.trunc_normal_(sub.weight, std=0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


class ReadoutMLP(nn.Module):
    """``C → ratio·C → C`` with tanh GELU (the readout's residual MLP)."""

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, ratio * channels)
        self.fc2 = nn.Linear(ratio * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AttentionReadout(nn.Module):
    """Cross-attention readout from learned or given queries to one layer's tokens.

    Args:
        dim: backbone feature width D.
        channels: readout width C (divisible by ``num_heads``).
        num_heads: attention heads h.
        out_features: outputs per query.
        num_queries: number of learned queries Q (used raw, no projection). Exactly one of
            ``num_queries`` and ``query_dim`` is given.
        query_dim: width E of queries given at call time; they are projected E → C.
        steps: number of time steps T the features are resampled to (16 in the paper; 1 for the
            camera-pose readout, which reads the concatenated first and last step).
        mlp_ratio: hidden width of the MLP relative to C.
        ln_eps: LayerNorm epsilon (1e-6 as in the official readout).
        query_residual: ``token = query + Dense(attention output)`` (the official readout's residual);
            False drops the query from the token. With positional queries (points, boxes) the residual
            lets the readout fit its targets from the query alone, and it did not learn to attend to
            the query's own token in 1,000 steps of a pure look-up (``docs/ladder.md``).
        init: ``lecun`` (flax ``nn.Dense``'s default: the official readout's) or ``small``
            (truncated normal, std 0.02: this module's init before issue 17) for the dense layers.

    Shapes:
        ``forward(features, queries=None)``: features ``(B, T', N, D)``; queries ``(B, Q, E)`` when
        ``query_dim`` is set, else omitted. Returns ``(B, Q, out_features)``.
    """

    def __init__(
        self,
        dim: int,
        channels: int,
        num_heads: int,
        out_features: int,
        *,
        num_queries: int | None = None,
        query_dim: int | None = None,
        steps: int = 16,
        mlp_ratio: int = 4,
        ln_eps: float = 1e-6,
        query_residual: bool = True,
        init: str = "lecun",
    ) -> None:
        super().__init__()
        if (num_queries is None) == (query_dim is None):
            raise ValueError(
                "AttentionReadout: give exactly one of num_queries (learned queries) and query_dim "
                f"(queries given at call time); got num_queries={num_queries}, query_dim={query_dim}"
            )
        if channels % num_heads:
            raise ValueError(f"AttentionReadout: channels={channels} not divisible by num_heads={num_heads}")
        for name, value in (("dim", dim), ("channels", channels), ("out_features", out_features), ("steps", steps)):
            if value < 1:
                raise ValueError(f"AttentionReadout: {name} must be positive, got {value}")
        self.dim, self.channels, self.num_heads = dim, channels, num_heads
        self.out_features, self.steps = out_features, steps
        self.num_queries, self.query_dim = num_queries, query_dim
        self.query_residual = query_residual
        if init not in INITS:
            raise ValueError(f"AttentionReadout: init must be one of {INITS}, got {init!r}")
        self.init = init

        self.norm = nn.LayerNorm(dim, eps=ln_eps)
        self.temporal_embedding = nn.Parameter(torch.zeros(steps, 1, dim))
        self.key = nn.Linear(dim, channels)
        self.value = nn.Linear(dim, channels)
        if num_queries is not None:
            self.queries: nn.Parameter | None = nn.Parameter(torch.zeros(num_queries, channels))
            self.query_proj: nn.Linear | None = None
        else:
            self.queries = None
            self.query_proj = nn.Linear(query_dim, channels)  # type: ignore[arg-type]
        self.attn_out = nn.Linear(channels, channels)
        self.mlp_norm = nn.LayerNorm(channels, eps=ln_eps)
        self.mlp = ReadoutMLP(channels, mlp_ratio)
        self.head = nn.Linear(channels, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Dense weights per ``init`` (zero biases), N(0, 0.02) queries and temporal embedding (the
        official readout's ``query`` initialiser)."""
        init_dense_(self, self.init)
        nn.init.normal_(self.temporal_embedding, std=0.02)
        if self.queries is not None:
            nn.init.normal_(self.queries, std=0.02)

    def tokens(self, features: Tensor) -> Tensor:
        """``(B, T', N, D)`` → normalised, time-embedded ``(B, steps·N, D)`` key/value inputs."""
        if features.ndim != 4 or features.shape[-1] != self.dim:
            raise ValueError(
                f"AttentionReadout expects features (B, T', N, D={self.dim}), got {tuple(features.shape)}; "
                "pass one layer of Backbone.features(video)"
            )
        if features.shape[1] != self.steps:
            features = resample_time(features, self.steps)
        x = self.norm(features) + self.temporal_embedding.to(features.dtype)
        return rearrange(x, "b t n d -> b (t n) d")

    def embed_queries(self, batch_size: int, queries: Tensor | None) -> Tensor:
        """The ``(B, Q, C)`` attention queries (learned, broadcast over the batch, or projected)."""
        if self.queries is not None:
            if queries is not None:
                raise ValueError("AttentionReadout has learned queries; do not pass queries")
            return self.queries.unsqueeze(0).expand(batch_size, -1, -1)
        if queries is None or queries.ndim != 3 or queries.shape[-1] != self.query_dim:
            shape = None if queries is None else tuple(queries.shape)
            raise ValueError(f"AttentionReadout expects queries (B, Q, E={self.query_dim}), got {shape}")
        return self.query_proj(queries)  # type: ignore[misc]

    def forward(self, features: Tensor, queries: Tensor | None = None) -> Tensor:
        kv = self.tokens(features)
        q = self.embed_queries(features.shape[0], queries).to(kv.dtype)
        h = self.num_heads
        qh = rearrange(q, "b q (h c) -> b h q c", h=h)
        kh = rearrange(self.key(kv), "b n (h c) -> b h n c", h=h)
        vh = rearrange(self.value(kv), "b n (h c) -> b h n c", h=h)
        attended = F.scaled_dot_product_attention(qh, kh, vh)
        token = self.attn_out(rearrange(attended, "b h q c -> b q (h c)"))
        if self.query_residual:
            token = q + token
        token = token + self.mlp(self.mlp_norm(token))
        return self.head(token)
