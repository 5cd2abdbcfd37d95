"""Fuzz campaign: corrupt every kind of file fourds reads and check that the command a user would run
either succeeds or stops with a short, clean error.

Usage (from the repository root)::

    python scripts/fuzz.py --cases 500 --seed 0          # the large run (docs/reliability.md)
    python scripts/fuzz.py --seed 0 --case 137 --show    # replay one case, print its whole output
    python scripts/fuzz.py --cases 50 --kinds npz video  # only some kinds of file

Each case is a pure function of ``(seed, case)``: the case's kind of file is ``KINDS[case % len(KINDS)]``
and a ``random.Random(f"{seed}:{case}")`` picks the file inside the kind's template folder, the damage
(truncation at a random offset, random byte flips anywhere (in an MP4: half in the coded stream, half in
the container boxes), flips in the header (a zip member's name length, else the first 64 bytes), a
zero-length file, or a file of the wrong type: PNG, HTML, a pickle, a torch.save zip, random bytes) and its parameters. The template is copied into the
case's own folder, damaged, every file is hashed, the command runs in-process through
``fourds.cli.main`` with captured stdout/stderr (``--subprocess-every N``: every N-th case as a real
``python -m fourds`` process), and the files are hashed again.

Outcomes (``classify``):

* ``success``: exit status 0 (for fourds' own files only when a warning names the damaged file, e.g. a
  resume that falls back to the previous checkpoint),
* ``silent``: exit status 0 although one of fourds' *own* files (model folders, checkpoints, results)
  was damaged and the output does not mention it (counted separately: checksums should catch it),
* ``clean_error``: exit status non-zero, no traceback, every output line at most ``MAX_LINE`` characters,
  the damaged file named,
* failures: ``traceback`` (an exception escaped ``main`` or a traceback was printed), ``long_error``
  (an error paragraph over ``MAX_CHARS`` characters or cut by the CLI, a report line over ``MAX_LINE``:
  quoted file contents), ``unnamed_error`` (the damaged file is not named), ``overwritten`` (the content
  of a file of the case folder is gone: changed or removed, and not moved elsewhere), ``unpickled`` (the pickle
  payload ran: it creates a marker file when unpickled), ``hang`` (over ``--case-timeout`` seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

MAX_LINE = 1000  # characters of one output line
MAX_CHARS = 1000  # characters of the CLI's error paragraph
ERROR_LINE = re.compile(r"^fourds [\w -]+: error: ")
WARNING = re.compile(r"warn|skip|unreadable|damaged|corrupt|invalid|checksum|truncated|ignor", re.IGNORECASE)
TQDM = re.compile(r"^\s*[\w .-]+:\s+\d+%\|")  # a progress bar's last line
CUT_MARK = "more characters cut]"  # what fourds.cli appends when it shortens an overlong message
FAILURES = ("traceback", "long_error", "unnamed_error", "overwritten", "unpickled", "hang")
OUTCOMES = ("success", "silent", "clean_error", *FAILURES)
DAMAGES = ("truncate", "flip", "header", "zero", "png", "html", "pickle", "torch", "random")
MARKER = "UNPICKLED"  # created in the case folder if the pickle payload ever runs


# ------------------------------------------------------------------------------------------ targets
@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of file fourds reads.

    ``build(folder)`` writes the intact template; ``files`` are the damageable paths relative to it;
    ``command(folder)`` is the fourds argv a user would run on it; ``own``: the files fourds wrote itself
    (damage to these that loads is ``silent``, not ``success``); ``volatile``: paths (prefixes) the command
    may legitimately change (logs that runs append to); ``ranks`` > 1: the command runs under
    ``torch.distributed.run`` with that many CPU processes (always a real subprocess; slow).
    """

    name: str
    build: Callable[[Path], None]
    files: tuple[str, ...]
    command: Callable[[Path], list[str]]
    own: tuple[str, ...] = ()
    volatile: tuple[str, ...] = ()
    ranks: int = 1


def _video_npy(path: Path, frames: int = 16, size: int = 64) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))


def build_model(folder: Path) -> None:
    import torch

    from fourds.models import create, save_model

    torch.manual_seed(0)
    save_model(create("4ds-tiny"), folder / "model")
    _video_npy(folder / "clip.npy")


def build_checkpoint(folder: Path) -> None:
    from fourds.cli import main

    _quiet(lambda: main([*PRETRAIN, "--steps", "4", "--save-every", "2", "--out", str(folder / "run")]))


