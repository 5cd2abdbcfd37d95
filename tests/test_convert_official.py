"""Official 4DS checkpoint import: equivalence with the official code's outputs (tiny fixtures made with
the unmodified official JAX code, see tests/fixtures/official/README.md), layouts, size inference, errors."""

from __future__ import annotations

import ast
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fourds.cli import main as cli
from fourds.convert import (
    VideoPatchReadout,
    convert_official,
    from_official_npz,
    load_heads,
    plan_official,
)
from fourds.convert.npz import ArrayInfo
from fourds.models import count_parameters, load
from fourds.models.vit import VideoViT
from fourds.readouts import resample_time

FIX = Path(__file__).parent / "fixtures" / "official"
BACKBONE, DEPTH = FIX / "tiny_backbone.npz", FIX / "tiny_depth.npz"
TOL = 1e-4


@pytest.fixture(scope="module")
def io() -> dict[str, np.ndarray]:
    return dict(np.load(FIX / "tiny_io.npz"))


@pytest.fixture(scope="module")
def depth_model() -> tuple[VideoViT, dict]:
    return from_official_npz(DEPTH)


def _official_layers(io: dict, sample: str) -> list[np.ndarray]:
    """Reference for our list: index 0 = embedding, k = block k (official entry k+1; last block extra)."""
    n = int(io[f"{sample}/num_features"])
    return [io[f"{sample}/features_0"]] + [io[f"{sample}/features_{i}"] for i in range(2, n)] + [
        io[f"{sample}/features_last"]
    ]


@pytest.mark.parametrize("path", [BACKBONE, DEPTH], ids=["backbone_layout", "depth_layout"])
@pytest.mark.parametrize("sample", ["rand", "black", "const"])
def test_every_layer_matches_official(path: Path, sample: str, io: dict) -> None:
    backbone, _ = from_official_npz(path)
    video = torch.from_numpy(io[f"{sample}/video"])  # (B, 4, 32, 48, 3): non-square frames
    with torch.no_grad():
        ours = backbone.features(video)
    refs = _official_layers(io, sample)
    assert len(ours) == backbone.num_layers + 1 == len(refs) == 5
    for k, (f, ref) in enumerate(zip(ours, refs)):
        assert f.shape == (video.shape[0], 2, 6, 32)
        np.testing.assert_allclose(f.reshape(ref.shape).numpy(), ref, atol=TOL, rtol=0, err_msg=f"layer {k}")
    # The official list repeats the embedding at entry 1.
    np.testing.assert_array_equal(io[f"{sample}/features_0"], io[f"{sample}/features_1"])


@pytest.mark.parametrize("sample", ["rand", "black", "const"])
def test_depth_matches_official(sample: str, io: dict, depth_model: tuple) -> None:
    backbone, heads = depth_model
    head = heads["depth"]
    video = torch.from_numpy(io[f"{sample}/video"])
    with torch.no_grad():
        feats = backbone.features(video, [head.layer])[0]
        depth = head(feats)
    assert depth.shape == io[f"{sample}/depth"].shape == (video.shape[0], 4, 32, 48, 1)
    np.testing.assert_allclose(depth.numpy(), io[f"{sample}/depth"], atol=TOL, rtol=0)
    # The head's input after the official temporal resize.
    np.testing.assert_allclose(resample_time(feats, 4).numpy(), io[f"{sample}/readout_input"], atol=TOL, rtol=0)


def test_depth_head_attributes(io: dict, depth_model: tuple) -> None:
    _, heads = depth_model
    head = heads["depth"]
    assert isinstance(head, VideoPatchReadout)
    official = int(io["readout_feature_index"])
    assert head.meta["official_feature_index"] == official == 3
    assert head.layer == official - 1 == 2  # official entry i >= 2 is our block i - 1
    assert head.output_size == (4, 32, 48) and head.patch_size == (2, 8, 8) and head.out_channels == 1
    assert head.num_queries == 48 and head.num_heads == 2 and head.channels == 32
    assert head.token_grid == (2, 2, 3)


