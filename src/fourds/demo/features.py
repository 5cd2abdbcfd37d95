"""Backbone features computed once per clip and shared by every task, seed and evaluation pass.

:class:`FeatureMemo` wraps any Backbone and memoises ``features(video, layers)`` per clip, keyed by a
hash of the clip's exact float32 pixels: whenever a probe run asks for the features of a clip it has
seen (another task reading the same clip, another readout seed, the evaluation pass), the stored
tensors come back, bit-identical to what the backbone would compute (it runs in eval mode under
``no_grad``, and a batch's clips do not interact). It sits behind the Backbone contract, so the probe
(``fourds.probe.run_probe(..., backbone=memo)``) is unchanged; unlike the probe's
``--feature-cache`` (keyed per task), one backbone pass serves all five synthetic tasks.

The memo saves to and loads from one safetensors file, so an interrupted demo does not recompute it.

Two keys, one per kind of device. On the CPU, :func:`clip_key` (SHA-1 over the bytes, read in place: the
hash with hardware support on x86, twice as fast as blake2b here, and the probes' largest cost).
On a GPU, :func:`device_clip_keys`: four 64-bit sums of the clip's float32 bit patterns times fixed
random weights, computed where the batch is (integer sums wrap modulo 2^64, so they are exact and do
not depend on the batch a clip arrives in or on the order of the reduction); one ``(B, 4)`` host copy per
batch instead of the whole batch, and the features stay on the GPU. Two different clips share a device
key with probability about 2^-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from fourds.models.backbone import resolve_layers
from fourds.models.io import save_weights_atomic


def clip_key(clip: Tensor) -> str:
    """Hash of one clip ``(T, H, W, 3)``: its shape, dtype and every byte of its pixels (SHA-1, read
    in place: no copy of the pixels)."""
    data = clip.detach().to("cpu").contiguous()  # a no-op for a CPU clip
    h = hashlib.sha1()
    h.update(f"{tuple(data.shape)}:{data.dtype}".encode())
    h.update(data.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


_WEIGHTS: dict[tuple[int, str], Tensor] = {}


def _key_weights(numel: int, device: torch.device) -> Tensor:
    """``(numel, 4)`` fixed int64 weights in [1, 2^31) (a seeded draw on the CPU, cached per device)."""
    cache_key = (numel, str(device))
    if cache_key not in _WEIGHTS:
        draw = torch.randint(1, 2**31, (4, numel), generator=torch.Generator().manual_seed(0x4D5), dtype=torch.int64)
        _WEIGHTS[cache_key] = draw.to(device)
    return _WEIGHTS[cache_key]


def device_clip_keys(video: Tensor) -> list[str]:
    """Keys of the clips of a float32 batch ``(B, T, H, W, 3)``, computed on the batch's device (module
    docstring): equal for bit-identical clips whatever batch they are in, different otherwise."""
    if video.dtype != torch.float32:
        raise ValueError(f"device_clip_keys needs float32 clips, got {video.dtype}")
    flat = video.detach().contiguous().reshape(video.shape[0], -1)
    bits = flat.view(torch.int32).to(torch.int64)  # (B, N): every bit of every pixel
    weights = _key_weights(bits.shape[1], bits.device)
    sums = torch.stack([(bits * w).sum(dim=1) for w in weights], dim=1).cpu().tolist()  # (B, 4), wraps mod 2^64
    shape = tuple(video.shape[1:])
    return [f"d{shape}:" + ":".join(f"{v & 0xFFFFFFFFFFFFFFFF:016x}" for v in row) for row in sums]


class FeatureMemo(nn.Module):
    """A Backbone whose ``features`` are memoised per clip (see the module docstring).

    Args:
        inner: the Backbone (num_layers, dim, patch_size, input_size, features, optionally token_grid).
        device_keys: key clips with :func:`device_clip_keys` and keep the features where the backbone runs
            (None: where the backbone runs on a GPU); False: :func:`clip_key` and features in host memory.

    Attributes:
        hits, misses: clips served from the memo and clips the backbone encoded.
    """

    def __init__(self, inner: nn.Module, device_keys: bool | None = None) -> None:
        super().__init__()
        self.device_keys = device_keys
        self.inner = inner.eval().requires_grad_(False)
        self.num_layers = int(inner.num_layers)
        self.dim = int(inner.dim)
        self.patch_size = tuple(inner.patch_size)
        self.input_size = tuple(inner.input_size)
        if hasattr(inner, "grid"):
            self.grid = tuple(inner.grid)
        self.store: dict[str, dict[int, Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def token_grid(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
        fn = getattr(self.inner, "token_grid", None)
        if callable(fn):
            return tuple(fn(video_shape))  # type: ignore[return-value]
        return tuple(self.inner.grid)  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.store)

    @torch.no_grad()
    def features(self, video: Tensor, layers: Sequence[int | float] | None = None) -> list[Tensor]:
        """``video`` ``(B, T, H, W, 3)`` float in [0, 1] → one ``(B, T', N, C)`` tensor per layer (all
        ``num_layers + 1`` when ``layers`` is None), from the memo where every asked layer is stored."""
        wanted = resolve_layers(list(layers), self.num_layers) if layers is not None else list(range(self.num_layers + 1))
        device = self.device
        keep = self.store_device
        keys = self.keys(video if keep.type == "cpu" else video.to(device))
        todo = [b for b, k in enumerate(keys) if not all(layer in self.store.get(k, {}) for layer in wanted)]
        if todo:
            batch = (video if video.device == device else video.to(device))[todo]
            feats = [f.to(keep, torch.float32) for f in self.inner.features(batch, layers=wanted)]
            for row, b in enumerate(todo):
                entry = self.store.setdefault(keys[b], {})
                for layer, f in zip(wanted, feats):
                    entry[layer] = f[row].clone()
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        out = [torch.stack([self.store[k][layer] for k in keys]) for layer in wanted]
        if out and out[0].device == video.device:
            return out
        if video.device.type == "cuda":
            return [t.pin_memory().to(video.device, non_blocking=True) for t in out]
        return [t.to(video.device) for t in out]

    def keys(self, video: Tensor) -> list[str]:
        """The memo's key of each clip of ``video`` ``(B, T, H, W, 3)`` (on the CPU or on the backbone's
        device, as the memo keys)."""
        if self.uses_device_keys:
            return device_clip_keys(video)
        on_cpu = video.detach().to("cpu")  # one device -> host copy per batch, not one per clip
        return [clip_key(clip) for clip in on_cpu]

    @property
    def uses_device_keys(self) -> bool:
        return self.device.type != "cpu" if self.device_keys is None else bool(self.device_keys)

    @property
    def store_device(self) -> torch.device:
        """Where the memoised features live: the backbone's device with device keys, else host memory."""
        return self.device if self.uses_device_keys else torch.device("cpu")

    @property
    def device(self) -> torch.device:
        """Where the inner backbone runs (its first parameter's device; the CPU for a parameter-free one)."""
        param = next(self.inner.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def precompute(self, videos: Iterable[Tensor], layers: Sequence[int], batch_size: int = 16,
                   progress: Any = None) -> int:
        """Encode every clip of ``videos`` (each ``(T, H, W, 3)`` float in [0, 1]) not yet stored, in
        batches; returns how many were encoded. ``progress(n)`` is called after each batch."""
        pending: list[Tensor] = []
        seen: set[str] = set()
        encoded = 0

        def flush() -> None:
            nonlocal encoded
            if pending:
                before = self.misses
                self.features(torch.stack(pending), layers)
                encoded += self.misses - before
                if progress is not None:
                    progress(len(pending))
                pending.clear()

        for clip in videos:
            key = self.keys(clip[None].to(self.device) if self.uses_device_keys else clip[None])[0]
            if key in seen or all(layer in self.store.get(key, {}) for layer in layers):
                if progress is not None:
                    progress(1)
                continue
            seen.add(key)
            pending.append(clip)
            if len(pending) == batch_size:
                flush()
        flush()
        return encoded

    def save(self, path: str | Path) -> None:
        """Write the memo to one safetensors file (atomically)."""
        flat = {f"{key}/{layer}": t.cpu() for key, entry in self.store.items() for layer, t in entry.items()}
        save_weights_atomic(flat, Path(path), metadata={"num_layers": str(self.num_layers), "dim": str(self.dim)})

    def load(self, path: str | Path) -> int:
        """Add the entries of a file written by :meth:`save`; returns how many clips it held."""
        flat = load_file(str(path))
        for name, tensor in flat.items():
            key, layer = name.rsplit("/", 1)
            if tensor.shape[-1] != self.dim:
                raise ValueError(f"{path}: features of width {tensor.shape[-1]}, this backbone's is {self.dim}")
            self.store.setdefault(key, {})[int(layer)] = tensor.to(self.store_device)
        return len({name.rsplit("/", 1)[0] for name in flat})
