"""The dataset API: registry and errors, the shared clip index space, task protocols, the probe's training
windows (TrainDraws + sample), `fourds data check --dataset` and `fourds probe --data-root`."""

from __future__ import annotations

import pytest
import torch
from _dataset_fixtures import write_k700, write_movi_e, write_ssv2
from _video_fixtures import decode_index

from fourds.cli import main as cli
from fourds.data.datasets import DATASETS, TASK_PROTOCOLS, DatasetLayoutError, list_datasets, open_dataset, task_dataset
from fourds.data.datasets.base import ClipDataset
from fourds.seeding import derive_seed
from fourds.probe.data import TrainDraws


class Counting(ClipDataset):
    """Items of 10 + 5 i frames; a clip is its frame indices (no files)."""

    name = "counting"

    def __init__(self, n: int = 4, **kw) -> None:  # noqa: ANN003
        super().__init__(**kw)
        self.n = n

    def num_items(self) -> int:
        return self.n

    def item_id(self, item: int) -> str:
        return f"v{item}"

    def frame_count_uncached(self, item: int) -> int:
        return 10 + 5 * item

    def read(self, item, indices, size):  # noqa: ANN001, ANN201
        video = torch.zeros(len(indices), 4, 6, 3, dtype=torch.uint8)
        return {"video": video, "tracks": torch.tensor(indices, dtype=torch.float32).view(1, -1, 1).repeat(1, 1, 2)}, (4, 6)


def test_registry_names_and_errors(tmp_path):
    assert list_datasets() == ["ssv2", "k700", "re10k", "perception_test", "tapvid_davis", "tapvid_kinetics", "movi_e",
                               "waymo", "scannet"]
    assert all(issubclass(c, ClipDataset) for c in DATASETS.values())
    with pytest.raises(ValueError, match="unknown dataset 'kinetics'"):
        open_dataset("kinetics", tmp_path, "train")
    write_movi_e(tmp_path)
    with pytest.raises(ValueError, match="movi_e: .*unexpected keyword"):
        open_dataset("movi_e", tmp_path, "train", colour="red")
    for bad in ({"num_frames": 0}, {"stride": 0}, {"start": -1}, {"clips": 0}, {"size": (0, 3)}, {"window": (16,)}):
        with pytest.raises(ValueError):
            open_dataset("movi_e", tmp_path, "train", **bad)


def test_clip_index_spaces():
    assert [Counting(num_frames=4, stride=2).locate(i) for i in range(4)] == [(i, 0) for i in range(4)]
    center = Counting(num_frames=4, stride=2, start="center")  # span 7: (10 - 7) // 2 = 1, (15 - 7) // 2 = 4
    assert [center.locate(i)[1] for i in range(2)] == [1, 4]
    k = Counting(num_frames=4, stride=2, clips=3)
    assert len(k) == 12 and [s for item, s in k.index if item == 1] == [0, 4, 8]
    every = Counting(num_frames=4, stride=2, clips="all")  # starts 0, 7, ... while a full clip fits
    assert [s for item, s in every.index if item == 3] == [0, 7, 14]
    seeded = Counting(num_frames=4, stride=2, num_samples=10, seed=3)
    again = Counting(num_frames=4, stride=2, num_samples=10, seed=3)
    assert len(seeded) == 10 and [seeded.locate(i) for i in range(10)] == [again.locate(i) for i in range(10)]
    assert [seeded.locate(i)[0] for i in range(5)] == [0, 1, 2, 3, 0]
    whole = Counting(num_frames=None, stride=1)
    assert whole[2]["frame_indices"].tolist() == list(range(20))
    short = Counting(num_frames=8, stride=2)[0]  # 10 frames < span 15: the tail repeats the last frame
    assert short["frame_indices"].tolist() == [0, 2, 4, 6, 8, 9, 9, 9]
    assert Counting(num_frames=8, stride=2, short_policy="loop")[0]["frame_indices"].tolist()[5:] == [0, 2, 4]
    with pytest.raises(IndexError):
        Counting()[4]


def test_size_moves_targets_and_windows():
    s = Counting(num_frames=3, stride=1, size=(8, 12))[1]
    assert s["video"].shape == (3, 8, 12, 3) and s["tracks"][0, :, 0].tolist() == [0.0, 2.0, 4.0]  # x scaled by 12/6
    ds = Counting(num_frames=None, stride=1, window=(4, 3))
    w = ds.sample(3, torch.Generator().manual_seed(0))
    idx = w["frame_indices"].tolist()
    assert len(idx) == 4 and all(b - a == 3 for a, b in zip(idx, idx[1:])) and 0 <= idx[0] <= 25 - 10


