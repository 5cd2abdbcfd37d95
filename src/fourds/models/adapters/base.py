"""The adapter base class: a small API that puts any model behind the Backbone contract.

A model joins fourds by subclassing :class:`BackboneAdapter` and providing three things:

* the contract attributes ``num_layers``, ``dim``, ``patch_size`` ``(t, h, w)`` (in pixels/frames of the
  *preprocessed* input) and ``input_size`` ``(T, H, W)`` (set them in ``__init__``);
* ``preprocess(video)``: the standard ``(B, T, H, W, 3)`` float32 [0, 1] video → what the model eats
  (its resolution, normalisation, frame count, layout);
* ``forward_layers(inputs, layers, video_shape)``: run the model on the preprocessed ``inputs`` and
  return ``{k: (B, T', N, C)}`` for the sorted, distinct layer indices ``layers`` (0 = the embedding
  after the positional embedding, k = the output of block k), stopping after ``max(layers)``.

The base class does the rest of the contract: layer requests (ints, negative ints, fractional depths
via :func:`fourds.models.backbone.resolve_layers`), the requested order, float32 outputs outside
autocast, ``grid`` and ``token_grid``. Adapters that resize their input override :meth:`token_grid`
so that it reports the grid they actually produce for a given clip.

For models built from a patch embedding followed by a list of blocks, :func:`collect_layers` runs the
model once with forward hooks on the embedding and on the blocks and stops right after the deepest
requested block (the rest of the model, e.g. a final norm, pooling head or predictor, never runs).

Small helpers shared by the adapters: :func:`resize_frames` (whole-frame resize, no crop, so normalised
coordinates are preserved), :func:`normalise`, :func:`resample_frames` and :func:`pad_frames`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fourds.device_constants import constant, index_constant
from fourds.models.backbone import resolve_layers

#: ImageNet statistics (DINOv2, VideoMAE, V-JEPA 2 and most timm ViTs normalise with these).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingExtraError(ImportError, RuntimeError):
    """An optional dependency is missing; the message names the extra that installs it.

    Both an ``ImportError`` (what it is) and a ``RuntimeError`` (so the ``fourds`` CLI prints the
    message instead of a traceback).
    """


def require(module: str, extra: str, what: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'fourds[extra]'``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{what} needs the optional package {module!r}, which is not importable ({err}). "
            f"Install it with: pip install 'fourds[{extra}]'"
        ) from err


def check_video(video: Tensor) -> tuple[int, int, int, int]:
    """``(B, T, H, W, 3)`` → ``(B, T, H, W)``; raises a ``ValueError`` naming the shape otherwise."""
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(
            f"expected a video of shape (B, T, H, W, 3) channels-last float in [0, 1], got {tuple(video.shape)}"
        )
    b, t, h, w, _ = video.shape
    return b, t, h, w


def resize_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize channels-first frames ``(N, C, H, W)`` to ``size = (H', W')`` (bilinear, antialiased).

    The whole frame is resized (no crop, aspect ratio not kept), so a point's normalised coordinates are
    the same before and after: dense labels and query points stay aligned with the tokens.
    """
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def normalise(frames: Tensor, mean: Sequence[float], std: Sequence[float], channel_dim: int) -> Tensor:
    """``(x - mean) / std`` per colour channel along ``channel_dim``."""
    shape = [1] * frames.ndim
    shape[channel_dim] = 3
    m = constant(mean, frames.dtype, frames.device).view(shape)
    s = constant(std, frames.dtype, frames.device).view(shape)
    return (frames - m) / s


def resample_frames(video: Tensor, num_frames: int, dim: int = 1) -> Tensor:
    """Pick ``num_frames`` frames along ``dim`` by nearest neighbour with centred sampling.

    Output frame ``i`` is input frame ``floor((i + 0.5) * T / num_frames)``: the identity when the
    counts match, every k-th frame when ``T = k * num_frames``, repeated frames when upsampling.
    """
    t = video.shape[dim]
    if t == num_frames:
        return video
    idx = [min(t - 1, int((i + 0.5) * t / num_frames)) for i in range(num_frames)]
    return video.index_select(dim, index_constant(idx, video.device))


def pad_frames(video: Tensor, multiple: int, dim: int = 1) -> Tensor:
    """Repeat the last frame along ``dim`` until the frame count is a multiple of ``multiple``."""
    t = video.shape[dim]
    extra = -t % multiple
    if extra == 0:
        return video
    last = video.narrow(dim, t - 1, 1)
    return torch.cat([video, *([last] * extra)], dim=dim)


class StopForward(Exception):
    """Raised by a forward hook once the deepest requested layer has been collected."""


