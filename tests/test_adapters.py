"""Backbone adapters: Hugging Face image/video models (tiny random weights saved with save_pretrained and
loaded back through spec strings, from folders and a fake HF cache), the per-frame 4DS wrapper, errors,
and the probe accepting them."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from einops import rearrange

transformers = pytest.importorskip("transformers")

from fourds.models import Backbone, create, save_model  # noqa: E402
from fourds.models.adapters import MissingExtraError, PerFrame, build_backbone, parse_spec  # noqa: E402
from fourds.models.adapters.base import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from fourds.probe.protocol import run_probe  # noqa: E402
from fourds.probe.config import ProbeConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from probe_toy import ToyTask  # noqa: E402

LAYERS = 2
VIT = dict(hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2)


def _save(root: Path, name: str, model) -> Path:
    folder = root / name
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight checkpoints of every supported family, as save_pretrained folders."""
    t = transformers
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    vision = dict(image_size=32, patch_size=8, intermediate_size=64, **VIT)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                max_position_embeddings=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {
        "dinov2": _save(root, "dinov2", t.Dinov2Model(t.Dinov2Config(image_size=32, patch_size=8, mlp_ratio=2, **VIT))),
        "siglip": _save(root, "siglip", t.SiglipModel(t.SiglipConfig(vision_config=vision, text_config=text))),
        "siglip_vision_model": _save(root, "siglip_vision", t.SiglipVisionModel(t.SiglipVisionConfig(**vision))),
        "videomae": _save(root, "videomae", t.VideoMAEModel(t.VideoMAEConfig(
            image_size=32, patch_size=8, num_frames=4, tubelet_size=2, intermediate_size=64, **VIT))),
        "vjepa2": _save(root, "vjepa2", t.VJEPA2Model(t.VJEPA2Config(
            crop_size=32, frames_per_clip=4, patch_size=8, tubelet_size=2, hidden_size=48, num_hidden_layers=LAYERS,
            num_attention_heads=2, mlp_ratio=2, pred_hidden_size=24, pred_num_hidden_layers=1,
            pred_num_attention_heads=2, pred_num_mask_tokens=2))),
    }


def spec(folder: Path, family: str) -> str:
    return f"hf:{folder}?image_size=32" if family == "dinov2" else f"hf:{folder}"


def reference_hidden_states(adapter, pixels: torch.Tensor) -> tuple:
    """transformers' own output_hidden_states: the independent reference for every layer."""
    return adapter.model(pixel_values=pixels, output_hidden_states=True).hidden_states


IMAGE = ["dinov2", "siglip", "siglip_vision_model"]


@pytest.mark.parametrize("family", IMAGE)
def test_image_models_run_per_frame_with_every_layer_matching_transformers(hf_models, family):
    bb = build_backbone(spec(hf_models[family], family))
    assert isinstance(bb, Backbone) and bb.num_layers == LAYERS and bb.dim == 32
    assert bb.patch_size == (1, 8, 8) and bb.token_grid((1, 5, 48, 64, 3)) == (5, 4, 4)
    video = torch.rand(2, 3, 48, 64, 3)
    feats = bb.features(video)
    assert len(feats) == LAYERS + 1 and all(f.shape == (2, 3, 16, 32) and f.dtype == torch.float32 for f in feats)
    pixels = bb.preprocess(video)
    hidden = reference_hidden_states(bb, pixels)
    prefix = 1 if family == "dinov2" else 0  # DINOv2's CLS token is dropped
    for k in range(LAYERS + 1):
        ref = rearrange(hidden[k][:, prefix:], "(b t) n c -> b t n c", b=2)
        torch.testing.assert_close(feats[k], ref, rtol=1e-5, atol=1e-5)
    # Layer 0 is the patch + positional embedding.
    torch.testing.assert_close(feats[0], rearrange(bb.embeddings(pixels)[:, prefix:], "(b t) n c -> b t n c", b=2))
    # Frames are encoded independently: changing frame 2 leaves frames 0 and 1 untouched.
    other = video.clone()
    other[:, 2] = torch.rand_like(other[:, 2])
    changed = bb.features(other, layers=[-1])[0]
    torch.testing.assert_close(changed[:, :2], feats[-1][:, :2])
    assert not torch.allclose(changed[:, 2], feats[-1][:, 2])
    # Encoding in chunks of frames (bounded memory) gives the same features.
    chunked = build_backbone(spec(hf_models[family], family), frame_batch=4).features(video)
    for a, b in zip(chunked, feats):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["dinov2", "videomae"])
