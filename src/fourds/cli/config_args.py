"""Build argparse flags from a config dataclass, with help text taken from its ``Attributes:`` docstring.

One source of truth: a field ``warmup_steps`` becomes ``--warmup-steps``; booleans become
``--flag/--no-flag``; ``dict`` fields take repeated ``KEY=VALUE`` (values parsed as JSON when possible) or
one JSON object. Every flag's help ends with its default (:class:`HelpFormatter` for plain flags,
:func:`add_dataclass_args` for dataclass fields, whose argparse default stays ``None`` so a run can tell
which flags were given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence, Set
from typing import Any


def _field_docs(cls: type) -> dict[str, str]:
    doc = cls.__doc__ or ""
    docs: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        m = re.match(r"^\s{8}(\w+):\s*(.*)$", line)
        if m:
            current = m.group(1)
            docs[current] = m.group(2)
        elif current and line.strip() and line.startswith(" " * 12):
            docs[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return docs


def _base_type(tp: Any) -> Any:
    if isinstance(tp, str):
        tp = eval(tp, {"dict": dict, "Any": Any, "int": int, "float": float, "str": str, "bool": bool, "list": list})  # noqa: S307 - our own annotations
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return origin or tp


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, plus ``(default: X)`` after every option whose help does not already name
    its default. Switches (``store_true``, default ``False``) and ``None`` defaults get nothing: their help
    says what "not given" means. Every ``fourds`` sub-command parser uses it (``formatter_class=``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_ = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is argparse.SUPPRESS or default is False
                or isinstance(action, argparse._HelpAction) or "default" in help_.lower()):
            return action.help
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{help_} (default: {shown.replace('%', '%%')})"


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` items, or JSON objects, merged left to right into one dict.

    ``["depth=2", "input_size=[4,32,32]"]`` and ``['{"depth": 2, "input_size": [4, 32, 32]}']`` both give
    ``{"depth": 2, "input_size": [4, 32, 32]}``; a VALUE that is not JSON stays a string (``name=abc``).
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if item.lstrip().startswith("{"):
            try:
                obj = json.loads(item)
            except json.JSONDecodeError as err:
                raise ValueError(f"{flag} {item[:200]!r}: not a valid JSON object ({err.msg} at character "
                                 f"{err.pos}); write it as {flag} '{{\"depth\": 2}}' or {flag} depth=2") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{flag} {item[:200]!r}: expected a JSON object, e.g. {flag} '{{\"depth\": 2}}'")
            out.update({str(k).strip(): v for k, v in obj.items()})
            continue
        if "=" not in item:
            raise ValueError(f"{flag} {item[:200]!r}: expected KEY=VALUE or a JSON object, e.g. {flag} depth=2 "
                             f"or {flag} '{{\"depth\": 2}}'")
        key, value = item.split("=", 1)
        if not key.strip():
            raise ValueError(f"{flag} {item[:200]!r}: the KEY before '=' is empty; e.g. {flag} depth=2")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


#: What a dict flag takes, appended to its help; the test of every ``--help`` parses both examples.
DICT_FORM = ("KEY=VALUE, repeatable (VALUE read as JSON when it parses), or one JSON object: "
             "e.g. {flag} {key}={value} or {flag} '{{\"{key}\": {value}}}'")


def _plain(doc: str) -> str:
    """A docstring fragment as terminal text: ``code`` → `code`, :role:`x` → `x`, no final full stop."""
    doc = re.sub(r":\w+:`([^`]*)`", r"`\1`", doc).replace("``", "`")
    return doc.rstrip().rstrip(".")


def _default_text(f: dataclasses.Field, flag: str, unset: Mapping[str, str]) -> str:
    """``"default: X"`` for a dataclass field: its value, ``unset[name]`` for a ``None`` that the run
    fills in later (e.g. from the model preset), ``not set`` for a ``None`` that means off."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if value is None:
        return unset.get(f.name, "not set")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    if isinstance(value, dict) and not value:
        return "none"
    if isinstance(value, str) and not value:
        return "none; required"
    return str(value)


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: Set[str] = frozenset(),
                       unset: Mapping[str, str] | None = None,
                       choices: Mapping[str, Sequence[str]] | None = None,
                       examples: Mapping[str, tuple[str, Any]] | None = None) -> None:
    """Add one flag per field of ``cls``, help from its ``Attributes:`` docstring plus the default.

    The argparse defaults are ``None`` so unset flags keep the dataclass defaults (and a resumed run can tell
    which flags were given); the help shows the dataclass default instead, or ``unset[name]`` for a ``None``
    field the run fills in later (e.g. ``"from the --model preset"``). ``choices[name]`` lists the values a
    flag accepts (checked by argparse, shown in the help); an empty ``unset[name]`` shows no default (the
    docstring gives it). ``examples[name]`` is the ``(KEY, VALUE)`` a dict flag's help shows (default
    ``("depth", 2)``).
    """
    docs = _field_docs(cls)
    unset = unset or {}
    choices = choices or {}
    order = {name: i for i, name in enumerate(docs)}
    # Flags in the order the class documents its fields (a subclass's own fields, e.g. --model, first).
    for f in sorted(dataclasses.fields(cls), key=lambda f: order.get(f.name, len(order))):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_ = _plain(docs.get(f.name, ""))
        tp = _base_type(f.type)
        if tp is dict:
            key, value = (examples or {}).get(f.name, ("depth", 2))
            help_ += "; " + DICT_FORM.format(flag=flag, key=key, value=json.dumps(value))
        if "default" not in help_.lower():
            default = _default_text(f, flag, unset)
            if default:
                help_ += f" (default: {default})"
        help_ = help_.replace("%", "%%")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif tp is dict:
            parser.add_argument(flag, dest=f.name, action="append", metavar="KEY=VALUE", default=None, help=help_)
        else:
            metavar = {int: "N", float: "X"}.get(tp)
            parser.add_argument(flag, dest=f.name, type=tp, default=None, help=help_, metavar=metavar,
                                choices=choices.get(f.name))


def dataclass_from_args(cls: type, args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """Instance of ``cls`` from the flags that were given (others keep their defaults)."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if _base_type(f.type) is dict:
            value = parse_key_values(value, "--" + f.name.replace("_", "-"))
        values[f.name] = value
    return cls(**values)
