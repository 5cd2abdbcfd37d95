"""Synthetic scenes on disk and in pretraining: the .npz point-track export, the `fourds synth` CLI,
preview videos, and the infinite pretraining source."""

import json

import numpy as np
import torch

from fourds.cli import main
from fourds.data.pretrain import ClipSpec, PretrainClips, build_source
from fourds.data.synthetic import SyntheticScenes, SyntheticVideos
from fourds.data.synthetic.export import FORMAT, export_point_tracks
from fourds.data.synthetic.preview import preview_frames
from fourds.data.video import num_frames, read_clip


def test_export_writes_the_documented_point_track_format(tmp_path):
    ds = SyntheticScenes(num_frames=4, height=24, width=32, seed=1, num_samples=3, num_tracks=16, max_objects=5)
    paths = export_point_tracks(ds, tmp_path, split="val", indices=[0, 2], progress=False)
    assert [p.name for p in paths] == ["000000.npz", "000002.npz"]
    meta = json.loads((tmp_path / "val" / "meta.json").read_text())
    assert meta["format"] == FORMAT and meta["count"] == 2 and meta["generator"]["seed"] == 1
    sample = ds[2]
    with np.load(paths[1]) as f:
        assert set(f.files) == {"video", "target_points", "occluded", "query_points"}
        assert f["video"].dtype == np.uint8 and f["video"].shape == (4, 24, 32, 3)
        assert np.array_equal(f["video"], (sample["video"] * 255).round().to(torch.uint8).numpy())
        assert f["target_points"].dtype == np.float32 and np.array_equal(f["target_points"], sample["tracks"].numpy())
        assert f["occluded"].dtype == bool and np.array_equal(f["occluded"], ~sample["visible"].numpy())
        q = f["query_points"]
        assert q.dtype == np.float32 and q.shape == (16, 3)
        # (t, y, x): frame 0, and (y, x) is the track's first position, a pixel centre.
        assert np.all(q[:, 0] == 0) and np.array_equal(q[:, [2, 1]], f["target_points"][:, 0])
        assert np.all(q[:, 1:] % 1 == 0.5) and not f["occluded"][:, 0].any()
    export_point_tracks(ds, tmp_path / "x", indices=[1], extras=True, compress=False, progress=False)
    with np.load(tmp_path / "x" / "train" / "000001.npz") as f:
        assert {"depth", "cam_to_world", "boxes", "box_valid", "label"} <= set(f.files)
        assert np.array_equal(f["depth"], ds[1]["depth"].numpy())
    assert not list((tmp_path / "val").glob(".*tmp*"))


def test_cli_preview_writes_videos_and_export_writes_files(tmp_path, capsys):
    common = ["--frames", "4", "--size", "24", "-n", "2", "--seed", "5"]
    assert main(["synth", "preview", "--out", str(tmp_path / "pv"), *common, "--preview-tracks", "8"]) == 0
    videos = sorted((tmp_path / "pv").glob("*.mp4"))
    assert len(videos) == 2 and num_frames(videos[0]) == 4
    frame = read_clip(videos[0], 0, 1, 1)
    assert frame.shape[1] >= 192 and frame.shape[2] == 5 * frame.shape[1]  # 5 panels side by side
    assert main(["synth", "export", "--out", str(tmp_path / "ex"), *common, "--num-tracks", "10"]) == 0
    files = sorted((tmp_path / "ex" / "train").glob("*.npz"))
    assert [f.name for f in files] == ["000000.npz", "000001.npz"]
    with np.load(files[1]) as f:
        assert f["target_points"].shape == (10, 4, 2)
    assert main(["synth", "export", "--out", str(tmp_path / "bad"), "--size", "4", "--num-tracks", "10",
                 "--frames", "2", "-n", "0"]) == 1
    assert "-n 0" in capsys.readouterr().err


def test_preview_draws_tracks_and_boxes_where_they_are():
    ds = SyntheticScenes(num_frames=3, height=32, width=32, seed=2, num_samples=1, num_tracks=12)
    sample = ds[0]
    frames = preview_frames(sample, min_panel=64)
    assert frames.dtype == np.uint8 and frames.shape == (3, 64, 5 * 64, 3)
    rgb = frames[:, :, :64].astype(int)
    assert (np.abs(frames[:, :, 64:128].astype(int) - rgb).sum(-1) > 0).any()  # tracks drawn over RGB
    if sample["box_valid"].any():
        assert (np.abs(frames[:, :, 128:192].astype(int) - rgb).sum(-1) > 0).any()  # boxes drawn


def test_pretraining_source_streams_deterministic_scenes():
    source = build_source("synthetic", seed=3, image_size=32)
    assert isinstance(source, SyntheticVideos) and source.size == (37, 37)  # round(1.15 x 32)
    gen = torch.Generator()
    a = source.clip(10**9, 4, 2, gen)
    assert a.dtype == torch.uint8 and a.shape == (4, 37, 37, 3)
    assert torch.equal(a, SyntheticVideos((37, 37), seed=3).clip(10**9, 4, 1, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, source.clip(10**9 + 1, 4, 2, gen))
    assert not torch.equal(a, SyntheticVideos((37, 37), seed=4).clip(10**9, 4, 2, gen))
    clips = PretrainClips(source, ClipSpec(num_frames=4, frame_stride=2, image_size=32), seed=0)
    item = clips[5]
    assert item["video"].shape == (4, 32, 32, 3) and item["video"].dtype == torch.uint8
    assert torch.equal(item["video"], clips[5]["video"])
