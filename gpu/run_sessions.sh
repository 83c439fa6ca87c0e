#!/usr/bin/env bash
# Sessions + nccl4py on GPUs, from the repository root (NP GPUs, default: all):
#   bash gpu/run_sessions.sh        # PASS/FAIL lines and the benchmark table; logs under $OUT
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || echo "FAIL pip install .whl"
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/trtdsl-sessions}; mkdir -p "$OUT"
NP=${NP:-$(nvidia-smi -L | wc -l)}
MPI=(mpirun --allow-run-as-root -np "$NP" -x PYTHONUNBUFFERED -x NCCL_NVLS_ENABLE -x PYTHONPATH)
status=0
step() {  # step NAME TIMEOUT CMD...
    local name=$1 limit=$2; shift 2
    echo "=== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" = 0 ]; then echo "PASS $name"; else echo "FAIL $name (rc=$rc)"; status=1; fi
}
python3 -c "import nccl.core as n, trtdsl.backends.nccl as a; print('nccl4py', n.__version__, 'NCCL', a.nccl_version())"
step nccl 300 "${MPI[@]}" python3 gpu/check_nccl.py --no-bandwidth
step collectives 300 "${MPI[@]}" python3 gpu/check_dsl_collectives.py
step cuda_graph 180 "${MPI[@]}" python3 gpu/check_sessions.py
step bench 580 "${MPI[@]}" python3 benchmarks/collectives_gpu.py --short
exit $status
