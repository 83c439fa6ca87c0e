"""Failure notices and fatal reports between MPI processes, and waits that never hang.

A rank that fails sends a notice to every other rank; a waiting rank polls for notices and
stops (RankFailedError) instead of waiting forever; a wait past its timeout prints where it
waited and aborts the job. A roll call names the rank that never came: each rank, on reaching a
timed exchange, posts a small non-blocking "arrived at <what>" message to the others; a rank
that times out reports which ranks never posted theirs, and where each was last seen.
"""

from __future__ import annotations

import pickle
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import RankFailedError

# -- reports that must be seen even while a test framework captures output ------------------
_REPORT_STREAM: Any = None


def set_report_stream(stream: Any) -> None:
    """Where fatal MPI reports go (default ``sys.stderr``). The pytest plugin points this at a
    duplicate of the real stderr, since pytest captures fd 2 while a test runs."""
    global _REPORT_STREAM
    _REPORT_STREAM = stream


def report_stream() -> Any:
    return sys.stderr if _REPORT_STREAM is None else _REPORT_STREAM


def emit(text: str) -> None:
    """Write a fatal report to :func:`report_stream` and flush it."""
    sys.stdout.flush()
    out = report_stream()
    out.write(text)
    out.flush()


# -- failure notices between MPI processes --------------------------------------------------
#: The point-to-point tag of failure notices on ``MPI.COMM_WORLD`` (apart from collectives).
NOTICE_TAG = 31293


class _Notices:
    """Failure notices: small point-to-point messages on ``COMM_WORLD`` with their own tag.

    A rank that fails while others may be waiting for it in a collective calls :meth:`send`;
    the waiting ranks see the notice (:meth:`poll`) and stop with RankFailedError instead of
    waiting for the timeout. A notice has a kind: ``"failed"`` (the sender failed but may still
    reach the next synchronisation point of the test helpers) or ``"left"`` (the sender has left
    the test altogether, so nobody should wait for it anywhere in that test).

    A rank that stopped waiting leaves its pending collective behind, so its world is *broken*
    (:func:`world_broken`): later exchanges refuse to start, and the test plugin ends the job
    after reporting. Counters let synchronisation points (:mod:`trtdsl.testing.mpi`) receive
    the notices nobody consumed, so none goes stale.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.consumed: dict[int, int] = {}
        self.requests: list[Any] = []
        self.broken: str | None = None

    @staticmethod
    def _comm() -> Any:
        from mpi4py import MPI

        return MPI.COMM_WORLD

    def send(self, message: str, kind: str = "failed") -> None:
        comm = self._comm()
        me, size = comm.Get_rank(), comm.Get_size()
        if size == 1:
            return
        for dest in range(size):
            if dest != me:
                self.requests.append(comm.isend((me, kind, message), dest=dest, tag=NOTICE_TAG))
        self.sent += 1
        self.requests = [q for q in self.requests if not q.Test()]

    def poll(self) -> tuple[int, str, str] | None:
        from mpi4py import MPI

        comm = self._comm()
        status = MPI.Status()
        if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=NOTICE_TAG, status=status):
            return None
        src = status.Get_source()
        sender, kind, message = comm.recv(source=src, tag=NOTICE_TAG)
        self.consumed[src] = self.consumed.get(src, 0) + 1
        return sender, kind, message

    def drain(self, sent_by: Sequence[int]) -> None:
        """Receive every notice not yet consumed, given how many each rank has sent so far."""
        comm = self._comm()
        me = comm.Get_rank()
        for src, n in enumerate(sent_by):
            while src != me and self.consumed.get(src, 0) < n:
                comm.recv(source=src, tag=NOTICE_TAG)
                self.consumed[src] = self.consumed.get(src, 0) + 1


NOTICES = _Notices()


def send_failure_notice(message: str, kind: str = "failed") -> None:
    """Tell every other MPI process that this one failed (``message`` completes "rank R ..."),
    so that ranks waiting for it in an :class:`MPIWorld` collective stop instead of timing
    out. ``kind="left"``: this rank has also left the test (see :class:`_Notices`)."""
    NOTICES.send(message, kind)


def world_broken() -> str | None:
    """Why this process's MPI collectives are out of step (a wait was abandoned), or None."""
    return NOTICES.broken


