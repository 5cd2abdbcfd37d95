"""One code path for one process and for ``torchrun``: process group set-up and model parallelisation.

The environment decides (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set by torchrun). Switches are applied
in one place, in a fixed order: activation checkpointing → per-block ``torch.compile`` → FSDP2
``fully_shard`` per block and at the root (or DDP). Nothing home-made: PyTorch's own engines only.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: this process's device.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", one_rank_group: bool = False) -> DistInfo:
    """Initialise the process group when launched with several processes (nccl on CUDA, gloo on CPU).

    ``one_rank_group``: also in a single process (no torchrun), start a process group of size 1 (an
    in-memory store, no port), so FSDP2, its sharded DCP checkpoints and resume run on one device
    exactly as on many (``--strategy fsdp`` on a one-GPU machine).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} was requested but CUDA is not available "
                           f"(torch {torch.__version__}, {'CPU-only build' if torch.version.cuda is None else 'CUDA ' + torch.version.cuda}); "
                           f"use --device cpu or auto")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if device.startswith("cuda:") and world == 1:
        local_rank = int(device.split(":", 1)[1])
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    backend = "nccl" if use_cuda else "gloo"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=30),
            device_id=dev if use_cuda else None,
        )
    elif one_rank_group and world == 1 and not dist.is_initialized():
        global _OWN_ONE_RANK_GROUP
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=datetime.timedelta(minutes=30))
        _OWN_ONE_RANK_GROUP = True
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


_OWN_ONE_RANK_GROUP = False


def release_one_rank_group() -> None:
    """Destroy the one-rank process group :func:`init_distributed` started for a single-process FSDP2
    run (no-op otherwise), so the next run in the same Python process starts clean."""
    global _OWN_ONE_RANK_GROUP
    if _OWN_ONE_RANK_GROUP and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
    _OWN_ONE_RANK_GROUP = False


def shutdown_distributed() -> None:
    """Tear the process group down together and cleanly.

    Collect garbage first: sharded state-dict gathers and DCP saves leave collective handles in
    reference cycles; finalised after the group is destroyed they abort the process on gloo
    ("terminate called without an active exception", about 1 run in 10 without this).
    """
    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_min(value: float, device: torch.device) -> float:
    """Minimum of ``value`` over ranks (identity in one process)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t.item())


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over ranks, in float64 (identity in one process)."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    """``auto`` → ``ddp`` with several processes, ``none`` with one; ``fsdp`` stays FSDP2 at any world
    size (one process runs it on a one-rank group, see :func:`init_distributed`); ``ddp`` needs several."""
    if strategy == "auto":
        return "ddp" if info.distributed else "none"
    if strategy == "fsdp":
        if not dist.is_initialized():
            raise RuntimeError("--strategy fsdp needs a process group; start the run with "
                               "init_distributed(..., one_rank_group=True) or under torchrun")
        return "fsdp"
    if strategy != "none" and not info.distributed:
        log.warning("--strategy %s needs several processes (launch with torchrun); running unsharded", strategy)
        return "none"
    return strategy


def apply_block_switches(model: nn.Module, activation_checkpointing: bool, compile_blocks: bool,
                         compile_mode: str | None = None) -> None:
    """Activation checkpointing, then per-block ``torch.compile`` in ``compile_mode`` (in place:
    parameter names unchanged). Each block compiles once for the visible-token and once for the
    latent-joined sequence length (``dynamic=False``: static shapes, the fastest kernels)."""
    if activation_checkpointing:
        model.set_grad_checkpointing(True)
    if compile_blocks:
        for block in _blocks(model):
            block.compile(mode=compile_mode, dynamic=False)


def _blocks(model: nn.Module) -> list[nn.Module]:
    encoder = getattr(model, "encoder", model)
    return list(encoder.blocks)


def shard_fsdp(model: nn.Module, info: DistInfo, bf16: bool) -> nn.Module:
    """FSDP2: ``fully_shard`` every transformer block, then the root (embeddings, latents, decoder).

    With ``bf16`` parameters are all-gathered and computed in bf16 and gradients reduced in float32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in _blocks(model):
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user module inside a DDP wrapper (FSDP2 shards in place, so it is the module itself)."""
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) else model
