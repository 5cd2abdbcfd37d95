"""``fourds models``: the parameter and FLOP table (tiny sizes, meta device) and its input errors."""

import math

import pytest

from fourds.cli import main
from fourds.cli.models_cmd import model_table, parse_clip
from fourds.models import get_preset

TINY = ["4ds-tiny", "4ds-nano", "4ds-micro"]


def encoder_params(d: int, depth: int, mlp: int, tokens: int, patch: int = 2 * 16 * 16 * 3) -> int:
    """Tubelet conv + learned positional embedding + pre-norm blocks (2 LayerNorms, q/k/v/out with biases,
    MLP with biases); no final norm."""
    block = 2 * 2 * d + 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    return patch * d + d + tokens * d + depth * block


def encoder_flops(d: int, depth: int, mlp: int, tokens: int, patch: int = 2 * 16 * 16 * 3) -> int:
    """Multiply-adds x 2 of the matmuls: embedding, q/k/v/out projections, QK^T and AV, the MLP."""
    per_block = 2 * tokens * (4 * d * d + 2 * d * mlp) + 2 * 2 * tokens * tokens * d
    return 2 * tokens * patch * d + depth * per_block


def test_model_table_of_the_tiny_sizes_matches_the_formulas():
    clip = (16, 64, 64)
    tokens = 8 * 4 * 4
    rows = {r["name"]: r for r in model_table(clip, TINY)}
    assert list(rows) == TINY
    for name in TINY:
        vit = get_preset(name).vit
        d, depth, mlp = vit["dim"], vit["depth"], vit["mlp_dim"]
        r = rows[name]
        assert (r["dim"], r["depth"], r["mlp"]) == (d, depth, mlp)
        assert r["encoder_params"] == encoder_params(d, depth, mlp, tokens)
        assert r["latent_params"] == tokens * d  # latent grid = the input grid (decoding patch 2x16x16)
        assert r["decoder_params"] == d * 2 * 16 * 16 * 3 + 2 * 16 * 16 * 3
        assert r["total_params"] == r["encoder_params"] + r["latent_params"] + r["decoder_params"]
        assert r["encoder_gflops"] * 1e9 == pytest.approx(encoder_flops(d, depth, mlp, tokens), rel=1e-6)
        assert 0 < r["mae_forward_gflops"] < r["encoder_gflops"] + 2 * tokens * d * 1536 / 1e9
        assert r["table1_m"] is None and r["table1_delta_pct"] is None
        native = math.prod(s // p for s, p in zip(vit["input_size"], (2, 16, 16)))
        assert r["enc_plus_latent_native_m"] == pytest.approx(
            (encoder_params(d, depth, mlp, native) + native * d) / 1e6)


def test_models_command_prints_the_requested_rows_and_names_bad_input(capsys):
    assert main(["models", "4ds-tiny", "--clip", "4x32x32"]) == 0
    out = capsys.readouterr().out
    assert "4ds-tiny" in out and "4ds-nano" not in out and "4x32x32" in out
    for clip in ("16x224", "16xax224", "0x224x224"):
        with pytest.raises(ValueError, match=rf"--clip '{clip}': expected TxHxW"):
            parse_clip(clip)
    assert main(["models", "4ds-tiny", "--clip", "15x224x224"]) == 1
    assert "--clip 15x224x224 does not fit 4ds-tiny" in capsys.readouterr().err
    assert main(["models", "4ds-x"]) == 1
    assert "unknown model '4ds-x'" in capsys.readouterr().err
