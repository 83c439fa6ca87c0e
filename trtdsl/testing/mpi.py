"""Helpers for tests that run under ``mpiexec -n N python -m pytest tests/mpi``.

Under mpiexec every rank runs the same pytest session. A test that fails on one rank only must
not leave the other ranks waiting for it, and a Hypothesis test must see the same outcome on
every rank so that it shrinks the same way everywhere. This module gives:

- :func:`assert_all_ranks` - all-gather an outcome; every rank raises the same AssertionError,
  naming the ranks that failed and their messages, if any rank failed;
- :func:`together` - a block whose exception on any rank becomes that AssertionError on every
  rank (and first tells the others, so a rank stuck in a collective stops waiting);
- :func:`barrier` and :func:`allgather` - with a timeout that ends the job with a report;
- :func:`shared_seed` - rank 0's Hypothesis seed on every rank (the ranks draw alike);
- :class:`MPIPlugin` - the pytest plugin ``tests/mpi/conftest.py`` registers: rank 0 alone
  prints the terminal output (with the other ranks' failures, labelled with their rank), test
  outcomes are compared after every test (ranks that disagree end the job with the failing
  rank's report and ``MPI_Abort``), and a per-test watchdog dumps every thread's stack and ends
  the job when a test hangs.

All control traffic goes over a duplicate of ``COMM_WORLD`` (:func:`control_comm`), apart from
the collectives that :class:`~trtdsl.worlds.MPIWorld` runs on ``COMM_WORLD``.

Environment: ``TRTDSL_MPI_SYNC_TIMEOUT`` (seconds a rank waits for the others at a
synchronisation point, default 60) and ``TRTDSL_MPI_TEST_TIMEOUT`` (per-test watchdog, default
300; a ``@pytest.mark.timeout(s)`` marker overrides it).
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import RankFailedError
from ..worlds.notices import (
    NOTICES,
    collect_arrivals,
    emit,
    mark_world_broken,
    report_stream,
    roll_call,
    send_failure_notice,
    set_report_stream,
    timed_allgather,
    wait_request,
    world_broken,
)

_ENV_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
_CONTROL: Any = None


def under_mpiexec() -> bool:
    """True when this process was started by mpiexec/mpirun (Open MPI, MPICH or PMIx)."""
    return any(k in os.environ for k in _ENV_MARKERS)


def sync_timeout() -> float:
    return float(os.environ.get("TRTDSL_MPI_SYNC_TIMEOUT", "60"))


def watchdog_timeout() -> float:
    return float(os.environ.get("TRTDSL_MPI_TEST_TIMEOUT", "300"))


def world_comm() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD


def control_comm() -> Any:
    """A duplicate of COMM_WORLD for test control traffic. The first call is collective (every
    rank must make it at the same point): the plugin makes it when pytest starts."""
    global _CONTROL
    if _CONTROL is None:
        _CONTROL = world_comm().Dup()
    return _CONTROL


def rank() -> int:
    return world_comm().Get_rank()


def size() -> int:
    return world_comm().Get_size()


def abort(message: str, code: int = 1) -> None:
    """Print ``message`` (labelled with the rank) on stderr and end every rank of the job."""
    emit(f"\n[trtdsl mpi] rank {rank()} of {size()}: {message}\n")
    world_comm().Abort(code)


#: Notices that stop a helper's wait: only from ranks that have left the test (a rank that
#: failed inside ``together`` is on its way to the same synchronisation point).
_LEFT = frozenset({"left"})
_CONTROL_BROKEN: str | None = None


def _control(what: str) -> Any:
    if _CONTROL_BROKEN:
        raise RankFailedError(
            f"rank {rank()} cannot start {what}: an earlier synchronisation was abandoned "
            f"({_CONTROL_BROKEN})"
        )
    return control_comm()


def _guarded(fn: Any, what: str) -> Any:
    global _CONTROL_BROKEN
    try:
        return fn()
    except RankFailedError as e:
        _CONTROL_BROKEN = _CONTROL_BROKEN or str(e)
        raise


def barrier(what: str = "barrier", timeout: float | None = None) -> None:
    """A barrier over every rank. It stops with RankFailedError if a rank leaves the test
    instead of coming, and ends the job with a report after ``timeout`` seconds (default
    ``TRTDSL_MPI_SYNC_TIMEOUT``) instead of hanging."""
    comm = _control(what)
    t = sync_timeout() if timeout is None else timeout
    absent = roll_call(comm, what)
    req = comm.Ibarrier()
    _guarded(lambda: wait_request(req, t, what, comm.Get_rank(), abort, _LEFT, absent), what)
    collect_arrivals(comm)


def allgather(obj: Any, what: str = "allgather", timeout: float | None = None) -> list[Any]:
    """Every rank's ``obj`` in rank order; waits like :func:`barrier`.

    Also a synchronisation point of the failure notices: notices nobody consumed are received
    here, and if any rank's collectives are out of step every rank learns it.
    """
    comm = _control(what)
    t = sync_timeout() if timeout is None else timeout
    payload = (obj, NOTICES.sent, world_broken())
    per_rank = _guarded(lambda: timed_allgather(comm, payload, t, what, abort, _LEFT), what)
    NOTICES.drain([sent for _, sent, _ in per_rank])
    for r, (_, _, broken) in enumerate(per_rank):
        if broken:
            mark_world_broken(f"on rank {r}: {broken}")
    return [o for o, _, _ in per_rank]


def assert_all_ranks(ok: Any, message: str = "", what: str | None = None) -> None:
    """Raise the same AssertionError on every rank unless ``ok`` holds on every rank.

    Collective: every rank must call it at the same point. The error lists each failing rank
    with its ``message``, so a check that fails on one rank fails - and shrinks, under
    Hypothesis - identically everywhere.
    """
    label = what or "check"
    outcomes = allgather((bool(ok), str(message)), f"assert_all_ranks({label})")
    failed = [(r, m) for r, (good, m) in enumerate(outcomes) if not good]
    if failed:
        ranks = [r for r, _ in failed]
        lines = "\n".join(f"[rank {r}] {m}" for r, m in failed)
        raise AssertionError(f"{label} failed on rank(s) {ranks} of {len(outcomes)}:\n{lines}")


@contextmanager
def together(what: str = "block") -> Iterator[None]:
    """Run a block on every rank; if it raises on any rank, every rank raises AssertionError
    naming the failing ranks and their tracebacks.

    A rank whose block raises first sends a failure notice, so ranks still waiting inside an
    :class:`~trtdsl.worlds.MPIWorld` collective stop (their world is then out of step, and the
    plugin ends the job after the test with a report).
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - reported on every rank
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        send_failure_notice(f"failed in {what}: {type(e).__name__}: {e}")
        assert_all_ranks(False, text, what)
    else:
        assert_all_ranks(True, "", what)


