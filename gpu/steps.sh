# Shared by the gpu/run_*.sh scripts (source it): `gpu_setup DEFAULT_OUT` sets up the Python
# environment and $OUT; `step NAME TIMEOUT CMD...` runs CMD when NAME is in $STEPS, tees its
# output to $OUT/NAME.log, records "NAME rc=.. Ns" in `summary` and sets status=1 on failure;
# `finish` prints the summary and exits with that status.
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

finish() {
    echo "=== summary"
    printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
    exit $status
}

gpu_setup() {  # gpu_setup DEFAULT_OUT, from the repository root
    export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
    # wheels the GPU image lacks (nccl4py, the cuDNN frontend), carried in .whl/ (no registry)
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
            .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    # a checkout on PYTHONPATH has no trtdsl.kernels (pip maps kernels/ there): link it
    [ -e trtdsl/kernels ] || ln -s ../kernels trtdsl/kernels
    OUT=${OUT:-$1}
    mkdir -p "$OUT"
}
