"""Pretraining step speed on this machine: fourds SimpleMAE vs Hugging Face VideoMAEForPreTraining.

4DS-S (384 wide, 12 blocks, 6 heads, MLP 1536) and 4DS-B (768, 12, 12, 3072) against Hugging Face
models of the same encoder width/depth/heads/MLP, 16x224x224 clips, 95% random masking, one full
optimiser step (forward, backward, AdamW). Hugging Face settings: SDPA attention, VideoMAE's decoder
(384 wide, 4 layers, 6 heads, MLP 1536), no pixel normalisation. On CPU in fp32; with
``--device cuda`` in bf16 autocast with fused SDPA kernels only (``bench_cuda.py`` drives that).
Each configuration runs in a fresh subprocess so its peak memory is its own; with ``--rounds`` > 1 the
two implementations alternate and each keeps its best round. Model FLOPs of a whole forward + backward
are counted (torch.utils.flop_counter, with CPU flash attention registered and attention backward
counted as its four model matmuls, not the kernels' recompute of the scores) on that counted step, which
is also the warm-up; the achieved FLOP/s is compared with this machine's fp32 matmul peak measured in the
same run, and with the rate of the same matmul timed between the steps (same load, same threads).
``--profile`` adds a breakdown of one step's time by kind of op (matmul, attention, elementwise, ...).

    python benchmarks/bench_pretrain.py [--quick] [--model 4ds-s,4ds-b] [--batches 1,4] [--rounds 2]
        [--threads N] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import figure, peak_rss_mib, result  # noqa: E402

CLIP = (16, 224, 224)
QUICK_CLIP = (16, 64, 64)
#: Batches per model in the full run (4DS-B at batch 4 would take minutes per step on 2 cores).
FULL_BATCHES = {"4ds-s": (1, 4), "4ds-b": (1,)}


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 FLOP/s of an n x n matmul on the CPU with the default thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def matmul_rate(n: int = 2048) -> float:
    """FLOP/s of one fp32 n x n matmul on fresh operands (freed again, so it adds nothing to the
    process's peak memory); timed between training steps it measures the matmul rate under the load and
    thread settings of the moment."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t0 = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - t0)


def _sdpa_model_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                         **kwargs) -> int:
    """Attention backward as model FLOPs: dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q, i.e. twice
    the forward's two matmuls. PyTorch's formula adds a fifth matmul, the flash kernels' recompute of the
    scores, which is work the kernel chooses to do, not work of the model."""
    from torch.utils.flop_counter import sdpa_flop_count

    return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)


def _model_flop_formulas() -> dict:
    """Custom FLOP formulas: CPU flash attention (``fourds.train.device_step``), every SDPA backward as model
    FLOPs (:func:`_sdpa_model_backward`)."""
    from fourds.train.device_step import CPU_SDPA_FORMULAS

    aten = torch.ops.aten
    backward_ops = [aten._scaled_dot_product_flash_attention_for_cpu_backward]
    for name in ("_scaled_dot_product_flash_attention_backward", "_scaled_dot_product_efficient_attention_backward",
                 "_scaled_dot_product_cudnn_attention_backward"):
        if hasattr(aten, name):
            backward_ops.append(getattr(aten, name))
    return {**CPU_SDPA_FORMULAS, **{op: _sdpa_model_backward for op in backward_ops}}