def build_dcp(folder: Path) -> None:
    """A two-rank FSDP run: its checkpoints are DCP shards (``dcp/__<rank>_0.distcp`` + ``.metadata``)."""
    argv = [*PRETRAIN, "--steps", "4", "--save-every", "2", "--strategy", "fsdp", "--out", str(folder / "run")]
    rc, output, _ = _run_subprocess(argv, 600, ranks=2)
    if rc != 0:
        raise RuntimeError(f"building the DCP template failed:\n{output[-3000:]}")


PRETRAIN = ["pretrain", "--model", "4ds-tiny", "--data", "random", "--num-frames", "4", "--image-size", "32",
            "--batch-size", "2", "--warmup-steps", "1", "--log-every", "1", "--no-compile", "--device", "cpu"]
CKPT = "run/checkpoints/step_00000004"


def build_heads(folder: Path) -> None:
    """The official tiny depth checkpoint converted: a model folder with ``heads/depth/``."""
    from fourds.cli import main

    src = ROOT / "tests" / "fixtures" / "official" / "tiny_depth.npz"
    _quiet(lambda: main(["convert", "official", str(src), str(folder / "model")]))
    _video_npy(folder / "clip.npy", frames=8, size=32)


def _write_scannet(folder: Path) -> None:
    from _dataset_fixtures import write_sens

    root = folder / "data"
    write_sens(root / "scans" / "scene0000_00" / "scene0000_00.sens", 6, offset=100, invalid=(4,))
    (root / "scannetv2_train.txt").write_text("scene0000_00\n")
    (root / "scans" / "scene0000_00" / "intrinsic").mkdir()
    (root / "scans" / "scene0000_00" / "intrinsic" / "intrinsic_depth.txt").write_text(
        "\n".join(" ".join("1" if i == j else "0" for j in range(4)) for i in range(4)) + "\n")


def build_npz(folder: Path) -> None:
    for name in ("tiny_backbone.npz", "tiny_depth.npz"):
        shutil.copy(ROOT / "tests" / "fixtures" / "official" / name, folder / name)


def _write_videos(folder: Path) -> None:
    from _video_fixtures import write_index_video

    folder.mkdir(parents=True, exist_ok=True)
    write_index_video(folder / "a.mp4", 12)
    write_index_video(folder / "b.webm", 12, codec="libvpx-vp9")


def build_video(folder: Path) -> None:
    _write_videos(folder / "videos")


def build_shard(folder: Path) -> None:
    from fourds.cli import main

    _write_videos(folder / "src")
    _quiet(lambda: main(["data", "shard", str(folder / "src"), str(folder / "shards"), "--shard-size", "1"]))
    shutil.rmtree(folder / "src")


def build_manifest(folder: Path) -> None:
    _write_videos(folder / "videos")
    (folder / "list.csv").write_text("path,label\nvideos/a.mp4,0\nvideos/b.webm,1\n")
    (folder / "list.jsonl").write_text('{"path": "videos/a.mp4", "label": 0}\n{"path": "videos/b.webm", "label": 1}\n')


def build_results(folder: Path) -> None:
    from probe_toy import ToyTask

    from fourds.probe.protocol import run_probe
    from fourds.probe.config import ProbeConfig
    from fourds.probe.protocol import resolve_backbone

    overrides = {"depth": 2, "dim": 32, "num_heads": 2, "mlp_dim": 64}
    cfg = ProbeConfig(backbone="4ds-tiny", backbone_overrides=overrides, out=str(folder / "probe"), steps=2,
                      batch_size=2, warmup_steps=1, lrs=[1e-3], tensorboard=False, max_eval_samples=2, layers=[1.0])
    backbone = resolve_backbone("4ds-tiny", overrides, 0, (4, 32, 32))
    cfg.backbone = "toy"
    _quiet(lambda: run_probe(cfg, backbone=backbone, task=ToyTask(n_train=4, n_eval=2)))


def _dataset(writer: str, *args: object) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        import _dataset_fixtures as fx

        getattr(fx, writer)(folder / "data", *args)

    return build


def _check(name: str) -> Callable[[Path], list[str]]:
    return lambda d: ["data", "check", str(d / "data"), "--dataset", name, "--quick"]


