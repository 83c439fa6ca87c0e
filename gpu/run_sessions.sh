#!/usr/bin/env bash
# Sessions + nccl4py on GPUs, from the repository root (NP GPUs, default: all):
#   bash gpu/run_sessions.sh        # each check's output, the benchmark table and a summary of
#                                   # the steps (STEPS="nccl collectives cuda_graph bench"); logs
#                                   # under $OUT
set -uo pipefail
# shellcheck source=gpu/steps.sh
source "$(dirname "$0")/steps.sh"
gpu_setup /tmp/trtdsl-sessions
STEPS=${STEPS:-"nccl collectives cuda_graph bench"}
NP=${NP:-$(nvidia-smi -L | wc -l)}
MPI=(mpirun --allow-run-as-root -np "$NP" -x PYTHONUNBUFFERED -x NCCL_NVLS_ENABLE -x PYTHONPATH)
python3 -c "import nccl.core as n, trtdsl.backends.nccl as a; print('nccl4py', n.__version__, 'NCCL', a.nccl_version())"
step nccl 300 "${MPI[@]}" python3 gpu/check_nccl.py --no-bandwidth
step collectives 300 "${MPI[@]}" python3 gpu/check_dsl_collectives.py
step cuda_graph 180 "${MPI[@]}" python3 gpu/check_sessions.py
step bench 580 "${MPI[@]}" python3 benchmarks/collectives_gpu.py --short
finish
