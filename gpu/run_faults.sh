#!/usr/bin/env bash
# Fault cases on 2 GPUs: the cupy backend with NCCL communicators (NcclWorld), under
#   mpirun --allow-run-as-root -np 2   (NCCL_NVLS_ENABLE=0)
# A rank raises inside a network run with collectives; exits mid-run; never arrives; catches its
# error and carries on; stops calling after 3 calls of a session that goes straight to NCCL
# ("stall": the NCCL watchdog, nccl_timeout=$FAULT_NCCL_TIMEOUT s (an integer, default 10),
# must end rank 0 with its message within that plus 15 s). Every other rank must end within the
# timeout with a message naming the failed rank, the NCCL communicators must be aborted
# (ncclCommAbort via trtdsl's nccl adapter: "aborted N NCCL communicator(s)") and no process of
# the job may be left.
# Prints PASS/FAIL per case and "FAULTS: N passed, M failed"; exit status 0 only if all passed.
#
#   bash gpu/run_faults.sh          # GPU machine (cupy + NCCL)
#   bash gpu/run_faults.sh --cpu    # the script's logic on the CPU: numpy backend, MPIWorld,
#                                   # .venv/bin/mpiexec (no NCCL, so no abort line is required)
#   FAULT_SHARED=1 bash gpu/run_faults.sh   # both ranks on one GPU (gpu/shared_rank.sh: NCCL
#                                   # over loopback sockets), for a one-GPU machine
set -u
cd "$(dirname "$0")/.."
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
TIMEOUT=${FAULT_TIMEOUT:-6}   # the worlds' timeout (s)
NCCL_T=${FAULT_NCCL_TIMEOUT:-10}  # the sessions' nccl_timeout in the "stall" case (s)
LIMIT=${FAULT_LIMIT:-90}      # a job's own limit (s): start-up, NCCL init, the timeout
OUT=${FAULT_OUT:-$(mktemp -d /tmp/trtdsl-faults.XXXXXX)}

if [ "$MODE" = gpu ]; then
  # shellcheck source=gpu/steps.sh
  source gpu/steps.sh
  gpu_setup "$OUT"  # wheels from .whl/, PYTHONPATH, the kernels link, NCCL_NVLS_ENABLE=0
  PY=python3
  [ "${FAULT_SHARED:-0}" = 1 ] && PY="bash gpu/shared_rank.sh python3"
  LAUNCH=(mpirun --allow-run-as-root -np 2 -x NCCL_NVLS_ENABLE -x PYTHONPATH -x FAULT_CASE -x FAULT_TIMEOUT -x FAULT_NCCL_TIMEOUT -x TRTDSL_FAULT_MODE -x PYTHONUNBUFFERED)
else
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_btl=self,sm OMPI_MCA_pml=ob1 OMPI_MCA_smsc=^cma
  PY=.venv/bin/python
  LAUNCH=(.venv/bin/mpiexec -n 2 --oversubscribe)
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 FAULT_TIMEOUT=$TIMEOUT TRTDSL_FAULT_MODE=$MODE
export FAULT_NCCL_TIMEOUT=$NCCL_T

cat > "$OUT/job.py" <<'EOF'
import os, sys, time
import numpy as np
import trtdsl as td

CASE, MODE, BAD = os.environ["FAULT_CASE"], os.environ["TRTDSL_FAULT_MODE"], 1
T = float(os.environ["FAULT_TIMEOUT"])
if MODE == "gpu":
    from trtdsl.backends.cupy.world import NcclWorld as Base
    BACKEND = "cupy"
else:
    Base, BACKEND = td.MPIWorld, "numpy"


def fault(world):
    if CASE == "raise" or CASE == "catch":
        raise RuntimeError(f"rank {world.rank} broke inside the run")
    if CASE == "exit":
        print(f"rank {world.rank} exits now", flush=True)
        os._exit(3)
    if CASE == "never":
        time.sleep(600)


class Faulty(Base):
    calls = 0

    def exchange(self, obj, what, key=None):  # rank BAD misbehaves at its second collective
        if str(what).startswith("collective '"):
            Faulty.calls += 1
            if self.rank == BAD and Faulty.calls == 2:
                fault(self)
        return super().exchange(obj, what, key)


world = Faulty(timeout=T)
net = td.Network("job", world=world)
x = net.input("x", (world.size * 2, 3))
net.output(x.all_reduce("sum").reduce_scatter("max").all_gather(), "y")
feeds = {"x": np.ones((world.size * 2, 3), "float32")}
print(f"rank {world.rank} starts ({MODE}, {BACKEND})", flush=True)
if CASE == "stall":  # agreed once, then straight to NCCL; rank BAD stops calling after 3 calls
    opts = {"nccl_timeout": float(os.environ["FAULT_NCCL_TIMEOUT"])} if MODE == "gpu" else {}
    session = net.compile(backend=BACKEND, **opts)
    for i in range(100000):
        if world.rank == BAD and i == 3:
            print(f"rank {world.rank} stops calling at {time.time():.3f}", flush=True)
            time.sleep(600)
        session.run(feeds)
    print(f"rank {world.rank} finished (unexpected)", flush=True)
    sys.exit(0)
