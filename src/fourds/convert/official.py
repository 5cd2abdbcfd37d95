"""Import the released 4DS checkpoints (``google-deepmind/representations4d`` ``.npz`` files).

The files hold Flax parameters flattened with ``/``. Backbone-only files (``scaling4d_dist_b.npz``,
``scaling4d_e.npz``) nest the encoder under ``params/encoder/`` and ``params/processor/``; the depth
file (``scaling4d_dist_b_depth.npz``) under ``params/layers_0/encoder|processor/`` with its readout under
``params/layers_2/`` (``nn.Sequential([encoder, EncoderToReadout, AttentionReadout])``). Both layouts
(and the same without the leading ``params/``) are accepted, and every size is read off the arrays.

Conversion is a key table (official key, our key, expected official shape, layout transform): every
source key must be used, every shape is checked, and all problems are reported together.

Flax layouts: Dense kernel ``(in, out)``; attention in-projections ``(D, heads, head_dim)`` (heads-major
flattening ``h * head_dim + d``, our ``nn.Linear`` row order), out-projection ``(heads, head_dim, D)``;
Conv kernel ``(kt, kh, kw, C_in, D)`` = our :class:`~fourds.models.vit.TubeletEmbed` weight transposed.

The official feature list is not "embedding, then every block": its entries 0 and 1 are both the
embedding, entry ``i >= 2`` is the output of block ``i - 1``, and the last block's output is never
returned. Its depth readout reads entry ``int((L + 1) * 0.95) - 1``, which is our index
``max(entry - 1, 0)`` (4DS-B: entry 11 = our 10, the output of block 10 of 12).
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fourds.convert.heads import HEADS_DIR, VideoPatchReadout, save_heads
from fourds.convert.npz import ArrayInfo, NpzReader
from fourds.models.io import CONFIG_NAME, save_model
from fourds.models.vit import VideoViT, ViTConfig
from fourds.textfiles import quote

_PATCH_KERNEL = "encoder/patch_embedding/Conv_0/kernel"
_POSENC = "encoder/posenc/embeddings"
_BLOCK = re.compile(r"^processor/layers_(\d+)/")
_READOUT_PROBE = "query"
#: ``readout_depth`` of the official ``EncoderToReadout`` in the depth demo (not stored in the file).
OFFICIAL_READOUT_DEPTH = 0.95
_MAX_LISTED = 20


@dataclass(frozen=True)
class Layout:
    """Where the encoder and the (optional) readout live in the file's key space."""

    encoder_prefix: str  # "params/" or "params/layers_0/" (or without "params/")
    readout_prefix: str | None  # "params/layers_2/" or None


@dataclass(frozen=True)
class ReadoutSizes:
    dim: int
    channels: int
    num_heads: int
    num_queries: int
    out_features: int
    steps: int
    mlp_ratio: int


def detect_layout(keys: list[str], path: str = "checkpoint") -> Layout:
    """Find the encoder prefix from the patch-embedding kernel's key, and the readout beside it."""
    hits = [k[: -len(_PATCH_KERNEL)] for k in keys if k.endswith(_PATCH_KERNEL)]
    if not hits:
        raise ValueError(
            f"{path} does not look like a 4DS checkpoint: no key ends with {_PATCH_KERNEL!r} (expected "
            f"'params/{_PATCH_KERNEL}' or 'params/layers_0/{_PATCH_KERNEL}'); first keys: {[quote(k) for k in sorted(keys)[:8]]}"
        )
    if len(hits) > 1:
        raise ValueError(f"{path} holds several encoders (prefixes {[quote(h) for h in sorted(hits)[:5]]}); expected exactly one")
    prefix = hits[0]
    if prefix not in ("params/", "params/layers_0/", "", "layers_0/"):
        raise ValueError(
            f"{path}: unexpected encoder prefix {quote(prefix)}; known layouts are 'params/encoder/...' "
            "(backbone files) and 'params/layers_0/encoder/...' (the depth file)"
        )
    readout = None
    if prefix.endswith("layers_0/"):
        candidate = prefix[: -len("layers_0/")] + "layers_2/"
        if any(k.startswith(candidate) for k in keys):
            readout = candidate
    return Layout(prefix, readout)


def _shape(info: dict, key: str, path: str) -> tuple[int, ...]:
    if key not in info:
        raise ValueError(f"{path}: missing key {key!r}, needed to infer the architecture")
    return info[key].shape


