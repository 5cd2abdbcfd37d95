"""Sources (folder, manifest, shards), the skip-bad-videos policy, rank x worker splits, the data CLI."""

from __future__ import annotations

import json

import pytest
import torch
from _video_fixtures import decode_index, write_index_video
from torch.utils.data import DataLoader

from fourds.cli import main as cli
from fourds.data.pretrain import ClipSpec, PretrainClips, StepBatchSampler, make_loader
from fourds.data.shards import ShardList, ShardStream, scan_shard, split_shards, write_shards
from fourds.data.sources import DecodeFailures, FileList, FileVideos, open_collection


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """8 good videos (video i encodes 100*i + k in frame k), nested, mixed codecs, plus non-videos."""
    root = tmp_path_factory.mktemp("folder")
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(8):
        sub = ["", "sub/", "sub/deeper/"][i % 3]
        codec, ext = ("libvpx-vp9", "webm") if i % 4 == 3 else ("libx264", "mp4")
        from _video_fixtures import index_frames

        from fourds.data.video import write_video

        write_video(root / f"{sub}v{i}.{ext}", index_frames(12 + i, offset=100 * i), codec=codec, bframes=2 if codec == "libx264" else None)
    (root / "readme.txt").write_text("not a video")
    return root


def _offset(frames) -> int:
    return decode_index(frames[:1])[0] // 100


def test_folder_is_recursive_sorted_and_by_extension(folder):
    coll = FileList.from_folder(folder)
    assert len(coll) == 8
    keys = [coll.entry(i).key for i in range(8)]
    assert keys == sorted(keys) and "sub/deeper/v2.mp4" in keys and not any(k.endswith(".txt") for k in keys)