def shared_seed(seed: int, timeout: float | None = None) -> int:
    """Rank 0's ``seed``, on every rank: under mpiexec every rank must draw the same Hypothesis
    examples. Collective (call it at the same point on every rank, before any test); a rank
    that does not come within ``timeout`` (default ``TRTDSL_MPI_SYNC_TIMEOUT``) ends the job."""
    t = sync_timeout() if timeout is None else timeout
    what = "sharing the Hypothesis seed"
    return timed_allgather(world_comm(), int(seed), t, what, abort, notices=False)[0]


# -- the pytest plugin ---------------------------------------------------------------------
class MPIPlugin:
    """Makes a pytest session under mpiexec behave as one test run (see the module doc)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        control_comm()  # collective: made now, at the same point on every rank
        self.comm = world_comm().Dup()  # the plugin's own, apart from the helpers'
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.sync_timeout = sync_timeout()
        self.failures: list[tuple[str, str]] = []
        self.others: list[tuple[int, str, str, str]] = []
        self.notified = False
        self._timer: threading.Timer | None = None
        # pytest captures fd 2 while tests run: fatal reports go to a duplicate of the real one
        set_report_stream(os.fdopen(os.dup(2), "w", buffering=1))
        if self.rank != 0:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                config.pluginmanager.unregister(reporter)

    # -- helpers -----------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        emit(text)

    def _own_report(self, nodeid: str) -> str:
        body = "\n".join(f"--- {when} ---\n{text}" for when, text in self.failures)
        return f"[rank {self.rank}] {nodeid}: FAILED\n{body}\n" if self.failures else ""

    def _sync(self, what: str, payload: Any, own: str, left: str | None = None) -> list[Any]:
        def on_timeout(message: str) -> None:
            self._write(
                f"\n[trtdsl mpi] rank {self.rank}: {message}. Ending the job.\n"
                + (own or f"[rank {self.rank}] its own outcome was: passed\n")
            )
            world_comm().Abort(1)

        if left is not None:
            # others still busy after a grace period: if they wait for this rank inside a
            # collective of the test, it will never come - tell them, so they stop
            absent = roll_call(self.comm, what)
            req = self.comm.Ibarrier()
            grace = min(2.0, self.sync_timeout)
            if not wait_request(req, grace, what, self.rank, lambda m: None, notices=False):
                if not self.notified:
                    self.notified = True
                    send_failure_notice(left, "left")
                wait_request(req, self.sync_timeout, what, self.rank, on_timeout, False, absent)
        per_rank = timed_allgather(
            self.comm,
            (payload, NOTICES.sent, world_broken()),
            self.sync_timeout,
            what,
            on_timeout,
            notices=False,
        )
        NOTICES.drain([sent for _, sent, _ in per_rank])
        return per_rank

    def _end_job(self, headline: str, reports: list[str]) -> None:
        """Rank 0 prints the reports and aborts; the others wait to be ended."""
        if self.rank == 0:
            self._write(
                f"\n{'=' * 20} trtdsl mpi: {headline} {'=' * 20}\n"
                + "\n".join(r for r in reports if r)
                + "\nEnding the whole MPI job (MPI_Abort) so no rank is left waiting.\n"
            )
            world_comm().Abort(1)
        time.sleep(self.sync_timeout)
        world_comm().Abort(1)

    # -- watchdog ----------------------------------------------------------------------------
    def _arm(self, item: Any) -> None:
        seconds = watchdog_timeout()
        marker = item.get_closest_marker("timeout")
        if marker is not None and marker.args:
            seconds = float(marker.args[0])
        if seconds <= 0:
            return

        def fire() -> None:
            emit(
                f"\n[trtdsl mpi] rank {self.rank}: test {item.nodeid} is still running after "
                f"{seconds:g} s (watchdog); stacks of every thread:\n"
            )
            faulthandler.dump_traceback(file=report_stream(), all_threads=True)
            emit("[trtdsl mpi] ending the whole MPI job (MPI_Abort)\n")
            world_comm().Abort(1)

        self._timer = threading.Timer(seconds, fire)
        self._timer.daemon = True
        self._timer.start()
        # last resort if the Python thread cannot run (a C call holding the GIL)
        faulthandler.dump_traceback_later(seconds + 30, exit=True, file=report_stream())

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        faulthandler.cancel_dump_traceback_later()

    # -- hooks -------------------------------------------------------------------------------
    def pytest_collection_finish(self, session: Any) -> None:
        ids = [item.nodeid for item in session.items]
        digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()
        payload = (len(ids), digest, session.testsfailed)
        per_rank = self._sync("the end of test collection", payload, "")
        values = [p for p, _, _ in per_rank]
        if len(set(values)) > 1:
            lines = [
                f"[rank {r}] collected {n} tests, {errs} collection errors"
                for r, (n, _, errs) in enumerate(values)
            ]
            self._end_job("ranks collected different tests", lines)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if not report.failed:
            return
        self.failures.append((report.when, report.longreprtext))
        if not self.notified:
            self.notified = True
            crash = getattr(report.longrepr, "reprcrash", None)
            short = crash.message if crash is not None else report.longreprtext[-300:]
            send_failure_notice(f"failed test {report.nodeid} ({report.when}): {short}", "left")

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Any:
        self.failures, self.notified = [], False
        self._arm(item)
        return None

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self._disarm()
        own = self._own_report(nodeid)
        payload = (nodeid, bool(self.failures), own)
        per_rank = self._sync(
            f"the end of test {nodeid}",
            payload,
            own,
            left=f"finished test {nodeid} and waits for the others at its end",
        )
        outcomes = [p for p, _, _ in per_rank]
        broken = [(r, b) for r, (_, _, b) in enumerate(per_rank) if b]
        if len({n for n, _, _ in outcomes}) > 1:
            lines = [f"[rank {r}] ran {n}" for r, (n, _, _) in enumerate(outcomes)]
            self._end_job("ranks are running different tests", lines)
        failed = [r for r, (_, f, _) in enumerate(outcomes) if f]
        if failed and len(failed) < self.size:
            passed = [r for r in range(self.size) if r not in failed]
            self._end_job(
                f"{nodeid} failed on rank(s) {failed} but passed on {passed}",
                [rep for _, _, rep in outcomes],
            )
        if broken:
            # the ranks that failed first (their collectives are in step) come first
            late = {r for r, _ in broken}
            order = sorted(range(self.size), key=lambda r: (r in late, r))
            notes = "\n".join(f"[rank {r}] stopped inside a collective: {b}" for r, b in broken)
            self._end_job(
                f"{nodeid}: a rank failed while others waited for it in a collective",
                [outcomes[r][2] for r in order] + [notes],
            )
        if self.rank == 0:
            for r, (_, f, rep) in enumerate(outcomes):
                if f and r != 0:
                    self.others.append((r, nodeid, "", rep))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.rank != 0:
            return
        if self.others:
            terminalreporter.section("failures on other ranks", sep="=")
            for _, _, _, rep in self.others:
                terminalreporter.write(rep + "\n")
        terminalreporter.write_line(f"[trtdsl mpi] {self.size} ranks agreed on every outcome")

    def pytest_unconfigure(self, config: Any) -> None:
        self._disarm()
