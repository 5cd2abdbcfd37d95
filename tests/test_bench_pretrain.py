"""The pretraining benchmark's measuring helpers (FLOP counting, op classification, worker environment);
its speed figures are never tested."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_pretrain as bp  # noqa: E402


def _attention(b=2, h=3, n=40, d=16):
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    return q, k, v, 2 * b * h * n * n * d  # one of the two forward matmuls (QK^T or PV), in FLOPs


def test_model_flop_counter_counts_attention_backward_as_four_matmuls():
    q, k, v, one_matmul = _attention()
    with bp.model_flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    # forward: QK^T and PV; backward: dV, dP, dQ, dK; no recompute of the scores.
    assert counter.get_total_flops() == 6 * one_matmul


def test_library_counter_counts_the_recompute_that_the_benchmark_leaves_out():
    """The difference the benchmark corrects: torch's formula for the (CPU flash) backward adds the
    scores recompute, one matmul more than the model's four."""
    from fourds.train.device_step import flop_counter

    q, k, v, one_matmul = _attention()
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    assert counter.get_total_flops() == 7 * one_matmul


def test_model_flop_counter_counts_linear_layers_like_torch():
    layer = torch.nn.Linear(8, 5)
    x = torch.randn(7, 8, requires_grad=True)
    with bp.model_flop_counter() as counter:
        layer(x).sum().backward()
    # forward x W^T, backward dX = dY W and dW = dY^T X: 3 matmuls of 2*7*8*5 FLOPs.
    assert counter.get_total_flops() == 3 * 2 * 7 * 8 * 5


@pytest.mark.parametrize(("name", "kind"), [
    ("_scaled_dot_product_flash_attention_for_cpu_backward", "attention backward"),
    ("_scaled_dot_product_flash_attention_for_cpu", "attention forward"),
    ("_scaled_dot_product_efficient_attention_backward", "attention backward"),
    ("addmm", "matmul"), ("mm", "matmul"), ("bmm", "matmul"),
    ("native_layer_norm_backward", "layer norm"), ("gelu_backward", "GELU"),
    ("_fused_adamw_", "optimiser"), ("_foreach_add_", "optimiser"),
    ("mse_loss", "loss"), ("add_", "bias/residual adds, grad sums"), ("sum", "bias/residual adds, grad sums"),
    ("gather", "copies, fills, gathers, cat"), ("copy_", "copies, fills, gathers, cat"),
    ("transpose", "views (no data moved)"), ("t", "views (no data moved)"),
    ("some_new_op", "other"),
])
def test_op_kind(name, kind):
    assert bp.op_kind(name) == kind


def test_profile_step_splits_a_training_step_by_kind():
    layer = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(approximate="tanh"), torch.nn.LayerNorm(32))
    opt = torch.optim.AdamW(layer.parameters(), fused=True)
    x = torch.randn(64, 16)

    def step():
        opt.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()
        opt.step()

    prof = bp.profile_step(step)
    kinds = prof["by_kind_s"]
    assert {"matmul", "GELU", "layer norm", "optimiser"} <= set(kinds)
    assert all(v >= 0 for v in kinds.values())
    assert sum(kinds.values()) == pytest.approx(prof["cpu_s"], rel=1e-6, abs=1e-9)
    assert list(kinds.values()) == sorted(kinds.values(), reverse=True)
    # model FLOPs by kind: the linear layer's forward and weight-gradient matmuls (x needs no gradient)
    assert prof["by_kind_flop"] == {"matmul": 2 * 2 * 64 * 16 * 32}


def test_worker_env_sets_the_openmp_wait_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert bp.worker_env()["OMP_WAIT_POLICY"] == "PASSIVE"
    assert bp.worker_env("active")["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "OMP_WAIT_POLICY" not in bp.worker_env("default")
    assert str(ROOT / "src") in bp.worker_env()["PYTHONPATH"]
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert bp.worker_env()["OMP_WAIT_POLICY"] == "ACTIVE"  # the caller's setting wins over the default
    assert "OMP_WAIT_POLICY" not in bp.worker_env("default")
    with pytest.raises(ValueError, match="omp_wait_policy"):
        bp.worker_env("spin")


def test_matmul_rate_is_a_positive_flop_rate():
    assert bp.matmul_rate(64) > 0