def test_train_draws_use_the_dataset_window_with_a_separate_seed():
    ds = Counting(num_frames=4, stride=2)
    seen = []
    draws = TrainDraws(ds.__getitem__, [0, 1, 2, 3], lambda s, g: (seen.append(torch.rand((), generator=g).item()), s)[1], seed=7)
    a, b = draws[5], draws[5]
    assert a["frame_indices"].tolist() == b["frame_indices"].tolist()  # a pure function of (seed, draw)
    item = draws.index_of(5)
    g = torch.Generator().manual_seed(derive_seed(7, "probe-window", 5))
    assert a["frame_indices"].tolist() == ds.sample(item, g)["frame_indices"].tolist()
    # The augmentation stream is the one the probe always used: (seed, "probe-aug", draw).
    assert seen[0] == torch.rand((), generator=torch.Generator().manual_seed(derive_seed(7, "probe-aug", 5))).item()
    plain = TrainDraws(lambda i: {"i": i}, [0, 1], None, seed=0)  # no sample(): load(index) as before
    assert plain[0] == {"i": plain.index_of(0)}

    class OneArgSample:  # like SyntheticScenes.sample(index): not a window sampler
        def __getitem__(self, i):  # noqa: ANN001, ANN204
            return {"from": "getitem", "i": i}

        def sample(self, i):  # noqa: ANN001, ANN201
            return {"from": "sample"}

    assert TrainDraws(OneArgSample().__getitem__, [0, 1], None, seed=0)[3]["from"] == "getitem"
    starts = {draws[n]["frame_indices"][0].item() for n in range(3, 60, 4) if draws.index_of(n) == 3}
    assert len(starts) > 1  # random windows over the 25-frame item


def test_task_protocols_map_splits(tmp_path):
    write_ssv2(tmp_path / "ssv2", frames=6)
    for split in ("validation", "val", "eval", "test"):
        assert task_dataset("ssv2", split, tmp_path).split == "validation"  # the labelled evaluation split
    tr = task_dataset("ssv2", "train", tmp_path / "ssv2")
    # Samples hold the 31 native frames of one 16 x 2 clip (the task takes every 2nd); frames="clip" the 16.
    assert (tr.num_frames, tr.stride, tr.start, tr.protocol_clip) == (31, 1, "center", (16, 2)) and hasattr(tr, "sample")
    clip = task_dataset("ssv2", "train", tmp_path / "ssv2", frames="clip")
    assert (clip.num_frames, clip.stride) == (16, 2) and "frame_indices" not in clip[0]
    with pytest.raises(DatasetLayoutError, match="--data-root"):
        task_dataset("ssv2", "train", None)
    with pytest.raises(ValueError, match="no real-data protocol"):
        task_dataset("synth_depth", "train", tmp_path)
    with pytest.raises(ValueError, match="split 'dev'"):
        task_dataset("ssv2", "dev", tmp_path)
    assert set(TASK_PROTOCOLS) == {"ssv2", "k700", "re10k", "perception_test", "waymo", "scannet"}
    write_movi_e(tmp_path / "kubric")
    assert task_dataset("perception_test", "train", tmp_path, movi_e_root=tmp_path / "kubric").root == tmp_path / "kubric"


def test_data_check_cli_counts_missing_coverage_and_bad_files(tmp_path, capsys):
    root = tmp_path / "k700"
    write_k700(root)
    assert cli(["data", "check", str(root), "--dataset", "k700"]) == 0
    out = capsys.readouterr().out
    assert "train: 3 items, 3 of 3 checked read (72 frames), 1 listed but missing" in out
    assert "missing0000_000001_000011" in out and "labels: 3 of 3 classes have items" in out
    assert "val: 1 items" in out and "none for: abseiling, air drumming" in out
    assert cli(["data", "check", str(root), "--dataset", "k700", "--strict", "--split", "train"]) == 1
    bad = next((root / "val").glob("*.mp4"))
    bad.write_bytes(bad.read_bytes()[: 300])
    assert cli(["data", "check", str(root), "--dataset", "k700", "--split", "val"]) == 1
    assert "unreadable:" in capsys.readouterr().out
    assert cli(["data", "check", str(tmp_path / "none"), "--dataset", "ssv2"]) == 1
    assert "Expected layout" in capsys.readouterr().out


def test_probe_cli_passes_data_root(tmp_path, monkeypatch):
    import fourds.probe.protocol as probe

    got = {}

    def fake_run(cfg, **kwargs):  # noqa: ANN001, ANN003, ANN202
        got["cfg"] = cfg
        return {"primary_metric": "m", "configs": [], "chosen": None}

    monkeypatch.setattr(probe, "run_probe", fake_run)
    assert cli(["probe", "--task", "ssv2", "--data-root", str(tmp_path), "--data-kwargs", "size=128",
                "--out", str(tmp_path / "run")]) == 0
    assert got["cfg"].data_kwargs == {"size": 128, "data_root": str(tmp_path)}
    assert cli(["probe", "--task", "ssv2", "--data-root", str(tmp_path / "missing")]) == 1


def test_task_samples_are_native_spans_of_one_protocol_clip(tmp_path):
    """Through task_dataset + TrainDraws on a real reader: a training draw is 31 consecutive frames whose
    every 2nd frame (what the task's window at stride 2 takes) is the 16 x 2 clip, exactly."""
    write_ssv2(tmp_path, frames=40)
    ds = task_dataset("ssv2", "train", tmp_path)
    draws = TrainDraws(ds.__getitem__, list(range(len(ds))), None, seed=0)
    s = draws[0]
    codes = decode_index(s["video"])
    assert len(codes) == 31 and codes[0] // 100 == int(s["id"]) and codes == list(range(codes[0], codes[0] + 31))
    assert "frame_indices" not in s and "track_ids" not in s
    strided = task_dataset("ssv2", "validation", tmp_path, frames="clip")[0]
    span = task_dataset("ssv2", "validation", tmp_path)[0]
    assert span["video"].shape[0] == 31 and torch.equal(span["video"][::2], strided["video"])
