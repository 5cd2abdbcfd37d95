"""The fuzz campaign (scripts/fuzz.py) at small N, and the clean-error rules it enforces.

Every kind of file fourds reads is damaged (truncated, bytes flipped, its header broken, emptied, or
replaced by a PNG / HTML page / pickle / torch.save zip / random bytes) and the command a user would run
on it must succeed or stop with one short error that names the file, without a traceback and without
writing over anything. The large run (500 cases) is in docs/reliability.md.
"""

from __future__ import annotations

import errno
import importlib.util
import pickle
import struct
import sys
from pathlib import Path

import pytest

from fourds.cli import error_message, main
from fourds.textfiles import looks_like, read_json, read_text

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fourds_fuzz", ROOT / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fourds_fuzz"] = fuzz
_spec.loader.exec_module(fuzz)

SEED = 0
PER_KIND = 6  # cases per kind of file in CI (the script's default run is 100, the documented one 500)
FAST = tuple(k for k in fuzz.KINDS if k.ranks == 1)  # two-rank DCP cases take ~20 s each: slow test only


KNOWN: set[tuple[str, str, str]] = set()  # every failure is unexpected (read_config now names the file)


def _unexpected(results: list) -> list[str]:
    return [f"{r.kind} {r.file} {r.damage} ({r.detail}): {r.outcome}: {r.summary}  replay: {_replay(r.case)}"
            for r in results if r.outcome in fuzz.FAILURES and (r.kind, r.file, r.outcome) not in KNOWN]


def _fast_cases(n: int) -> list[int]:
    """The first cases of the campaign's own numbering (so the replay command is the script's) whose
    kind runs in-process."""
    return [c for c in range(n) if fuzz.KINDS[c % len(fuzz.KINDS)].ranks == 1]


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "templates"
    fuzz.build_templates(root, FAST)
    return root


def _replay(case: int) -> str:
    return f"python scripts/fuzz.py --seed {SEED} --case {case} --show"


def test_campaign_every_kind_succeeds_or_fails_cleanly(templates, tmp_path):
    results = [fuzz.run_case(SEED, case, templates, tmp_path, timeout=120)
               for case in _fast_cases(PER_KIND * len(fuzz.KINDS))]
    failures = _unexpected(results)
    assert not failures, "\n".join(failures)
    outcomes = {r.outcome for r in results}
    assert "clean_error" in outcomes and "success" in outcomes  # both paths are exercised
    assert {r.kind for r in results} == {k.name for k in FAST}
    assert len({r.damage for r in results}) >= 7  # most kinds of damage are drawn at this N


def test_real_processes_print_no_traceback(templates, tmp_path):
    """A few cases as the user runs them: `python -m fourds ...` in its own process."""
    names = [k.name for k in fuzz.KINDS]
    cases = [names.index("npz"), names.index("manifest"), names.index("tapvid_davis")]
    for case in cases:
        r = fuzz.run_case(SEED, case, templates, tmp_path, subprocess_mode=True, timeout=120)
        assert r.outcome in ("clean_error", "success"), (r.outcome, r.summary, _replay(case))
        assert "Traceback" not in r.output
        if r.rc:  # one short paragraph: the CLI's error line, or data check's report
            assert len(r.output) <= 2 * fuzz.MAX_CHARS and len(r.output.strip().splitlines()) <= 5, r.output


def test_a_case_is_replayable_from_its_seed(templates, tmp_path):
    case = next(c for c in _fast_cases(200) if fuzz.plan(SEED, c, fuzz.KINDS)[2] == "flip")
    first = fuzz.run_case(SEED, case, templates, tmp_path / "a", keep=True)
    again = fuzz.run_case(SEED, case, templates, tmp_path / "b", keep=True)
    other = fuzz.run_case(SEED + 1, case, templates, tmp_path / "c", keep=True)
    read = lambda root, r: (root / f"case_{case:05d}_{r.kind}" / r.file).read_bytes()
    assert (first.kind, first.file, first.detail, first.outcome) == (again.kind, again.file, again.detail, again.outcome)
    assert read(tmp_path / "a", first) == read(tmp_path / "b", again)
    assert (other.file, other.damage, other.detail) != (first.file, first.damage, first.detail)