# check="always": the ranks agree (timed, over MPI) before every collective, so a rank that
# fails or never comes is noticed before NCCL waits for it (the default checks once per input
# signature; a rank that vanishes later leaves the others inside NCCL: see docs/testing.md)
session = net.compile(backend=BACKEND, check="always")
try:
    session.run(feeds)
except RuntimeError as e:
    if CASE != "catch":
        raise
    print(f"caught on rank {world.rank}: {e}", flush=True)
for _ in range(3):  # "catch": the rank carries on, out of step with the other
    session.run(feeds)
print(f"rank {world.rank} finished (unexpected)", flush=True)
EOF

leftovers() { # processes whose command line names this run's job script
  local found=""
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "$OUT/job.py"; then found="$found ${p#/proc/}"; fi
  done
  echo "$found"
}

PASSED=0 FAILED=0
# case | what the output must contain (extended regexps, all of them, ';'-separated)
check() {  # check NAME PATTERNS [S: the job ends within S s of rank 1's "stops calling at T"]
  local name=$1 patterns=$2 within=${3:-} log="$OUT/$1.log"
  local t0=$SECONDS
  # shellcheck disable=SC2086  # PY may be a wrapper command (FAULT_SHARED=1)
  FAULT_CASE=$name timeout -k 5 "$LIMIT" "${LAUNCH[@]}" $PY "$OUT/job.py" >"$log" 2>&1
  local rc=$? secs=$((SECONDS - t0)) why="" ended; ended=$(date +%s.%N)
  if [ -n "$within" ]; then
    local stopped; stopped=$(grep -aoE 'stops calling at [0-9.]+' "$log" | head -1 | awk '{print $4}')
    if [ -n "$stopped" ]; then
      local after; after=$(awk -v a="$ended" -v b="$stopped" 'BEGIN {printf "%.1f", a - b}')
      echo "    $name: the job ended ${after} s after rank 1 stopped calling (limit $within s)"
      awk -v x="$after" -v l="$within" 'BEGIN {exit !(x > l)}' && why="$why ended ${after} s after the stall;"
    fi
  fi
  for _ in $(seq 50); do [ -z "$(leftovers)" ] && break; sleep 0.1; done
  [ "$rc" -eq 0 ] && why="$why job exited 0;"
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="$why ran past ${LIMIT} s;"
  local left; left=$(leftovers)
  [ -n "$left" ] && { why="$why processes left:$left;"; kill -9 $left 2>/dev/null; }
  local IFS=';'
  for pat in $patterns; do
    grep -Eaq -- "$pat" "$log" || why="$why no '$pat';"
  done
  if [ -z "$why" ]; then
    echo "PASS $name (${secs} s, rc $rc)"; PASSED=$((PASSED + 1))
  else
    echo "FAIL $name (${secs} s, rc $rc):$why"; FAILED=$((FAILED + 1))
    sed 's/^/    | /' "$log" | tail -40
  fi
}

ABORTED=""
[ "$MODE" = gpu ] && ABORTED=";rank 0: aborted [0-9]+ NCCL communicator\(s\) \(ncclCommAbort\)"
check raise "rank 1 of 2 raised an uncaught exception; aborting the MPI job;RuntimeError: rank 1 broke inside the run"
check exit "rank 1 exits now;Process name: \[[^]]*,1\]|rank 1 .*exit|exited on signal|Exit code: *3"
check never "rank 0 waited more than $TIMEOUT s at .*: rank 1 did not get there;roll call: rank 1 last arrived at$ABORTED"
check catch "caught on rank 1: rank 1 broke inside the run;rank 1(: all_reduce\(sum\) of| at collective check before running the network)$ABORTED"
if [ "$MODE" = gpu ]; then  # the NCCL watchdog: no exchange after the first call
  STALLED="NCCL watchdog: rank 0: network 'job' collective\(s\) 'all_reduce_0' \(all_reduce\) at [^ ]*job\.py:[0-9]+, 'reduce_scatter_0' .* did not complete within $NCCL_T s \(a peer rank may have died, stalled or run a different network\). NCCL communicators aborted;WatchdogError: rank 0: .*did not complete within $NCCL_T s$ABORTED"
else  # numpy sessions exchange every call over MPI: the world's timeout names rank 1
  STALLED="rank 0 waited more than $TIMEOUT s at .*: rank 1 did not get there"
fi
STALL_LIMIT=$((NCCL_T + 15))  # from rank 1's last call to the end of the job (s)
check stall "rank 1 stops calling at;$STALLED" "$STALL_LIMIT"
echo "FAULTS: $PASSED passed, $FAILED failed"
[ -n "${FAULT_OUT:-}" ] || rm -rf "$OUT"
[ "$FAILED" -eq 0 ]