def test_manifest_csv_and_jsonl_with_labels(folder, tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,caption\n" + "".join(f"{folder}/v{i}.{'webm' if i == 3 else 'mp4'},{i},clip {i}\n" for i in (0, 3)))
    coll = open_collection(csv)
    assert len(coll) == 2 and coll.entry(1).labels == {"label": 3, "caption": "clip 3"}
    jsonl = folder / "sub" / "m.jsonl"  # relative paths are relative to the manifest
    jsonl.write_text(json.dumps({"path": "v1.mp4", "id": "a", "label": 1}) + "\n\n")
    coll = open_collection(jsonl)
    assert coll.entry(0).key == "a" and decode_index(FileVideos(coll).clip(0, 2, 1, torch.Generator()))[0] // 100 == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.mp4,1\n")
    with pytest.raises(ValueError, match="'path' column"):
        open_collection(bad)


def test_missing_or_empty_sources_fail_at_start_up(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_collection(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no video files under"):
        open_collection(tmp_path / "empty")
    wrong_base = tmp_path / "m.jsonl"
    wrong_base.write_text(json.dumps({"path": "elsewhere/v.mp4"}) + "\n")
    with pytest.raises(FileNotFoundError, match="first video"):
        open_collection(wrong_base)
    with pytest.raises(FileNotFoundError, match="shard"):
        open_collection(str(tmp_path / "s-{000..001}.tar"))


def test_shards_round_trip_index_equals_scan_and_stream(folder, tmp_path):
    result = write_shards(FileList.from_folder(folder), tmp_path / "shards", shard_size=3, progress=False)
    assert result["samples"] == 8 and len(result["shards"]) == 3 and not result["skipped"]
    indexed = ShardList.open(str(tmp_path / "shards"))  # offsets from index.json
    scanned = ShardList(result["shards"], [scan_shard(s) for s in result["shards"]], "scan")
    for i in range(8):
        assert indexed.source(i) == scanned.source(i)
        assert indexed.entry(i).labels == scanned.entry(i).labels
    sources = sorted(indexed.entry(i).labels["source"] for i in range(8))
    assert sources == sorted(FileList.from_folder(folder).entry(i).key for i in range(8))
    # bytes decode to the right video
    src_key = indexed.entry(5).labels["source"]
    assert decode_index(FileVideos(indexed).clip(0, 1, 1, torch.Generator()))  # decodes
    assert indexed.source(5) == (folder / src_key).read_bytes()
    brace = ShardList.open(str(tmp_path / "shards" / "shard-{000000..000002}.tar"))
    assert len(brace) == 8
    streamed = [r["key"] for r in ShardStream(str(tmp_path / "shards"))]
    assert streamed == [indexed.entry(i).key for i in range(8)]


def test_two_ranks_two_workers_see_every_sample_once(folder, tmp_path):
    shards = write_shards(FileList.from_folder(folder), tmp_path / "s", shard_size=2, progress=False)["shards"]
    # streaming: shard-level split over 2 ranks x 2 DataLoader workers
    seen = []
    for rank in range(2):
        loader = DataLoader(ShardStream(str(tmp_path / "s"), rank=rank, world_size=2), batch_size=None, num_workers=2)
        seen += [r["key"] for r in loader]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 8
    assert sorted(sum((split_shards(shards, r, 2, w, 2) for r in range(2) for w in range(2)), [])) == sorted(shards)
    # random access (pretraining): one epoch = 8 sample ids over 2 ranks x 2 workers, each video once
    source = FileVideos(ShardList.open(str(tmp_path / "s")), seed=3)
    ds = PretrainClips(source, ClipSpec(num_frames=2, frame_stride=1, image_size=32, flip=False), seed=3)
    keys = []
    for rank in range(2):
        sampler = StepBatchSampler(0, 2, global_batch=4, rank=rank, world_size=2)
        for batch in make_loader(ds, sampler, num_workers=2):
            keys += batch["key"]
    assert len(keys) == 8 and len(set(keys)) == 8


def test_bad_videos_are_skipped_counted_and_named_once(folder, tmp_path, caplog):
    root = tmp_path / "mixed"
    root.mkdir()
    for i in range(6):
        (root / f"good{i}.mp4").write_bytes((folder / f"v{3 * (i % 2)}.{'webm' if i % 2 else 'mp4'}").read_bytes())
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mkv").write_text("hello " * 100)
    data = (folder / "v0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    source = FileVideos(FileList.from_folder(root), seed=1)
    spec = ClipSpec(num_frames=4, frame_stride=2, image_size=32, flip=False)
    ds = PretrainClips(source, spec)
    monitor = DecodeFailures(len(source), max_fraction=0.5)
    out = [ds[n] for n in range(18)]  # two epochs
    assert all(o["video"].shape == (4, 32, 32, 3) and o["video"].dtype == torch.uint8 for o in out)
    assert all(o["key"].startswith("good") for o in out)
    for o in out:
        monitor.update([x for x in o["failed"].split("\n") if x])
    assert set(monitor.bad) == {"zero.mp4", "text.mkv", "truncated.mp4"}
    assert monitor.skips >= 6  # each bad file at least once per epoch (more when bad ones are adjacent)
    named = [r.message for r in caplog.records if "skipping unreadable video" in r.message]
    assert len(named) == 3  # named once each
    assert monitor.scalars() == {"data/skipped_samples": float(monitor.skips), "data/bad_videos": 3.0,
                                 "data/failed_fraction": monitor.skips / (monitor.skips + 18)}
    # the same ids give the same clips (deterministic skip), and a strict threshold stops with a clear error
    assert torch.equal(ds[5]["video"], out[5]["video"])
    strict = DecodeFailures(len(source), max_fraction=0.01, min_failures=3)
    with pytest.raises(RuntimeError, match=r"decode attempts failed .*--max-decode-failures 0.01.*fourds data check"):
        for o in out:
            strict.update([x for x in o["failed"].split("\n") if x])


def test_decode_failure_fraction_is_over_samples_drawn_with_a_minimum_count():
    # One bad file among 200, met once per epoch: 1 failed attempt in 201 (0.5 %) never stops the run.
    monitor = DecodeFailures(200, max_fraction=0.01)
    for epoch in range(20):
        monitor.update(["bad.mp4: corrupt"], samples=1)
        monitor.update([], samples=199)
    assert (monitor.skips, monitor.attempts) == (20, 4020) and set(monitor.bad) == {"bad.mp4"}
    # One bad file among 50 is 2 % of the samples: not on its first encounter (a minimum of 10 failures),
    # but at the tenth, 10 of 460 + 1 attempts.
    small = DecodeFailures(50, max_fraction=0.01)
    for epoch in range(9):
        small.update(["bad.mp4: corrupt"], samples=1)
        small.update([], samples=49)
    with pytest.raises(RuntimeError, match=r"10 of 461 video decode attempts failed \(2.2% > --max-decode-failures"):
        small.update(["bad.mp4: corrupt"], samples=1)
    # 10 % of attempts failing trips the rule as soon as the minimum count is reached, not before.
    failing = DecodeFailures(50, max_fraction=0.05, min_failures=10)
    for n in range(9):
        failing.update([f"b{n}.mp4: corrupt"], samples=9)
    with pytest.raises(RuntimeError, match=r"10 of 100 video decode attempts failed \(10.0% > --max-decode-failures 0.05"):
        failing.update(["b9.mp4: corrupt"], samples=9)
    # Several ranks: records are committed through the all-reduce (here: two identical ranks), and the
    # counts survive a checkpoint round trip.
    ranks = DecodeFailures(50, max_fraction=0.5)
    ranks.update(["x.mp4: bad"], samples=3, check=False)
    ranks.commit(lambda counts: [2 * c for c in counts])
    assert (ranks.skips, ranks.attempts) == (2, 8)
    restored = DecodeFailures(50)
    restored.load_state_dict(ranks.state_dict())
    assert (restored.skips, restored.attempts, restored.bad) == (2, 8, {"x.mp4": "bad"})


def test_short_videos_repeat_their_last_frame(folder):
    source = FileVideos(FileList.from_folder(folder), seed=0)
    for n in range(8):
        frames = source.clip(n, 8, 3, torch.Generator().manual_seed(n))  # span 22 > 12..19 frames
        idx = [k % 100 for k in decode_index(frames)]
        assert idx[0] == 0 and idx == sorted(idx) and len(set(idx[-2:])) == 1


def test_data_cli_shard_and_check(folder, tmp_path, capsys):
    assert cli(["data", "shard", str(folder), str(tmp_path / "out"), "--shard-size", "5"]) == 0
    assert "wrote 8 videos into 2 shards" in capsys.readouterr().out
    assert cli(["data", "check", str(tmp_path / "out")]) == 0
    assert "8 of 8 videos decode" in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mp4").write_bytes((folder / "v0.mp4").read_bytes())
    (bad / "b.mp4").write_bytes(b"\x00" * 1000)
    assert cli(["data", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 videos decode" in out and "b.mp4" in out
    assert cli(["data", "check", str(tmp_path / "missing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
