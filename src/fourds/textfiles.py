"""Reading the small text files fourds is given (JSON configs and results, CSV/JSONL manifests,
annotation files) with errors that name the file, say what it looks like and never quote more than a
few characters of it.

A damaged or wrong file (binary, truncated, an HTML error page saved under a ``.json`` name) otherwise
surfaces as ``'utf-8' codec can't decode byte 0x80 in position 0`` or ``Expecting value: line 1 column 1``
without saying which file, or, worse, as an error that embeds the file's bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

QUOTE_CHARS = 60  # the most characters of a file's content that an error message may quote


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` and the full length appended when cut)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def looks_like(path: str | os.PathLike, head: bytes | None = None) -> str:
    """What the file looks like from its size and first bytes, e.g. ``'a PNG image'`` or ``'an HTML or XML
    page (often the error or login page of a failed download)'``; never quotes the content. Images and
    videos are recognised here, everything else by :func:`fourds.fileio.sniff`."""
    from fourds.fileio import sniff

    path = Path(path)
    if head is None:
        with open(path, "rb") as f:
            head = f.read(64)
    media = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x1a\x45\xdf\xa3", "a WebM/Matroska video"))
    for magic, name in media:
        if head.startswith(magic):
            return name
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat"):
        return "an MP4/MOV video"
    return sniff(path, head)


def read_text(path: str | os.PathLike, expected: str = "a UTF-8 text file") -> str:
    """The file's text (UTF-8).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: the file is not UTF-8 text; the message names the file, what it looks like and
            ``expected`` (e.g. ``"a JSON file written by fourds probe"``).
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ValueError(f"{path} is a folder; expected {expected}")
        raise FileNotFoundError(f"{path} does not exist; expected {expected}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}; it looks like "
            f"{looks_like(path)}); expected {expected}. The file is damaged or not the right one: restore or "
            f"recreate it"
        ) from None


def read_json(path: str | os.PathLike, expected: str = "a JSON file") -> Any:
    """The file's JSON value, with :func:`read_text`'s errors and a named ``ValueError`` for invalid JSON
    (where the parser stopped and what the file looks like; no content quoted)."""
    path = Path(path)
    text = read_text(path, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = "the file is empty" if not text.strip() else f"{err.msg} (line {err.lineno}, column {err.colno})"
        runs_off = err.pos >= len(text.rstrip()) or (err.msg.startswith("Unterminated") and '"' not in text[err.pos + 1:])
        truncated = " (the file may be truncated)" if runs_off and text.strip() else ""
        raise ValueError(
            f"{path} is not valid JSON: {where}{truncated}; it looks like {looks_like(path)}. Expected "
            f"{expected}: restore or recreate the file"
        ) from None
