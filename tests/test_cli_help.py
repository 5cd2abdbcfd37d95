"""`fourds <cmd> --help` as a newcomer reads it: every command's help runs, has a description, shows each
flag's default once, and the examples it gives for dict flags (``--model-overrides``...) parse."""

from __future__ import annotations

import argparse
import re

import pytest

from fourds.cli import build_parser, main
from fourds.cli.config_args import HelpFormatter, dataclass_from_args, parse_key_values


def _leaves(parser: argparse.ArgumentParser,
            path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (command path, parser) of the tree below ``parser``, sub-command groups included."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _leaves(sub, (*path, name))
    return found


COMMANDS = [path for path, _ in _leaves(build_parser()) if path]


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action) if action.help else ""


def test_the_tree_has_every_command():
    names = {p[0] for p in COMMANDS}
    assert {"pretrain", "probe", "distill", "synth", "data", "convert", "demo", "report"} <= names
    assert ("synth", "preview") in COMMANDS and ("synth", "export") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_help_runs_and_describes_the_command(path, capsys):
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: fourds {' '.join(path)}")
    parser = dict(_leaves(build_parser()))[path]
    assert parser.formatter_class is HelpFormatter, f"fourds {' '.join(path)}: add formatter_class=HelpFormatter"
    assert parser.description and len(parser.description) > 40, f"fourds {' '.join(path)} has no description"
    assert "``" not in text, "reStructuredText double backticks leaked into the help"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_flag_shows_its_default_once(path):
    parser = dict(_leaves(build_parser()))[path]
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        text = _help_of(parser, action)
        assert text, f"fourds {' '.join(path)} {action.option_strings[0]} has no help"
        lowered = text.lower()
        # A choice literally named "default", quoted as 'default', is a name, not a statement of the default.
        for choice in action.choices or ():
            if "default" in str(choice).lower():
                lowered = lowered.replace(f"'{str(choice).lower()}'", "'<choice>'")
        count = lowered.count("default")
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if switch or action.default is None and action.nargs == 0:
            continue
        if action.default is not None and action.default is not False:
            assert count == 1, f"{action.option_strings[0]}: {text!r}"
        assert count <= 1, f"{action.option_strings[0]} names its default twice: {text!r}"


def test_dataclass_flags_show_the_dataclass_default_not_argparse_none(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed N seeds initialisation, data order, augmentation and masking (default: 0)" in text
    assert "(default: --flip)" in text and "(default: --no-resume)" in text
    assert "--steps N optimiser steps (default: the --model preset's)" in text
    assert "--strategy {auto,none,ddp,fsdp}" in text


def _examples(text: str, flag: str) -> list[list[str]]:
    """The ways ``text`` shows ``flag`` being used: ``FLAG KEY=VALUE`` and ``FLAG '{json}'``."""
    text = " ".join(text.split())
    found = [[flag, m] for m in re.findall(re.escape(flag) + r" (\w+=[^\s;)`']+)", text)]
    found += [[flag, m] for m in re.findall(re.escape(flag) + r" '(\{[^']*\})'", text)]
    found += [[flag, m] for m in re.findall(r"`(\{[^`]*\})`", text)]  # the docstring's own `{"depth": 2}`
    return found


@pytest.mark.parametrize("command,flag,field,cls_path", [
    ("pretrain", "--model-overrides", "model_overrides", "fourds.train.config.PretrainConfig"),
    ("distill", "--student-overrides", "student_overrides", "fourds.train.distill.DistillConfig"),
    ("distill", "--teacher-overrides", "teacher_overrides", "fourds.train.distill.DistillConfig"),
    ("probe", "--backbone-overrides", "backbone_overrides", "fourds.probe.config.ProbeConfig"),
    ("probe", "--task-overrides", "task_overrides", "fourds.probe.config.ProbeConfig"),
    ("probe", "--data-kwargs", "data_kwargs", "fourds.probe.config.ProbeConfig"),
])
def test_the_examples_in_the_help_of_dict_flags_parse(command, flag, field, cls_path):
    import importlib

    module, name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    parser = dict(_leaves(build_parser()))[(command,)]
    action = next(a for a in parser._actions if flag in a.option_strings)
    examples = _examples(_help_of(parser, action), flag)
    assert len(examples) >= 2, f"{flag} help shows no KEY=VALUE and JSON example: {action.help!r}"
    parsed = []
    for argv in examples:
        args = parser.parse_args(argv)
        parsed.append(getattr(dataclass_from_args(cls, args), field))
    assert all(p == parsed[0] and len(p) == 1 for p in parsed), parsed  # both forms say the same thing


def test_key_values_and_json_objects_merge_left_to_right():
    items = ['{"depth": 2, "dim": 32}', "dim=64", "input_size=[4,32,32]", "name=abc"]
    assert parse_key_values(items, "--x") == {"depth": 2, "dim": 64, "input_size": [4, 32, 32], "name": "abc"}
    assert parse_key_values(['  {"a": {"b": 1}}'], "--x") == {"a": {"b": 1}}


@pytest.mark.parametrize("item,match", [
    ("depth", r"--x 'depth': expected KEY=VALUE or a JSON object, e\.g\. --x depth=2"),
    ('{"depth": 2', r"not a valid JSON object .*--x '\{\"depth\": 2\}'"),
    ("=2", r"the KEY before '=' is empty"),
])
def test_bad_key_values_name_the_flag_and_the_fix(item, match):
    with pytest.raises(ValueError, match=match):
        parse_key_values([item], "--x")


def test_a_long_bad_value_is_not_quoted_whole():
    with pytest.raises(ValueError) as err:
        parse_key_values(["x" * 5000], "--x")
    assert len(str(err.value)) < 400


def test_formatter_appends_a_default_only_where_the_help_lacks_one():
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--a", type=int, default=3, help="plain")
    p.add_argument("--b", type=int, default=3, help="written (default 3)")
    p.add_argument("--c", default=None, help="unset")
    p.add_argument("--d", action="store_true", help="switch")
    p.add_argument("--e", default="5%", help="percent")
    helps = {a.dest: _help_of(p, a) for a in p._actions}
    assert helps["a"] == "plain (default: 3)"
    assert helps["b"] == "written (default 3)"
    assert helps["c"] == "unset" and helps["d"] == "switch"
    assert helps["e"] == "percent (default: 5%)"


def test_synth_preview_says_what_it_wrote(tmp_path, capsys):
    assert main(["synth", "preview", "--out", str(tmp_path), "-n", "1", "--size", "16", "--frames", "2",
                 "--max-objects", "2", "--format", "gif"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "synth_000000.gif").is_file()
    assert f"wrote 1 preview video(s) to {tmp_path}" in out
    assert re.search(r"synth_000000\.gif  motion (right|up|left|down|up-right|up-left|down-left|down-right) "
                     r"\(class \d\)", out)


def test_motion_class_names():
    from fourds.probe.visualize import motion_class_name

    assert [motion_class_name(c, 8) for c in range(8)] == [
        "right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right"]
    assert [motion_class_name(c, 4) for c in range(4)] == ["right", "up", "left", "down"]
    assert motion_class_name(1, 12) == "30°"
    with pytest.raises(ValueError, match=r"motion class 8 is outside \[0, 8\)"):
        motion_class_name(8, 8)
