"""The pretraining loop on files: a resumed run sees exactly the sample sequence of an uninterrupted
one, without decoding the samples it skips; skip counts are logged and survive the resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _video_fixtures import index_frames

from fourds.data.sources import FileList, FileVideos
from fourds.data.video import write_video
from fourds.train import PretrainConfig, pretrain


class Recording(FileVideos):
    """Records every sample id the loop asks for and the video each one got."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, str]] = []

    def clip_with_info(self, sample_id, num_frames, stride, generator):
        frames, info = super().clip_with_info(sample_id, num_frames, stride, generator)
        self.seen.append((int(sample_id), info["key"]))
        return frames, info


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_videos")
    for i in range(5):
        write_video(root / f"v{i}.mp4", index_frames(10, 64, 80, offset=20 * i), bframes=2)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    return root


def _cfg(tmp_path, name, **kw):
    base = dict(model="4ds-tiny", out=str(tmp_path / name), num_frames=4, frame_stride=2, image_size=32,
                batch_size=2, steps=6, warmup_steps=1, save_every=3, log_every=1, max_decode_failures=0.5)
    return PretrainConfig(**{**base, **kw})


def test_resume_continues_the_exact_sample_sequence_without_decoding_the_past(folder, tmp_path):
    whole = Recording(FileList.from_folder(folder), seed=0, decode_short_side=37)
    pretrain(_cfg(tmp_path, "whole"), source=whole)

    first = Recording(FileList.from_folder(folder), seed=0, decode_short_side=37)
    pretrain(_cfg(tmp_path, "cut", steps=3), source=first)  # "interrupted" after step 3 (checkpointed)
    second = Recording(FileList.from_folder(folder), seed=0, decode_short_side=37)
    pretrain(_cfg(tmp_path, "cut", steps=6, resume=True), source=second)

    assert [s for s, _ in whole.seen] == list(range(12))
    assert first.seen + second.seen == whole.seen  # same ids, same videos, same order
    assert min(s for s, _ in second.seen) == 6  # the resumed run never asked for (decoded) earlier samples

    state = torch.load(Path(tmp_path / "cut" / "checkpoints" / "step_00000006" / "train_state.pt"), weights_only=True)
    assert state["data"]["next_sample"] == 12 and state["data"]["num_videos"] == 6
    assert state["data"]["failures"]["bad"].keys() == {"broken.mp4"}
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["data/bad_videos"] == 1.0 and rows[-1]["data/skipped_samples"] >= 2


def test_too_many_bad_videos_stop_the_run_with_the_setting_named(folder, tmp_path):
    mostly_bad = tmp_path / "mostly_bad"
    mostly_bad.mkdir()
    for name in ("v0.mp4", "v1.mp4"):
        (mostly_bad / name).write_bytes((folder / name).read_bytes())
    for i in range(12):
        (mostly_bad / f"broken{i:02d}.mp4").write_bytes((folder / "broken.mp4").read_bytes())
    with pytest.raises(RuntimeError, match=r"decode attempts failed .*--max-decode-failures 0.01"):
        pretrain(_cfg(tmp_path, "strict", max_decode_failures=0.01, data=str(mostly_bad)))
    # One bad file in six is skipped, not fatal, however strict the fraction: fewer than 10 failures.
    pretrain(_cfg(tmp_path, "one_bad", max_decode_failures=0.01, data=str(folder), steps=2))


def test_cli_pretrain_accepts_a_folder_and_a_missing_path_fails_early(folder, tmp_path, capsys):
    from fourds.cli import main

    args = ["pretrain", "--model", "4ds-tiny", "--num-frames", "4", "--image-size", "32", "--batch-size", "2",
            "--steps", "2", "--warmup-steps", "1", "--max-decode-failures", "0.5"]
    assert main([*args, "--data", str(folder), "--out", str(tmp_path / "cli")]) == 0
    assert main([*args, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "cli2")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
