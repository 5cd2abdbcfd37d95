"""Issue 19's layering rules that a refactor could silently break: every load kind is known to
``fourds.models`` without importing an upper package first, no upper package fills the lower layer's
registry, and ``fourds bench`` never imports the source checkout's ``benchmarks`` package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from fourds.models.io import DECLARED_KINDS, known_kinds, read_safetensors, tensor_checksum

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fourds"
TINY = {"depth": 2, "dim": 16, "num_heads": 2, "mlp_dim": 32, "input_size": (4, 32, 32)}


def _fresh_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter that imports this checkout's fourds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)


def _one_folder_per_kind(root: Path) -> dict[str, Path]:
    """A tiny folder of every kind fourds writes, written the way fourds writes it."""
    from fourds.convert.heads import VideoPatchReadout, save_heads
    from fourds.models import create, save_model, simple_mae
    from fourds.tasks import get_task
    from fourds.train.distill import DistillStudent
    from fourds.probe.sweep import save_head
    from fourds.probe.sweep import HeadSpec

    torch.manual_seed(0)
    folders = {
        "simple_mae": save_model(simple_mae("4ds-tiny", **TINY), root / "mae"),
        "video_vit": save_model(create("4ds-tiny", **TINY), root / "vit"),
        "distill_student": save_model(DistillStudent(create("4ds-tiny", **TINY), [16, 16], [1, 2]), root / "student"),
    }
    head = VideoPatchReadout(16, 16, 2, output_size=(4, 16, 16), patch_size=(2, 8, 8), layer=2)
    (folders["video_patch_readout"],) = save_heads({"depth": head}, root / "official")
    task = get_task("synth_motion", channels=16, num_heads=2)
    folders["probe_readout"] = root / "probe" / "heads" / "L01"
    save_head(task.build_readout(16, (2, 4, 4)), folders["probe_readout"], task, HeadSpec(1, 0.5, 1e-3, 1e-4), 16,
              (2, 4, 4))
    return folders


FRESH_LOAD = """
import json, sys
import fourds.models as fm
from fourds.models.io import tensor_checksum
upper = sorted(m for m in sys.modules if m.split(".")[:2] in (["fourds", "train"], ["fourds", "probe"], ["fourds", "convert"], ["fourds", "tasks"]))
assert not upper, f"importing fourds.models imported {upper}"
out = {}
for kind, path in json.loads(sys.argv[1]).items():
    module = fm.load_module(path)
    out[kind] = [type(module).__name__, tensor_checksum(module.state_dict())]
print(json.dumps(out))
"""


def test_a_fresh_interpreter_loads_every_kind_after_importing_only_fourds_models(tmp_path: Path) -> None:
    folders = _one_folder_per_kind(tmp_path)
    assert set(folders) == set(known_kinds()), "a kind without a test folder, or a folder of an unknown kind"
    proc = _fresh_python(FRESH_LOAD, json.dumps({k: str(v) for k, v in folders.items()}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind, folder in folders.items():
        assert json.loads((folder / "config.json").read_text())["kind"] == kind
        weights, _ = read_safetensors(folder / "model.safetensors")
        assert loaded[kind][1] == tensor_checksum(weights), kind
    assert loaded["distill_student"][0] == "DistillStudent" and loaded["probe_readout"][0] != "VideoPatchReadout"


def test_declared_kinds_name_loaders_that_exist() -> None:
    import importlib

    for kind, target in DECLARED_KINDS.items():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), kind


def test_no_package_fills_the_model_registry_from_above() -> None:
    callers = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               if p != SRC / "models" / "io.py" and re.search(r"\bregister_kind\(", p.read_text())]
    assert not callers, f"register_kind called from {callers}: declare the kind in fourds.models.io.DECLARED_KINDS"


def test_fourds_bench_does_not_import_the_checkouts_benchmarks_package() -> None:
    code = ("import sys\nfrom fourds.cli import main\nrc = main(['bench', '--list'])\n"
            "assert rc == 0, rc\nassert not [m for m in sys.modules if m.split('.')[0] == 'benchmarks'], 'imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pretrain" in proc.stdout and "extract" in proc.stdout


def _functions(path: Path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_the_training_loops_have_no_function_over_80_lines() -> None:
    long = [(f, name, n) for f in ("train/trainer.py", "train/pretrain.py", "train/distill.py", "probe/sweep.py",
                                   "probe/protocol.py")
            for name, n in _functions(SRC / f) if n > 80]
    assert not long, long


def test_no_private_name_is_imported_across_modules() -> None:
    import ast

    allowed: set[tuple[str, str]] = set()
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fourds"):
                found += [(str(path.relative_to(SRC)), a.name) for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert set(found) <= allowed, sorted(set(found) - allowed)


def test_one_dense_patch_readout_serves_the_depth_task_and_the_official_head() -> None:
    from fourds.convert.heads import VideoPatchReadout
    from fourds.readouts import PatchReadout
    from fourds.tasks import get_task

    depth = get_task("scannet", channels=16, num_heads=2, num_frames=4, input_size=(32, 32)).build_readout(8, (2, 2, 2))
    official = VideoPatchReadout(8, 16, 2, output_size=(4, 32, 32), layer=1)
    assert isinstance(depth, PatchReadout) and isinstance(official, PatchReadout)
    depth.load_state_dict(official.state_dict())  # an imported head's weights load into the task's readout
    features = torch.randn(1, 2, 4, 8)
    torch.testing.assert_close(depth(features, {}), official(features)[..., 0])


def test_every_task_and_the_toy_task_meet_the_typed_task_contract() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from probe_toy import ToyTask

    from fourds.tasks import TaskContract, get_task, list_tasks

    assert isinstance(ToyTask(), TaskContract)
    for name in list_tasks():
        assert isinstance(get_task(name), TaskContract), name


def test_the_probe_files_do_not_probe_the_task_with_getattr() -> None:
    probing = [(p.name, m.group(0)) for p in [*(SRC / "train").glob("*.py"), *(SRC / "probe").glob("*.py")]
               for m in re.finditer(r"(?:getattr|hasattr)\(task, \"(?!num_classes\")\w+\"", p.read_text())]
    assert not probing, f"{probing}: declare the member in fourds.tasks.base.TaskContract and read it there"
