"""Device correctness that CPU-only CI can check: seeded initialisation never draws into a parameter
(a CPU generator cannot draw into a CUDA tensor), masks are pure functions of (seed, sample id) hashed on
the device, FSDP2 runs at world size 1, the non-finite guard skips on the device, and CUDA out-of-memory
errors say what to lower.

How the first test catches the original bug: with ``init_named_parameters`` drawing with its seeded
generator straight into each parameter (the code before the fix), the dispatch mode below records
``uniform_``/``normal_`` calls with a generator whose target is a parameter's storage, and the test fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from fourds.models import create, simple_mae
from fourds.models.masking import masking_keys, masking_noise, num_kept, random_masking
from fourds.train import PretrainConfig, pretrain

M64 = (1 << 64) - 1


class _SeededDrawRecorder(TorchDispatchMode):
    """Records the storage pointer of every tensor an op fills from an explicit ``generator``."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if kwargs.get("generator") is not None and args and isinstance(args[0], torch.Tensor):
            self.targets.append(args[0].untyped_storage().data_ptr())
        return func(*args, **kwargs)


@pytest.mark.parametrize("build", [lambda: create("4ds-tiny"), lambda: simple_mae("4ds-tiny")])
def test_seeded_init_draws_on_the_cpu_and_copies_never_into_the_parameter(build):
    model = build()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with _SeededDrawRecorder() as rec:
        model.init_weights(seed=3)
    assert rec.targets, "the seeded init drew nothing with a generator"
    assert not params & set(rec.targets), "a seeded generator drew straight into a parameter (fails on CUDA)"


def test_seeded_init_is_the_same_wherever_the_model_is_materialised():
    with torch.device("meta"):
        lazy = simple_mae("4ds-tiny")
    lazy.to_empty(device="cpu")
    lazy.init_weights(seed=5)
    eager = simple_mae("4ds-tiny")
    eager.init_weights(seed=5)
    for (name, a), (_, b) in zip(lazy.state_dict().items(), eager.state_dict().items()):
        assert torch.equal(a, b), name
    other = simple_mae("4ds-tiny")
    other.init_weights(seed=6)
    assert not torch.equal(other.encoder.pos_embed, eager.encoder.pos_embed)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def test_masking_noise_equals_an_independent_python_formula():
    seeds = [0, 1, 2**62 + 12345, 2**63 - 1]
    noise = masking_noise(seeds, 7)
    for row, s in zip(noise.tolist(), seeds):
        key = _splitmix64(s)
        want = [(_splitmix64((key + j * 0x9E3779B97F4A7C15) & M64) >> 11) / 2**53 for j in range(7)]
        assert row == want
    assert noise.dtype == torch.float64 and 0.0 <= noise.min() and noise.max() < 1.0


def test_masks_depend_only_on_seed_and_sample_id_not_on_batch_layout():
    ids = torch.arange(10, 16)
    whole = masking_noise(masking_keys(7, ids), 128)
    halves = torch.cat([masking_noise(masking_keys(7, ids[:3]), 128), masking_noise(masking_keys(7, ids[3:]), 128)])
    assert torch.equal(whole, halves)
    assert not torch.equal(masking_noise(masking_keys(8, ids), 128), whole)  # the run seed matters
    tokens = torch.randn(6, 128, 4)
    keep = num_kept(128, 0.95)
    kept, mask, ids_keep, _ = random_masking(tokens, keep, whole)
    assert mask.sum(1).tolist() == [128 - keep] * 6
    assert len({tuple(r) for r in ids_keep.sort(1).values.tolist()}) == 6  # every clip its own mask


def test_uniformity_of_the_hashed_masking_noise():
    noise = masking_noise(list(range(200)), 256).flatten()
    hist = torch.histc(noise.float(), bins=10, min=0, max=1)
    expected = noise.numel() / 10
    chi2 = float(((hist - expected) ** 2 / expected).sum())
    assert chi2 < 40, chi2  # 9 degrees of freedom: p < 1e-5 beyond 40