def model_flop_counter():
    """``fourds.train.device_step.flop_counter()`` (which also counts CPU flash attention) with every SDPA
    backward counted as model FLOPs (:func:`_sdpa_model_backward`)."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_model_flop_formulas())


#: Kinds of op for ``--profile``: first matching rule wins, on the aten op name.
OP_KINDS = (
    ("attention backward", ("scaled_dot_product", "flash_attention", "efficient_attention"), "backward"),
    ("attention forward", ("scaled_dot_product", "flash_attention", "efficient_attention"), ""),
    ("matmul", ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear"), None),
    ("patch conv", ("convolution", "convolution_backward"), None),
    ("layer norm", ("native_layer_norm", "native_layer_norm_backward"), None),
    ("GELU", ("gelu", "gelu_backward"), None),
    ("optimiser", ("_fused_adamw", "_foreach_"), "prefix"),
    ("loss", ("mse_loss", "mse_loss_backward"), None),
    ("bias/residual adds, grad sums", ("add", "add_", "sum", "mul", "mul_", "div", "sub"), None),
    ("copies, fills, gathers, cat", ("copy_", "clone", "cat", "gather", "index", "index_put", "scatter_",
                                     "_to_copy", "slice_backward", "select_backward", "new_zeros", "zeros_like",
                                     "fill_", "zero_", "zeros", "ones_like", "sort", "argsort", "rand", "ones",
                                     "empty"), None),
    ("views (no data moved)", ("view", "_unsafe_view", "t", "transpose", "permute", "detach", "unsqueeze",
                               "squeeze", "slice", "select", "expand", "as_strided", "alias", "unbind", "split",
                               "lift_fresh", "_record_function_enter_new", "_record_function_exit"), None),
)


def op_kind(name: str) -> str:
    """The ``OP_KINDS`` label of an aten op name (``"other"`` if none matches)."""
    for label, names, mode in OP_KINDS:
        if mode == "backward" and any(n in name for n in names) and "backward" in name:
            return label
        if mode == "" and any(n in name for n in names):
            return label
        if mode == "prefix" and any(name.startswith(n) for n in names):
            return label
        if mode is None and name in names:
            return label
    return "other"


def profile_step(step) -> dict:
    """Time every aten op of one call of ``step()`` (forward, backward, optimiser: on CPU the autograd
    engine runs the backward on the calling thread) with this thread's CPU clock, grouped by
    :data:`OP_KINDS`. CPU time rather than wall time: an op's share does not depend on how often the
    shared machine took the core away meanwhile (with more than one thread, the other threads' work is
    not in it and an op waiting for them counts its spinning). Returns seconds and model FLOPs per kind
    and the step's total CPU seconds."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry, shape_wrapper

    formulas = {**flop_registry, **{op: shape_wrapper(f) for op, f in _model_flop_formulas().items()}}
    seconds: dict[str, float] = {}
    flops: dict[str, float] = {}

    class _Timer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            t0 = time.thread_time()
            out = func(*args, **kwargs)
            dt = time.thread_time() - t0
            kind = op_kind(func.overloadpacket.__name__)
            seconds[kind] = seconds.get(kind, 0.0) + dt
            formula = formulas.get(func.overloadpacket)
            if formula is not None:
                flops[kind] = flops.get(kind, 0.0) + formula(*args, out_val=out, **kwargs)
            return out

    t0 = time.thread_time()
    with _Timer():
        step()
    total = time.thread_time() - t0
    seconds["python and dispatch (not in any op)"] = max(0.0, total - sum(seconds.values()))
    return {"cpu_s": total, "by_kind_s": dict(sorted(seconds.items(), key=lambda kv: -kv[1])),
            "by_kind_flop": flops}


def _hf_model(dim: int, depth: int, heads: int, mlp: int, clip: tuple[int, int, int] = CLIP):
    """VideoMAE of the given encoder size; VideoMAE's own decoder (384/4/6/1536), or for encoders
    narrower than 384 (tiny smoke runs) a 4-layer decoder of the encoder's width."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    dec = (384, 4, 6, 1536) if dim >= 384 else (dim, 4, heads, mlp)
    cfg = VideoMAEConfig(
        image_size=clip[1], patch_size=16, num_channels=3, num_frames=clip[0], tubelet_size=2,
        hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=mlp,
        decoder_hidden_size=dec[0], decoder_num_hidden_layers=dec[1], decoder_num_attention_heads=dec[2],
        decoder_intermediate_size=dec[3], norm_pix_loss=False, use_mean_pooling=False,
        attn_implementation="sdpa",
    )
    return VideoMAEForPreTraining(cfg)


def _fused_sdpa():
    """On CUDA, allow only the fused attention kernels (cuDNN, flash, memory-efficient): if none fits,
    SDPA raises instead of silently running the unfused math path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION],
                       set_priority=True)


