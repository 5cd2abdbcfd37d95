"""Whole-video inference: windows, feature extraction (library + ``fourds extract``), depth (``fourds depth``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fourds.cli import main as cli
from fourds.convert import convert_official, from_official_npz
from fourds.inference import (
    extract_features,
    predict_depth,
    read_video,
    token_boxes,
    window_frame_indices,
    write_video,
)
from fourds.models import create, save_model

DEPTH_NPZ = Path(__file__).parent / "fixtures" / "official" / "tiny_depth.npz"


@pytest.fixture(scope="module")
def tiny_official() -> tuple:
    return from_official_npz(DEPTH_NPZ)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_official(DEPTH_NPZ, tmp_path_factory.mktemp("m") / "tiny")


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_windows_cover_every_frame() -> None:
    idx, valid = window_frame_indices(11, 4)
    assert idx.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [7, 8, 9, 10]] and valid.all()  # last one end-aligned
    idx, valid = window_frame_indices(3, 4)  # shorter than a window: repeat the last frame
    assert idx.tolist() == [[0, 1, 2, 2]] and valid.tolist() == [[True, True, True, False]]
    idx, _ = window_frame_indices(20, 4, frame_step=2)
    assert idx.tolist() == [[0, 2, 4, 6], [8, 10, 12, 14], [13, 15, 17, 19]]
    idx, _ = window_frame_indices(6, 4, window_stride=1)
    assert idx[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="window stride must be >= 1"):
        window_frame_indices(6, 4, window_stride=0)


def test_token_boxes_tile_the_original_frame() -> None:
    boxes = token_boxes((32, 48), (16, 16), (50, 70))  # model saw 32x48, the video is 50x70
    assert boxes.shape == (6, 4)
    np.testing.assert_allclose(boxes[0], [0, 0, 70 / 3, 25], rtol=1e-6)
    np.testing.assert_allclose(boxes[5], [140 / 3, 25, 70, 50], rtol=1e-6)  # row 1, column 2 (row-major)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
    assert area == pytest.approx(50 * 70)


def test_extract_matches_backbone_per_window(tiny_official: tuple) -> None:
    backbone, _ = tiny_official
    frames = _frames(7, 32, 48)
    res = extract_features(backbone, frames, [0.95, 0], progress=False)
    assert res.meta["layers"] == [3, 0] and res.frame_indices.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6]]
    clip = torch.from_numpy(frames[3:7]).float()[None] / 255.0
    with torch.no_grad():
        ref = backbone.features(clip, [3, 0])
    np.testing.assert_allclose(res.features[3][1], ref[0][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(res.features[0][1], ref[1][0].numpy(), atol=1e-5)
    assert res.features[3].shape == (2, 2, 6, 32) and res.features[3].dtype == np.float32


def test_extract_cli_safetensors_and_npy(tmp_path: Path, model_dir: Path) -> None:
    write_video(tmp_path / "vids" / "a.mp4", _frames(9, 40, 60), fps=12)
    (tmp_path / "vids" / "sub").mkdir()
    np.save(tmp_path / "vids" / "sub" / "b.npy", _frames(5, 32, 48))
    out = tmp_path / "feats"
    assert cli(["extract", str(model_dir), str(tmp_path / "vids"), "--layers", "0.95,-1", "--out", str(out),
                "--half", "--no-progress"]) == 0
    with safe_open(str(out / "a.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["fourds"])
        shapes = {k: tuple(f.get_tensor(k).shape) for k in f.keys()}
        assert f.get_tensor("layer_3").dtype == torch.float16
    assert shapes["layer_3"] == shapes["layer_4"] == (3, 2, 6, 32)
    assert shapes["frame_indices"] == (3, 4) and shapes["token_boxes"] == (6, 4)
    assert meta["video_size"] == [40, 60] and meta["num_video_frames"] == 9 and meta["fps"] == pytest.approx(12)
    assert meta["layers"] == [3, 4] and meta["input_size"] == [4, 32, 48] and "frame_indices" in meta["tokens"]
    assert (out / "sub__b.safetensors").is_file()

    out2 = tmp_path / "npy"
    assert cli(["extract", str(model_dir), str(tmp_path / "vids" / "a.mp4"), "--layers", "2", "--out", str(out2),
                "--format", "npy", "--size", "64x32", "--window-stride", "2", "--no-progress"]) == 0
    assert np.load(out2 / "a" / "layer_2.npy").shape == (4, 2, 8, 32)  # 64x32 input -> 4x2 tokens per step
    assert json.loads((out2 / "a" / "meta.json").read_text())["window_stride"] == 2


def test_extract_native_fourds_model(tmp_path: Path) -> None:
    """Any model folder works, e.g. one pretrained with fourds (a tiny random one here)."""
    save_model(create("4ds-tiny"), tmp_path / "native")
    np.save(tmp_path / "v.npy", _frames(16, 64, 64))
    assert cli(["extract", str(tmp_path / "native"), str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"),
                "--no-progress"]) == 0
    with safe_open(str(tmp_path / "o" / "v.safetensors"), "pt") as f:
        assert tuple(f.get_tensor("layer_3").shape) == (1, 8, 16, 64)  # 0.95 of 4 blocks -> layer 3


def test_extract_cli_errors(tmp_path: Path, model_dir: Path) -> None:
    np.save(tmp_path / "v.npy", _frames(4, 32, 48))
    assert cli(["extract", str(model_dir), str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 1
    with pytest.raises(ValueError, match="--size 'big'"):
        cli(["-v", "extract", str(model_dir), str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), "--size", "big"])
    with pytest.raises(ValueError, match="out of range"):
        cli(["-v", "extract", str(model_dir), str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), "--layers", "9"])
    with pytest.raises(FileNotFoundError, match="fourds model folder"):
        cli(["-v", "extract", str(tmp_path / "nomodel"), str(tmp_path / "v.npy"), "--out", str(tmp_path / "o")])


def test_predict_depth_windows_equal_direct_head(tiny_official: tuple) -> None:
    backbone, heads = tiny_official
    head = heads["depth"]
    frames = _frames(6, 32, 48, seed=3)  # windows [0..3] and [2..5]
    depth = predict_depth(backbone, head, frames, progress=False)
    assert depth.shape == (6, 32, 48)
    with torch.no_grad():
        # frames 0-3 from the first window, 4-5 from the second (frames 2-3 take the earlier window)
        for start, ours, theirs in ((0, slice(0, 4), slice(0, 4)), (2, slice(4, 6), slice(2, 4))):
            clip = torch.from_numpy(frames[start : start + 4]).float()[None] / 255.0
            ref = head(backbone.features(clip, [head.layer])[0])[0, ..., 0].numpy()
            np.testing.assert_allclose(depth[ours], ref[theirs], atol=1e-5)


def test_depth_cli_writes_video_and_raw_depth(tmp_path: Path, model_dir: Path) -> None:
    write_video(tmp_path / "clip.mp4", _frames(5, 50, 70), fps=10)
    assert cli(["depth", str(tmp_path / "clip.mp4"), "--model", str(model_dir), "--out", str(tmp_path / "out"),
                "--no-progress"]) == 0
    raw = np.load(tmp_path / "out" / "clip_depth.npy")
    assert raw.shape == (5, 50, 70) and raw.dtype == np.float32 and np.isfinite(raw).all()
    video, info = read_video(tmp_path / "out" / "clip_depth.mp4")
    assert video.shape == (5, 50, 140, 3) and info.fps == pytest.approx(10)

    # A video at the head's exact size and length: the raw depth is the head's output.
    frames = _frames(4, 32, 48, seed=5)
    np.save(tmp_path / "exact.npy", frames)
    assert cli(["depth", str(tmp_path / "exact.npy"), "--model", str(DEPTH_NPZ), "--out",
                str(tmp_path / "x" / "exact.mp4"), "--range", "0,5", "--no-progress"]) == 0
    backbone, heads = from_official_npz(DEPTH_NPZ)
    with torch.no_grad():
        ref = heads["depth"](backbone.features(torch.from_numpy(frames).float()[None] / 255.0, [2])[0])
    np.testing.assert_allclose(np.load(tmp_path / "x" / "exact.npy"), ref[0, ..., 0].numpy(), atol=1e-5)


def test_depth_cli_needs_a_depth_head(tmp_path: Path) -> None:
    save_model(create("4ds-tiny"), tmp_path / "native")
    np.save(tmp_path / "v.npy", _frames(4, 32, 48))
    with pytest.raises(ValueError, match="has no depth head.*fourds convert official"):
        cli(["-v", "depth", str(tmp_path / "v.npy"), "--model", str(tmp_path / "native"), "--out", str(tmp_path / "o")])