@pytest.mark.slow
def test_two_rank_dcp_checkpoints(tmp_path):
    """Damaged DCP shards / training state of an FSDP run resumed under torch.distributed.run (2 CPU ranks)."""
    dcp = tuple(k for k in fuzz.KINDS if k.ranks > 1)
    fuzz.build_templates(tmp_path / "templates", dcp)
    cases = [c for c in range(8 * len(fuzz.KINDS)) if fuzz.KINDS[c % len(fuzz.KINDS)].ranks > 1][:4]
    results = [fuzz.run_case(SEED, case, tmp_path / "templates", tmp_path / "cases", timeout=300) for case in cases]
    failures = _unexpected(results)
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- the rules can fail
KIND = fuzz.Kind("demo", lambda d: None, ("data/x.json",), lambda d: [], own=("data/",))


@pytest.mark.parametrize("rc, output, escaped, changed, unpickled, expected", [
    (None, "", None, [], False, "hang"),
    (1, "fourds data: error: data/x.json is bad", None, [], True, "unpickled"),
    (None, "", KeyError("k"), [], False, "traceback"),
    (1, "Traceback (most recent call last):\n  File ...\nKeyError: 'k'", None, [], False, "traceback"),
    (1, "fourds data: error: x.json is bad", None, ["data/x.json"], False, "overwritten"),
    (1, "fourds data: error: x.json holds " + "\\x00" * 400, None, [], False, "long_error"),
    (1, "fourds data: error: x.json [... 99 more characters cut] end", None, [], False, "long_error"),
    (1, "fourds data: error: x.json is bad\n\nplease file an issue", None, [], False, "long_error"),
    (1, "report\n  item: " + "y" * 1200, None, [], False, "long_error"),
    (1, "fourds data: error: 'utf-8' codec can't decode byte 0x80", None, [], False, "unnamed_error"),
    (1, "fourds data: error: data/x.json is not valid JSON; restore it", None, [], False, "clean_error"),
    (0, "done", None, [], False, "silent"),  # one of fourds' own files, damaged, and nothing said
    (0, "WARNING data/x.json is damaged (checksum); used the previous one", None, [], False, "success"),
])
def test_classify(rc, output, escaped, changed, unpickled, expected):
    assert fuzz.classify(KIND, "data/x.json", rc, output, escaped, changed, unpickled)[0] == expected


def test_damage_to_a_file_fourds_did_not_write_that_loads_is_a_success():
    other = fuzz.Kind("video", lambda d: None, ("v.mp4",), lambda d: [])
    assert fuzz.classify(other, "v.mp4", 0, "2 of 2 videos decode", None, [], False)[0] == "success"


def test_a_command_that_writes_over_an_input_is_caught(templates, tmp_path):
    """`convert official --overwrite` into the damaged model folder rewrites its config.json."""
    npz = ROOT / "tests" / "fixtures" / "official" / "tiny_backbone.npz"
    kind = fuzz.Kind("model", fuzz.build_model, ("model/config.json",),
                     lambda d: ["convert", "official", str(npz), str(d / "model"), "--overwrite"])
    case = next(c for c in range(100) if fuzz.plan(SEED, c, (kind,))[2] == "flip")
    assert fuzz.run_case(SEED, case, templates, tmp_path, kinds=(kind,)).outcome == "overwritten"


def test_the_pickle_payload_would_be_caught_if_a_reader_ran_it(tmp_path):
    payload = fuzz._pickle_payload(tmp_path)
    assert not (tmp_path / fuzz.MARKER).exists()
    pickle.loads(payload)  # what an unsafe reader would do
    assert (tmp_path / fuzz.MARKER).exists()