def infer_vit_config(info: dict, layout: Layout, path: str = "checkpoint") -> ViTConfig:
    """Every encoder size from the array shapes: width, depth, heads, MLP, patch, token grid."""
    p = layout.encoder_prefix
    kernel = _shape(info, p + _PATCH_KERNEL, path)
    if len(kernel) != 5:
        raise ValueError(f"{path}: {p + _PATCH_KERNEL} has shape {kernel}; expected (kt, kh, kw, C_in, D)")
    pt, ph, pw, cin, dim = kernel
    posenc = _shape(info, p + _POSENC, path)
    if len(posenc) != 4 or posenc[-1] != dim:
        raise ValueError(f"{path}: {p + _POSENC} has shape {posenc}; expected (t, h, w, D={dim})")
    blocks = sorted({int(m.group(1)) for k in info if k.startswith(p) and (m := _BLOCK.match(k[len(p):]))})
    if not blocks:
        raise ValueError(f"{path}: no transformer blocks found (keys '{p}processor/layers_<i>/...')")
    if blocks != list(range(len(blocks))):
        missing = sorted(set(range(blocks[-1] + 1)) - set(blocks))
        raise ValueError(f"{path}: transformer blocks are not numbered 0..{blocks[-1]}: missing layers {missing}")
    q = _shape(info, p + "processor/layers_0/attention/query/kernel", path)
    if len(q) != 3 or q[0] != dim or q[1] * q[2] != dim:
        raise ValueError(
            f"{path}: {p}processor/layers_0/attention/query/kernel has shape {q}; expected (D={dim}, heads, D/heads)"
        )
    mlp = _shape(info, p + "processor/layers_0/mlp/dense_in/kernel", path)
    if len(mlp) != 2 or mlp[0] != dim:
        raise ValueError(f"{path}: {p}processor/layers_0/mlp/dense_in/kernel has shape {mlp}; expected (D={dim}, M)")
    grid = posenc[:3]
    return ViTConfig(
        dim=dim,
        depth=len(blocks),
        num_heads=q[1],
        mlp_dim=mlp[1],
        patch_size=(pt, ph, pw),
        input_size=tuple(g * s for g, s in zip(grid, (pt, ph, pw))),  # type: ignore[arg-type]
        in_channels=cin,
    )


def infer_readout_sizes(info: dict, prefix: str, path: str = "checkpoint") -> ReadoutSizes:
    """Readout sizes from its arrays: width, heads, queries, outputs per query, steps, MLP ratio."""
    query = _shape(info, prefix + "query", path)
    if len(query) != 3:
        raise ValueError(f"{path}: {prefix}query has shape {query}; expected (queries, heads, head_dim)")
    norm = _shape(info, prefix + "LayerNorm_0/scale", path)
    temporal = _shape(info, prefix + "temporal_posenc/embeddings", path)
    out = _shape(info, prefix + "Dense_1/kernel", path)
    hidden = _shape(info, prefix + "MLP_0/Dense_0/kernel", path)
    channels = query[1] * query[2]
    if len(temporal) != 3 or len(out) != 2 or len(hidden) != 2 or len(norm) != 1 or hidden[1] % channels:
        raise ValueError(
            f"{path}: readout arrays have unexpected shapes: LayerNorm_0/scale {norm}, temporal_posenc {temporal}, "
            f"Dense_1/kernel {out}, MLP_0/Dense_0/kernel {hidden}, query {query}"
        )
    return ReadoutSizes(
        dim=norm[0], channels=channels, num_heads=query[1], num_queries=query[0],
        out_features=out[1], steps=temporal[0], mlp_ratio=hidden[1] // channels,
    )


