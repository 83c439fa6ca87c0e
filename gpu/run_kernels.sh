#!/usr/bin/env bash
# The Triton kernels on one GPU in one call (e.g. the device tool's nvidia-h200):
#   bash gpu/run_kernels.sh           # logs under $OUT (default /tmp/trtdsl-kernels)
# Steps (STEPS="check plugin sweep bench"): the correctness check against float64 NumPy, the
# TensorRT plugin's kernel launched as QDP would launch it (gpu/check_plugin_kernel.py), the tile
# sweep, the benchmark against torch SDPA. BENCH_ARGS / SWEEP_ARGS pass flags through.
# Optional step sweeptma: the TMA kernel's candidates vs the pointer kernel and cuDNN
# (SWEEP_TMA_ARGS; prebuild its kernels with `benchmarks/attention_gpu.py --sweep-tma --compile-only`).
# Set TRTDSL_KERNEL_CACHE to a prebuilt cache (python -m trtdsl.kernels.prebuild) to skip
# compiling there.
set -uo pipefail
# shellcheck source=gpu/steps.sh
source "$(dirname "$0")/steps.sh"
gpu_setup /tmp/trtdsl-kernels
STEPS=${STEPS:-"check plugin sweep bench"}

{ date -u; nvidia-smi -L; python3 -c "import cupy, triton, cuda.core as c, torch; \
print('cupy', cupy.__version__, 'triton', triton.__version__, 'cuda.core', c.__version__, \
'torch', torch.__version__)"; } 2>&1 | tee "$OUT/env.txt"

# shellcheck disable=SC2086
step check 420 python3 gpu/check_kernels.py
step plugin 240 python3 gpu/check_plugin_kernel.py
# shellcheck disable=SC2086
step sweep 300 python3 benchmarks/attention_gpu.py --sweep ${SWEEP_ARGS:-} --out "$OUT/sweep.md"
# shellcheck disable=SC2086
step sweeptma 420 python3 benchmarks/attention_gpu.py --sweep-tma ${SWEEP_TMA_ARGS:-} --out "$OUT/sweep_tma.md"
# shellcheck disable=SC2086
step bench 420 python3 benchmarks/attention_gpu.py ${BENCH_ARGS:-} --out "$OUT/bench.md"

finish