def mark_world_broken(reason: str) -> None:
    """Record that this process's MPI collectives are out of step; later exchanges refuse."""
    if NOTICES.broken is None:
        NOTICES.broken = reason


# -- the roll call: who reached which exchange --------------------------------------------------
#: The point-to-point tag of roll-call (arrival) messages, apart from failure notices.
ARRIVAL_TAG = 31294
_ROLL_KEYVAL: Any = None


class _RollCall:
    """The roll call of one communicator (kept on it as an MPI attribute, so it lives and dies
    with the communicator, and every world or helper on it shares one count).

    MPI collectives on a communicator match in call order, so the n-th timed exchange of every
    rank is the same exchange: on reaching it a rank posts ``(n, what)`` to every other rank
    (``isend``, tag :data:`ARRIVAL_TAG`) before waiting. A rank that times out at exchange n
    names the ranks whose latest arrival is older than n (:meth:`absent`). Arrivals are
    received without blocking after every exchange, so they do not pile up.
    """

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.count = 0
        self.seen: dict[int, tuple[int, str]] = {}
        self.requests: list[Any] = []

    @staticmethod
    def of(comm: Any) -> _RollCall | None:
        """The communicator's roll call (made on first use); None where there is none to make
        (a single rank, or an object that is not an mpi4py communicator)."""
        global _ROLL_KEYVAL
        try:
            if comm.Get_size() == 1:
                return None
            if _ROLL_KEYVAL is None:
                from mpi4py import MPI

                _ROLL_KEYVAL = MPI.Comm.Create_keyval()
            roll = comm.Get_attr(_ROLL_KEYVAL)
            if roll is None:
                roll = _RollCall(comm)
                comm.Set_attr(_ROLL_KEYVAL, roll)
            return roll
        except Exception:  # noqa: BLE001 - no roll call: timeouts say "another rank"
            return None

    def arrive(self, what: str) -> int:
        """Post this rank's arrival at its next exchange (``what``) to every other rank."""
        self.count += 1
        note = (self.count, what[:200])
        for dest in range(self.size):
            if dest != self.rank:
                self.requests.append(self.comm.isend(note, dest=dest, tag=ARRIVAL_TAG))
        self.requests = [q for q in self.requests if not q.Test()]
        return self.count

    def collect(self) -> None:
        """Receive the arrivals that are here (never blocks)."""
        from mpi4py import MPI

        status = MPI.Status()
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=ARRIVAL_TAG, status=status):
            src = status.Get_source()
            seq, what = self.comm.recv(source=src, tag=ARRIVAL_TAG)
            if seq > self.seen.get(src, (0, ""))[0]:
                self.seen[src] = (seq, what)

    def absent(self, seq: int, grace: float = 0.3) -> tuple[str, str] | None:
        """Who has not posted arrival ``seq`` ("rank 3" or "ranks [1, 3]") and where each was
        last seen; None if every rank has (then a rank came late or is out of step)."""
        deadline = time.monotonic() + grace
        while True:  # arrivals already posted may still be on their way: a short grace
            self.collect()
            gone = [r for r in range(self.size) if r != self.rank and self._last(r) < seq]
            if not gone or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not gone:
            return None
        who = f"rank {gone[0]}" if len(gone) == 1 else f"ranks {gone}"
        where = "; ".join(
            f"rank {r} last arrived at {self.seen[r][1]}"
            if r in self.seen
            else f"rank {r} arrived at no exchange here"
            for r in gone
        )
        return who, where

    def _last(self, r: int) -> int:
        return self.seen.get(r, (0, ""))[0]


def roll_call(comm: Any, what: str) -> Callable[[], tuple[str, str] | None] | None:
    """Post this rank's arrival at ``what`` on ``comm``; returns what :func:`wait_request`
    calls on a timeout to name the ranks that never arrived (None without a roll call)."""
    roll = _RollCall.of(comm)
    if roll is None:
        return None
    seq = roll.arrive(what)
    return lambda: roll.absent(seq)


def collect_arrivals(comm: Any) -> None:
    """Receive the arrival messages that are here (after an exchange completed)."""
    roll = _RollCall.of(comm)
    if roll is not None:
        roll.collect()


