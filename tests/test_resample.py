"""Temporal resampling: equality with real jax.image.resize (fixture) and basic properties."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fourds.readouts import resample_time
from fourds.readouts.resample import resize_weights

FIXTURE = Path(__file__).parent / "fixtures" / "resample" / "jax_cubic_resize.npz"


def _pairs():
    with np.load(FIXTURE) as data:
        return [tuple(int(v) for v in p) for p in data["pairs"]]


@pytest.mark.parametrize("t_in,t_out", _pairs())
def test_matches_jax_image_resize_cubic(t_in, t_out):
    with np.load(FIXTURE) as data:
        x = torch.from_numpy(data[f"x_{t_in}_{t_out}"])
        expected = data[f"y_{t_in}_{t_out}"]
    out = resample_time(x, t_out)
    assert out.shape == (x.shape[0], t_out, *x.shape[2:]) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=0)


def test_fixture_covers_up_and_down_sampling():
    pairs = _pairs()
    assert any(a < b for a, b in pairs) and any(a > b for a, b in pairs) and any(a == b for a, b in pairs)


def test_weights_properties():
    for t_in, t_out in [(8, 16), (16, 5), (3, 7), (1, 4), (16, 16)]:
        w = resize_weights(t_in, t_out)
        assert w.shape == (t_out, t_in) and w.dtype == torch.float32
        torch.testing.assert_close(w.sum(1), torch.ones(t_out))
    torch.testing.assert_close(resize_weights(6, 6), torch.eye(6))
    # Upsampling by 2, interior sample at input position 1.25: Keys a=-0.5 taps at distances
    # 1.25, 0.25, 0.75, 1.75 (all inside, so no renormalisation).
    row = resize_weights(8, 16)[3]

    def keys(x: float) -> float:
        return (1.5 * x - 2.5) * x * x + 1 if x < 1 else ((-0.5 * x + 2.5) * x - 4) * x + 2

    expected = torch.tensor([keys(1.25), keys(0.25), keys(0.75), keys(1.75), 0, 0, 0, 0])
    torch.testing.assert_close(row, expected)
    # Downsampling widens the kernel (antialiasing): 16 -> 8 uses 8 taps per output inside the clip.
    assert int((resize_weights(16, 8)[4].abs() > 0).sum()) == 8


def test_identity_constant_and_dtype():
    x = torch.randn(2, 16, 3, 5)
    assert resample_time(x, 16) is x
    const = torch.full((1, 5, 2, 3), 0.7)
    torch.testing.assert_close(resample_time(const, 16), torch.full((1, 16, 2, 3), 0.7))
    y = resample_time(x.to(torch.bfloat16), 8)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(
        y.float(), resample_time(x.to(torch.bfloat16).float(), 8), atol=1e-2, rtol=1e-2
    )


@pytest.mark.parametrize("t_in,t_out", [(8, 16), (16, 5), (3, 7), (12, 16), (16, 9)])
def test_matches_torch_antialiased_bicubic_along_width(t_in, t_out):
    # A second, independent implementation: PyTorch's antialias=True bicubic is the same resampler
    # (Keys a = -0.5, widened when downsampling, out-of-range taps dropped) when time is the width axis.
    x = torch.randn(2, t_in, 3, 4)
    rows = x.permute(0, 2, 3, 1).reshape(1, 1, -1, t_in)  # (1, 1, B*N*C, T')
    ref = torch.nn.functional.interpolate(rows, size=(rows.shape[2], t_out), mode="bicubic", antialias=True)
    ref = ref.reshape(2, 3, 4, t_out).permute(0, 3, 1, 2)
    torch.testing.assert_close(resample_time(x, t_out), ref, atol=1e-5, rtol=0)


def test_differs_from_torch_bicubic():
    # F.interpolate(mode="bicubic") uses a = -0.75, clamps taps to the edge samples and does not widen
    # the kernel when downsampling, so it is a different resampler (most visible near the clip ends).
    x = torch.randn(1, 8, 1, 1)
    ours = resample_time(x, 16)[0, :, 0, 0]
    theirs = torch.nn.functional.interpolate(
        x.reshape(1, 1, 8, 1), size=(16, 1), mode="bicubic", align_corners=False
    )
    assert (ours - theirs.reshape(16)).abs().max() > 1e-2


def test_errors():
    with pytest.raises(ValueError, match=r"\(B, T', N, C\)"):
        resample_time(torch.zeros(2, 8, 4), 16)
    with pytest.raises(ValueError, match="positive int"):
        resample_time(torch.zeros(2, 8, 4, 3), 0)
    with pytest.raises(ValueError, match="floating"):
        resample_time(torch.zeros(2, 8, 4, 3, dtype=torch.long), 16)
    with pytest.raises(ValueError, match="positive int"):
        resize_weights(0, 4)
