#!/usr/bin/env bash
# The whole GPU check in one call, from the repository root of a machine with CUDA GPUs, CuPy,
# NCCL, mpi4py and mpirun (e.g. the device tool's nvidia-h200-x2):
#   bash gpu/run_all.sh            # logs under $OUT (default /tmp/trtdsl-gpu)
# Steps: NCCL binding check, every DSL collective on the cupy backend, the parallel blocks vs
# a NumPy reference, and the context-parallel attention benchmark. NVLink multicast stays off.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/trtdsl-gpu}
mkdir -p "$OUT"
NP=${NP:-$(nvidia-smi -L | wc -l)}
STEPS=${STEPS:-"nccl collectives blocks bench"}
MPI=(mpirun --allow-run-as-root -np "$NP" -x PYTHONUNBUFFERED -x NCCL_NVLS_ENABLE -x PYTHONPATH)
PY=$(command -v python3)
status=0
summary=()

step() {  # step NAME TIMEOUT CMD...
    local name=$1 limit=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    summary+=("$name rc=$rc $((SECONDS - t0))s")
    [ "$rc" = 0 ] || status=1
}

date -u | tee "$OUT/env.txt"
nvidia-smi -L | tee -a "$OUT/env.txt"
"$PY" -c "import cupy, mpi4py, numpy, trtdsl.backends.nccl as n; print('cupy', cupy.__version__, \
'mpi4py', mpi4py.__version__, 'numpy', numpy.__version__, 'nccl', n.nccl_version())" \
    | tee -a "$OUT/env.txt"

step nccl 240 "${MPI[@]}" "$PY" gpu/check_nccl.py
step collectives 240 "${MPI[@]}" "$PY" gpu/check_dsl_collectives.py
step blocks 240 "${MPI[@]}" "$PY" gpu/check_blocks.py
step bench 420 "${MPI[@]}" "$PY" benchmarks/cp_attention_gpu.py --out "$OUT/bench_cp.md"

echo "=== summary"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
exit $status
