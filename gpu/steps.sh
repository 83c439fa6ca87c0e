# Shared by the gpu/run_*.sh scripts (source it): `step NAME TIMEOUT CMD...` runs CMD when NAME
# is in $STEPS, tees its output to $OUT/NAME.log, records "NAME rc=.. Ns" in `summary` and sets
# status=1 on failure; `finish` prints the summary and exits with that status.
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
