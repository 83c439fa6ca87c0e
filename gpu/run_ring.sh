#!/usr/bin/env bash
# Ring attention as a real ring on the cupy backend (NCCL send/recv on a comm stream, overlapped
# with the block attention), from the repository root of a machine with 2 or 4 GPUs:
#   bash gpu/run_ring.sh            # logs under $OUT (default /tmp/trtdsl-ring)
# Steps (STEPS="check2 check4 bench2 bench4"): gpu/check_ring.py on 2 GPUs and on 4 (groups
# [[0, 1], [2, 3]] too; where 4 are present): PASS/FAIL per case, "RING: N passed, M failed",
# then an OVERLAP line (ring vs its compute alone + its communication alone); the CP benchmark
# --quick on 2 and 4 GPUs (BENCH_ARGS replaces --quick). Kernels: TRTDSL_KERNEL_CACHE may point
# at a prebuilt cache. TRTDSL_ATTENTION_ENGINE (triton, the default, or cudnn) picks the block
# attention for the checks (the benchmark takes --engine, e.g. BENCH_ARGS="... --engine
# triton,cudnn" for both engines' rows in one table). NVLink multicast stays off.
set -uo pipefail
# shellcheck source=gpu/steps.sh
source "$(dirname "$0")/steps.sh"
gpu_setup /tmp/trtdsl-ring
STEPS=${STEPS:-"check2 check4 bench2 bench4"}
NGPU=$(nvidia-smi -L | wc -l)
PY=$(command -v python3)
# the block attention's engine (trtdsl/backends/cupy/attention_engine.py): triton or cudnn
export TRTDSL_ATTENTION_ENGINE=${TRTDSL_ATTENTION_ENGINE:-triton}
MPI=(mpirun --allow-run-as-root -x PYTHONUNBUFFERED -x NCCL_NVLS_ENABLE -x PYTHONPATH
    -x TRTDSL_KERNEL_CACHE -x TRTDSL_ATTENTION_ENGINE -np)
{ date -u; nvidia-smi -L; } 2>&1 | tee "$OUT/env.txt"
step check2 420 "${MPI[@]}" 2 "$PY" gpu/check_ring.py
if [ "$NGPU" -ge 4 ]; then
    step check4 480 "${MPI[@]}" 4 "$PY" gpu/check_ring.py
fi
# shellcheck disable=SC2086
step bench2 420 "${MPI[@]}" 2 "$PY" benchmarks/cp_attention_gpu.py ${BENCH_ARGS:---quick} --out "$OUT/cp_2gpu.md"
if [ "$NGPU" -ge 4 ]; then
    # shellcheck disable=SC2086
    step bench4 420 "${MPI[@]}" 4 "$PY" benchmarks/cp_attention_gpu.py ${BENCH_ARGS:---quick} --out "$OUT/cp_4gpu.md"
fi
finish
