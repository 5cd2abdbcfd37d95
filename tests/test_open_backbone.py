"""``fourds.models.open_backbone``: every way a backbone is named, and the seed rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fourds.models import create, open_backbone, save_model
from fourds.models.adapters import PerFrame

FIX = Path(__file__).resolve().parent / "fixtures" / "official"
TINY = {"depth": 2, "dim": 16, "num_heads": 2, "mlp_dim": 32}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_registered_name_is_random_init_from_the_seed_for_the_clip_size() -> None:
    a = open_backbone("4ds-tiny", seed=3, overrides=TINY, clip_size=(4, 32, 32))
    b = open_backbone("4ds-tiny", seed=3, overrides=TINY, clip_size=(4, 32, 32))
    c = open_backbone("4ds-tiny", seed=4, overrides=TINY, clip_size=(4, 32, 32))
    assert _same(a, b) and not _same(a, c)
    assert tuple(a.input_size) == (4, 32, 32)
    ref = create("4ds-tiny", **TINY, input_size=(4, 32, 32))
    ref.init_weights(seed=3)
    assert _same(a, ref)


def test_the_old_name_resolve_backbone_opens_the_same_model() -> None:
    from fourds.probe.protocol import resolve_backbone

    assert _same(resolve_backbone("4ds-tiny", TINY, 5, (4, 32, 32)),
                 open_backbone("4ds-tiny", seed=5, overrides=TINY, clip_size=(4, 32, 32)))


def test_a_model_folder_does_not_depend_on_the_seed(tmp_path: Path) -> None:
    model = create("4ds-tiny", **TINY)
    model.init_weights(seed=1)
    save_model(model, tmp_path / "m")
    assert _same(open_backbone(tmp_path / "m", seed=0), model)
    assert _same(open_backbone(str(tmp_path / "m"), seed=9), model)


def test_an_official_npz_is_a_spec(tmp_path: Path) -> None:
    from fourds.convert import from_official_npz

    ref, _ = from_official_npz(FIX / "tiny_depth.npz")
    assert _same(open_backbone(str(FIX / "tiny_depth.npz")), ref)
    with pytest.raises(FileNotFoundError, match="official checkpoint"):
        open_backbone(str(tmp_path / "missing.npz"))


def test_perframe_takes_its_own_seed_option() -> None:
    a = open_backbone("perframe:4ds-tiny?seed=2", seed=7)
    b = open_backbone("perframe:4ds-tiny?seed=2", seed=8)
    assert isinstance(a, PerFrame) and _same(a, b)


def test_an_unknown_spec_names_the_schemes() -> None:
    with pytest.raises(ValueError, match="scheme"):
        open_backbone("nosuch:thing")


def test_extract_opens_any_spec_and_keeps_model_folder_heads(tmp_path: Path) -> None:
    from fourds.inference.models import open_model

    backbone, heads = open_model(str(FIX / "tiny_depth.npz"))
    assert set(heads) == {"depth"}
    backbone, heads = open_model("perframe:4ds-tiny")
    assert isinstance(backbone, PerFrame) and heads == {}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_model(str(tmp_path / "nothing"))
