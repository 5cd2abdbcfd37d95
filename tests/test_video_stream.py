"""Streaming whole videos (``fourds.data.video.iter_frames``, ``video_info``, ``VideoWriter``) and the
inference commands on top of them (``fourds extract`` over folders with unreadable files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _video_fixtures import decode_index, index_frames, write_index_video

from fourds.cli import main
from fourds.data import video as V
from fourds.data.encode import VideoWriter
from fourds.inference.video_io import find_videos, iter_frames, read_video, write_video
from fourds.models import create, save_model


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return {
        "h264": write_index_video(root / "h264_b.mp4", 70, "libx264", keyint=16, bframes=3, fps=12),
        "vp9": write_index_video(root / "vp9.webm", 20, "libvpx-vp9", keyint=8),
        "vfr": write_index_video(root / "vfr.mkv", 24, "libx264", bframes=2, keyint=8, fps=30,
                                 pts=[sum(1 + (i * 7) % 4 for i in range(k)) for k in range(24)], time_base=(1, 120)),
    }


@pytest.mark.parametrize("name", ["h264", "vp9", "vfr"])
def test_iter_frames_streams_exactly_the_frames_read_frames_gives(videos, name):
    path = videos[name]
    n = V.num_frames(path)
    frames = list(V.iter_frames(path))
    assert len(frames) == n and all(f.shape == (64, 64, 3) and f.dtype == torch.uint8 for f in frames)
    assert decode_index(torch.stack(frames)) == list(range(n))
    assert torch.equal(torch.stack(frames[5:9]), V.read_frames(path, range(5, 9)))
    # bytes and file objects stream too; size resizes while converting
    assert decode_index(torch.stack(list(V.iter_frames(path.read_bytes())))) == list(range(n))
    with open(path, "rb") as f:
        assert len(list(V.iter_frames(f, size=(32, 48)))) == n


def test_iter_frames_is_lazy_and_reports_truncation(videos, tmp_path):
    V.reset_decoded_frame_count()
    stream = V.iter_frames(videos["h264"], threads=1)
    first = next(stream)
    assert decode_index(first[None]) == [0]
    assert V.decoded_frame_count() <= 8  # the first frames, not the whole 70-frame file
    stream.close()
    data = videos["h264"].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(V.VideoDecodeError, match="cut.mp4"):
        list(V.iter_frames(tmp_path / "cut.mp4"))


def test_video_info_reads_count_size_and_rate_without_decoding(videos):
    V.reset_decoded_frame_count()
    meta = V.video_info(videos["h264"])
    assert (meta.num_frames, meta.height, meta.width) == (70, 64, 64) and meta.fps == pytest.approx(12)
    assert V.decoded_frame_count() == 0
    with pytest.raises(V.VideoDecodeError, match=r"no data \(0 bytes\)"):
        V.video_info(b"")


def test_video_writer_streams_pads_odd_sizes_and_checks_frame_sizes(tmp_path):
    frames = index_frames(6, 64, 80)
    with VideoWriter(tmp_path / "w.mp4", fps=29.97) as writer:
        for f in frames:
            writer.write(f)
    assert writer.count == 6 and decode_index(V.read_frames(tmp_path / "w.mp4", range(6))) == list(range(6))
    assert V.video_info(tmp_path / "w.mp4").fps == pytest.approx(29.97, rel=1e-3)
    assert write_video(tmp_path / "odd.mp4", (np.zeros((33, 65, 3), np.uint8) for _ in range(3)), 10) == 3
    assert V.read_frames(tmp_path / "odd.mp4", [0]).shape == (1, 34, 66, 3)
    with pytest.raises(ValueError, match="every frame must have the same size"):
        with VideoWriter(tmp_path / "bad.mp4") as writer:
            writer.write(frames[0])
            writer.write(frames[0][:32])


def test_inference_reader_resizes_and_keeps_the_original_size(videos, tmp_path):
    frames, info = read_video(videos["h264"], (32, 48))
    assert frames.shape == (70, 32, 48, 3) and (info.num_frames, info.height, info.width) == (70, 64, 64)
    assert info.fps == pytest.approx(12)
    assert len(list(iter_frames(videos["vp9"]))) == 20
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "a.mp4").write_bytes(videos["h264"].read_bytes())
    np.save(tmp_path / "in" / "b.npy", np.zeros((2, 64, 64, 3), np.uint8))
    (tmp_path / "in" / "notes.txt").write_text("not a video")
    assert [s for _, s in find_videos([tmp_path / "in"])] == ["b", "sub__a"]


def test_extract_over_a_folder_skips_and_lists_unreadable_files(videos, tmp_path, capsys):
    save_model(create("4ds-tiny", input_size=(4, 64, 64)), tmp_path / "model")
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a_good.mp4").write_bytes(videos["vp9"].read_bytes())
    (folder / "b_zero.mp4").write_bytes(b"")
    (folder / "c_text.mkv").write_text("hello " * 50)
    np.save(folder / "d_bad.npy", np.zeros((3, 4), np.float32))
    (folder / "e_good.webm").write_bytes(videos["vp9"].read_bytes())
    out = tmp_path / "feats"
    assert main(["extract", str(tmp_path / "model"), str(folder), "--out", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a_good.safetensors", "e_good.safetensors"]
    assert "3 of 5 videos could not be read and were skipped" in captured.err
    for name in ("b_zero.mp4", "c_text.mkv", "d_bad.npy"):
        assert name in captured.err
    from safetensors import safe_open

    with safe_open(str(out / "e_good.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["fourds"])
    assert meta["num_video_frames"] == 20 and meta["video_size"] == [64, 64]
