"""Moved modules' old paths still import, warn with a DeprecationWarning and hand out the very objects of
the new modules (issue 19: the probe protocol moved from ``fourds.train`` to ``fourds.probe``; no shim file
stays in ``fourds/train``, which keeps at most ten modules)."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest

from fourds._moved import MOVED

SRC = Path(__file__).resolve().parents[1] / "src" / "fourds"

#: The public names each old module defined before the move (recorded from the old modules).
OLD_NAMES: dict[str, tuple[str, ...]] = {
    "fourds.train.probe": ('ProbeData', 'clip_size', 'run_probe', 'save_head'),
    "fourds.train.probe_loop": ('HeadTrainer', 'StopRequested', 'eval_loader', 'evaluate', 'evaluate_with_samples', 'float_outputs', 'head_groups', 'select'),
    "fourds.train.probe_data": ('EvalClips', 'ShardSampler', 'TrainDraws', 'collate_clips', 'collate_fn', 'first_clip_batch', 'holdout_split', 'make_loader', 'merge_clip_outputs', 'task_clips', 'to_device', 'tree_map'),
    "fourds.train.probe_heads": ('FinetuneModel', 'HeadSpec', 'ReadoutBank', 'build_head', 'count_params', 'default_layers', 'fingerprint', 'freeze_after', 'head_specs', 'resolve_backbone'),
    "fourds.train.probe_config": ('DEVICES', 'FINETUNE_DEFAULTS', 'FROZEN_DEFAULTS', 'PRECISIONS', 'ProbeConfig', 'RESUMABLE_KEYS', 'SELECT_ON'),
    "fourds.train.probe_metrics": ('MetricAccumulator', 'primary_spec', 'spec_for'),
    "fourds.train.probe_report": ('MODEL_FOLDER', 'backbone_label', 'backbone_labels', 'find_results', 'layer_curves', 'load_runs', 'markdown_tables', 'model_name', 'plot_layer_depth', 'plot_size_scaling', 'table_rows', 'write_report'),
    "fourds.train.probe_visualize": ('COMPASS', 'boxes_legend', 'class_name', 'draw_boxes', 'draw_cameras', 'draw_depth', 'draw_points', 'motion_class_name', 'points_legend', 'predictions', 'visualize', 'visualize_sample'),
    "fourds.train.feature_cache": ('FEATURE_PREFIX', 'FeatureCache', 'check_deterministic', 'feature_key'),
    "fourds.train.flops": ('CPU_SDPA_FORMULAS', 'count_forward_flops', 'flop_counter', 'mae_train_flops', 'peak_flops'),
    "fourds.train.distill_config": ('DistillConfig', 'PAPER_DISTILL_DEFAULTS', 'PAPER_TEACHER_LAYERS', 'TEACHER_PRECISIONS'),
}


def _fresh_import(old: str):  # noqa: ANN202
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old.replace(".", r"\.") + " moved to"):
        return importlib.import_module(old)


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_an_old_path_warns_and_holds_the_same_objects(old: str) -> None:
    module = _fresh_import(old)
    new = [importlib.import_module(name) for name in MOVED[old]]
    for name in OLD_NAMES[old]:
        obj = getattr(module, name)
        assert any(vars(m).get(name) is obj for m in new), (old, name)


def test_every_moved_path_is_tested_and_left_no_file_behind() -> None:
    assert set(OLD_NAMES) <= set(MOVED)
    for old in MOVED:
        rel = Path(*old.split(".")[1:])
        assert not (SRC / rel.with_suffix(".py")).exists() and not (SRC / rel).is_dir(), old


def test_from_import_of_an_old_path_works() -> None:
    sys.modules.pop("fourds.train.probe_heads", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fourds.train.probe_heads import HeadSpec, resolve_backbone  # noqa: PLC0415
    from fourds.probe.protocol import resolve_backbone as new_resolve
    from fourds.probe.sweep import HeadSpec as NewHeadSpec

    assert HeadSpec is NewHeadSpec and resolve_backbone is new_resolve


def test_the_new_paths_import_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for names in MOVED.values():
            for name in names:
                importlib.import_module(name)


def test_a_pickle_naming_an_old_path_loads() -> None:
    import pickle

    from fourds.probe.sweep import HeadSpec

    spec = HeadSpec(1, 0.5, 1e-3, 1e-4)
    blob = pickle.dumps(spec, protocol=2).replace(b"fourds.probe.sweep", b"fourds.train.probe_heads")
    assert b"fourds.train.probe_heads" in blob
    sys.modules.pop("fourds.train.probe_heads", None)
    with pytest.warns(DeprecationWarning):
        assert pickle.loads(blob) == spec


def test_train_has_at_most_ten_modules_besides_its_init() -> None:
    modules = sorted(p.name for p in (SRC / "train").glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 10 and not [p for p in (SRC / "train").iterdir() if p.is_dir() and p.name != "__pycache__"], modules
