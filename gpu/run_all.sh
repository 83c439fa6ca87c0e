#!/usr/bin/env bash
# The whole GPU check in one call, from the repository root of a machine with CUDA GPUs, CuPy,
# NCCL, mpi4py and mpirun (e.g. the device tool's nvidia-h200-x2):
#   bash gpu/run_all.sh            # logs under $OUT (default /tmp/trtdsl-gpu)
# Steps: NCCL (nccl4py adapter) check, every DSL collective on the cupy backend, the parallel
# blocks vs float64, the attention op, capturable cuBLAS, sessions / CUDA graphs, and the
# context-parallel attention benchmark; optional steps (STEPS="..."): profile (a session's
# per-call cost), collbench (every collective 1 KiB-1 GiB vs nccl4py and torch.distributed).
# NVLink multicast stays off.
set -uo pipefail
# shellcheck source=gpu/steps.sh
source "$(dirname "$0")/steps.sh"
gpu_setup /tmp/trtdsl-gpu
NP=${NP:-$(nvidia-smi -L | wc -l)}
STEPS=${STEPS:-"nccl collectives blocks attention cublas sessions bench"}
MPI=(mpirun --allow-run-as-root -np "$NP" -x PYTHONUNBUFFERED -x NCCL_NVLS_ENABLE -x PYTHONPATH
    -x TRTDSL_KERNEL_CACHE)
PY=$(command -v python3)

date -u | tee "$OUT/env.txt"
nvidia-smi -L | tee -a "$OUT/env.txt"
"$PY" -c "import cupy, mpi4py, numpy, trtdsl.backends.nccl as n; print('cupy', cupy.__version__, \
'mpi4py', mpi4py.__version__, 'numpy', numpy.__version__, 'nccl', n.nccl_version())" \
    | tee -a "$OUT/env.txt"

step nccl 240 "${MPI[@]}" "$PY" gpu/check_nccl.py
step collectives 300 "${MPI[@]}" "$PY" gpu/check_dsl_collectives.py
step blocks 240 "${MPI[@]}" "$PY" gpu/check_blocks.py
step attention 240 "$PY" gpu/check_attention_op.py
step cublas 120 "$PY" gpu/check_cublas.py
step sessions 180 "${MPI[@]}" "$PY" gpu/check_sessions.py
step profile 180 "${MPI[@]}" "$PY" gpu/profile_session.py
step collbench 480 "${MPI[@]}" "$PY" benchmarks/collectives_gpu.py
step bench 420 "${MPI[@]}" "$PY" benchmarks/cp_attention_gpu.py --out "$OUT/bench_cp.md"

finish
