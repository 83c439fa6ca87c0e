#!/usr/bin/env bash
# The attention op and context-parallel attention on the GPUs of this machine, in one call:
#   bash gpu/run_attention.sh       # logs under $OUT (default /tmp/trtdsl-attention)
# Steps (STEPS="op blocks bench2 bench4"): the DSL attention op on the cupy backend vs float64
# NumPy (1 GPU); the parallel blocks on all GPUs vs float64; the CP benchmark on 2 GPUs and on
# 4 GPUs (where present) against one-GPU cuDNN. BENCH_ARGS passes flags to the benchmark.
# Kernels: TRTDSL_KERNEL_CACHE may point at a prebuilt cache (python -m trtdsl.kernels.prebuild).
set -uo pipefail
# shellcheck source=gpu/steps.sh
source "$(dirname "$0")/steps.sh"
gpu_setup /tmp/trtdsl-attention
STEPS=${STEPS:-"op blocks bench2 bench4"}
NGPU=$(nvidia-smi -L | wc -l)
PY=$(command -v python3)
MPI=(mpirun --allow-run-as-root -x PYTHONUNBUFFERED -x NCCL_NVLS_ENABLE -x PYTHONPATH
    -x TRTDSL_KERNEL_CACHE -np)
{ date -u; nvidia-smi -L; } 2>&1 | tee "$OUT/env.txt"
step op 240 "$PY" gpu/check_attention_op.py
step blocks 240 "${MPI[@]}" "$NGPU" "$PY" gpu/check_blocks.py
# shellcheck disable=SC2086
step bench2 420 "${MPI[@]}" 2 "$PY" benchmarks/cp_attention_gpu.py ${BENCH_ARGS:-} --out "$OUT/cp_2gpu.md"
if [ "$NGPU" -ge 4 ]; then
    # shellcheck disable=SC2086
    step bench4 420 "${MPI[@]}" 4 "$PY" benchmarks/cp_attention_gpu.py ${BENCH_ARGS:-} --out "$OUT/cp_4gpu.md"
fi
finish