def worker(kind: str, model: str, batch: int, steps: int, warmup: int, clip: tuple[int, int, int] = CLIP,
           device: str = "cpu", precision: str = "fp32", threads: int | None = None, profile: bool = False) -> dict:
    """One configuration, in this process: returns timings, FLOPs and memory.

    The first step runs under the FLOP counter (and steps the optimiser, so its state exists): it is the
    warm-up; ``warmup`` more untimed steps follow, then ``steps`` timed ones (median reported). On CPU a
    2048^3 matmul is timed before each timed step (``matmul_alongside_gflops``: their median). ``threads``
    sets torch's intra-op threads; ``profile`` times one more step op by op (:func:`profile_step`).
    """
    import fourds.models as fm

    if threads:
        torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if precision == "bf16" and not cuda:
        raise ValueError("bf16 is measured on CUDA only (CPU bf16 is not a meaningful throughput figure here)")
    torch.manual_seed(0)
    vit_cfg, _ = fm.build_configs(model)
    n_tokens = (clip[0] // 2) * (clip[1] // 16) * (clip[2] // 16)
    keep = fm.num_kept(n_tokens, 0.95)
    video = torch.rand(batch, *clip, 3, device=dev)
    if kind == "fourds":
        net = fm.simple_mae(model, input_size=clip).to(dev)

        def loss_fn():
            return net(video, noise=torch.rand(batch, n_tokens, device=dev)).loss
    else:
        net = _hf_model(vit_cfg.dim, vit_cfg.depth, vit_cfg.num_heads, vit_cfg.mlp_dim, clip).to(dev)
        pixels = video.permute(0, 1, 4, 2, 3).contiguous()  # HF wants (B, T, C, H, W)

        def loss_fn():
            ids = torch.rand(batch, n_tokens, device=dev).argsort(1)
            mask = torch.ones(batch, n_tokens, dtype=torch.bool, device=dev)
            mask.scatter_(1, ids[:, :keep], False)
            return net(pixel_values=pixels, bool_masked_pos=mask).loss

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    # A fresh context per use: sdpa_kernel is a one-shot generator context manager (reusing one object
    # raised AttributeError on the second step: the CUDA worker's exit 1).
    attn = _fused_sdpa if cuda else contextlib.nullcontext
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp, attn():
            loss = loss_fn()
        loss.backward()
        opt.step()

    # As fourds.train.optim.build_adamw; the same for both implementations.
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    with model_flop_counter() as counter:  # model FLOPs of forward + backward of one step, attention included
        with amp, attn():
            loss = loss_fn()
        loss.backward()
    opt.step()
    flops = counter.get_total_flops()
    for _ in range(warmup):
        step()
    sync()
    rss_before = peak_rss_mib()
    times, mm_rates = [], []
    for _ in range(steps):
        if not cuda:
            mm_rates.append(matmul_rate())
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    out = {
        "kind": kind, "model": model, "batch": batch, "clip": "x".join(map(str, clip)), "device": device,
        "precision": precision, "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "step_s": sec, "step_times_s": times, "clips_per_s": batch / sec, "step_gflop": flops / 1e9,
        "achieved_gflops": flops / sec / 1e9,
        "peak_rss_mb": peak_rss_mib(), "rss_before_steps_mb": rss_before,
        "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "load_avg_1min": [load_start, os.getloadavg()[0]],
    }
    if mm_rates:
        out["matmul_alongside_gflops"] = statistics.median(mm_rates) / 1e9
        out["fraction_of_matmul_alongside"] = flops / sec / statistics.median(mm_rates)
    if profile:
        out["profile"] = profile_step(step)
    if cuda:
        out["peak_cuda_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        out["device_name"] = torch.cuda.get_device_name(dev)
    return out


def worker_env(omp_wait_policy: str | None = None) -> dict[str, str]:
    """Environment of a worker process: this one's, with ``src/`` on the path and OpenMP's wait policy.

    ``omp_wait_policy``: ``"passive"`` (the default unless ``OMP_WAIT_POLICY`` is already set), ``"active"``,
    or ``"default"`` (unset: libgomp spins a while before sleeping). Why passive: on a machine whose cores
    are shared with other busy processes, an OpenMP thread that spins at a barrier while its partner
    thread is descheduled burns the time slice its partner needs, so every parallel region can cost a
    scheduler slice; a tiny model's step measured 1.9 s instead of 0.06 s that way (docs/benchmarks.md).
    Passive waiting costs a futex wake per parallel region, little on an idle machine. Both
    implementations always run under the same policy.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    policy = omp_wait_policy or ("inherit" if "OMP_WAIT_POLICY" in os.environ else "passive")
    if policy == "default":
        env.pop("OMP_WAIT_POLICY", None)
    elif policy in ("passive", "active"):
        env["OMP_WAIT_POLICY"] = policy.upper()
    elif policy != "inherit":
        raise ValueError(f"omp_wait_policy={omp_wait_policy!r}: choose passive, active or default")
    return env


def _spawn(kind: str, model: str, batch: int, steps: int, warmup: int, clip: tuple[int, int, int] = CLIP,
           device: str = "cpu", precision: str = "fp32", threads: int | None = None, profile: bool = False,
           omp_wait_policy: str | None = None) -> dict:
    env = worker_env(omp_wait_policy)
    cmd = [sys.executable, __file__, "--worker", kind, "--model", model, "--batches", str(batch),
           "--steps", str(steps), "--warmup", str(warmup), "--clip", "x".join(map(str, clip)),
           "--device", device, "--precision", precision]
    if threads:
        cmd += ["--threads", str(threads)]
    if profile:
        cmd.append("--profile")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:  # keep the worker's own error: a bare CalledProcessError hides it
        raise WorkerError(f"{kind} worker ({model}, batch {batch}, {device} {precision}) exited with status "
                          f"{out.returncode}; its stderr ends with:\n{_tail(out.stderr)}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class WorkerError(RuntimeError):
    """A benchmark worker process failed; the message carries its stderr tail."""


def _tail(text: str | None, lines: int = 25) -> str:
    tail = (text or "").strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(no output on stderr)"


def _error_line(err: Exception) -> str:
    return str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)


def _best(a: dict, b: dict) -> dict:
    """Keep the faster of two measurements of one configuration (peak memory: the larger)."""
    if "step_s" not in a:
        return b
    if "step_s" not in b:
        return a
    best = dict(a if a["step_s"] <= b["step_s"] else b)
    for key in ("peak_rss_mb", "peak_cuda_mem_gib"):
        if key in a:
            best[key] = max(a[key], b[key])
    return best


def measure(quick: bool = False, models: tuple[str, ...] | None = None, batches: tuple[int, ...] | None = None,
            rounds: int = 1, steps: int | None = None, warmup: int = 0, device: str = "cpu",
            precision: str = "fp32", clip: tuple[int, int, int] | None = None,
            batches_by_model: dict[str, tuple[int, ...]] | None = None, threads: int | None = None,
            profile: bool = False, omp_wait_policy: str | None = None) -> dict:
    """Measure every configuration; returns the raw figures.

    ``quick`` is a smoke run of the plumbing (4ds-tiny at 16x64x64, batch 1, 2 timed steps); its numbers
    say nothing about the real models. The two implementations run alternately, ``rounds`` times each,
    and each keeps its fastest round: on a shared machine this keeps a burst of outside load from
    landing on one side of the ratio only.
    """
    if quick:
        models, clip, steps = models or ("4ds-tiny",), clip or QUICK_CLIP, steps or 2
        per_model = {m: batches or (1,) for m in models}
    else:
        models, clip, steps = models or tuple(FULL_BATCHES), clip or CLIP, steps or 3
        table = batches_by_model or FULL_BATCHES
        per_model = {m: batches or table.get(m, (1,)) for m in models}
    if threads:
        torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    peak = matmul_peak() if device == "cpu" else None
    rows = []
    for model in models:
        for batch in per_model[model]:
            ours: dict = {}
            theirs: dict = {}
            for _ in range(rounds):
                ours = _best(ours, _spawn("fourds", model, batch, steps, warmup, clip, device, precision, threads,
                                          profile, omp_wait_policy))
                try:
                    theirs = _best(theirs, _spawn("hf", model, batch, steps, warmup, clip, device, precision,
                                                  threads, profile, omp_wait_policy))
                except WorkerError as err:  # transformers missing or broken: report ours only
                    theirs = {"error": _error_line(err)}
            for r in (ours, theirs):
                if "achieved_gflops" in r and peak:
                    r["fraction_of_matmul_peak"] = r["achieved_gflops"] * 1e9 / peak
            rows.append({"model": model, "batch": batch, "fourds": ours, "hf": theirs,
                         "speedup": theirs.get("step_s", math.nan) / ours["step_s"]})
            print(f"{model} batch {batch}: fourds {ours['step_s']:.3f} s/step, HF "
                  f"{theirs.get('step_s', math.nan):.3f} s/step", file=sys.stderr, flush=True)
    return {"models": list(models), "clip": "x".join(map(str, clip)), "device": device, "precision": precision,
            "matmul_peak_gflops": peak / 1e9 if peak else None, "rounds": rounds, "steps": steps, "rows": rows,
            "threads": torch.get_num_threads(),
            "omp_wait_policy": worker_env(omp_wait_policy).get("OMP_WAIT_POLICY", "default"),
            "load_avg_1min": [load_start, os.getloadavg()[0]]}


def figures_for_rows(rows: list[dict], peak_key: str, peak_label: str, goal_fraction: float | None,
                     tera: bool = False) -> list[dict]:
    """Uniform figures for measured rows: s/step, clips/s, memory, FLOP/s, fraction of a peak, speed-up.
    ``tera``: FLOP rates in TFLOP/s (accelerators) rather than GFLOP/s."""
    scale, rate_unit = (1e-3, "TFLOP/s") if tera else (1.0, "GFLOP/s")

    def rate(r: dict) -> float | None:
        return r["achieved_gflops"] * scale if "achieved_gflops" in r else None

    figs = []
    for row in rows:
        ours, hf = row["fourds"], row["hf"]
        tag = f"{row['model']} batch {row['batch']}"
        peer = "HF VideoMAEForPreTraining"
        figs.append(figure(f"{tag}: step time", ours["step_s"], "s", peer=hf.get("step_s"), peer_name=peer,
                           note=hf.get("error", "")))
        figs.append(figure(f"{tag}: clips/s", ours["clips_per_s"], "clips/s", peer=hf.get("clips_per_s"),
                           peer_name=peer))
        if "peak_cuda_mem_gib" in ours:
            figs.append(figure(f"{tag}: peak CUDA memory", ours["peak_cuda_mem_gib"], "GiB",
                               peer=hf.get("peak_cuda_mem_gib"), peer_name=peer))
        else:
            figs.append(figure(f"{tag}: peak RSS", ours["peak_rss_mb"], "MiB", peer=hf.get("peak_rss_mb"),
                               peer_name=peer, note="whole worker process: model, optimiser, activations"))
        figs.append(figure(f"{tag}: FLOPs per step (counted)", ours["step_gflop"], "GFLOP",
                           peer=hf.get("step_gflop"), peer_name=peer,
                           note="model FLOPs of forward + backward, counted by torch.utils.flop_counter (attention "
                                "backward as its 4 matmuls)"))
        figs.append(figure(f"{tag}: achieved", rate(ours), rate_unit, peer=rate(hf), peer_name=peer))
        if peak_key in ours:
            frac = ours[peak_key]
            figs.append(figure(f"{tag}: fraction of {peak_label}", 100 * frac, "%",
                               peer=100 * hf[peak_key] if peak_key in hf else None, peer_name=peer,
                               goal=None if goal_fraction is None else f">= {100 * goal_fraction:.0f}%",
                               met=None if goal_fraction is None else frac >= goal_fraction))
        if "fraction_of_matmul_alongside" in ours:
            figs.append(figure(f"{tag}: fraction of the fp32 matmul rate timed between the steps",
                               100 * ours["fraction_of_matmul_alongside"], "%",
                               peer=100 * hf["fraction_of_matmul_alongside"] if "fraction_of_matmul_alongside" in hf
                               else None, peer_name=peer,
                               note=f"2048^3 matmul before each timed step, median {ours['matmul_alongside_gflops']:.1f} "
                                    f"GFLOP/s: same load, same threads as the steps"))
        speed = row["speedup"]
        # The 1.2x goal (issue 3) compares steps of about equal work, as at S size; where our step counts
        # far more FLOPs than HF's (4DS-B: latent tokens through 768-wide blocks vs HF's 384-wide
        # decoder) the ratio is reported and the achieved FLOP/s is the fair comparison.
        flop_ratio = ours["step_gflop"] / hf["step_gflop"] if "step_gflop" in hf else math.nan
        comparable = abs(flop_ratio - 1) <= 0.2
        figs.append(figure(f"{tag}: speed-up vs HF (HF s/step / ours)", speed, "x",
                           goal=">= 1.2x" if comparable else None,
                           met=None if math.isnan(speed) or not comparable else speed >= 1.2,
                           note="" if comparable or math.isnan(flop_ratio) else
                           f"no goal: our step does {flop_ratio:.2f}x HF's FLOPs; compare achieved FLOP/s"))
    return figs


def run(quick: bool = False, context: dict | None = None) -> dict:
    """The benchmark-suite entry: measure (see :func:`measure`) and return the uniform result."""
    raw = measure(quick)
    figs = [figure("fp32 matmul peak (2048^3, measured in this benchmark)", raw["matmul_peak_gflops"], "GFLOP/s")]
    figs += figures_for_rows(raw["rows"], "fraction_of_matmul_peak", "fp32 matmul peak", 0.75)
    load = raw["load_avg_1min"]
    notes = [
        f"CPU, fp32, {raw['clip']} clips, 95% random masking, {raw['threads']} threads, OMP_WAIT_POLICY "
        f"{raw['omp_wait_policy']} in the workers; median of {raw['steps']} timed steps after a FLOP-counted "
        f"warm-up step; {raw['rounds']} round(s), best kept; load average {load[0]:.2f} -> {load[1]:.2f}.",
        "FLOPs are model FLOPs (matmuls, convolutions, attention; attention backward as 4 matmuls, not the flash "
        "kernel's recompute of the scores). Fractions: of the 2048^3 matmul peak measured before the steps, and "
        "of the median rate of one 2048^3 matmul timed before each step (the same load and threads as the step).",
        "Peer: Hugging Face VideoMAEForPreTraining with the same encoder width/depth/heads/MLP, SDPA attention, "
        "VideoMAE's 384-wide 4-layer decoder, no pixel normalisation; its FLOPs differ from ours "
        "(our last 4 encoder blocks run on all tokens at encoder width), both counts are shown.",
        "Goals (measured, not gated): speed-up >= 1.2x where both steps count about the same FLOPs (within "
        "20%), achieved FLOP/s >= 75% of the fp32 matmul peak. One round here; `python benchmarks/"
        "bench_pretrain.py --rounds 2` alternates the two implementations for steadier final figures.",
    ]
    if quick:
        notes.insert(0, "QUICK smoke run: 4ds-tiny at 16x64x64 — plumbing only, not the 4DS-S/B figures.")
    # The data benchmark compares its loader with this rate: 4DS-S at batch 4 (quick: the largest tiny row).
    exports = {}
    for row in raw["rows"]:
        if (row["model"], row["batch"]) == ("4ds-s", 4) or quick:
            exports["step_rate"] = {"model": row["model"], "batch": row["batch"],
                                    "clips_per_s": row["fourds"]["clips_per_s"],
                                    "source": f"pretrain benchmark of this run ({row['model']}, batch {row['batch']}, fp32, CPU)"}
    return result("pretrain", "Pretraining step: SimpleMAE vs HF VideoMAEForPreTraining", figs, notes, raw,
                  exports=exports)


def _pct(frac: float | None) -> str:
    return f"{100 * frac:5.1f}%" if frac else "-"


def _print_table(res: dict) -> None:
    load = res.get("load_avg_1min") or [math.nan, math.nan]
    print(f"pretraining step, {res['clip']}, {res['device']} {res['precision']}, {res.get('threads')} threads, "
          f"OMP_WAIT_POLICY {res.get('omp_wait_policy')}, load average {load[0]:.2f} -> {load[1]:.2f}"
          + (f"; fp32 matmul peak {res['matmul_peak_gflops']:.1f} GFLOP/s" if res["matmul_peak_gflops"] else ""))
    print(f"{'impl':<8} {'model':<8} {'batch':>5} {'s/step':>8} {'clips/s':>8} {'GFLOP/step':>11} {'GFLOP/s':>8} "
          f"{'%peak':>6} {'%mm-now':>7} {'peak RSS MB':>12} {'load':>10}")
    for row in res["rows"]:
        for name in ("fourds", "hf"):
            r = row[name]
            if "error" in r:
                print(f"{name:<8} {row['model']:<8} {row['batch']:>5} unavailable: {r['error']}")
                continue
            wl = r.get("load_avg_1min") or [math.nan, math.nan]
            print(f"{name:<8} {row['model']:<8} {row['batch']:>5} {r['step_s']:>8.3f} {r['clips_per_s']:>8.2f} "
                  f"{r['step_gflop']:>11.1f} {r['achieved_gflops']:>8.1f} "
                  f"{_pct(r.get('fraction_of_matmul_peak')):>6} {_pct(r.get('fraction_of_matmul_alongside')):>7} "
                  f"{r['peak_rss_mb']:>12.0f} {wl[0]:>4.1f}-{wl[1]:<4.1f}")
        print(f"  speed-up fourds vs HF, {row['model']} batch {row['batch']}: {row['speedup']:.2f}x")
        for name in ("fourds", "hf"):
            prof = row[name].get("profile")
            if prof:
                fl = prof.get("by_kind_flop", {})
                shares = ", ".join(f"{k} {100 * v / prof['cpu_s']:.1f}%"
                                   + (f" ({fl[k] / v / 1e9:.0f} GFLOP/s)" if fl.get(k) and v > 0 else "")
                                   for k, v in prof["by_kind_s"].items() if v / prof["cpu_s"] >= 0.001)
                print(f"  {name} step by kind of op ({prof['cpu_s']:.2f} s CPU on the main thread): {shares}")
    print("%peak: achieved model FLOP/s / the 2048^3 matmul peak (best of 10) measured before; %mm-now: / the "
          "median rate of a 2048^3 matmul timed before each step (same load and threads)")


def _clip(text: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in text.lower().split("x"))
    return t, h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default=None, help="comma-separated sizes (default 4ds-s,4ds-b)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default: 1,4 for 4ds-s, 1 for 4ds-b)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per configuration, best kept")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 3; quick 2)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps after the FLOP-counted warm-up step")
    parser.add_argument("--clip", default=None, help="TxHxW (default 16x224x224; quick 16x64x64)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true",
                        help="also time one step op by op (CPU clock) and print its split by kind of op")
    parser.add_argument("--omp-wait-policy", choices=["passive", "active", "default"], default=None,
                        help="OpenMP wait policy of the worker processes (default: passive unless OMP_WAIT_POLICY is "
                             "set); 'default' leaves libgomp's spin-then-sleep")
    parser.add_argument("--worker", choices=["fourds", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else None
    clip = _clip(args.clip) if args.clip else None
    if args.worker:
        print(json.dumps(worker(args.worker, args.model or "4ds-s", batches[0] if batches else 1, args.steps or 3,
                                args.warmup, clip or CLIP, args.device, args.precision, args.threads, args.profile)))
        return
    models = tuple(args.model.split(",")) if args.model else None
    res = measure(args.quick, models, batches, args.rounds, args.steps, args.warmup, args.device, args.precision, clip,
                  threads=args.threads, profile=args.profile, omp_wait_policy=args.omp_wait_policy)
    _print_table(res)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
