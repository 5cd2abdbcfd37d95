"""Safe file writing and reading: atomic umask-honouring writes, file-type sniffing, run-folder locks.

Every file fourds writes goes through :func:`atomic_path` (or the ``write_*_atomic`` helpers built on
it): the content is written to a hidden temporary file beside the target, flushed to disk, given the
mode an ordinary ``open(path, "w")`` would give (``0o666 & ~umask``; ``mkstemp`` alone gives ``0600``,
which hides shared run folders from teammates) and renamed over the target. A crash or a full disk thus
never leaves half a file behind, and a failed write leaves the previous file untouched; write failures
surface as :class:`WriteError` (a ``RuntimeError``, so the CLI prints one line) naming the file and the
reason.

:func:`sniff` names what a file looks like from its first bytes (zip = ``torch.save``, pickle, HTML page,
gzip, Git LFS pointer, ...) for error messages; it never quotes file contents.

:func:`lock_run_folder` locks ``<out>/.lock`` (``fcntl.lockf``) for the life of a run, so a second run on
the same ``--out`` fails with the holder's PID; the kernel drops the lock when the holder exits or is
killed, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"

_UMASK_LOCK = threading.Lock()


@functools.cache
def current_umask() -> int:
    """The process umask, read once (``/proc/self/status`` where available, so it is never changed, even
    for an instant; else by the set-and-restore idiom under a lock). Tests call ``cache_clear()``."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def file_mode() -> int:
    """The mode of a newly created regular file: ``0o666 & ~umask`` (0644 under umask 022)."""
    return 0o666 & ~current_umask()


class WriteError(RuntimeError):
    """Writing ``path`` failed (disk full, permissions, ...); the previous content of ``path`` is intact."""

    def __init__(self, path: Path, err: OSError) -> None:
        self.path, self.errno, self.reason = Path(path), err.errno, describe_os_error(err)
        super().__init__(f"could not write {path}: {self.reason}; nothing was replaced "
                         f"(any previous {Path(path).name} is unchanged)")


def describe_os_error(err: OSError) -> str:
    """``'no space left on device (ENOSPC)'``-style text for an OSError, with a fix for the common ones."""
    name = errno.errorcode.get(err.errno or 0, "")
    text = (err.strerror or str(err) or type(err).__name__)[:200]
    hint = {
        errno.ENOSPC: "; free disk space or write elsewhere",
        errno.EDQUOT: "; free space under your quota or write elsewhere",
        errno.EACCES: "; check the folder's permissions or write elsewhere",
        errno.EROFS: "; the file system is read-only, write elsewhere",
    }.get(err.errno or 0, "")
    return f"{text.lower()} ({name})" + hint if name else text + hint


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed, chmod-ed to :func:`file_mode`
    and renamed over ``path``; on any failure it is removed and ``path`` is left as it was.

    The temporary name keeps ``path``'s suffix (writers such as ``savefig`` pick the format from it).
    OSErrors (a full disk, ...) are re-raised as :class:`WriteError`.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise WriteError(path, err) from err
    finally:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str, newline: str | None = None) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Atomically replace ``path`` with ``data`` as indented JSON (and a final newline)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


# --- what a file looks like -------------------------------------------------------------------------------

def sniff(path: str | os.PathLike, head: bytes | None = None) -> str:
    """What the file at ``path`` looks like, from its size and first bytes (never quoting its content):
    e.g. ``'an empty file (0 bytes)'``, ``'a zip archive (the format of torch.save since PyTorch 1.6;
    also .npz)'``, ``'an HTML page ...'``."""
    path = Path(path)
    size = path.stat().st_size
    if head is None:
        with open(path, "rb") as f:
            head = f.read(64)
    if size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a zip archive (the format of torch.save since PyTorch 1.6; also .npz)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a Python pickle (protocol {head[1]}: the format of pickle.dump and of torch.save before PyTorch 1.6)"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (h5py / Keras)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (the real file was never downloaded: run `git lfs pull`)"
    stripped = head.lstrip()
    # Text-like only when the head is (almost) all printable: random bytes start with "<" or "{" too.
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    texty = printable >= 0.95 * len(head)
    if texty and stripped[:1] == b"<":
        return "an HTML or XML page (often the error or login page of a failed download)"
    if texty and stripped[:1] in (b"{", b"["):
        return "a JSON or other text file"
    if printable == len(head):
        return "a text file"
    return f"unrecognised binary data ({size} bytes)"


# --- run-folder lock ----------------------------------------------------------------------------------------

_HELD: dict[str, int] = {}  # realpath of the lock file -> the open file descriptor holding the lock


def lock_run_folder(out: str | os.PathLike) -> Path:
    """Take the exclusive lock ``<out>/.lock`` for this process (re-entrant within the process); returns
    its path. The lock lives until :func:`release_run_folder` or the end of the process: the kernel
    releases it when the process exits or is killed.

    It is a POSIX record lock (``fcntl.lockf``), not ``flock``: those belong to the process, so forked
    data-loader workers (which inherit the descriptor) do not keep the folder locked after a SIGKILL of
    the run; ``--resume`` right after a crash works. This module never opens the lock file twice (closing
    any descriptor of it would drop a POSIX lock).

    Raises:
        RuntimeError: another process holds it (the message names the lock file and the holder's PID).
    """
    lock = Path(out) / LOCK_NAME
    key = os.path.realpath(lock)
    if key in _HELD:
        return lock
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as err:
        raise RuntimeError(f"cannot create the run lock {lock}: {describe_os_error(err)}") from err
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RuntimeError(f"cannot lock the run folder {out} ({lock}): {describe_os_error(err)}") from err
        raise RuntimeError(
            f"{out} is in use by another fourds run: process {holder} holds {lock}. Wait for it to finish "
            f"or stop it, or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = fd
    return lock


def release_run_folder(out: str | os.PathLike) -> None:
    """Release the lock taken by :func:`lock_run_folder` (no-op if this process does not hold it). The
    lock file stays (removing it would race with a process about to lock it)."""
    fd = _HELD.pop(os.path.realpath(Path(out) / LOCK_NAME), None)
    if fd is not None:
        with suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
