"""FLOP counts measured with ``torch.utils.flop_counter`` on the meta device (no memory, no time),
and nominal accelerator peaks for model-FLOPs utilisation (MFU)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by substring of the device name.
_CUDA_BF16_PEAKS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
    "4090": 165e12,
}


def _cpu_flash_fwd(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_bwd(grad_out_shape, query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


#: PyTorch's counter knows the CUDA attention kernels and the meta path but not the CPU flash kernel;
#: without these entries attention FLOPs on CPU would be silently missing.
CPU_SDPA_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_fwd,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_bwd,
}


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts CPU flash attention (forward and backward)."""
    return FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FORMULAS)


def count_forward_flops(module: torch.nn.Module, *args: Any, **kwargs: Any) -> int:
    """FLOPs of one forward call (matmuls, convolutions, attention), counted by the dispatcher."""
    with flop_counter() as counter:
        module(*args, **kwargs)
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=32)
def _mae_forward_flops(name: str, kwargs_items: tuple, batch: int) -> int:
    from fourds.models.registry import simple_mae

    kwargs = dict(kwargs_items)
    with torch.device("meta"):
        model = simple_mae(name, **kwargs)
        t, h, w = model.encoder.input_size
        video = torch.empty(batch, t, h, w, 3)
        noise = torch.empty(batch, model.num_tokens(video.shape))
        return count_forward_flops(model, video, noise=noise)


def mae_train_flops(name: str, kwargs: dict[str, Any], batch: int) -> int:
    """Approximate FLOPs of one SimpleMAE training step on ``batch`` clips: 3x the counted forward
    (backward costs about twice the forward). Activation checkpointing adds one more forward, not counted
    (MFU counts model FLOPs)."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    return 3 * _mae_forward_flops(name, items, batch)


def peak_flops(device: torch.device) -> float | None:
    """Nominal bf16 peak of a known CUDA device, else None (CPU peaks are measured by the benchmarks)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in _CUDA_BF16_PEAKS.items():
        if key in name:
            return value
    return None