KINDS: tuple[Kind, ...] = (
    Kind("model", build_model, ("model/model.safetensors", "model/config.json", "clip.npy"),
         lambda d: ["extract", str(d / "model"), str(d / "clip.npy"), "--out", str(d / "out"), "--no-progress",
                    "--device", "cpu"], own=("model/",)),
    Kind("checkpoint", build_checkpoint,
         (f"{CKPT}/model.safetensors", f"{CKPT}/train_state.pt", f"{CKPT}/rng_rank0.pt", f"{CKPT}/config.json",
          "run/config.json"),
         lambda d: ["pretrain", "--out", str(d / "run"), "--resume", "--steps", "5", "--keep-checkpoints", "100",
                    "--device", "cpu"],
         own=("run/",), volatile=("run/metrics.jsonl", "run/tb", "run/log", "run/model/", "run/config.json")),
    Kind("dcp", build_dcp,
         (f"{CKPT}/dcp/__0_0.distcp", f"{CKPT}/dcp/__1_0.distcp", f"{CKPT}/dcp/.metadata", f"{CKPT}/train_state.pt",
          f"{CKPT}/rng_rank1.pt"),
         lambda d: ["pretrain", "--out", str(d / "run"), "--resume", "--steps", "5", "--keep-checkpoints", "100",
                    "--device", "cpu", "--strategy", "fsdp"],
         own=("run/",), volatile=("run/metrics.jsonl", "run/tb", "run/log", "run/model/", "run/config.json", "run/rank"),
         ranks=2),
    Kind("heads", build_heads, ("model/heads/depth/model.safetensors", "model/heads/depth/config.json"),
         lambda d: ["depth", "--model", str(d / "model"), str(d / "clip.npy"), "--out", str(d / "out"), "--no-progress",
                    "--device", "cpu"], own=("model/",)),
    Kind("npz", build_npz, ("tiny_backbone.npz", "tiny_depth.npz"),
         lambda d: ["convert", "official", str(d / "tiny_depth.npz" if (d / "DAMAGED").read_text().startswith(
             "tiny_depth") else d / "tiny_backbone.npz"), str(d / "out")]),
    Kind("video", build_video, ("videos/a.mp4", "videos/b.webm"), lambda d: ["data", "check", str(d / "videos")]),
    Kind("shard", build_shard, ("shards/shard-000000.tar", "shards/shard-000001.tar", "shards/index.json"),
         lambda d: ["data", "check", str(d / "shards")]),
    Kind("manifest", build_manifest, ("list.csv", "list.jsonl"),
         lambda d: ["data", "check", str(d / (d / "DAMAGED").read_text())]),
    Kind("results", build_results, ("probe/results.json",), lambda d: ["report", str(d / "probe"), "--out",
                                                                        str(d / "report")], own=("probe/",)),
    Kind("ssv2", _dataset("write_ssv2", 4),
         ("data/something-something-v2-labels.json", "data/something-something-v2-train.json",
          "data/something-something-v2-validation.json", "data/20bn-something-something-v2/1.webm"), _check("ssv2")),
    Kind("k700", _dataset("write_k700", 4), ("data/annotations/train.csv", "data/annotations/val.csv",
                                             "data/annotations/test.csv"), _check("k700")),
    Kind("perception_test", _dataset("write_perception_test", 8), ("data/point_tracking_valid.json",),
         _check("perception_test")),
    Kind("tapvid_davis", _dataset("write_tapvid_davis", 4), ("data/tapvid_davis.pkl",), _check("tapvid_davis")),
    Kind("re10k", lambda f: __import__("_dataset_fixtures").write_re10k(f / "data", "test", "abc", 4, 0),
         ("data/metadata/RealEstate10K/test/abc.txt",), _check("re10k")),
    Kind("movi_e", _dataset("write_movi_e", "train", 1, 8), (), _check("movi_e")),
    Kind("scannet", _write_scannet, ("data/scans/scene0000_00/scene0000_00.sens", "data/scannetv2_train.txt"),
         lambda d: ["data", "check", str(d / "data"), "--dataset", "scannet", "--split", "train"]),
    Kind("waymo", _dataset("write_waymo", "validation", "seg0", 4, (1,)), (), lambda d: [
        "data", "check", str(d / "data"), "--dataset", "waymo", "--split", "validation"]),
)


