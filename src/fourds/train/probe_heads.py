"""What a probe trains: the backbone it reads, the K readout heads of a sweep, the finetuned model.

A sweep is the product learning rate x layer x weight decay. Every head is built by the task
(``task.build_readout(dim, grid)``) with its own seeded initialisation that depends on the run seed and
its layer only, so a head trained alongside others starts exactly like the same head trained alone.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fourds.models.backbone import resolve_layers, token_grid  # noqa: F401  (token_grid: re-exported)
from fourds.models.open import open_backbone
from fourds.seeding import derive_seed
from fourds.tasks.base import TaskContract, finetune_fraction

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ backbones
def resolve_backbone(spec: str, overrides: dict[str, Any] | None = None, seed: int = 0,
                     clip_size: tuple[int, int, int] | None = None) -> nn.Module:
    """:func:`fourds.models.open_backbone` under its earlier name and argument order."""
    return open_backbone(spec, seed=seed, overrides=overrides, clip_size=clip_size)


def fingerprint(module: nn.Module) -> str:
    """A hash of the module's class, parameter names, shapes and values (feature-cache key)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def freeze_after(backbone: nn.Module, layer: int) -> int:
    """Finetuning reads layer ``layer``: blocks after it never run, so freeze them (DDP requires every
    trainable parameter to get a gradient). Returns the number of frozen parameters."""
    blocks = getattr(backbone, "blocks", None)
    frozen = 0
    if blocks is None:
        if layer < getattr(backbone, "num_layers", layer):
            log.warning("backbone %s has no .blocks; cannot freeze the blocks after layer %d",
                        type(backbone).__name__, layer)
        return 0
    for block in list(blocks)[layer:]:
        for p in block.parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


# ------------------------------------------------------------------------------------------ heads
@dataclass(frozen=True)
class HeadSpec:
    """One readout configuration of the sweep.

    Attributes:
        layer: backbone layer index read (0 = embedding, k = block k).
        depth: the layer's fractional depth ``layer / num_layers``.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        steps: the schedule length of this configuration when a finetuning sweep runs several
            (``None``: the run's one ``steps``); part of the name (``..._s20000``).
    """

    layer: int
    depth: float
    lr: float
    weight_decay: float
    steps: int | None = None

    @property
    def name(self) -> str:
        name = f"L{self.layer:02d}_lr{self.lr:g}_wd{self.weight_decay:g}"
        return name if self.steps is None else f"{name}_s{self.steps}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.steps is None:
            del data["steps"]
        return {"name": self.name, **data}


def head_specs(layers: Sequence[int | float], lrs: Sequence[float], weight_decays: Sequence[float],
               num_layers: int, steps: Sequence[int] | None = None) -> list[HeadSpec]:
    """The sweep (layer-major, then lr, weight decay, schedule length), with layers resolved to indices
    and duplicates removed; ``steps`` (several finetuning schedules) adds the length to every spec."""
    indices = list(dict.fromkeys(resolve_layers(list(layers), num_layers)))
    lengths: list[int | None] = list(steps) if steps else [None]
    specs = [HeadSpec(i, i / num_layers, float(lr), float(wd), None if n is None else int(n))
             for i in indices for lr in lrs for wd in weight_decays for n in lengths]
    return list(dict.fromkeys(specs))


def default_layers(task: TaskContract, finetune: bool) -> list[float]:
    """The task's readout depth: ``task.layer_fraction`` frozen; finetuning 0.95 except K700 (0.75)."""
    if finetune:
        return [finetune_fraction(task)]
    return [float(task.layer_fraction)]


def build_head(task: TaskContract, dim: int, grid: tuple[int, int, int], seed: int, layer: int) -> nn.Module:
    """``task.build_readout(dim, grid)`` initialised from a generator seeded by ``(seed, layer)``."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(seed, "probe-readout", layer))  # CPU RNG only
        return task.build_readout(dim, tuple(grid))


class ReadoutBank(nn.Module):
    """K readout heads trained side by side on one backbone pass (disjoint parameters).

    ``forward(features, batch)``: ``features`` maps layer index → ``(B, T', N, C)``; returns the K heads'
    outputs in spec order.
    """

    def __init__(self, task: TaskContract, specs: Sequence[HeadSpec], dim: int, grid: tuple[int, int, int], seed: int) -> None:
        super().__init__()
        self.specs = list(specs)
        self.task_name, self.dim, self.grid = task.name, dim, tuple(grid)
        self.heads = nn.ModuleList(build_head(task, dim, grid, seed, s.layer) for s in self.specs)

    @property
    def layers(self) -> list[int]:
        return sorted({s.layer for s in self.specs})

    def forward(self, features: dict[int, Tensor], batch: dict[str, Any]) -> list[Any]:
        return [head(features[spec.layer], batch) for spec, head in zip(self.specs, self.heads)]

    def to_config(self) -> dict[str, Any]:
        return {"kind": "probe_readout_bank", "task": self.task_name, "dim": self.dim, "grid": list(self.grid),
                "heads": [s.to_dict() for s in self.specs]}


class FinetuneModel(nn.Module):
    """Backbone + one readout, trained together; the backbone's forward stops at the readout layer.

    ``forward(video, batch)``: video ``(B, T, H, W, 3)`` float32 in [0, 1]; returns ``[outputs]``.
    """

    def __init__(self, backbone: nn.Module, task: TaskContract, spec: HeadSpec, grid: tuple[int, int, int], seed: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.task_name, self.grid = task.name, tuple(grid)
        self.heads = nn.ModuleList([build_head(task, backbone.dim, grid, seed, spec.layer)])

    @property
    def specs(self) -> list[HeadSpec]:
        return [self.spec]

    def forward(self, video: Tensor, batch: dict[str, Any]) -> list[Any]:
        (features,) = self.backbone.features(video, layers=[self.spec.layer])
        # The readout runs in fp32 even inside the backbone's bf16 autocast, as in the frozen probe:
        # bf16 outputs quantise positions (1/256 of the frame) and depths (3 digits) before loss and metric.
        with torch.autocast(features.device.type, enabled=False):
            return [self.heads[0](features.float(), batch)]

    def to_config(self) -> dict[str, Any]:
        return {"kind": "probe_finetune", "task": self.task_name, "grid": list(self.grid), "head": self.spec.to_dict()}
