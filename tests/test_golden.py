"""Golden outputs (issue 19's safeguard): a tiny pretrain, distill, frozen probe and finetune run reproduce the
weights, results.json and loss curves recorded before the refactor bit for bit, and folders written by the
pre-refactor code (tests/fixtures/pre_arch) still load and resume."""

import importlib.util
import json
import shutil
from pathlib import Path

import torch

from fourds.models import load, load_module
from fourds.train import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "pre_arch"


def _golden_module():
    spec = importlib.util.spec_from_file_location("fourds_golden", ROOT / "scripts" / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden = _golden_module()


def expected() -> dict:
    return json.loads(golden.GOLDEN.read_text())


def test_fresh_runs_match_the_golden_outputs_bit_for_bit(tmp_path):
    torch_threads = torch.get_num_threads()
    try:
        got = golden.record(tmp_path / "golden")
    finally:
        torch.set_num_threads(torch_threads)
    diff = golden.differences(expected(), got)
    assert not diff, "\n".join(diff[:30])


def _weights_digest(module: torch.nn.Module) -> dict[str, str]:
    return {k: golden._tensor_digest(v) for k, v in module.state_dict().items()}


def test_pre_refactor_model_and_readout_folders_load_with_their_recorded_weights(monkeypatch):
    from fourds.tasks import registry

    class RegisteredToy(type(golden._toy_task())):
        @classmethod
        def option_names(cls) -> list[str]:
            return []

    monkeypatch.setitem(registry._TASKS, "toy_colour", RegisteredToy)  # the head's task, for this test only
    want = expected()["tensors"]
    for rel in ("pretrain/model", "distill/model", "frozen/heads/L02_lr0.003_wd0.0001"):
        loaded = load_module(FIXTURE / rel)
        recorded = {k.split("::", 1)[1]: v for k, v in want.items() if k.startswith(f"{rel}/model.safetensors::")}
        assert recorded and _weights_digest(loaded) == recorded, rel
    assert load(FIXTURE / "pretrain" / "model").num_layers == 2  # a model folder opens as a backbone too


def test_pre_refactor_checkpoint_resumes_to_the_golden_final_weights(tmp_path):
    run = tmp_path / "pretrain"
    shutil.copytree(FIXTURE / "pretrain", run, ignore=shutil.ignore_patterns("model"))
    cfg = PretrainConfig(out=str(run), resume=True)  # every other setting comes from the run's config.json
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        final = pretrain(cfg)
    finally:
        torch.set_num_threads(torch_threads)
    want = {k.split("::", 1)[1]: v for k, v in expected()["tensors"].items()
            if k.startswith("pretrain/model/model.safetensors::")}
    got = {k: golden._tensor_digest(v) for k, v in golden.load_file(str(final / "model.safetensors")).items()}
    assert got == want