# ------------------------------------------------------------------------------------------- damage
def _png() -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * 4 for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class _Touch:
    """Unpickling this creates ``path``: proof that a reader ran pickled code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def _pickle_payload(case_dir: Path) -> bytes:
    return pickle.dumps({"state_dict": {"w": [1.0, 2.0]}, "hook": _Touch(str(case_dir / MARKER))}, protocol=4)


def _torch_payload() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"patch_embed.weight": torch.zeros(4, 4)}, buf)
    return buf.getvalue()


def _mp4_payload_range(data: bytes) -> tuple[int, int] | None:
    """Byte range of the ``mdat`` box (the coded stream) of an MP4, or None."""
    pos = 0
    while pos + 8 <= len(data):
        size, tag = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1 and pos + 16 <= len(data):
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        if size < 8:
            return None
        if tag == b"mdat":
            return pos + 8, min(pos + size, len(data))
        pos += size
    return None


def damage(path: Path, how: str, rng: random.Random, case_dir: Path) -> str:
    """Damage ``path`` in place; returns a one-line description (offsets, counts)."""
    data = path.read_bytes()
    if how == "truncate":
        keep = rng.randrange(0, max(1, len(data)))
        path.write_bytes(data[:keep])
        return f"truncated to {keep} of {len(data)} bytes"
    if how == "flip":
        lo, hi, where = 0, len(data), "anywhere"
        span = _mp4_payload_range(data) if path.suffix == ".mp4" else None
        if span is not None:  # half of the MP4 flips hit the coded stream, half the container boxes
            if rng.random() < 0.5:
                lo, hi, where = span[0], span[1], "stream (mdat)"
            else:
                where = "container (outside mdat)"
        n = rng.choice((1, 4, 32))
        buf = bytearray(data)
        done = 0
        while done < n:
            i = rng.randrange(lo, hi)
            if where.startswith("container") and span is not None and span[0] <= i < span[1]:
                continue
            buf[i] ^= rng.randrange(1, 256)
            done += 1
        path.write_bytes(bytes(buf))
        return f"{n} byte(s) flipped, {where}, of {len(data)} bytes"
    if how == "header":  # the fields parsers trust most: a zip member's name length, else the first bytes
        starts = [m.start() for m in re.finditer(b"PK\x03\x04", data) if m.start() + 30 <= len(data)] if (
            data[:2] == b"PK") else []
        buf = bytearray(data)
        if starts:
            i = rng.choice(starts)
            length = rng.choice((0, 0xFFFF, rng.randrange(1, 0xFFFF)))
            buf[i + 26:i + 28] = struct.pack("<H", length)
            path.write_bytes(bytes(buf))
            return f"zip member at offset {i}: name length set to {length}"
        n = rng.choice((1, 4))
        for _ in range(n):
            buf[rng.randrange(min(64, len(buf)))] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(buf))
        return f"{n} byte(s) flipped in the first 64 of {len(data)} bytes"
    payloads: dict[str, Callable[[], bytes]] = {
        "zero": lambda: b"",
        "png": _png,
        "html": lambda: b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                        b"<body><h1>Not Found</h1></body></html>\n",
        "pickle": lambda: _pickle_payload(case_dir),
        "torch": _torch_payload,
        "random": lambda: rng.randbytes(rng.choice((16, 1024, max(16, len(data))))),
    }
    path.write_bytes(payloads[how]())
    return f"replaced by {how} ({path.stat().st_size} bytes)"


# -------------------------------------------------------------------------------------------- cases
@dataclasses.dataclass
class Result:
    case: int
    kind: str
    file: str
    damage: str
    detail: str
    outcome: str
    rc: int | None
    seconds: float
    summary: str
    output: str


def plan(seed: int, case: int, kinds: tuple[Kind, ...]) -> tuple[Kind, str, str, random.Random]:
    """The case's kind, damaged file, damage and the generator for its parameters."""
    kind = kinds[case % len(kinds)]
    rng = random.Random(f"{seed}:{case}")
    files = kind.files or _all_files(kind)
    return kind, rng.choice(files), rng.choice(DAMAGES), rng


_ALL: dict[str, tuple[str, ...]] = {}  # kind -> every file of its template, for kinds that list none


def _all_files(kind: Kind) -> tuple[str, ...]:
    if kind.name not in _ALL:
        raise RuntimeError(f"kind {kind.name!r} lists no files: build its template first (build_templates)")
    return _ALL[kind.name]


def _hashes(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _quiet(fn: Callable[[], object]) -> object:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _reset_logging()
        try:
            return fn()
        finally:
            _reset_logging()


def _reset_logging() -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)


class _Hang(Exception):
    pass


