"""Build argparse flags from a config dataclass, with help text taken from its ``Attributes:`` docstring.

One source of truth: a field ``warmup_steps`` becomes ``--warmup-steps``; booleans become
``--flag/--no-flag``; ``dict`` fields take repeated ``KEY=VALUE`` (values parsed as JSON when possible).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
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


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["depth=2", "input_size=[4,32,32]"]`` → ``{"depth": 2, "input_size": [4, 32, 32]}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} depth=2")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: set[str] = frozenset()) -> None:
    """Add one flag per field of ``cls`` (defaults None so unset flags keep the dataclass defaults)."""
    docs = _field_docs(cls)
    order = {name: i for i, name in enumerate(docs)}
    # Flags in the order the class documents its fields (a subclass's own fields, e.g. --model, first).
    for f in sorted(dataclasses.fields(cls), key=lambda f: order.get(f.name, len(order))):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_ = docs.get(f.name, "")
        tp = _base_type(f.type)
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif tp is dict:
            parser.add_argument(flag, dest=f.name, action="append", metavar="KEY=VALUE", default=None, help=help_)
        else:
            parser.add_argument(flag, dest=f.name, type=tp, default=None, help=help_)


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
