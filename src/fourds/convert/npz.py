"""Safe, lazy reading of ``.npz`` checkpoints (no pickles, one array in memory at a time).

The official 4DS files are ``numpy.savez`` archives: a zip of ``<key>.npy`` members, one per
parameter, with Flax names flattened by ``/`` (``params/encoder/posenc/embeddings``). 4DS-e is 14 GB,
so :class:`NpzReader` first reads only the ``.npy`` headers (key, shape, dtype) to check the whole
layout, then loads arrays one by one while the weights are converted.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fourds.textfiles import looks_like, quote

_NPY_SUFFIX = ".npy"


def _short(err: BaseException, limit: int = 160) -> str:
    """A library error cut to ``limit`` characters: zipfile quotes whole (possibly damaged, 64 KiB) member
    names from the file, and the message must never carry the file's bytes."""
    text = str(err)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass(frozen=True)
class ArrayInfo:
    """Shape and dtype of one stored array, read from its ``.npy`` header."""

    shape: tuple[int, ...]
    dtype: np.dtype


class NpzReader:
    """Read-only view of an ``.npz`` archive: ``reader.info[key]`` without loading, ``reader[key]``
    loads one array (``allow_pickle=False``).

    Errors name the file and what is wrong with it: a missing file raises ``FileNotFoundError``; a file
    that is not a zip archive, is truncated, holds a non-``.npy`` member, an object (pickled) array or
    a corrupt member raises ``ValueError``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint {self.path} does not exist (expected an official 4DS .npz file)")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise ValueError(
                f"{self.path} is not a readable .npz archive ({_short(err)}); it looks like {looks_like(self.path)}; "
                "the file may be truncated or not a numpy savez file - download it again"
            ) from None
        self.info: dict[str, ArrayInfo] = {}
        self._members: dict[str, str] = {}
        try:
            for member in self._zip.infolist():
                if member.is_dir():
                    continue
                if not member.filename.endswith(_NPY_SUFFIX):
                    raise ValueError(
                        f"{self.path} holds {quote(member.filename)}, which is not a .npy array (a damaged "
                        "archive, or not a checkpoint); "
                        "expected a numpy .npz of parameter arrays"
                    )
                key = member.filename[: -len(_NPY_SUFFIX)]
                self.info[key] = self._read_header(member)
                self._members[key] = member.filename
        except BaseException:
            self._zip.close()
            raise
        if not self.info:
            self._zip.close()
            raise ValueError(f"{self.path} is an empty archive: no arrays found")

    def _read_header(self, member: zipfile.ZipInfo) -> ArrayInfo:
        try:
            with self._zip.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"{self.path}: the header of array {quote(member.filename)} is unreadable ({_short(err)}); "
                "the file is corrupt or truncated - download it again"
            ) from None
        if dtype.hasobject:
            raise ValueError(
                f"{self.path}: array {quote(member.filename)} holds Python objects (a pickle); "
                "only numeric arrays are accepted"
            )
        return ArrayInfo(tuple(int(s) for s in shape), dtype)

    def keys(self) -> list[str]:
        return list(self.info)

    def __contains__(self, key: object) -> bool:
        return key in self.info

    def __len__(self) -> int:
        return len(self.info)

    def __getitem__(self, key: str) -> np.ndarray:
        """Load one array; raises ``ValueError`` naming the key if its data is truncated or corrupt."""
        if key not in self._members:
            raise KeyError(key)
        try:
            with self._zip.open(self._members[key]) as f:
                array = np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"{self.path}: array {quote(key)} could not be read ({_short(err)}); the file is corrupt or "
                "truncated - download it again"
            ) from None
        return array

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