def _first_tensor(output: Any) -> Tensor:
    """Blocks return a tensor or a tuple whose first element is the hidden states."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    raise TypeError(f"cannot find the hidden states in a block output of type {type(output).__name__}")


def collect_layers(
    run: Callable[[], Any],
    embedding: nn.Module,
    blocks: Sequence[nn.Module],
    layers: Sequence[int],
) -> dict[int, Tensor]:
    """Run ``run()`` once and capture the embedding (layer 0) and block outputs (layer k = block k).

    Forward hooks on ``embedding`` and on each block record the requested layers; the hook of block
    ``max(layers)`` raises :class:`StopForward`, so nothing after it runs. Returns ``{k: (B, L, C)}``
    tokens exactly as the model carries them (prefix tokens such as CLS included).
    """
    wanted = set(layers)
    deepest = max(layers)
    out: dict[int, Tensor] = {}

    def hook_for(index: int) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if index in wanted:
                out[index] = _first_tensor(output)
            if index == deepest:
                raise StopForward

        return hook

    handles = [embedding.register_forward_hook(hook_for(0))]
    handles += [block.register_forward_hook(hook_for(k + 1)) for k, block in enumerate(blocks) if k + 1 <= deepest]
    try:
        run()
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = wanted - set(out)
    assert not missing, f"layers {sorted(missing)} were not produced by the forward pass"
    return out


class BackboneAdapter(nn.Module):
    """Base class of adapters behind the Backbone contract (see the module docstring).

    Subclasses set ``num_layers``, ``dim``, ``patch_size``, ``input_size`` and implement
    :meth:`preprocess` and :meth:`forward_layers`.
    """

    num_layers: int
    dim: int
    patch_size: tuple[int, int, int]
    input_size: tuple[int, int, int]
    #: the spec string the adapter was built from (``hf:...``), for logs and results.
    spec: str = ""

    # ---------------------------------------------------------------- to implement
    def preprocess(self, video: Tensor) -> Any:
        """Standard ``(B, T, H, W, 3)`` float [0, 1] video → the model's input."""
        raise NotImplementedError

    def forward_layers(self, inputs: Any, layers: list[int], video_shape: tuple[int, ...]) -> dict[int, Tensor]:
        """``{k: (B, T', N, C)}`` for the sorted distinct ``layers``; stop after ``max(layers)``.

        Args:
            inputs: what :meth:`preprocess` returned.
            layers: sorted, distinct indices in ``[0, num_layers]``.
            video_shape: the shape of the original ``(B, T, H, W, 3)`` video.
        """
        raise NotImplementedError

    # ---------------------------------------------------------------- grids
    def token_grid(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
        """Token grid ``(T', h, w)`` for a ``(B, T, H, W, 3)`` video. Default: the input tiles by the
        patch size as it is (override when :meth:`preprocess` changes the size or frame count)."""
        _, t, h, w = (int(s) for s in video_shape[:4])
        return tuple(math.ceil(s / p) for s, p in zip((t, h, w), self.patch_size))  # type: ignore[return-value]

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid of ``input_size``."""
        return self.token_grid((1, *self.input_size, 3))

    # ---------------------------------------------------------------- the contract
    def features(self, video: Tensor, layers: Sequence[int | float] | None = None) -> list[Tensor]:
        """Per-layer tokens ``(B, T', N, C)``.

        Args:
            video: ``(B, T, H, W, 3)`` float in [0, 1].
            layers: ``None`` for all ``num_layers + 1`` layers (0 = embedding, k = block k), or indices
                (negative count from the end) / fractional depths; the forward stops after the deepest
                requested layer and the result follows the requested order.
        """
        check_video(video)
        indices = resolve_layers(layers, self.num_layers)
        distinct = sorted(set(indices))
        tokens = self.forward_layers(self.preprocess(video), distinct, tuple(video.shape))
        out = [tokens[i] for i in indices]
        if not torch.is_autocast_enabled(video.device.type):
            out = [t.float() for t in out]
        return out

    def forward(self, video: Tensor) -> Tensor:
        """Last layer's tokens ``(B, T', N, C)``."""
        return self.features(video, layers=[self.num_layers])[0]

    def extra_repr(self) -> str:
        return (f"spec={self.spec!r}, layers={self.num_layers}, dim={self.dim}, patch={self.patch_size}, "
                f"input={self.input_size}")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (e.g. a SigLIP vision tower loaded from a
    full image-text checkpoint lists every text weight as unexpected)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled() if hasattr(hf_logging, "is_progress_bar_enabled") else None
    hf_logging.set_verbosity_error()
    if bars is not None:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
