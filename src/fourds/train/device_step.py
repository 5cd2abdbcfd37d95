"""What a training step needs to run fast and safely on any device, without a host synchronisation.

- :class:`NonFiniteGuard`: a sticky, device-side "the loss or gradient norm was NaN/inf" flag that makes
  the fused AdamW kernel skip its update (``found_inf``, the mechanism of ``torch.amp.GradScaler``), so
  the loop never reads a device value per step; the host looks at the flag only when it logs or saves
  and then raises for the first bad step, with the weights exactly as before that step.
- :class:`StepTimer`: the compute time of one step (CUDA events on the GPU, ``perf_counter`` on the CPU),
  read only at logging time.
- :func:`fused_attention_only`: on CUDA, scaled-dot-product attention restricted to the fused kernels
  (flash first, then memory-efficient and cuDNN): a shape only the slow math path supports fails loudly instead.
- :func:`out_of_memory_message`: what to lower when a step does not fit on the GPU.
- What a step costs: FLOP counts measured with ``torch.utils.flop_counter`` on the meta device (no
  memory, no time; :func:`count_forward_flops`, :func:`mae_train_flops`) and nominal accelerator peaks for
  model-FLOPs utilisation (MFU, :func:`peak_flops`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


class NonFiniteGuard:
    """Device-side non-finite check for an optimiser step, read by the host only on demand.

    Per step call :meth:`update` with the step's gradient norm and loss (device tensors), then
    :meth:`arm` before ``optimizer.step()``: once any step was non-finite, the fused AdamW kernel skips
    that step and every later one (the flag is sticky), so the weights stay those of the last good step
    however late the host looks. :meth:`first_bad_step` (one host sync) returns the first bad step or
    ``None``. Optimisers without ``found_inf`` support (non-fused) are checked on the host every step.
    """

    def __init__(self, device: torch.device, optimizer: torch.optim.Optimizer) -> None:
        self.device = device
        self.optimizer = optimizer
        self.flag = torch.zeros((), dtype=torch.float32, device=device)
        self.first = torch.full((), -1, dtype=torch.int64, device=device)
        defaults = getattr(optimizer, "defaults", {})
        self.device_side = bool(defaults.get("fused"))

    def update(self, step: int, grad_norm: Tensor, loss: Tensor) -> None:
        """Record step ``step`` (0-based): bad when the gradient norm or the loss is not finite."""
        bad = ~(torch.isfinite(grad_norm.float()) & torch.isfinite(loss.float()))
        self.first = torch.where(bad & (self.first < 0), torch.full_like(self.first, step), self.first)
        self.flag = torch.maximum(self.flag, bad.to(self.flag.dtype))

    def arm(self) -> None:
        """Let the fused optimiser skip its update while the flag is set (no-op for other optimisers)."""
        if self.device_side:
            self.optimizer.found_inf = self.flag  # type: ignore[attr-defined]
            self.optimizer.grad_scale = None  # type: ignore[attr-defined]

    @property
    def must_check_every_step(self) -> bool:
        """True where the optimiser cannot skip on the device: the host checks before every step."""
        return not self.device_side

    def first_bad_step(self) -> int | None:
        """The first non-finite step seen so far, or ``None`` (synchronises with the device)."""
        first = int(self.first)
        return None if first < 0 else first


class StepTimer:
    """Times one step's compute: CUDA events on a GPU (no sync until :meth:`seconds`), else wall time."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._t0 = self._t1 = 0.0
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self._start.record()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self._end.record()
        self._t1 = time.perf_counter()

    def seconds(self) -> float:
        """Duration of the last timed step (on CUDA: device time between the events, after syncing)."""
        if self.cuda:
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1e3
        return self._t1 - self._t0


@contextlib.contextmanager
def fused_attention_only(device: torch.device) -> Iterator[None]:
    """On CUDA, allow only the fused SDPA kernels (cuDNN, flash, memory-efficient); elsewhere a no-op."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION],
                     set_priority=True):
        yield


def out_of_memory_message(what: str, batch_size: int, micro_batch: int, grad_accum: int, model: str,
                          activation_checkpointing: bool, precision: str, device: torch.device) -> str:
    """A one-paragraph CUDA out-of-memory error: the batch, the model, the device's memory, what to lower."""
    total = ""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        total = f" ({props.name}, {props.total_memory / 2**30:.0f} GiB; {peak:.1f} GiB allocated at the peak)"
    hints = [f"--batch-size {max(1, batch_size // 2)} with --grad-accum {grad_accum * 2} (same global batch)"
             if micro_batch > 1 else "a smaller --model or --image-size"]
    if not activation_checkpointing:
        hints.append("--activation-checkpointing (recompute blocks in the backward pass)")
    if precision != "bf16":
        hints.append("--precision bf16")
    hints.append("several GPUs with torchrun and --strategy fsdp")
    return (f"{what}: CUDA ran out of memory on {device}{total} for {model} with {micro_batch} clips per "
            f"device step (global batch {batch_size}, grad accum {grad_accum}). Lower the memory per step: "
            + "; or ".join(hints) + ".")


# ------------------------------------------------------------------------------------------ FLOPs
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