def test_layer_requests_stop_early_and_keep_the_requested_order(hf_models, family):
    bb = build_backbone(spec(hf_models[family], family))
    calls = [0] * LAYERS
    for i, block in enumerate(bb.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1))
    video = torch.rand(1, 4, 32, 32, 3)
    full = bb.features(video)
    assert calls == [1, 1]
    part = bb.features(video, layers=[1, 0])
    assert calls == [2, 1]  # block 2 never ran
    torch.testing.assert_close(part[0], full[1])
    torch.testing.assert_close(part[1], full[0])
    assert torch.equal(bb.features(video, layers=[0.5])[0], full[1])  # fractional depth 0.5 of 2 blocks
    with pytest.raises(ValueError, match="out of range"):
        bb.features(video, layers=[3])


def test_preprocessing_normalises_resizes_whole_frames_and_reads_processor_config(hf_models, tmp_path):
    dino = build_backbone(spec(hf_models["dinov2"], "dinov2"))
    video = torch.zeros(1, 2, 64, 96, 3)
    video[..., 48:, :] = 1.0  # right half white
    pixels = dino.preprocess(video)
    assert pixels.shape == (2, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(pixels[0, :, 5, 2], -mean / std)  # left edge stays black: no crop
    torch.testing.assert_close(pixels[0, :, 5, 29], (1 - mean) / std)  # right edge stays white
    sig = build_backbone(f"hf:{hf_models['siglip']}").preprocess(torch.rand(1, 1, 40, 40, 3))
    assert sig.shape == (1, 3, 32, 32) and sig.min() >= -1 and sig.max() <= 1  # SigLIP: (x - 0.5) / 0.5
    custom = tmp_path / "dino_custom"
    shutil.copytree(hf_models["dinov2"], custom)
    (custom / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0, 0, 0], "image_std": [1, 1, 1], "crop_size": {"height": 24, "width": 24}}))
    bb = build_backbone(f"hf:{custom}")
    assert bb.image_size == 24 and bb.token_grid((1, 2, 64, 64, 3)) == (2, 3, 3)
    frame = torch.rand(1, 1, 24, 24, 3)
    torch.testing.assert_close(bb.preprocess(frame)[0], frame[0, 0].permute(2, 0, 1))


