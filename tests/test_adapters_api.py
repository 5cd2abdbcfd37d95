"""The adapter API for users with their own backbone: the docs/baselines.md example, as a test (no
optional dependency needed)."""

import sys
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from fourds.models import Backbone
from fourds.models.adapters import BackboneAdapter, collect_layers, normalise, resize_frames
from fourds.models.adapters.base import pad_frames, resample_frames
from fourds.probe.protocol import run_probe
from fourds.probe.config import ProbeConfig

sys.path.insert(0, str(Path(__file__).parent))
from probe_toy import ToyTask  # noqa: E402


class MyImageViT(nn.Module):
    """Stands in for "your model": patch embedding + blocks + a final norm and pooling."""

    def __init__(self, dim=24, depth=3, patch=8):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, 2, 48, batch_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def embed(self, x):
        return self.patch(x).flatten(2).transpose(1, 2) + self.pos

    def forward(self, x):  # (N, 3, 32, 32) -> pooled (N, dim)
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).mean(1)


class Embed(nn.Module):
    """Wraps the embedding so a forward hook can capture layer 0."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.embed(x)


class MyAdapter(BackboneAdapter):
    """The docs example: per-frame image model at 32x32, ImageNet-normalised."""

    def __init__(self, model: MyImageViT):
        super().__init__()
        self.model, self.embedding = model, Embed(model)
        self.num_layers, self.dim = len(model.blocks), model.pos.shape[-1]
        self.patch_size, self.input_size = (1, 8, 8), (16, 32, 32)

    def token_grid(self, video_shape):
        return (int(video_shape[1]), 4, 4)  # frames are resized to 32x32

    def preprocess(self, video):
        frames = resize_frames(rearrange(video, "b t h w c -> (b t) c h w"), (32, 32))
        return normalise(frames, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), channel_dim=1)

    def forward_layers(self, frames, layers, video_shape):
        def run():
            x = self.embedding(frames)
            for block in self.model.blocks:
                x = block(x)

        tokens = collect_layers(run, self.embedding, self.model.blocks, layers)
        return {k: rearrange(v, "(b t) n c -> b t n c", b=video_shape[0]) for k, v in tokens.items()}


def test_a_user_adapter_meets_the_contract_and_probes(tmp_path):
    torch.manual_seed(0)
    adapter = MyAdapter(MyImageViT()).eval()
    assert isinstance(adapter, Backbone) and adapter.grid == (16, 4, 4)
    video = torch.rand(2, 3, 48, 40, 3)
    feats = adapter.features(video)
    assert len(feats) == 4 and all(f.shape == (2, 3, 16, 24) for f in feats)
    # The independent computation of block 2's output for frame 1 of clip 0.
    x = adapter.model.embed(adapter.preprocess(video)[1:2])
    for block in adapter.model.blocks[:2]:
        x = block(x)
    torch.testing.assert_close(feats[2][0, 1], x[0])
    assert torch.equal(adapter.features(video, layers=[-2, 0])[1], feats[0])
    res = run_probe(ProbeConfig(backbone="my-vit", out=str(tmp_path / "p"), steps=2, batch_size=4, warmup_steps=1,
                                lrs=[1e-3], layers=[3], save_every=2, log_every=1, tensorboard=False),
                    backbone=adapter, task=ToyTask())
    assert res["backbone_layers"] == 3 and res["configs"][0]["layer"] == 3


def test_frame_helpers():
    video = torch.arange(6.0).view(1, 6, 1, 1, 1).expand(1, 6, 2, 2, 3)
    assert resample_frames(video, 3)[0, :, 0, 0, 0].tolist() == [1.0, 3.0, 5.0]  # centred nearest
    assert resample_frames(video, 12)[0, :, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert resample_frames(video, 6) is video
    assert pad_frames(video[:, :5], 2)[0, :, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 4]
    frames = torch.rand(2, 3, 8, 8)
    assert resize_frames(frames, (8, 8)) is frames and resize_frames(frames, (4, 6)).shape == (2, 3, 4, 6)