def test_layouts_agree_and_backbone_file_has_no_heads() -> None:
    a, heads_a = from_official_npz(BACKBONE)
    b, heads_b = from_official_npz(DEPTH)
    assert heads_a == {} and set(heads_b) == {"depth"}
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _rewrite(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001 - edit: dict -> dict
    arrays = dict(np.load(src))
    np.savez(dst, **edit(arrays))
    return dst


def test_keys_without_params_prefix(tmp_path: Path) -> None:
    path = _rewrite(DEPTH, tmp_path / "x.npz", lambda d: {k.removeprefix("params/"): v for k, v in d.items()})
    backbone, heads = from_official_npz(path)
    ref, _ = from_official_npz(DEPTH)
    assert set(heads) == {"depth"}
    assert torch.equal(backbone.state_dict()["blocks.3.mlp.fc2.weight"], ref.state_dict()["blocks.3.mlp.fc2.weight"])


def _info_from_table(name: str) -> tuple[dict[str, ArrayInfo], int]:
    lines = (FIX / name).read_text().splitlines()
    total = int(lines[0].split(",")[1].split()[0])
    info = {}
    for line in lines[1:]:
        key, shape = line.split("\t")
        info[key] = ArrayInfo(tuple(ast.literal_eval(shape)), np.dtype(np.float32))
    return info, total


@pytest.mark.parametrize(
    "table, dims",
    [
        ("keys_B_backbone.txt", (768, 12, 12, 3072)),
        ("keys_B_depth.txt", (768, 12, 12, 3072)),
        ("keys_e_backbone.txt", (1792, 56, 16, 15360)),
    ],
)
def test_size_inference_on_released_layouts(table: str, dims: tuple) -> None:
    """Key/shape tables of the released files (official modules' eval_shape): every size inferred, every
    key used, and our modules have exactly the official parameter count."""
    info, total = _info_from_table(table)
    plan = plan_official(info, table)
    c = plan.vit
    assert (c.dim, c.depth, c.num_heads, c.mlp_dim) == dims
    assert c.patch_size == (2, 16, 16) and c.input_size == (16, 224, 224) and c.grid == (8, 14, 14)
    with torch.device("meta"):
        n = count_parameters(VideoViT(c, init=False))
        if plan.readout is not None:
            r = plan.readout
            assert (r.channels, r.num_heads, r.num_queries, r.out_features, r.steps, r.mlp_ratio) == (
                1024, 16, 6272, 128, 16, 4)
            head = VideoPatchReadout(r.dim, r.channels, r.num_heads, output_size=(16, 224, 224), layer=10)
            assert head.num_queries == r.num_queries and head.out_features == r.out_features
            n += count_parameters(head)
    assert n == total


def _error(tmp_path: Path, edit) -> str:  # noqa: ANN001
    path = _rewrite(DEPTH, tmp_path / "bad.npz", edit)
    with pytest.raises(ValueError) as err:
        from_official_npz(path)
    return str(err.value)


def test_error_lists_missing_unknown_and_misshaped_keys(tmp_path: Path) -> None:
    def edit(d: dict) -> dict:
        d = dict(d)
        del d["params/layers_0/processor/layers_2/attention/key/bias"]
        del d["params/layers_2/Dense_0/bias"]
        d["params/layers_0/processor/layers_1/attention/query_norm/scale"] = np.ones(8, np.float32)
        d["params/layers_0/processor/layers_3/mlp/dense_out/bias"] = np.zeros(31, np.float32)
        return d

    msg = _error(tmp_path, edit)
    assert "2 missing keys" in msg
    assert "params/layers_0/processor/layers_2/attention/key/bias" in msg and "params/layers_2/Dense_0/bias" in msg
    assert "1 unknown keys: params/layers_0/processor/layers_1/attention/query_norm/scale" in msg
    assert "params/layers_0/processor/layers_3/mlp/dense_out/bias: file (31,), expected (32,)" in msg


def test_error_on_gap_in_blocks_and_non_float(tmp_path: Path) -> None:
    msg = _error(tmp_path, lambda d: {k: v for k, v in d.items() if "processor/layers_1/" not in k})
    assert "missing layers [1]" in msg
    msg = _error(tmp_path, lambda d: {**d, "params/layers_2/Dense_1/bias": d["params/layers_2/Dense_1/bias"].astype(np.int32)})
    assert "non-float" in msg and "params/layers_2/Dense_1/bias" in msg


def test_error_not_a_4ds_file(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, **{"params/model/weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="does not look like a 4DS checkpoint.*params/model/weight"):
        from_official_npz(path)


def test_error_missing_truncated_garbage_and_pickled_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_official_npz(tmp_path / "nope.npz")
    data = DEPTH.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.npz is not a readable .npz archive"):
        from_official_npz(tmp_path / "trunc.npz")
    (tmp_path / "garbage.npz").write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="not a readable .npz"):
        from_official_npz(tmp_path / "garbage.npz")
    np.savez(tmp_path / "pickle.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="Python objects"):
        from_official_npz(tmp_path / "pickle.npz")


def test_error_corrupt_array_data_names_the_key(tmp_path: Path) -> None:
    """A member whose bytes are damaged (CRC mismatch) fails when loaded, naming the array."""
    with zipfile.ZipFile(DEPTH) as z:
        item = z.getinfo("params/layers_2/query.npy")
    assert item.compress_type == zipfile.ZIP_STORED  # numpy.savez stores members uncompressed
    data = bytearray(DEPTH.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, item.header_offset + 26)  # local file header
    start = item.header_offset + 30 + name_len + extra_len + 500
    data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
    (tmp_path / "corrupt.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="'params/layers_2/query'.*corrupt or truncated"):
        from_official_npz(tmp_path / "corrupt.npz")


def test_convert_folder_round_trip(tmp_path: Path, io: dict) -> None:
    out = tmp_path / "model"
    assert cli(["convert", "official", str(DEPTH), str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "heads" / "depth" / "model.safetensors").is_file()
    backbone, heads = load(out), load_heads(out)
    head = heads["depth"]
    assert head.layer == 2 and head.output_size == (4, 32, 48) and head.token_grid == (2, 2, 3)
    video = torch.from_numpy(io["black/video"])
    with torch.no_grad():
        depth = head(backbone.features(video, [head.layer])[0])
    np.testing.assert_allclose(depth.numpy(), io["black/depth"], atol=TOL, rtol=0)
    # Refuses to overwrite without --overwrite; the message says how.
    assert cli(["convert", "official", str(DEPTH), str(out)]) == 1
    with pytest.raises(ValueError, match="--overwrite"):
        cli(["-v", "convert", "official", str(DEPTH), str(out)])
    assert cli(["convert", "official", str(BACKBONE), str(out), "--overwrite"]) == 0
    # The backbone-only file has no head: the depth head of the earlier conversion is gone, not kept stale.
    assert load_heads(out) == {} and not (out / "heads").exists()
    assert load(out).num_layers == 4
    # A failed conversion leaves the folder as it was.
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        cli(["-v", "convert", "official", str(tmp_path / "bad.npz"), str(out), "--overwrite"])
    assert (out / "config.json").is_file()


def test_convert_backbone_only_folder_has_no_heads(tmp_path: Path) -> None:
    convert_official(BACKBONE, tmp_path / "m")
    assert load_heads(tmp_path / "m") == {}
    assert load(tmp_path / "m").num_layers == 4
