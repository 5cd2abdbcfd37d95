"""The Backbone contract every model in fourds implements, and the one layer-choice rule.

A backbone takes the standard video ``(B, T, H, W, 3)`` float32 in [0, 1] and applies its own
``preprocess`` (resize, normalisation, frame count) inside ``features``. It returns tokens
``(B, T', N, C)`` per layer: index 0 is the embedding (after the positional embedding), index k the
output of block k, so the full list has ``num_layers + 1`` entries. ``N`` counts spatial tokens per
time step in row-major (h, w) order.

Tasks, readouts and the probe depend only on this contract.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Backbone(Protocol):
    """What tasks and probes may rely on (structural: any module with these members qualifies).

    Attributes:
        num_layers: number of blocks L; ``features`` has ``L + 1`` entries.
        dim: channels C of the features.
        patch_size: ``(t, h, w)`` tubelet or patch size in frames and pixels of the preprocessed input.
        input_size: ``(T, H, W)`` the model was trained for.
        grid: ``(T', h, w)`` token grid of ``input_size``.
    """

    num_layers: int
    dim: int
    patch_size: tuple[int, int, int]
    input_size: tuple[int, int, int]
    grid: tuple[int, int, int]

    def preprocess(self, video: Tensor) -> Tensor:
        """Standard ``(B, T, H, W, 3)`` [0, 1] video → what the model consumes."""
        ...

    def features(self, video: Tensor, layers: Sequence[int | float] | None = None) -> list[Tensor]:
        """Per-layer ``(B, T', N, C)`` tokens; see the module docstring."""
        ...


def token_grid(backbone: Any, clip_size: Sequence[int]) -> tuple[int, int, int]:
    """The ``(T', h, w)`` feature grid of ``backbone`` for clips of ``clip_size`` ``(T, H, W)``: its
    ``token_grid(video_shape)`` when it has one, else ``backbone.grid`` (a backbone that resizes its
    input itself has one grid)."""
    fn = getattr(backbone, "token_grid", None)
    if callable(fn):
        return tuple(fn((1, *clip_size, 3)))  # type: ignore[return-value]
    return tuple(backbone.grid)  # type: ignore[return-value]


def layer_index(depth: float, num_layers: int) -> int:
    """Fractional depth ``d`` in [0, 1] → layer index ``floor(d * num_layers + 1e-6)``.

    0.95 is the paper's choice for 4D tasks, 0.75 for semantic ones (layer 42 of 56 for 4DS-e).
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"fractional layer depth must be in [0, 1], got {depth}")
    return int(math.floor(depth * num_layers + 1e-6))


def resolve_layers(layers: Sequence[int | float] | None, num_layers: int) -> list[int]:
    """Normalise a layer request to indices in ``[0, num_layers]``.

    ``None`` means all layers. Python ``int`` entries are indices (negative ones count from the end:
    -1 is the last block); ``float`` entries are fractional depths (:func:`layer_index`).
    """
    if layers is None:
        return list(range(num_layers + 1))
    if isinstance(layers, (int, float)):
        layers = [layers]
    out = []
    for item in layers:
        if isinstance(item, bool):
            raise ValueError(f"layer {item!r} is a bool; give an int index or a float depth")
        if isinstance(item, float):
            out.append(layer_index(item, num_layers))
            continue
        index = int(item)
        if index < 0:
            index += num_layers + 1
        if not 0 <= index <= num_layers:
            raise ValueError(
                f"layer index {item} out of range for a backbone with {num_layers} blocks "
                f"(valid: 0..{num_layers} or -{num_layers + 1}..-1)"
            )
        out.append(index)
    if not out:
        raise ValueError("empty layer list; pass None for all layers")
    return out


def parse_layer_spec(spec: str) -> list[int | float]:
    """Parse a CLI layer list: ``"0.95,0.75"`` → fractions, ``"12,-1"`` → indices."""
    items: list[int | float] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            items.append(int(part))
        except ValueError:
            try:
                items.append(float(part))
            except ValueError as err:
                raise ValueError(
                    f"bad layer {part!r} in {spec!r}: use integers (indices) or decimals (depth fractions)"
                ) from err
    return items
