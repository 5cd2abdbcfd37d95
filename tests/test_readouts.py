"""AttentionReadout and Fourier query embeddings: Table 6 sizes, an independent attention formula, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fourds.readouts import AttentionReadout, FourierQueryEmbedding, fourier_features, fourier_frequencies
from fourds.readouts.resample import resample_time


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(dim=1024, channels=768, num_heads=12, out_features=174, num_queries=1), 7_041_966),  # SSv2
        (dict(dim=1024, channels=1024, num_heads=16, out_features=700, num_queries=1), 12_281_532),  # K700
        # RE10k: first and last step concatenated (2D channels), one step, 12 pose numbers.
        (dict(dim=2048, channels=256, num_heads=8, out_features=12, num_queries=1, steps=1), 1_650_444),
        # ScanNet: one query per 2x8x8 patch of 16x224x224 (8*28*28 = 6272), 128 depths each.
        (dict(dim=1024, channels=1024, num_heads=16, out_features=128, num_queries=6272), 18_116_736),
    ],
    ids=["ssv2", "k700", "re10k", "scannet"],
)
def test_learned_query_readouts_match_table6(kwargs: dict, expected: int) -> None:
    with torch.device("meta"):
        readout = AttentionReadout(**kwargs)
    assert n_params(readout) == expected


def test_given_query_readouts_match_table6() -> None:
    """Points: Fourier(x, y) → MLP 512 → 8 replica embeddings → project; boxes: Fourier(4 coords)."""
    with torch.device("meta"):
        points = FourierQueryEmbedding(num_coords=2)
        replicas = nn.Parameter(torch.zeros(8, 512))
        track = AttentionReadout(1024, 1024, 8, out_features=2 * 4, query_dim=512)
        boxes = FourierQueryEmbedding(num_coords=4)
        box = AttentionReadout(1024, 1024, 4, out_features=16 * 4, query_dim=512)
    assert n_params(points, track) + replicas.numel() == 12_396_552  # Perception Test
    assert n_params(boxes, box) == 12_482_624  # Waymo


def reference_readout(readout: AttentionReadout, features: torch.Tensor, queries: torch.Tensor | None) -> torch.Tensor:
    """The same computation with explicit softmax(q k^T / sqrt(d)) v per head, written independently."""
    b, t, n, d = features.shape
    x = torch.nn.functional.layer_norm(features, (d,), readout.norm.weight, readout.norm.bias, 1e-6)
    x = (x + readout.temporal_embedding).reshape(b, t * n, d)
    k = x @ readout.key.weight.T + readout.key.bias
    v = x @ readout.value.weight.T + readout.value.bias
    if readout.queries is not None:
        q = readout.queries[None].repeat(b, 1, 1)
    else:
        q = queries @ readout.query_proj.weight.T + readout.query_proj.bias
    h, c = readout.num_heads, readout.channels
    hd = c // h
    out = []
    for head in range(h):
        sl = slice(head * hd, (head + 1) * hd)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd), dim=-1)
        out.append(w @ v[..., sl])
    token = q + torch.cat(out, -1) @ readout.attn_out.weight.T + readout.attn_out.bias
    y = torch.nn.functional.layer_norm(token, (c,), readout.mlp_norm.weight, readout.mlp_norm.bias, 1e-6)
    y = torch.nn.functional.gelu(y @ readout.mlp.fc1.weight.T + readout.mlp.fc1.bias, approximate="tanh")
    token = token + y @ readout.mlp.fc2.weight.T + readout.mlp.fc2.bias
    return token @ readout.head.weight.T + readout.head.bias


@pytest.mark.parametrize("learned", [True, False])
def test_readout_matches_independent_formula(learned: bool) -> None:
    torch.manual_seed(0)
    kw = dict(num_queries=3) if learned else dict(query_dim=5)
    readout = AttentionReadout(dim=12, channels=16, num_heads=4, out_features=7, steps=4, **kw)
    with torch.no_grad():  # non-trivial LayerNorm parameters
        readout.norm.weight.normal_()
        readout.mlp_norm.bias.normal_()
    features = torch.randn(2, 4, 6, 12)
    queries = None if learned else torch.randn(2, 9, 5)
    out = readout(features, queries)
    assert out.shape == (2, 3 if learned else 9, 7)
    torch.testing.assert_close(out, reference_readout(readout, features, queries), atol=1e-5, rtol=1e-5)


def test_readout_resamples_time_with_the_official_cubic() -> None:
    torch.manual_seed(0)
    readout = AttentionReadout(dim=8, channels=8, num_heads=2, out_features=3, num_queries=2, steps=16)
    features = torch.randn(1, 8, 5, 8)  # e.g. a video model with 8 time steps
    out = readout(features)
    torch.testing.assert_close(out, readout(resample_time(features, 16)))
    assert out.shape == (1, 2, 3)


def test_readout_gradients_reach_every_parameter() -> None:
    readout = AttentionReadout(dim=8, channels=8, num_heads=2, out_features=3, query_dim=4, steps=2)
    readout(torch.randn(2, 2, 3, 8), torch.randn(2, 5, 4)).square().sum().backward()
    for name, p in readout.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_readout_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="exactly one of num_queries"):
        AttentionReadout(8, 8, 2, 3)
    with pytest.raises(ValueError, match="not divisible"):
        AttentionReadout(8, 9, 2, 3, num_queries=1)
    readout = AttentionReadout(8, 8, 2, 3, num_queries=1, steps=2)
    with pytest.raises(ValueError, match=r"features \(B, T', N, D=8\)"):
        readout(torch.randn(1, 2, 3, 7))
    with pytest.raises(ValueError, match="do not pass queries"):
        readout(torch.randn(1, 2, 3, 8), torch.randn(1, 1, 8))
    given = AttentionReadout(8, 8, 2, 3, query_dim=4, steps=2)
    with pytest.raises(ValueError, match=r"queries \(B, Q, E=4\)"):
        given(torch.randn(1, 2, 3, 8))


def test_fourier_features_hand_case() -> None:
    freqs = fourier_frequencies(16)
    assert freqs[0] == 1.0 and torch.isclose(freqs[-1], torch.tensor(128.0))
    assert torch.all(freqs[1:] > freqs[:-1])
    feats = fourier_features(torch.tensor([[0.25, 0.0]]), torch.tensor([1.0, 2.0]))
    # x = 0.25: sin(π/2)=1, sin(π)=0, cos(π/2)=0, cos(π)=-1; y = 0: sin 0, 0; cos 1, 1.
    expected = torch.tensor([[1.0, 0.0, 0.0, -1.0, 0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(feats, expected, atol=1e-6, rtol=0)
    emb = FourierQueryEmbedding(num_coords=4)
    assert emb(torch.rand(2, 3, 4)).shape == (2, 3, 512)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        emb(torch.rand(2, 3, 2))
