"""Decoding: exact presentation-order frames (B-frames, VFR, several codecs), sources, failures, cost."""

from __future__ import annotations

import io

import pytest
import torch
from _video_fixtures import decode_index, index_frames, write_index_video

from fourds.data import video as V


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {
        "h264": write_index_video(root / "h264_b.mp4", 120, "libx264", keyint=16, bframes=3),
        "vp9": write_index_video(root / "vp9.webm", 60, "libvpx-vp9", keyint=16),
        "mpeg4": write_index_video(root / "mpeg4_b.mp4", 60, "mpeg4", keyint=12, bframes=2),
        "vfr": write_index_video(
            root / "vfr.mkv", 40, "libx264", bframes=2, keyint=8, fps=30,
            # irregular gaps (1..4 ticks of 1/120 s): timestamps are not k / fps
            pts=[sum(1 + (i * 7) % 4 for i in range(k)) for k in range(40)], time_base=(1, 120),
        ),
    }


def _has_reordering(path) -> bool:
    import av

    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
    return pts != sorted(pts)


@pytest.mark.parametrize("name", ["h264", "vp9", "mpeg4", "vfr"])
def test_strided_clip_has_exact_frame_indices(videos, name):
    path = videos[name]
    n = V.num_frames(path)
    assert n == {"h264": 120, "vp9": 60, "mpeg4": 60, "vfr": 40}[name]
    for start, count, stride in [(0, 16, 2), (3, 8, 3), (n - 16, 16, 1), (5, 1, 1)]:
        clip = V.read_clip(path, start, count, stride)
        assert clip.shape == (count, 64, 64, 3) and clip.dtype == torch.uint8
        assert decode_index(clip) == list(range(start, start + count * stride, stride))


def test_fixtures_really_have_b_frames(videos):
    # Presentation order differs from decode order: the index must not be the decode order.
    assert _has_reordering(videos["h264"]) and _has_reordering(videos["mpeg4"]) and _has_reordering(videos["vfr"])


def test_bytes_and_file_object_sources(videos):
    data = videos["h264"].read_bytes()
    want = list(range(30, 46, 2))
    assert decode_index(V.read_clip(data, 30, 8, 2)) == want
    assert decode_index(V.read_clip(memoryview(data), 30, 8, 2)) == want
    f = io.BytesIO(data)
    assert V.num_frames(f) == 120
    with open(videos["vp9"], "rb") as fh:
        assert decode_index(V.read_clip(fh, 10, 4, 5)) == [10, 15, 20, 25]


def test_values_match_the_encoded_frames(videos):
    clip = V.read_clip(videos["h264"], 0, 4, 1).float()
    ref = torch.from_numpy(index_frames(4)).float()
    assert (clip - ref).abs().mean() < 4.0  # lossy, but the same picture


def test_read_frames_any_order_and_resize(videos):
    frames = V.read_frames(videos["h264"], [50, 3, 50, 119])
    assert decode_index(frames) == [50, 3, 50, 119]
    small = V.read_frames(videos["h264"], [0, 1], size=(32, 48))
    assert small.shape == (2, 32, 48, 3)


def test_clip_near_the_end_decodes_at_most_keyint_plus_span(tmp_path):
    keyint, n = 16, 300
    path = write_index_video(tmp_path / "long.mp4", n, "libx264", keyint=keyint, bframes=3)
    V.num_frames(path)  # builds the (cached) index; demuxing decodes nothing
    V.reset_decoded_frame_count()
    start, count, stride = n - 31, 16, 2
    clip = V.read_clip(path, start, count, stride)
    assert decode_index(clip) == list(range(start, n, 2))
    span = (count - 1) * stride + 1
    assert V.decoded_frame_count() <= keyint + span, V.decoded_frame_count()


def test_clip_past_the_end_names_file_and_frame(videos):
    with pytest.raises(V.VideoDecodeError, match=r"h264_b\.mp4, frame 120: .*has 120 frames") as info:
        V.read_clip(videos["h264"], 100, 16, 2)
    assert info.value.frame == 120 and info.value.source.endswith("h264_b.mp4")


def test_corrupt_sources_raise_video_decode_error(videos, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    data = videos["h264"].read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    for bad, pattern in [
        (empty, "empty.mp4: the file is empty"),
        (text, "notes.mp4: not a readable video"),
        (truncated, "truncated.mp4"),
        (tmp_path / "missing.mp4", "missing.mp4: no such file"),
        (b"", "no data"),
    ]:
        with pytest.raises(V.VideoDecodeError, match=pattern):
            V.read_clip(bad, 0, 16, 2)
    # A Matroska file cut in the middle opens (its header is at the front) but is refused as truncated.
    mkv = write_index_video(tmp_path / "cut.mkv", 120, "libx264", keyint=16, bframes=3).read_bytes()
    for frac in (0.5, 0.9):
        with pytest.raises(V.VideoDecodeError, match="truncated"):
            V.read_clip(mkv[: int(len(mkv) * frac)], 0, 4, 1)
    # Damage inside the stream: bytes in the middle of the file overwritten with garbage. Either the
    # damage is caught (VideoDecodeError) or the frames are still the right ones: never wrong frames.
    damaged = bytearray(data)
    mid = len(data) // 2
    damaged[mid: mid + 2000] = bytes(range(256)) * 7 + bytes(208)
    try:
        clip = V.read_clip(bytes(damaged), 0, 60, 2)
    except V.VideoDecodeError:
        pass
    else:
        assert clip.shape == (60, 64, 64, 3)


def test_backend_setting(monkeypatch, videos):
    with pytest.raises(ValueError, match="choose one of"):
        V.set_backend("decord")
    monkeypatch.setenv(V.BACKEND_ENV, "torchcodec")
    assert V.get_backend() == "torchcodec"
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="torchcodec is not installed"):
            V.read_clip(videos["h264"], 0, 2, 1)
    monkeypatch.delenv(V.BACKEND_ENV)
    assert V.get_backend() == "pyav"


def test_write_video_validates_input(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \(T, H, W, 3\)"):
        V.write_video(tmp_path / "x.mp4", torch.zeros(2, 8, 8, 3))


def test_indices_chosen_from_the_length_in_one_read(videos):
    data = videos["vp9"].read_bytes()
    frames = V.read_frames(data, lambda n: [n - 1, 0])
    assert decode_index(frames) == [59, 0]


def test_short_side_resize_and_verify(videos, tmp_path):
    wide = write_index_video(tmp_path / "wide.mp4", 6, "libx264", size=(64, 96))
    clip = V.read_clip(wide, 0, 3, 2, short_side=32)
    assert clip.shape == (3, 32, 48, 3)
    assert V.verify(videos["h264"]) == 120 and V.verify(videos["vfr"].read_bytes()) == 40
    with pytest.raises(V.VideoDecodeError):
        V.verify(b"garbage" * 100)
