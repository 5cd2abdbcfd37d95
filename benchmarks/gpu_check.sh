#!/usr/bin/env bash
# Every GPU check of fourds in one call (about 5 minutes of wall time on one H100/H200):
#   1. the gpu-marked tests and the device-correctness tests (pytest -m gpu ...);
#   2. a one-GPU `torchrun` FSDP2 pretraining run SIGKILLed mid-way, resumed, and compared with an
#      uninterrupted run (bit-identical final weights expected);
#   3. `fourds demo --quick` on CUDA;
#   4. benchmarks/bench_cuda.py (pretraining steps of 4ds-s/b/l vs HF VideoMAE, frozen forward, the demo
#      micro loop) -> bench_cuda.json;
#   5. `fourds demo --recipe gpu` (its target: <= 5 min, >= 4 counted tasks) -> demo_gpu/results.{md,json}
#      and its plots (skip it with GPU_CHECK_DEMO=0).
# Each step's log, a summary (one line per step: exit status, seconds) and the benchmark's JSON land in
# $OUT (default ./gpu_check_out). The exit status is 0 only when every step passed.
#
# What the machine needs besides the repository: torch with CUDA, numpy, einops, safetensors, tqdm,
# matplotlib, tensorboard, pyarrow, pillow, transformers (for the HF row), pytest + pytest-timeout. Not on
# the lent H200 image and so carried as wheels in ./.whl (pure Python, any platform):
#     roma (imported by the pose metric) and braceexpand (tar-shard specs).
# Fetch them once on a machine with a registry (`.whl` is git-ignored):
#     python3 -m pip download --no-deps -d .whl roma==1.8.0 braceexpand==0.1.7
# PyAV (video decoding) is not needed: no check here reads a video file.
#
# Usage:  bash benchmarks/gpu_check.sh            (on the GPU machine; carry .whl)
#         GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh   (a CPU dry run of steps 1-3: the script itself)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fourds_site .whl/*.whl \
        || { echo "could not install the carried wheels in .whl"; exit 2; }
    export PYTHONPATH=/tmp/fourds_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
WORK=$(mktemp -d /tmp/fourds_gpu_check.XXXXXX)
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
status=0

"$PY" - <<EOF || { echo "torch/CUDA not usable here" | tee -a "$SUMMARY"; exit 2; }
import torch, sys
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if "$DEVICE" == "cuda":
    assert torch.cuda.is_available(), "no CUDA device"
    print(torch.cuda.get_device_name())
EOF

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "=== $name: $*"
    if declare -F "$1" >/dev/null; then  # a shell function: its commands are short, the call has a limit
        "$@" > "$OUT/$name.log" 2>&1
    else
        timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    fi
    local rc=$?
    echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$SUMMARY"
    tail -n 25 "$OUT/$name.log"
    [ "$rc" -eq 0 ] || status=1
    return "$rc"
}

# 1. Tests: the real CUDA paths (skipped on a CPU dry run) and the device-correctness tests.
step tests 240 "$PY" -m pytest -q -p no:cacheprovider -m "gpu or not slow" tests/test_gpu.py tests/test_device.py \
    tests/test_bench_cuda.py

# 2. torchrun FSDP2 on one device: whole run vs SIGKILL at step 5 + --resume (checkpoints every 2 steps).
TINY=(pretrain --model 4ds-tiny --data random --num-frames 4 --image-size 32 --batch-size 8 --steps 8
      --warmup-steps 2 --save-every 2 --log-every 1 --strategy fsdp --device "$DEVICE" --num-workers 2)
fsdp_check() {
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m fourds "${TINY[@]}" --out "$WORK/whole" || return 1
    FOURDS_FAULT_AT_STEP=5 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m fourds "${TINY[@]}" \
        --out "$WORK/killed" && { echo "the faulted run was not killed"; return 1; }
    ls "$WORK/killed/checkpoints"
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m fourds "${TINY[@]}" --out "$WORK/killed" --resume || return 1
    "$PY" - "$WORK/whole/model/model.safetensors" "$WORK/killed/model/model.safetensors" "$DEVICE" <<'EOF'
import sys, torch
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
print(f"max |whole - killed+resumed| over {len(a)} tensors: {diff:.3g}")
# Bit-identical on the CPU; CUDA backward kernels with atomics (index_put, attention) may differ in the
# last bits from run to run, so allow float32 noise there.
sys.exit(0 if diff <= (0.0 if sys.argv[3] == "cpu" else 1e-5) else 1)
EOF
}
step fsdp_kill_resume 180 fsdp_check

# 3. The demo's quick recipe on the device.
step demo_quick 240 "$PY" -m fourds demo --quick --out "$WORK/demo"

# 4. The CUDA benchmark (skipped on a CPU dry run).
if [ "$DEVICE" = cuda ]; then
    step bench_cuda 420 "$PY" benchmarks/bench_cuda.py --out "$OUT/bench_cuda.json"
fi

# 5. The GPU demo recipe (its time is the sum of state/timings.json; results and plots come back in $OUT).
if [ "$DEVICE" = cuda ] && [ "${GPU_CHECK_DEMO:-1}" != 0 ]; then
    step demo_gpu 420 "$PY" -m fourds demo --recipe gpu --out "$WORK/demo_gpu"
    mkdir -p "$OUT/demo_gpu"
    cp -r "$WORK/demo_gpu/results.md" "$WORK/demo_gpu/results.json" "$WORK/demo_gpu/plots" "$WORK/demo_gpu/state" \
        "$OUT/demo_gpu/" 2>/dev/null
fi

echo "--- summary"; cat "$SUMMARY"
rm -rf "$WORK"
exit $status
