#!/usr/bin/env bash
# The fused adaLN norm kernel on one GPU in one call (e.g. the device tool's nvidia-h200):
#   bash gpu/run_norm.sh           # logs and tables under $OUT (default /tmp/trtdsl-norm)
# Steps (STEPS="check bench sweep act profile"): the kernel and the DSL op (eager and CUDA
# graphs) against float64 NumPy; the activation kernel (GELU, SiLU, ...) and its op, likewise
# (gpu/check_activation.py); the benchmark table (fused vs CuPy op by op vs torch eager, DiT
# shapes); the rows/warps sweep of the kernel; one DiT block's per-layer-kind GPU time before
# and after fusion. BENCH_ARGS / SWEEP_ARGS / PROFILE_ARGS pass flags through. Set
# TRTDSL_KERNEL_CACHE to a prebuilt cache (python -m trtdsl.kernels.prebuild) to skip compiling.
set -uo pipefail
# shellcheck source=gpu/steps.sh
source "$(dirname "$0")/steps.sh"
gpu_setup /tmp/trtdsl-norm
STEPS=${STEPS:-"check bench sweep act profile"}

{ date -u; nvidia-smi -L; python3 -c "import cupy, triton, cuda.core as c; \
print('cupy', cupy.__version__, 'triton', triton.__version__, 'cuda.core', c.__version__)"; \
python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$OUT/env.txt"

step check 300 python3 gpu/check_norm.py
# shellcheck disable=SC2086
step bench 420 python3 benchmarks/norm_gpu.py --parts table ${BENCH_ARGS:-} --out "$OUT/bench.md"
# shellcheck disable=SC2086
step sweep 300 python3 benchmarks/norm_gpu.py --parts sweep ${SWEEP_ARGS:-} --out "$OUT/sweep.md"
step act 420 python3 gpu/check_activation.py
# shellcheck disable=SC2086
step profile 300 python3 benchmarks/norm_gpu.py --parts profile ${PROFILE_ARGS:-} \
    --out "$OUT/profile.md"

finish