def infer_decoding(
    sizes: ReadoutSizes, frame_size: tuple[int, int],
    output_size: tuple[int, int, int] | None = None, patch_size: tuple[int, int, int] | None = None,
) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    """``(output_size, patch_size, out_channels)`` of a dense readout (not stored in the file).

    The output video is ``steps`` frames at the backbone's ``frame_size`` unless given. The decoding
    patch is the one that makes the query count and the outputs per query fit: the official
    ``(2, 8, 8)`` is preferred, then any ``(pt, p, p)``.
    """
    t = sizes.steps
    out = output_size or (t, *frame_size)
    total = sizes.num_queries * sizes.out_features
    if total % math.prod(out):
        raise ValueError(
            f"readout with {sizes.num_queries} queries x {sizes.out_features} outputs does not tile an output "
            f"video of {out}; pass output_size=(T, H, W)"
        )
    channels = total // math.prod(out)
    candidates = [patch_size] if patch_size else [(2, 8, 8)] + [
        (pt, p, p) for pt in range(1, out[0] + 1) for p in range(1, max(out[1:]) + 1)
    ]
    for cand in candidates:
        if (
            all(s % c == 0 for s, c in zip(out, cand))
            and math.prod(cand) * channels == sizes.out_features
            and math.prod(s // c for s, c in zip(out, cand)) == sizes.num_queries
        ):
            return out, tuple(cand), channels  # type: ignore[return-value]
    raise ValueError(
        f"no decoding patch fits {sizes.num_queries} queries x {sizes.out_features} outputs on an output video "
        f"of {out} with {channels} channel(s); pass patch_size=(pt, ph, pw)"
    )


# ------------------------------------------------------------------------------------------ key tables
@dataclass(frozen=True)
class _Entry:
    src: str  # official key (relative to its prefix)
    dst: str  # our state-dict key
    shape: tuple[int, ...]  # expected official shape
    kind: str  # "copy", "kernel" (in-axes n_in, then transpose), "flat" (reshape to dst shape)
    n_in: int = 1  # number of leading input axes of a kernel


def _convert(array: np.ndarray, entry: _Entry, target: tuple[int, ...]) -> torch.Tensor:
    a = np.asarray(array, dtype=np.float32)
    if entry.kind == "kernel":
        n_in = math.prod(a.shape[: entry.n_in])
        a = np.ascontiguousarray(a.reshape(n_in, -1).T)
    a = a.reshape(target)
    return torch.from_numpy(np.ascontiguousarray(a))


def backbone_table(cfg: ViTConfig) -> list[_Entry]:
    """Official encoder keys (relative to the encoder prefix) → :class:`VideoViT` state-dict keys."""
    d, m, h = cfg.dim, cfg.mlp_dim, cfg.num_heads
    hd = d // h
    pt, ph, pw = cfg.patch_size
    entries = [
        _Entry(_PATCH_KERNEL, "patch_embed.proj.weight", (pt, ph, pw, cfg.in_channels, d), "kernel", 4),
        _Entry("encoder/patch_embedding/Conv_0/bias", "patch_embed.proj.bias", (d,), "copy"),
        _Entry(_POSENC, "pos_embed", (*cfg.grid, d), "copy"),
    ]
    for i in range(cfg.depth):
        s, t = f"processor/layers_{i}/", f"blocks.{i}."
        entries += [
            _Entry(s + "attention_norm/scale", t + "norm1.weight", (d,), "copy"),
            _Entry(s + "attention_norm/bias", t + "norm1.bias", (d,), "copy"),
            _Entry(s + "mlp_norm/scale", t + "norm2.weight", (d,), "copy"),
            _Entry(s + "mlp_norm/bias", t + "norm2.bias", (d,), "copy"),
        ]
        for src, dst in (("query", "q"), ("key", "k"), ("value", "v")):
            entries += [
                _Entry(s + f"attention/{src}/kernel", t + f"attn.{dst}.weight", (d, h, hd), "kernel", 1),
                _Entry(s + f"attention/{src}/bias", t + f"attn.{dst}.bias", (h, hd), "flat"),
            ]
        entries += [
            _Entry(s + "attention/out/kernel", t + "attn.proj.weight", (h, hd, d), "kernel", 2),
            _Entry(s + "attention/out/bias", t + "attn.proj.bias", (d,), "copy"),
            _Entry(s + "mlp/dense_in/kernel", t + "mlp.fc1.weight", (d, m), "kernel", 1),
            _Entry(s + "mlp/dense_in/bias", t + "mlp.fc1.bias", (m,), "copy"),
            _Entry(s + "mlp/dense_out/kernel", t + "mlp.fc2.weight", (m, d), "kernel", 1),
            _Entry(s + "mlp/dense_out/bias", t + "mlp.fc2.bias", (d,), "copy"),
        ]
    return entries


def readout_table(r: ReadoutSizes) -> list[_Entry]:
    """Official ``AttentionReadout`` keys (relative to ``layers_2/``) → :class:`VideoPatchReadout` keys."""
    c, h, hidden = r.channels, r.num_heads, r.mlp_ratio * r.channels
    hd = c // h
    return [
        _Entry("LayerNorm_0/scale", "norm.weight", (r.dim,), "copy"),
        _Entry("LayerNorm_0/bias", "norm.bias", (r.dim,), "copy"),
        _Entry("temporal_posenc/embeddings", "temporal_embedding", (r.steps, 1, r.dim), "copy"),
        _Entry("query", "queries", (r.num_queries, h, hd), "flat"),
        _Entry("key_embedding/kernel", "key.weight", (r.dim, h, hd), "kernel", 1),
        _Entry("key_embedding/bias", "key.bias", (h, hd), "flat"),
        _Entry("value_embedding/kernel", "value.weight", (r.dim, h, hd), "kernel", 1),
        _Entry("value_embedding/bias", "value.bias", (h, hd), "flat"),
        _Entry("Dense_0/kernel", "attn_out.weight", (c, c), "kernel", 1),
        _Entry("Dense_0/bias", "attn_out.bias", (c,), "copy"),
        _Entry("LayerNorm_1/scale", "mlp_norm.weight", (c,), "copy"),
        _Entry("LayerNorm_1/bias", "mlp_norm.bias", (c,), "copy"),
        _Entry("MLP_0/Dense_0/kernel", "mlp.fc1.weight", (c, hidden), "kernel", 1),
        _Entry("MLP_0/Dense_0/bias", "mlp.fc1.bias", (hidden,), "copy"),
        _Entry("MLP_0/Dense_1/kernel", "mlp.fc2.weight", (hidden, c), "kernel", 1),
        _Entry("MLP_0/Dense_1/bias", "mlp.fc2.bias", (c,), "copy"),
        _Entry("Dense_1/kernel", "head.weight", (c, r.out_features), "kernel", 1),
        _Entry("Dense_1/bias", "head.bias", (r.out_features,), "copy"),
    ]


def _check(info: dict[str, ArrayInfo], tables: list[tuple[str, list[_Entry]]], where: str) -> None:
    """All problems at once: missing keys, unknown keys, wrong shapes, non-float arrays."""
    wanted = {prefix + e.src: e for prefix, entries in tables for e in entries}
    missing = sorted(set(wanted) - set(info))
    unknown = [k if len(k) <= 100 else f"{k[:100]}..." for k in sorted(set(info) - set(wanted))]  # a damaged name: 64 KiB
    shapes = [
        f"{k}: file {info[k].shape}, expected {e.shape}"
        for k, e in sorted(wanted.items())
        if k in info and info[k].shape != e.shape
    ]
    dtypes = [f"{k}: {info[k].dtype}" for k in sorted(wanted) if k in info and info[k].dtype.kind != "f"]
    problems = []
    for title, items in (
        ("missing keys", missing), ("unknown keys", unknown), ("shape mismatches", shapes),
        ("non-float arrays", dtypes),
    ):
        if items:
            more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            problems.append(f"{len(items)} {title}: " + "; ".join(items[:_MAX_LISTED]) + more)
    if problems:
        raise ValueError(
            f"{where} does not match the official 4DS layout it was recognised as "
            f"(sizes inferred from its arrays):\n  " + "\n  ".join(problems)
        )


@dataclass(frozen=True)
class OfficialPlan:
    """What a file holds, worked out from its keys and shapes alone (no array data read)."""

    layout: Layout
    vit: ViTConfig
    readout: ReadoutSizes | None
    tables: list[tuple[str, list[_Entry]]]


def plan_official(info: dict[str, ArrayInfo], where: str = "checkpoint") -> OfficialPlan:
    """Recognise the layout, infer all sizes and check every key and shape of an official file.

    Args:
        info: key → :class:`ArrayInfo` (shape, dtype), e.g. ``NpzReader(path).info``.
        where: the file's name for error messages.

    Raises:
        ValueError: listing every missing, unknown and mis-shaped key.
    """
    layout = detect_layout(list(info), where)
    cfg = infer_vit_config(info, layout, where)
    tables = [(layout.encoder_prefix, backbone_table(cfg))]
    sizes = None
    if layout.readout_prefix is not None:
        sizes = infer_readout_sizes(info, layout.readout_prefix, where)
        if sizes.dim != cfg.dim:
            raise ValueError(f"{where}: readout input width {sizes.dim} differs from the encoder width {cfg.dim}")
        tables.append((layout.readout_prefix, readout_table(sizes)))
    _check(info, tables, where)
    return OfficialPlan(layout, cfg, sizes, tables)


def _load(reader: NpzReader, prefix: str, entries: list[_Entry], module: nn.Module) -> None:
    """Fill a meta-device ``module`` from the file, one array at a time."""
    targets = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert set(targets) == {e.dst for e in entries}, "key table out of sync with the module"
    state = {e.dst: _convert(reader[prefix + e.src], e, targets[e.dst]) for e in entries}
    module.load_state_dict(state, assign=True, strict=True)


def from_official_npz(
    path: str | Path,
    *,
    readout_depth: float = OFFICIAL_READOUT_DEPTH,
    output_size: tuple[int, int, int] | None = None,
    patch_size: tuple[int, int, int] | None = None,
) -> tuple[VideoViT, dict[str, nn.Module]]:
    """Load an official 4DS ``.npz`` as our model.

    Args:
        path: ``scaling4d_dist_b.npz``, ``scaling4d_e.npz``, ``scaling4d_dist_b_depth.npz`` or a file of the
            same layout (any sizes).
        readout_depth: the official ``EncoderToReadout.readout_depth`` (0.95 in the depth demo; not stored in
            the file); selects the head's ``layer``.
        output_size, patch_size: override the depth head's inferred output video ``(T, H, W)`` and decoding
            patch (default: the backbone's trained frame size with ``T`` = the readout's steps, patch (2, 8, 8)).

    Returns:
        ``(backbone, heads)``: the :class:`VideoViT` (eval mode, float32, CPU), ``features(video)`` giving
        ``L + 1`` tensors ``(B, T', N, D)``; ``heads`` is ``{"depth": VideoPatchReadout}`` for the depth file,
        else ``{}``. ``heads["depth"](backbone.features(video, [head.layer])[0])`` is the official output
        ``(B, T, H, W, 1)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable ``.npz``, not a 4DS layout, or missing / unknown / mis-shaped keys
            (all listed).
    """
    if not 0.0 < readout_depth <= 1.0:
        raise ValueError(f"readout_depth must be in (0, 1], got {readout_depth}")
    with NpzReader(path) as reader:
        plan = plan_official(reader.info, str(reader.path))
        cfg, sizes, layout = plan.vit, plan.readout, plan.layout
        with torch.device("meta"):
            backbone = VideoViT(cfg, name=reader.path.stem, init=False)
        _load(reader, layout.encoder_prefix, plan.tables[0][1], backbone)
        heads: dict[str, nn.Module] = {}
        if sizes is not None:
            official_index = int((cfg.depth + 1) * readout_depth) - 1
            out_size, patch, channels = infer_decoding(sizes, cfg.input_size[1:], output_size, patch_size)
            assert layout.readout_prefix is not None
            with torch.device("meta"):
                head = VideoPatchReadout(
                    sizes.dim, sizes.channels, sizes.num_heads, output_size=out_size, patch_size=patch,
                    out_channels=channels, layer=max(official_index - 1, 0), token_grid=cfg.grid, mlp_ratio=sizes.mlp_ratio,
                    name="depth",
                    meta={"source": "official 4DS AttentionReadout", "official_feature_index": official_index,
                          "readout_depth": readout_depth},
                )
            _load(reader, layout.readout_prefix, plan.tables[1][1], head)
            heads["depth"] = head.eval()
    return backbone.eval(), heads


def convert_official(src: str | Path, out_dir: str | Path, overwrite: bool = False, **kwargs: Any) -> Path:
    """``fourds convert official``: ``src`` ``.npz`` → model folder ``out_dir`` (config.json +
    model.safetensors, heads in ``heads/<name>/``), loadable with :func:`fourds.models.load` and
    :func:`fourds.convert.load_heads`. ``kwargs`` go to :func:`from_official_npz`.

    Args:
        overwrite: replace a model already in ``out_dir``; its ``heads/`` go too (after the new file has
            been read successfully), so a backbone-only file never inherits the heads of an earlier one.

    Raises:
        ValueError: ``out_dir`` already holds a model and ``overwrite`` is False (or ``src`` is malformed).
    """
    src, out_dir = Path(src), Path(out_dir)
    stale = out_dir / HEADS_DIR
    if ((out_dir / CONFIG_NAME).exists() or stale.exists()) and not overwrite:
        raise ValueError(f"{out_dir} already holds a model ({CONFIG_NAME} or {HEADS_DIR}/); pass --overwrite to replace it")
    backbone, heads = from_official_npz(src, **kwargs)
    source = {"format": "official 4DS npz (google-deepmind/representations4d)", "file": src.name,
              "bytes": src.stat().st_size}
    if stale.is_dir():
        shutil.rmtree(stale)
    save_model(backbone, out_dir, extra={"source": source})
    save_heads(heads, out_dir)
    return out_dir
