#!/usr/bin/env bash
# The multi-rank GPU checks with 2 and 4 ranks sharing ONE GPU (the device tool's nvidia-h200),
# from the repository root:  bash gpu/run_shared.sh        # logs under $OUT
# Each rank is its own process with its own NCCL host id (gpu/shared_rank.sh), so NCCL runs
# (socket transport over loopback). What this checks: every rank's results against float64
# NumPy, with the real cupy backend, kernels, streams, events, CUDA graphs and NCCL calls. What
# it cannot show: speed (the ranks time-slice one GPU) or NVLink behaviour; the 2- and 4-GPU
# kinds remain the place for those (gpu/run_ring.sh, gpu/run_all.sh).
# Steps (STEPS=...): nccl2 ring2 ring4 blocks4 collectives4 sessions4; optional bench2 (the CP
# benchmark at 8k tokens on 2 ranks: a smoke test of the script, its numbers mean nothing; its
# --quick sizes took over 300 s through the sockets).
set -uo pipefail
# shellcheck source=gpu/steps.sh
source "$(dirname "$0")/steps.sh"
gpu_setup /tmp/trtdsl-shared
STEPS=${STEPS:-"nccl2 ring2 ring4 blocks4 collectives4 sessions4"}
PY=$(command -v python3)
export TRTDSL_ATTENTION_ENGINE=${TRTDSL_ATTENTION_ENGINE:-triton}
MPI=(mpirun --allow-run-as-root --oversubscribe -x PYTHONUNBUFFERED -x PYTHONPATH
    -x TRTDSL_KERNEL_CACHE -x TRTDSL_ATTENTION_ENGINE -np)
RANK=(bash gpu/shared_rank.sh "$PY")
{ date -u; nvidia-smi -L; } 2>&1 | tee "$OUT/env.txt"
step nccl2 120 "${MPI[@]}" 2 "${RANK[@]}" gpu/check_nccl.py --no-bandwidth
step ring2 240 "${MPI[@]}" 2 "${RANK[@]}" gpu/check_ring.py --no-timing
step ring4 300 "${MPI[@]}" 4 "${RANK[@]}" gpu/check_ring.py --no-timing
step blocks4 240 "${MPI[@]}" 4 "${RANK[@]}" gpu/check_blocks.py
step collectives4 300 "${MPI[@]}" 4 "${RANK[@]}" gpu/check_dsl_collectives.py
step sessions4 240 "${MPI[@]}" 4 "${RANK[@]}" gpu/check_sessions.py
step bench2 240 "${MPI[@]}" 2 "${RANK[@]}" benchmarks/cp_attention_gpu.py --seqs 8192 \
    --dtypes bfloat16 --repeat 1 --engine triton,cudnn --out "$OUT/cp_shared_smoke.md"
finish
