"""SSv2 (VP9 WebM + JSON lists) and Kinetics-700-2020 (CSV + H.264 clips in any folder layout) readers."""

from __future__ import annotations

import json

import pytest
import torch
from _dataset_fixtures import K700_ROWS, write_k700, write_ssv2
from _video_fixtures import decode_index

from fourds.data.datasets import DatasetLayoutError, open_dataset, task_dataset
from fourds.data.datasets.kinetics import clip_name, parse_clip_name
from fourds.data.datasets.ssv2 import template_to_class


@pytest.fixture(scope="module")
def ssv2_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssv2")
    write_ssv2(root)
    return root


@pytest.fixture(scope="module")
def k700_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("k700")
    write_k700(root)
    return root


# ------------------------------------------------------------------------------------------ SSv2
def test_ssv2_labels_from_string_indices_and_templates(ssv2_root):
    ds = open_dataset("ssv2", ssv2_root, "train", num_frames=8)
    assert ds.ids == ["1", "2", "5"] and ds.missing == ["9"]  # listed but not downloaded: reported, left out
    labels = {ds[i]["id"]: int(ds[i]["label"]) for i in range(len(ds))}
    # "Putting [something] into [something]" -> "Putting something into something" = "2" (a string in labels.json);
    # "moving [something] ..." differs in case from the class name and still matches it.
    assert labels == {"1": 0, "2": 2, "5": 1}
    assert ds[0]["label"].dtype == torch.int64 and ds[0]["label"].ndim == 0
    assert ds.num_classes == 3 and template_to_class("Putting [something] into [something]") == "Putting something into something"


def test_ssv2_exact_frames_stride_start_center_and_size(ssv2_root):
    ds = open_dataset("ssv2", ssv2_root, "train", num_frames=8)  # protocol stride 2
    s = ds[1]  # video 2: frame k shows 200 + k
    assert decode_index(s["video"]) == [200 + 2 * k for k in range(8)] and s["frame_indices"].tolist() == list(range(0, 16, 2))
    assert s["video"].dtype == torch.uint8 and s["video"].shape == (8, 64, 80, 3)
    assert decode_index(open_dataset("ssv2", ssv2_root, "train", num_frames=4, stride=3, start=5)[1]["video"]) == [205, 208, 211, 214]
    # 20 frames, span 15: the centred clip starts at 2; a start past the last full window is clamped to it.
    assert decode_index(open_dataset("ssv2", ssv2_root, "train", num_frames=8, start="center")[0]["video"])[0] == 102
    assert decode_index(open_dataset("ssv2", ssv2_root, "train", num_frames=8, start=50)[0]["video"])[0] == 105
    # Shorter than a clip: the tail repeats the last frame (never a crash, never a short clip).
    long = open_dataset("ssv2", ssv2_root, "train", num_frames=16)[0]
    assert decode_index(long["video"]) == [100 + 2 * k for k in range(10)] + [119] * 6
    small = open_dataset("ssv2", ssv2_root, "validation", num_frames=4, size=32)[0]
    assert small["video"].shape == (4, 32, 40, 3) and small["id"] == "3" and int(small["label"]) == 1


def test_ssv2_test_split_and_labels_folder_layout(tmp_path, ssv2_root):
    test = open_dataset("ssv2", ssv2_root, "test", num_frames=2)
    assert len(test) == 1 and int(test[0]["label"]) == -1 and test[0]["template"] == ""
    root = tmp_path / "alt"
    write_ssv2(root, frames=6, label_dir=True)  # labels/{labels,train,validation,test}.json
    assert len(open_dataset("ssv2", root, "val", num_frames=2)) == 1


def test_ssv2_errors_name_the_problem(tmp_path, ssv2_root):
    with pytest.raises(DatasetLayoutError, match="20bn-something-something-v2"):
        open_dataset("ssv2", tmp_path / "nowhere", "train")
    with pytest.raises(DatasetLayoutError, match="missing at|videos of the train list"):
        open_dataset("ssv2", ssv2_root, "train", missing="error")
    bad = tmp_path / "bad"
    write_ssv2(bad, frames=4)
    (bad / "something-something-v2-train.json").write_text(json.dumps([{"id": "1", "template": "Juggling [something]"}]))
    with pytest.raises(ValueError, match="Juggling"):
        open_dataset("ssv2", bad, "train")
    with pytest.raises(ValueError, match="split 'dev'"):
        open_dataset("ssv2", ssv2_root, "dev")


# ------------------------------------------------------------------------------------------ K700
def test_k700_names_parsed_from_the_right():
    assert parse_clip_name("-a_b-c_d_e1_000010_000020") == ("-a_b-c_d_e1", 10, 20)
    assert parse_clip_name(clip_name("x_y_z-00000", 0, 10)) == ("x_y_z-00000", 0, 10)
    assert parse_clip_name("holiday_video") is None and parse_clip_name("a_b_c") is None


def test_k700_labels_from_csv_any_folder_layout_and_missing(k700_root):
    ds = open_dataset("k700", k700_root, "train", num_frames=4)
    assert ds.class_names == ["abseiling", "air drumming", "zumba"]  # sorted training labels
    got = {ds[i]["id"]: (int(ds[i]["label"]), ds[i]["label_name"], decode_index(ds[i]["video"])[0]) for i in range(len(ds))}
    # "-a_b-c_d_e1" sits in a folder named "wrong_class_name": the label still comes from the CSV.
    assert got == {"-a_b-c_d_e1_000010_000020": (1, "air drumming", 100), "x_y_z-00000_000000_000010": (2, "zumba", 200),
                   "plainid0001_000005_000015": (0, "abseiling", 300)}
    assert ds.missing == [clip_name(*K700_ROWS[3][1:])] and ds.listed == 4


def test_k700_exact_frames_with_bframes_and_splits(k700_root):
    ds = open_dataset("k700", k700_root, "train", num_frames=5, start=3)
    assert decode_index(ds[2]["video"]) == [303, 305, 307, 309, 311]
    val = open_dataset("k700", k700_root, "validation", num_frames=None, stride=1)  # whole clip
    assert decode_index(val[0]["video"]) == list(range(900, 924)) and int(val[0]["label"]) == 2
    test = open_dataset("k700", k700_root, "test", num_frames=2)
    assert int(test[0]["label"]) == -1


def test_k700_task_protocol_whole_clips_and_training_windows(k700_root):
    ev = task_dataset("k700", "test", k700_root, size=None)  # "test" = the labelled evaluation split (val)
    assert ev.split == "val" and ev[0]["video"].shape[0] == 24 and decode_index(ev[0]["video"])[:3] == [900, 901, 902]
    tr = task_dataset("k700", "train", k700_root, size=None)
    assert tr[0]["video"].shape[0] == 24  # __getitem__: the whole clip (evaluation-style sample)
    w1 = tr.sample(0, torch.Generator().manual_seed(3))
    w2 = tr.sample(0, torch.Generator().manual_seed(3))
    codes = decode_index(w1["video"])  # the 31 native frames of a 16 x 2 window (24 + repeats: a short clip)
    assert len(codes) == 31 and codes == decode_index(w2["video"]) and codes[:24] == list(range(100, 124))
    clip = task_dataset("k700", "train", k700_root, size=None, num_frames=4, frames="clip")
    assert decode_index(clip[0]["video"]) == [100, 102, 104, 106]


def test_k700_missing_csv_is_a_layout_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetLayoutError, match="annotations/train.csv"):
        open_dataset("k700", tmp_path, "train")