def wait_request(
    req: Any,
    timeout: float,
    what: str,
    rank: int,
    on_timeout: Callable[[str], Any],
    notices: bool | frozenset[str] = True,
    absent: Callable[[], tuple[str, str] | None] | None = None,
) -> bool:
    """Wait for an MPI request; stop with RankFailedError when another rank sends a failure
    notice (of any kind if ``notices`` is True, of the kinds in it if a set); after ``timeout``
    seconds call ``on_timeout(message)`` and return False (if it returns). True once the
    request completed. ``absent`` (from :func:`roll_call`) names, in the timeout's message,
    the ranks that never arrived."""
    __tracebackhide__ = True
    start = time.monotonic()
    deadline = start + timeout
    delay = 0.0
    while not req.Test():
        if notices:
            peer = NOTICES.poll()
            if peer is not None and (notices is True or peer[1] in notices):
                src, _, message = peer
                text = f"rank {rank} stopped waiting at {what}: rank {src} {message}"
                mark_world_broken(text)
                raise RankFailedError(text)
        if time.monotonic() > deadline:
            who, where = (absent() if absent is not None else None) or ("another rank", "")
            on_timeout(
                f"rank {rank} waited more than {timeout:g} s at {what}: {who} did not get there "
                "(it failed, hangs, or runs a different sequence of collectives)"
                + (f"; roll call: {where}" if where else "")
            )
            return False
        # yield the CPU at once at first (ranks often share cores), back off to 2 ms later
        time.sleep(delay)
        if time.monotonic() - start > 0.002:
            delay = min(max(delay * 2, 1e-5), 0.002)
    return True


def timed_allgather(
    comm: Any,
    obj: Any,
    timeout: float,
    what: str,
    on_timeout: Callable[[str], Any],
    notices: bool | frozenset[str] = True,
) -> list[Any]:
    """Every rank's ``obj`` (pickled), by two non-blocking collectives (sizes, then bytes) that
    are polled, so the wait yields the CPU, stops on a failure notice (if ``notices``) and
    calls ``on_timeout`` after ``timeout`` seconds instead of blocking forever; its message
    names the ranks that never arrived (:func:`roll_call`)."""
    __tracebackhide__ = True
    from mpi4py import MPI

    data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    size, rank = comm.Get_size(), comm.Get_rank()
    sizes = np.zeros(size, np.int64)
    absent = roll_call(comm, what)
    req = comm.Iallgather(np.array([data.size], np.int64), sizes)
    if not wait_request(req, timeout, what, rank, on_timeout, notices, absent):
        raise RankFailedError(f"rank {rank} gave up waiting at {what}")
    displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    buf = np.empty(int(sizes.sum()), np.uint8)
    req = comm.Iallgatherv(data, [buf, sizes.tolist(), displs.tolist(), MPI.BYTE])
    # everyone is past the first step: the second completes, notices are not for it
    if not wait_request(req, timeout, what, rank, on_timeout, notices=False):
        raise RankFailedError(f"rank {rank} gave up waiting at {what}")
    collect_arrivals(comm)
    return [pickle.loads(buf[d : d + n].tobytes()) for d, n in zip(displs, sizes)]


_HOOK_INSTALLED = False
_AT_ABORT: list[Callable[[], Any]] = []


def at_abort(fn: Callable[[], Any]) -> None:
    """Call ``fn`` before this process aborts the MPI job (the abort hook, ``MPIWorld.abort``):
    e.g. ``ncclCommAbort`` on the NCCL communicators, which no one will wait for."""
    _AT_ABORT.append(fn)


def run_at_abort() -> None:
    """Run the :func:`at_abort` callbacks once each (errors are reported, not raised)."""
    while _AT_ABORT:
        fn = _AT_ABORT.pop()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - aborting anyway
            emit(f"[trtdsl] while aborting: {type(e).__name__}: {e}\n")


def install_abort_hook() -> None:
    """Make an uncaught exception on one MPI process print its traceback with the rank and
    abort the whole job, instead of leaving the other ranks waiting for it."""
    global _HOOK_INSTALLED
    if _HOOK_INSTALLED:
        return
    _HOOK_INSTALLED = True
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.Get_size() == 1 or issubclass(kind, (KeyboardInterrupt, SystemExit)):
            previous(kind, value, tb)
            return
        text = "".join(traceback.format_exception(kind, value, tb))
        emit(
            f"\n[trtdsl] rank {comm.Get_rank()} of {comm.Get_size()} raised an uncaught "
            f"exception; aborting the MPI job:\n{text}"
        )
        run_at_abort()
        comm.Abort(1)

    sys.excepthook = hook
