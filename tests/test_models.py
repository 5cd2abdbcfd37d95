"""The video ViT, the size registry and SimpleMAE."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import fourds.models as fm
from fourds.models.masking import masking_noise

TINY = dict(input_size=(4, 32, 48))  # non-square token grid 2x2x3


def tiny_vit(**kw):
    return fm.create("4ds-tiny", **{**TINY, **kw})


@pytest.mark.parametrize("name", fm.list_models())
def test_every_size_builds_on_meta_and_matches_table1(name):
    with torch.device("meta"):
        mae = fm.simple_mae(name)
    assert all(p.is_meta for p in mae.parameters())
    enc_plus_latent = fm.count_parameters(mae.encoder) + mae.latent_tokens.numel()
    table = fm.get_preset(name).table1_params_m
    if table is not None:
        assert abs(enc_plus_latent / 1e6 / table - 1) < 0.01, (name, enc_plus_latent)


def test_table1_architectures_and_4ds_j_setting():
    rows = {"4ds-s": (384, 12, 1536, 6), "4ds-b": (768, 12, 3072, 12), "4ds-l": (1024, 24, 4096, 16),
            "4ds-h": (1280, 32, 5120, 16), "4ds-g": (1664, 48, 8192, 16), "4ds-e": (1792, 56, 15360, 16),
            "4ds-j": (4096, 64, 32768, 32)}
    for name, (d, l, m, h) in rows.items():
        vit, mae = fm.build_configs(name)
        assert (vit.dim, vit.depth, vit.mlp_dim, vit.num_heads) == (d, l, m, h)
        assert vit.patch_size == (2, 16, 16) and mae.mask_ratio == 0.95
    vit, mae = fm.build_configs("4ds-j")
    assert vit.input_size == (16, 256, 256) and mae.num_latent_layers == 2 and mae.decoder_patch_size == (4, 32, 32)
    with torch.device("meta"):
        j = fm.simple_mae("4ds-j")
    assert j.latent_grid == (4, 8, 8) and vit.grid == (8, 16, 16)
    train = fm.get_preset("4ds-j").train_defaults()
    assert (train["lr"], train["warmup_steps"], train["steps"]) == (2e-4, 100_000, 1_000_000)
    s = fm.get_preset("4ds-s").train_defaults()
    assert (s["lr"], s["warmup_steps"], s["steps"], s["batch_size"]) == (1e-4, 10_000, 488_282, 2048)


def test_released_model_defaults():
    vit = tiny_vit()
    block = vit.blocks[0]
    assert block.norm1.eps == 1e-6 and block.norm2.eps == 1e-6
    assert block.mlp.act.approximate == "tanh"
    for proj in (block.attn.q, block.attn.k, block.attn.v, block.attn.proj):
        assert proj.bias is not None
    names = [n for n, _ in vit.named_parameters()]
    assert not any("cls" in n for n in names) and not any(n.startswith("norm") for n in names)


def test_features_layout_and_layer_selection():
    vit = tiny_vit()
    video = torch.rand(2, 4, 32, 48, 3)
    feats = vit.features(video)
    assert len(feats) == vit.num_layers + 1
    assert all(f.shape == (2, 2, 6, 64) for f in feats)
    # index k is the output of block k; no final norm after the last block
    x = feats[0].flatten(1, 2)
    for k, block in enumerate(vit.blocks, start=1):
        x = block(x)
        torch.testing.assert_close(feats[k], x.reshape(2, 2, 6, 64))
    # subsets keep the requested order; floats are fractional depths; negatives count from the end
    picked = vit.features(video, layers=[3, 0.5, -1])
    torch.testing.assert_close(picked[0], feats[3])
    torch.testing.assert_close(picked[1], feats[2])
    torch.testing.assert_close(picked[2], feats[4])


def test_forward_stops_after_deepest_requested_layer():
    vit = tiny_vit()
    calls = []
    for i, block in enumerate(vit.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    vit.features(torch.rand(1, 4, 32, 48, 3), layers=[2])
    assert calls == [0, 1]


def test_layer_index_rule():
    assert fm.layer_index(0.75, 56) == 42  # "layer 42 of 56" in the paper
    assert fm.layer_index(0.95, 12) == 11 and fm.layer_index(1.0, 12) == 12 and fm.layer_index(0.0, 12) == 0
    with pytest.raises(ValueError, match="out of range"):
        fm.resolve_layers([13], 12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fm.resolve_layers([1.5], 12)


def test_tubelet_embedding_equals_strided_conv3d():
    vit = tiny_vit()
    video = torch.rand(2, 4, 32, 48, 3)
    w = vit.patch_embed.proj.weight  # (D, pt*ph*pw*C) in (pt, ph, pw, C) order
    kernel = rearrange(w, "d (pt ph pw c) -> d c pt ph pw", pt=2, ph=16, pw=16, c=3)
    conv = F.conv3d(rearrange(video, "b t h w c -> b c t h w"), kernel, vit.patch_embed.proj.bias, stride=(2, 16, 16))
    ours = vit.patch_embed(video)
    torch.testing.assert_close(ours, rearrange(conv, "b d t h w -> b t h w d"), atol=1e-5, rtol=1e-5)


def test_attention_matches_explicit_softmax():
    vit = tiny_vit()
    attn = vit.blocks[0].attn
    x = torch.randn(2, 7, 64)
    q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=4) for p in (attn.q, attn.k, attn.v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16), dim=-1)
    expected = attn.proj(rearrange(weights @ v, "b h n d -> b n (h d)"))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_last_block_with_fewer_queries_equals_the_full_blocks_last_rows(checkpointing):
    """``run_blocks(..., keep_last=m)`` returns the last m rows of the full result, and the gradients of
    anything computed from those rows are the full path's (every token is still a key and a value)."""
    vit = tiny_vit()
    vit.set_grad_checkpointing(checkpointing)
    x = torch.randn(2, 9, 64, requires_grad=True)
    full = vit.run_blocks(x, 1, 3)
    weights = torch.randn(2, 5, 64)
    (full[:, -5:] * weights).sum().backward()
    expected = {n: p.grad.clone() for n, p in vit.named_parameters() if p.grad is not None}
    expected_x = x.grad.clone()
    vit.zero_grad()
    x.grad = None
    part = vit.run_blocks(x, 1, 3, keep_last=5)
    assert part.shape == (2, 5, 64)
    torch.testing.assert_close(part, full[:, -5:], atol=1e-5, rtol=1e-5)
    (part * weights).sum().backward()
    torch.testing.assert_close(x.grad, expected_x, atol=1e-5, rtol=1e-5)
    got = {n: p.grad for n, p in vit.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], atol=1e-5, rtol=1e-5)
    # one block, every row wanted: the plain forward
    torch.testing.assert_close(vit.blocks[2](x, 9), vit.blocks[2](x), atol=1e-6, rtol=1e-6)


