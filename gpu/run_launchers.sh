#!/usr/bin/env bash
# The samples on GPUs under launchers other than plain mpirun (issue 16), from the repository
# root of a machine with 2+ CUDA GPUs, CuPy, NCCL, torchrun and mpirun:
#   bash gpu/run_launchers.sh        # logs under $OUT (default /tmp/trtdsl-launchers)
# 1. torchrun --nproc_per_node=N: td.world_from_env() -> SocketWorld at MASTER_ADDR:MASTER_PORT+1,
#    NcclWorld's unique ids over that socket, GPU = LOCAL_RANK.
# 2. mpirun -np N with TensorRT's sample variables (TRT_MY_RANK, TRT_WORLD_SIZE,
#    TRT_NCCL_ID_FILE) and TRTDSL_LAUNCHER=trt: FileWorld beside TRT_NCCL_ID_FILE, no MPI calls,
#    GPU = OMPI_COMM_WORLD_LOCAL_RANK.
# Each run prints one "PASS <name>" or "FAIL <name> (rc=...)" line; exit status 1 if any failed.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/trtdsl-launchers}
mkdir -p "$OUT"
NP=${NP:-2}
PY=$(command -v python3)
TORCHRUN=${TORCHRUN:-$(command -v torchrun || echo torchrun)}
status=0
results=()

check() {  # check NAME TIMEOUT CMD...: PASS if rc 0 and a ": PASSED" line over NP ranks
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    cat "$OUT/$name.log"
    if [ "$rc" = 0 ] && grep -q "over $NP ranks on the cupy backend: PASSED" "$OUT/$name.log"; then
        results+=("PASS $name ($((SECONDS - t0))s)")
    else
        results+=("FAIL $name (rc=$rc, log $OUT/$name.log)")
        status=1
    fi
}

SAMPLES=(
    "dist_all_reduce samples/dist_collective.py --op all_reduce"
    "dist_all_to_all samples/dist_collective.py --op all_to_all"
    "tp_mlp samples/tp_mlp.py --gated"
)

# 1. torchrun (its own store takes MASTER_PORT; our rendezvous listens on MASTER_PORT + 1)
PORT=${MASTER_PORT:-29533}
for s in "${SAMPLES[@]}"; do
    set -- $s
    name=$1; shift
    check "torchrun_$name" 180 "$TORCHRUN" --nproc_per_node="$NP" --master_addr=127.0.0.1 \
        --master_port="$PORT" "$@" --backend cupy
done

# 2. mpirun with TensorRT's sample variables (each rank's TRT_MY_RANK from Open MPI's rank)
ID_FILE="$OUT/nccl_id_file"
rm -f "$ID_FILE"
for s in "${SAMPLES[@]}"; do
    set -- $s
    name=$1; shift
    check "mpirun_trt_env_$name" 180 mpirun --allow-run-as-root -np "$NP" \
        -x PYTHONUNBUFFERED -x NCCL_NVLS_ENABLE -x PYTHONPATH \
        -x TRT_WORLD_SIZE="$NP" -x TRT_NCCL_ID_FILE="$ID_FILE" -x TRTDSL_LAUNCHER=trt \
        bash -c 'TRT_MY_RANK=$OMPI_COMM_WORLD_RANK exec "$0" "$@"' "$PY" "$@" --backend cupy
    [ -e "$ID_FILE" ] && echo "note: $ID_FILE left behind (rank 0 removes it at the end)"
done

echo
echo "=== summary"
for line in "${results[@]}"; do echo "$line"; done
exit $status