def small(tmp_path, **kw) -> PretrainConfig:
    base = dict(model="4ds-tiny", data="random", out=str(tmp_path / "run"), num_frames=4, image_size=32,
                batch_size=4, steps=4, warmup_steps=1, save_every=2, log_every=1)
    return PretrainConfig(**{**base, **kw})


def test_fsdp_at_world_size_one_is_fsdp2_with_sharded_checkpoints_and_resume(tmp_path):
    import torch.distributed as dist

    plain = pretrain(small(tmp_path / "plain"))
    pretrain(small(tmp_path / "fsdp", strategy="fsdp", steps=2))
    assert not dist.is_initialized()  # the one-rank group is released after the run
    ckpt = Path(tmp_path / "fsdp" / "run" / "checkpoints" / "step_00000002")
    assert (ckpt / "dcp").is_dir() and not (ckpt / "model.safetensors").exists()
    sharded = pretrain(small(tmp_path / "fsdp", strategy="fsdp", resume=True))
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(sharded / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_non_finite_step_is_skipped_on_the_device_and_reported(tmp_path, monkeypatch):
    from fourds.train.device_step import NonFiniteGuard

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    guard = NonFiniteGuard(torch.device("cpu"), opt)
    for step, g in enumerate([1.0, float("nan"), 1.0]):
        p.grad = torch.full((3,), g)
        guard.update(step, p.grad.norm(), torch.tensor(0.5))
        guard.arm()
        before = p.detach().clone()
        opt.step()
        if step == 0:
            assert not torch.equal(p, before)
        else:  # the bad step and every later one are skipped: weights stay those of step 0
            assert torch.equal(p, before)
    assert guard.first_bad_step() == 1 and not guard.must_check_every_step


def test_cuda_out_of_memory_becomes_a_message_with_what_to_lower(tmp_path, monkeypatch):
    from fourds.models.simple_mae import SimpleMAE

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(SimpleMAE, "forward", oom)
    with pytest.raises(RuntimeError, match=r"ran out of memory.*4ds-tiny.*--batch-size 2 with --grad-accum 2"):
        pretrain(small(tmp_path))


def test_device_flag_errors_name_the_fix(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="--device cuda.*CUDA is not available.*--device cpu"):
        pretrain(small(tmp_path, device="cuda"))


class _ScalarReads(TorchDispatchMode):
    """Counts device → host scalar reads (``.item()``, ``float(t)``, ``bool(t)``: ``_local_scalar_dense``)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _scalar_reads_of_a_loop(tmp_path, steps: int) -> int:
    """Host reads of one train_loop of ``steps`` steps that logs and saves only at its last step."""
    from fourds.data.pretrain import RandomVideos
    from fourds.data.sources import DecodeFailures
    from fourds.train.optim import build_adamw, param_groups
    from fourds.train.pretrain import Data, build_model, start_run, train_loop

    cfg = small(tmp_path, steps=steps, log_every=1000, save_every=1000).resolved()
    run = start_run(cfg)
    model, core = build_model(cfg, run.info, run.strategy, run.bf16)
    optimizer = build_adamw(param_groups(core, 0.05, core.no_weight_decay()), 1e-3, (0.9, 0.95), run.info.device)
    gen = torch.Generator().manual_seed(0)
    batches = [{"video": torch.stack([RandomVideos((32, 32)).clip(i, 4, 1, gen) for i in range(4)]),
                "sample_id": torch.arange(4 * s, 4 * s + 4)} for s in range(steps)]
    ids_seen = []

    def loss(video, batch):
        ids_seen.append(batch["sample_id"])
        return model(video, sample_seeds=masking_keys(1, batch["sample_id"])).loss

    with _ScalarReads() as reads:
        train_loop(cfg, run, model, core, optimizer, batches, Data(None, 0, DecodeFailures(1, 0.01)), 0, loss,
                   1.0, desc="test")
    assert len(ids_seen) == steps
    return reads.count


def test_the_training_loop_reads_no_device_value_between_logging_steps(tmp_path):
    # Reads happen only at logging/saving steps: 3 steps and 9 steps that log once cost the same number.
    short, long = _scalar_reads_of_a_loop(tmp_path / "a", 3), _scalar_reads_of_a_loop(tmp_path / "b", 9)
    assert short == long, (short, long)