def test_positional_embedding_interpolation():
    vit = tiny_vit()
    assert fm.resize_grid_embedding(vit.pos_embed, vit.grid) is vit.pos_embed  # trained grid: untouched
    const = torch.full((2, 2, 3, 5), 0.7)
    torch.testing.assert_close(fm.resize_grid_embedding(const, (4, 5, 6)), torch.full((4, 5, 6, 5), 0.7))
    feats = vit.features(torch.rand(1, 8, 64, 64, 3))  # other size: grid 4x4x4
    assert feats[-1].shape == (1, 4, 16, 64)
    feats[-1].sum().backward()
    assert vit.pos_embed.grad is not None and vit.pos_embed.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "shape,match",
    [((1, 4, 32, 48), "channels-last"), ((1, 4, 32, 40, 3), "multiple of the patch size 16"),
     ((1, 3, 32, 48, 3), "T=3 is not a multiple")],
)
def test_bad_input_shapes_are_named(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_vit().features(torch.rand(*shape))


def test_registry_rejects_unknown_names_and_keys():
    with pytest.raises(ValueError, match="unknown model '4ds-x'.*4ds-s"):
        fm.create("4ds-x")
    with pytest.raises(ValueError, match="unknown override"):
        fm.create("4ds-tiny", widht=3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        fm.create("4ds-tiny", num_heads=5)


def test_random_masking_keeps_exactly_the_lowest_noise_tokens():
    tokens = torch.randn(3, 20, 4)
    noise = torch.rand(3, 20)
    kept, mask, ids_keep, ids_restore = fm.random_masking(tokens, 5, noise)
    assert kept.shape == (3, 5, 4) and mask.sum(1).tolist() == [15, 15, 15]
    for b in range(3):
        expected = set(noise[b].argsort()[:5].tolist())
        assert set(ids_keep[b].tolist()) == expected == set((~mask[b]).nonzero().flatten().tolist())
        torch.testing.assert_close(kept[b], tokens[b, ids_keep[b]])
        assert torch.equal(noise[b].argsort()[ids_restore[b]], torch.arange(20))
    assert fm.num_kept(1568, 0.95) == 78


def test_masking_noise_is_per_sample_not_per_batch():
    a = masking_noise([11, 12, 13], 50)
    b = masking_noise([13], 50)
    torch.testing.assert_close(a[2:], b)
    assert not torch.equal(a[0], a[1])


def tiny_mae(**kw):
    return fm.simple_mae("4ds-tiny", **{**TINY, **kw})


def test_simple_mae_loss_is_plain_l2_on_all_patches():
    mae = tiny_mae()
    video = torch.rand(2, 4, 32, 48, 3)
    out = mae(video, sample_seeds=[1, 2])
    assert out.loss.dtype == torch.float32 and out.loss.ndim == 0
    assert out.reconstruction.shape == video.shape and out.mask.shape == (2, 12)
    assert out.mask.sum(1).tolist() == [12 - fm.num_kept(12, 0.95)] * 2
    torch.testing.assert_close(out.loss, ((out.reconstruction - video) ** 2).mean())


def test_reconstruction_depends_only_on_visible_tubelets():
    mae = tiny_mae().eval()
    video = torch.rand(1, 4, 32, 48, 3)
    noise = torch.rand(1, 12)
    out = mae(video, noise=noise)
    masked = out.mask[0].reshape(2, 2, 3)
    perturbed = video.clone()
    for t, h, w in masked.nonzero().tolist():
        perturbed[0, 2 * t:2 * t + 2, 16 * h:16 * h + 16, 16 * w:16 * w + 16] = torch.rand(2, 16, 16, 3)
    torch.testing.assert_close(mae(perturbed, noise=noise).reconstruction, out.reconstruction)
    visible = (~out.mask[0]).nonzero().flatten()[0].item()
    t, h, w = divmod(visible, 6)[0], *divmod(divmod(visible, 6)[1], 3)
    perturbed[0, 2 * t, 16 * h, 16 * w] += 0.5
    assert not torch.allclose(mae(perturbed, noise=noise).reconstruction, out.reconstruction)


def test_gradients_reach_every_parameter():
    mae = tiny_mae()
    mae(torch.rand(2, 4, 32, 48, 3)).loss.backward()
    missing = [n for n, p in mae.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_latent_grid_and_coarse_decoding_patch():
    mae = tiny_mae(decoder_patch_size=(4, 16, 16), num_latent_layers=1)
    assert mae.latent_grid == (1, 2, 3)
    out = mae(torch.rand(1, 4, 32, 48, 3))
    assert out.pred.shape == (1, 6, 4 * 16 * 16 * 3) and out.reconstruction.shape == (1, 4, 32, 48, 3)
    with pytest.raises(ValueError, match="num_latent_layers=9 exceeds"):
        tiny_mae(num_latent_layers=9)


def test_no_weight_decay_names_are_pos_embed_and_layernorms():
    mae = tiny_mae()
    names = mae.no_weight_decay()
    assert "encoder.pos_embed" in names and "encoder.blocks.0.norm1.weight" in names
    assert "encoder.blocks.0.attn.q.bias" not in names and "latent_tokens" not in names
    wide = mae.no_weight_decay(include_biases=True, include_latents=True)
    assert {"encoder.blocks.0.attn.q.bias", "decoder.bias", "latent_tokens"} <= wide
    assert set(dict(mae.named_parameters())) >= wide


def test_seeded_init_is_independent_of_order_and_device():
    a, b = tiny_mae(), tiny_mae()
    a.init_weights(seed=3)
    b.init_weights(seed=3)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    full = torch.empty_like(a.encoder.blocks[1].mlp.fc1.weight)
    from fourds.seeding import generator

    a.init_parameter("encoder.blocks.1.mlp.fc1.weight", full, generator(3, "encoder.blocks.1.mlp.fc1.weight"))
    assert torch.equal(full, a.encoder.blocks[1].mlp.fc1.weight)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    mae = tiny_mae()
    video = torch.rand(2, 4, 32, 48, 3)
    noise = torch.rand(2, 12)
    mae(video, noise=noise).loss.backward()
    plain = {n: p.grad.clone() for n, p in mae.named_parameters()}
    mae.zero_grad()
    mae.set_grad_checkpointing(True)
    mae(video, noise=noise).loss.backward()
    for n, p in mae.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], atol=1e-6, rtol=1e-5)


def test_simple_mae_embeds_only_kept_tubelets_equivalently():
    """Embedding the kept raw tubelets equals embedding every token and then dropping the masked ones."""
    mae = tiny_mae().eval()
    video = torch.rand(2, 4, 32, 48, 3)
    noise = torch.rand(2, 12)
    out = mae(video, noise=noise)
    enc = mae.encoder
    tokens = enc.embed(video).flatten(1, 3)
    kept, mask, _, _ = fm.random_masking(tokens, fm.num_kept(12, 0.95), noise)
    split = enc.num_layers - mae.mae_cfg.num_latent_layers
    x = enc.run_blocks(kept, 0, split)
    x = torch.cat([x, mae.latent_tokens.flatten(0, 2).expand(2, -1, -1)], dim=1)
    pred = mae.decoder(enc.run_blocks(x, split, enc.num_layers)[:, -12:])
    torch.testing.assert_close(out.pred, pred, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.mask, mask)
