"""Every Python name the README and docs/ tell users to import still imports (issue 19: modules move,
their public names keep working)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FROM_IMPORT = re.compile(r"^\s*from (fourds(?:\.\w+)*) import ([\w, ()]+?)\s*(?:#.*)?$", re.M)
DOTTED = re.compile(r"(?<![\w./-])(fourds(?:\.\w+)+)")


def _references() -> list[tuple[str, str]]:
    """``(document, dotted name)`` for every ``from fourds.x import y`` and every ``fourds.x.y`` named."""
    refs: set[tuple[str, str]] = set()
    for doc in DOCS:
        text = doc.read_text()
        for module, names in FROM_IMPORT.findall(text):
            for name in names.replace("(", "").replace(")", "").split(","):
                if name.strip():
                    refs.add((doc.name, f"{module}.{name.strip()}"))
        for dotted in DOTTED.findall(text):
            refs.add((doc.name, dotted))
    return sorted(refs)


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            if err.name and not ".".join(parts[:cut]).startswith(err.name):
                raise  # a missing dependency inside an existing module
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


REFS = _references()


def test_the_docs_name_python_apis() -> None:
    assert len(REFS) > 30 and any(r[1] == "fourds.models.load" for r in REFS)


@pytest.mark.parametrize(("doc", "dotted"), REFS, ids=[f"{d}:{n}" for d, n in REFS])
def test_each_documented_name_imports(doc: str, dotted: str) -> None:
    try:
        _resolve(dotted)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{doc} names {dotted}, which does not import: {type(err).__name__}: {err}")