def _run_in_process(argv: list[str], timeout: float) -> tuple[int | None, str, BaseException | None]:
    from fourds.cli import main

    out, err = io.StringIO(), io.StringIO()
    escaped: BaseException | None = None
    rc: int | None = None

    def alarm(signum, frame):  # type: ignore[no-untyped-def]
        raise _Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _reset_logging()
            try:
                rc = int(main(argv) or 0)
            except SystemExit as e:  # argparse errors
                rc = e.code if isinstance(e.code, int) else 1
            except _Hang as e:
                escaped = e
            except BaseException as e:  # noqa: BLE001 - the campaign records whatever escapes
                import traceback

                escaped = e
                err.write("".join(traceback.format_exception(e)))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _reset_logging()
    return rc, out.getvalue() + err.getvalue(), escaped


def _run_subprocess(argv: list[str], timeout: float, ranks: int = 1) -> tuple[int | None, str, BaseException | None]:
    """``python -m fourds ARGV`` (``ranks`` > 1: under ``torch.distributed.run``; then the output is the
    ranks' own stdout/stderr, without the launcher's report, which always prints a ``ChildFailedError``
    traceback of its own when a rank exits non-zero)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory(prefix="fourds-fuzz-ranks-") as logs:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", "--log-dir", logs,
                    "--redirects", "3"] if ranks > 1 else []
        try:
            proc = subprocess.run([sys.executable, *launcher, "-m", "fourds", *argv], env=env, capture_output=True,
                                  text=True, timeout=timeout, errors="replace")
        except subprocess.TimeoutExpired:
            return None, "", _Hang()
        if ranks == 1:
            return proc.returncode, proc.stdout + proc.stderr, None
        files = sorted(Path(logs).rglob("*.log"), key=lambda p: (p.parent.name, p.name))
        return proc.returncode, "".join(p.read_text(errors="replace") for p in files), None


def classify(kind: Kind, damaged: str, rc: int | None, output: str, escaped: BaseException | None,
             changed: list[str], unpickled: bool) -> tuple[str, str]:
    """``(outcome, one-line summary)`` of a finished case (see the module docstring)."""
    lines = output.splitlines()
    last = next((line for line in reversed(lines) if line.strip()), "")
    if isinstance(escaped, _Hang) or (rc is None and escaped is None):
        return "hang", "no result within the case timeout"
    if unpickled:
        return "unpickled", "the pickle payload ran"
    if escaped is not None or "Traceback (most recent call last)" in output:
        name = type(escaped).__name__ if escaped is not None else "printed"
        return "traceback", f"{name}: {str(escaped)[:200] if escaped is not None else last[:200]}"
    if changed:
        return "overwritten", f"changed or removed: {', '.join(changed[:5])}"
    starts = [i for i, line in enumerate(lines) if ERROR_LINE.match(line)]
    for start, end in zip(starts, [*starts[1:], len(lines)]):  # one per rank under torch.distributed.run
        # the CLI's one-paragraph error: short, and not cut by the CLI's safety net
        block = "\n".join(line for line in lines[start:end] if not TQDM.match(line)).strip()
        if len(block) > MAX_CHARS or CUT_MARK in block or "\n\n" in block:
            return "long_error", f"an error of {len(block)} characters{' (cut by the CLI)' if CUT_MARK in block else ''}"
    longest = max((len(line) for line in lines), default=0)
    if longest > MAX_LINE:  # reports (data check) list one reason per file: each must be short
        return "long_error", f"a line of {longest} characters"
    parent = Path(damaged).parent  # a folder named by its path (two parts or more: not just "data")
    named = Path(damaged).name in output or (len(parent.parts) >= 2 and str(parent) in output)
    if rc == 0:
        warned = next((line for line in lines if Path(damaged).name in line and WARNING.search(line)), None)
        if damaged.startswith(kind.own or ("\0",)) and warned is None:
            return "silent", "exit 0, the damage is not reported"
        return "success", f"exit 0, damage reported: {warned[:150]}" if warned else f"exit 0: {last[:150]}"
    if not named:
        return "unnamed_error", last[:200]
    return "clean_error", last[:200]


def run_case(seed: int, case: int, templates: Path, work: Path, kinds: tuple[Kind, ...] = (),
             subprocess_mode: bool = False, timeout: float = 120.0, keep: bool = False) -> Result:
    """Copy the kind's template, damage one file, run the command, classify (see the module docstring)."""
    kinds = kinds or KINDS
    kind, rel, how, rng = plan(seed, case, kinds)
    case_dir = work / f"case_{case:05d}_{kind.name}"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    shutil.copytree(templates / kind.name, case_dir)
    (case_dir / "DAMAGED").write_text(rel)
    detail = damage(case_dir / rel, how, rng, case_dir)
    before = _hashes(case_dir)
    argv = kind.command(case_dir)
    start = time.perf_counter()
    if subprocess_mode or kind.ranks > 1:
        rc, output, escaped = _run_subprocess(argv, timeout, ranks=kind.ranks)
    else:
        rc, output, escaped = _run_in_process(argv, timeout)
    seconds = time.perf_counter() - start
    after = _hashes(case_dir)
    kept = set(after.values())  # a file moved aside (e.g. an unreadable checkpoint renamed) is not lost
    changed = [p for p, h in before.items()
               if after.get(p) != h and h not in kept and not p.startswith(kind.volatile or ("\0",))]
    unpickled = (case_dir / MARKER).exists()
    outcome, summary = classify(kind, rel, rc, output, escaped, changed, unpickled)
    if not keep:
        shutil.rmtree(case_dir, ignore_errors=True)
    return Result(case, kind.name, rel, how, detail, outcome, rc, seconds, summary, output)