# ------------------------------------------------------------------------------- issue 18, point 2
def test_an_npz_with_a_64k_member_name_gives_a_short_error(tmp_path, capsys):
    """Flipped bytes in a member's name length made zipfile quote 64 KiB of the file: 183,528 characters
    of error before the fix (measured on main at 2afc50e)."""
    data = bytearray((ROOT / "tests" / "fixtures" / "official" / "tiny_depth.npz").read_bytes())
    at = data.index(b"PK\x03\x04", 100)
    data[at + 26:at + 28] = struct.pack("<H", 0xFFFF)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    assert main(["convert", "official", str(bad), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fourds convert: error: ") and str(bad) in err and "download it again" in err
    assert len(err) < 500 and "characters cut" not in err  # short at the source, not cut by the CLI
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- the CLI
def _failing(monkeypatch, err: BaseException) -> None:
    """``fourds models`` raises ``err`` (its handler is looked up when the parser is built)."""
    from fourds.cli import models_cmd

    def run(args):
        raise err

    monkeypatch.setattr(models_cmd, "run", run)


def test_cli_cuts_an_overlong_message_keeping_head_and_tail(monkeypatch, capsys):
    _failing(monkeypatch, ValueError("data/x.npz: " + "\\x9a" * 50_000 + " - download it again"))
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert len(err) <= 1100 and err.count("\n") == 1
    assert "data/x.npz" in err and err.rstrip().endswith("download it again") and "more characters cut" in err


def test_cli_reports_os_errors_in_one_line_and_v_shows_the_traceback(monkeypatch, capsys):
    _failing(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/runs/a/model.safetensors"))
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fourds models: error: ") and "No space left" in err and "/runs/a/model.safetensors" in err
    with pytest.raises(OSError):
        main(["-v", "models"])


def test_error_message_leaves_short_messages_alone():
    assert error_message(ValueError("x.json is not valid JSON")) == "x.json is not valid JSON"
    assert error_message(KeyError()) == "KeyError"


# ------------------------------------------------------------------------------ issue 18, point 4
def test_a_mistyped_backbone_folder_says_no_such_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "runs" / "tiny" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert main(["probe", "--backbone", "runs/tiny/modle", "--task", "synth_depth", "--out", "p"]) == 1
    err = capsys.readouterr().err
    assert "no such folder: runs/tiny/modle" in err and "did you mean 'runs/tiny/model'" in err
    assert err.index("no such folder") < err.index("hf:")  # the schemes come after
    assert "has no scheme" not in err
    assert not (tmp_path / "p").exists()
    assert main(["probe", "--backbone", "perframe:runs/tinyy/model", "--task", "synth_depth", "--out", "p"]) == 1
    assert "no such folder: runs/tinyy/model (runs/ exists but has no 'tinyy'; did you mean 'runs/tiny'?)" in (
        capsys.readouterr().err)


# --------------------------------------------------------------------------------- text readers
MARK = "SECRET-CONTENT-7f3a"


@pytest.mark.parametrize("content, says", [
    (b"\x80\x04\x95" + MARK.encode() * 50, "a Python pickle"),
    (b"<!DOCTYPE html><html>" + MARK.encode() * 50, "not valid JSON"),
    (b'{"a": 1, "' + MARK.encode() * 50, "may be truncated"),
    (b"", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n" + MARK.encode(), "a PNG image"),
])
def test_read_json_names_the_file_and_never_quotes_it(tmp_path, content, says):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_json(path, "a probe run's results.json")
    msg = str(info.value)
    assert str(path) in msg and says in msg and "results.json" in msg and MARK not in msg and len(msg) < 400


def test_read_text_missing_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; expected a manifest"):
        read_text(tmp_path / "nope.csv", "a manifest")
    with pytest.raises(ValueError, match="is a folder"):
        read_text(tmp_path, "a manifest")
    (tmp_path / "lfs.json").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    assert "git lfs pull" in looks_like(tmp_path / "lfs.json")


def test_a_damaged_saved_run_config_is_refused_by_type(tmp_path):
    from fourds.train.config import PretrainConfig, resume_config

    cfg = PretrainConfig(out=str(tmp_path))
    saved = {**cfg.to_dict(), "seed": "12x", "flip": [1]}
    with pytest.raises(ValueError, match=r"config.json is damaged: flip is an array \(expected a bool\); seed is a "
                                         r"string \(expected a number\)"):
        resume_config(saved, cfg, [], str(tmp_path / "config.json"))
    with pytest.raises(ValueError, match="holds a JSON array, not the object"):
        resume_config([1, 2], cfg, [], str(tmp_path / "config.json"))
    assert resume_config(cfg.to_dict(), cfg, [], "c.json").steps == cfg.steps  # an intact one still loads


def test_binary_manifest_is_named(tmp_path, capsys):
    (tmp_path / "list.csv").write_bytes(b"\xff\xfe" + MARK.encode() * 1000)
    assert main(["data", "check", str(tmp_path / "list.csv")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "list.csv") in err and "not UTF-8 text" in err and MARK not in err
