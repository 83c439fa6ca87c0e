"""Failure notices and fatal reports between MPI processes, and waits that never hang.

A rank that fails sends a notice to every other rank; a waiting rank polls for notices and
stops (RankFailedError) instead of waiting forever; a wait past its timeout prints where it
waited and aborts the job.
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


def wait_request(
    req: Any,
    timeout: float,
    what: str,
    rank: int,
    on_timeout: Callable[[str], Any],
    notices: bool | frozenset[str] = True,
) -> bool:
    """Wait for an MPI request; stop with RankFailedError when another rank sends a failure
    notice (of any kind if ``notices`` is True, of the kinds in it if a set); after ``timeout``
    seconds call ``on_timeout(message)`` and return False (if it returns). True once the
    request completed."""
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
            on_timeout(
                f"rank {rank} waited more than {timeout:g} s at {what}: another rank did not "
                "get there (it failed, hangs, or runs a different sequence of collectives)"
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
    calls ``on_timeout`` after ``timeout`` seconds instead of blocking forever."""
    __tracebackhide__ = True
    from mpi4py import MPI

    data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    size, rank = comm.Get_size(), comm.Get_rank()
    sizes = np.zeros(size, np.int64)
    req = comm.Iallgather(np.array([data.size], np.int64), sizes)
    if not wait_request(req, timeout, what, rank, on_timeout, notices):
        raise RankFailedError(f"rank {rank} gave up waiting at {what}")
    displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    buf = np.empty(int(sizes.sum()), np.uint8)
    req = comm.Iallgatherv(data, [buf, sizes.tolist(), displs.tolist(), MPI.BYTE])
    # everyone is past the first step: the second completes, notices are not for it
    if not wait_request(req, timeout, what, rank, on_timeout, notices=False):
        raise RankFailedError(f"rank {rank} gave up waiting at {what}")
    return [pickle.loads(buf[d : d + n].tobytes()) for d, n in zip(displs, sizes)]


_HOOK_INSTALLED = False


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
        comm.Abort(1)

    sys.excepthook = hook