def build_templates(templates: Path, kinds: tuple[Kind, ...]) -> None:
    """Write each kind's intact template once (skipped when already there)."""
    for kind in kinds:
        folder = templates / kind.name
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            kind.build(folder)
            (folder / ".complete").write_text("")
        if not kind.files:
            _ALL[kind.name] = tuple(str(p.relative_to(folder)) for p in sorted(folder.rglob("*"))
                                    if p.is_file() and p.name != ".complete")


def select(names: list[str] | None) -> tuple[Kind, ...]:
    if not names:
        return KINDS
    known = {k.name: k for k in KINDS}
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown kind(s) {bad}; choose from {list(known)}")
    return tuple(known[n] for n in names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=100, help="number of cases (default 100)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--case", type=int, action="append", default=None, help="run only this case (repeatable)")
    p.add_argument("--kinds", nargs="+", default=None, help=f"only these kinds of file ({', '.join(k.name for k in KINDS)})")
    p.add_argument("--subprocess-every", type=int, default=50, metavar="N",
                   help="run every N-th case as a real `python -m fourds` process (default 50; 0: never)")
    p.add_argument("--case-timeout", type=float, default=180.0, help="seconds per case (default 180)")
    p.add_argument("--work", default=None, help="work folder (default: a temporary folder, removed at the end)")
    p.add_argument("--show", action="store_true", help="print each case's whole output and keep its folder")
    p.add_argument("--json", default=None, help="also write every case's result to this JSON file")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    kinds = select(args.kinds)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fourds-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    build_templates(work / "templates", kinds)
    cases = args.case if args.case is not None else list(range(args.cases))
    counts: Counter[str] = Counter()
    per_kind: dict[str, Counter[str]] = {}
    results = []
    start = time.perf_counter()
    for case in cases:
        sub = bool(args.subprocess_every) and case % args.subprocess_every == args.subprocess_every - 1
        r = run_case(args.seed, case, work / "templates", work / "cases", kinds, subprocess_mode=sub,
                     timeout=args.case_timeout, keep=args.show)
        counts[r.outcome] += 1
        per_kind.setdefault(r.kind, Counter())[r.outcome] += 1
        results.append(r)
        replay = f"python scripts/fuzz.py --seed {args.seed} --case {case}" + (
            f" --kinds {' '.join(k.name for k in kinds)}" if args.kinds else "") + " --show"
        if r.outcome in FAILURES:
            print(f"FAIL case {case} [{r.kind} {r.file} {r.damage}: {r.detail}] {r.outcome}: {r.summary}"
                  f"  replay: {replay}", flush=True)
        if args.show:
            print(f"--- case {case} [{r.kind} {r.file} {r.damage}: {r.detail}] rc={r.rc} {r.outcome} "
                  f"({r.seconds:.1f} s{', subprocess' if sub else ''})\n{r.output}")
    total = time.perf_counter() - start
    print(f"\n{len(cases)} cases (seed {args.seed}) in {total:.0f} s: "
          + ", ".join(f"{o} {counts[o]}" for o in OUTCOMES))
    width = max(len(k) for k in per_kind) if per_kind else 4
    print(f"{'kind':<{width}}  " + "  ".join(f"{o:>{max(5, len(o))}}" for o in OUTCOMES))
    for name, c in per_kind.items():
        print(f"{name:<{width}}  " + "  ".join(f"{c[o]:>{max(5, len(o))}}" for o in OUTCOMES))
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in dataclasses.asdict(r).items() if k != "output"}
                                               for r in results], indent=1))
    if not args.work and not args.show:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(counts[f] for f in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