def test_video_models_handle_tubelets_frame_counts_and_match_transformers(hf_models):
    mae = build_backbone(f"hf:{hf_models['videomae']}")
    assert mae.patch_size == (2, 8, 8) and mae.input_size == (4, 32, 32) and mae.grid == (2, 4, 4)
    video = torch.rand(2, 8, 40, 40, 3)  # 8 frames -> resampled to the model's 4
    assert mae.token_grid(video.shape) == (2, 4, 4)
    pixels = mae.preprocess(video)
    assert pixels.shape == (2, 4, 3, 32, 32)
    feats = mae.features(video)
    hidden = mae.model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(feats) == len(hidden) == LAYERS + 1
    for f, h in zip(feats, hidden):
        torch.testing.assert_close(f, rearrange(h, "b (t n) c -> b t n c", t=2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="only takes 4 frames"):
        build_backbone(f"hf:{hf_models['videomae']}?num_frames=8")

    jepa = build_backbone(f"hf:{hf_models['vjepa2']}")
    assert not hasattr(jepa.model, "predictor")  # encoder only
    for t, t_grid in [(6, 3), (5, 3), (2, 1)]:  # any frame count; odd ones are padded to the tubelet
        clip = torch.rand(1, t, 32, 32, 3)
        feats = jepa.features(clip)
        assert jepa.token_grid(clip.shape) == (t_grid, 4, 4)
        assert all(f.shape == (1, t_grid, 16, 48) for f in feats)
    full = transformers.VJEPA2Model.from_pretrained(hf_models["vjepa2"]).eval()
    hidden = full(jepa.preprocess(clip), output_hidden_states=True, skip_predictor=True).hidden_states
    for f, h in zip(feats, hidden):
        torch.testing.assert_close(f, rearrange(h, "b (t n) c -> b t n c", t=1), rtol=1e-5, atol=1e-5)
    assert build_backbone(f"hf:{hf_models['vjepa2']}?num_frames=2").token_grid((1, 16, 32, 32, 3)) == (1, 4, 4)
    with pytest.raises(ValueError, match="runs at 32 pixels only"):
        build_backbone(f"hf:{hf_models['vjepa2']}?image_size=64")


def test_hub_ids_resolve_offline_from_the_hf_cache_layout(hf_models, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "home" / "hub" / "models--tinyorg--dino"
    shutil.copytree(hf_models["dinov2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    bb = build_backbone("hf:tinyorg/dino", image_size=32)
    assert bb.num_layers == LAYERS and bb.spec == "hf:tinyorg/dino"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "home" / "hub"))
    assert build_backbone(f"hf:tinyorg/dino?revision={commit}&image_size=32").dim == 32
    with pytest.raises(FileNotFoundError, match=r"models--facebook--dinov2-large.*huggingface-cli download"):
        build_backbone("hf:facebook/dinov2-large")


def test_clear_errors_for_bad_specs_missing_transformers_and_unknown_families(hf_models, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown scheme 'jax'"):
        build_backbone("jax:videoprism")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['size'\]"):
        build_backbone(f"hf:{hf_models['dinov2']}?size=3")
    assert parse_spec("hf:org/m?image_size=448&x=abc").options == {"image_size": 448, "x": "abc"}
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'.*dinov2.*vjepa2"):
        build_backbone(f"hf:{other}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone(f"hf:{tmp_path}/nothing/here")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'fourds\[baselines\]'"):
        build_backbone(spec(hf_models["dinov2"], "dinov2"))


def test_perframe_runs_a_4ds_model_one_repeated_frame_at_a_time(tmp_path):
    inner = create("4ds-tiny", input_size=(4, 32, 32), depth=2, dim=32, num_heads=2, mlp_dim=64)
    inner.init_weights(seed=1)
    save_model(inner, tmp_path / "m")
    pf = build_backbone(f"perframe:{tmp_path / 'm'}")
    assert isinstance(pf, PerFrame) and pf.patch_size == (1, 16, 16) and pf.num_layers == 2
    video = torch.rand(2, 3, 32, 48, 3)
    assert pf.token_grid(video.shape) == (3, 2, 3)
    feats = pf.features(video)
    assert len(feats) == 3 and all(f.shape == (2, 3, 6, 32) for f in feats)
    for t in range(3):  # the independent formula: frame t alone, repeated to fill the 2-frame tubelet
        alone = inner.features(video[:, t:t + 1].repeat(1, 2, 1, 1, 1))
        for f, ref in zip(feats, alone):
            torch.testing.assert_close(f[:, t], ref[:, 0], rtol=1e-5, atol=1e-5)
    random_init = build_backbone("perframe:4ds-tiny?seed=3", depth=2)
    assert random_init.num_layers == 2 and random_init.dim == 64
    with pytest.raises(ValueError, match="neither a fourds model folder nor a registered model"):
        build_backbone("perframe:no-such-model")


def test_timm_vits_run_per_frame():
    try:
        import timm  # noqa: F401
    except Exception as err:  # torchvision's CPU wheel fails with RuntimeError, not ImportError
        pytest.skip(f"timm/torchvision cannot be imported here ({type(err).__name__}: {err})")
    bb = build_backbone("timm:vit_tiny_patch16_224?pretrained=false", img_size=32)
    video = torch.rand(1, 2, 40, 40, 3)
    feats = bb.features(video)
    assert len(feats) == bb.num_layers + 1 and feats[0].shape == (1, 2, 4, bb.dim)
    pixels = bb.preprocess(video)
    ref = bb.model.norm_pre(bb.model._pos_embed(bb.model.patch_embed(pixels)))[:, bb.prefix_tokens:]
    torch.testing.assert_close(feats[0], rearrange(ref, "(b t) n c -> b t n c", b=1))


def test_timm_without_torchvision_names_the_extra():
    try:
        import timm  # noqa: F401
        pytest.skip("timm imports here; the missing-extra message cannot be exercised")
    except Exception:
        pass
    with pytest.raises(MissingExtraError, match=r"fourds\[timm\]"):
        build_backbone("timm:vit_tiny_patch16_224?pretrained=false")


@pytest.mark.parametrize("backbone", ["hf-dinov2", "hf-vjepa2", "perframe"])
def test_probe_accepts_adapter_specs(hf_models, tmp_path, backbone):
    specs = {"hf-dinov2": spec(hf_models["dinov2"], "dinov2"), "hf-vjepa2": f"hf:{hf_models['vjepa2']}",
             "perframe": "perframe:4ds-tiny?depth=2&dim=32&num_heads=2&mlp_dim=64"}
    cfg = ProbeConfig(backbone=specs[backbone], out=str(tmp_path / "probe"), steps=3, batch_size=4,
                      warmup_steps=1, lrs=[1e-3], layers=[0.95], save_every=3, log_every=1, tensorboard=False)
    res = run_probe(cfg, task=ToyTask())
    assert res["backbone"] == specs[backbone] and res["backbone_layers"] == LAYERS
    assert len(res["configs"]) == 1 and res["backbone_forward_calls"]["train"] == 3
    head = json.loads((tmp_path / "probe" / "heads" / res["chosen"] / "config.json").read_text())
    expected = {"hf-dinov2": [4, 4, 4], "hf-vjepa2": [2, 4, 4], "perframe": [4, 2, 2]}[backbone]
    assert head["grid"] == expected  # the probe built its readout on the adapter's reported grid


def test_a_save_pretrained_folder_needs_no_hf_prefix(hf_models):
    from fourds.probe.protocol import resolve_backbone

    backbone = resolve_backbone(str(hf_models["vjepa2"]))
    assert backbone.num_layers == LAYERS and tuple(backbone.grid) == (2, 4, 4)
