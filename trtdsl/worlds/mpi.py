"""``MPIWorld``: one rank per MPI process (mpi4py), fail-fast."""

from __future__ import annotations

from typing import Any

from ..errors import CollectiveMismatchError, RankFailedError
from .base import World
from .notices import (
    collect_arrivals,
    emit,
    install_abort_hook,
    roll_call,
    run_at_abort,
    timed_allgather,
    wait_request,
    world_broken,
)


class MPIWorld(World):
    """One rank per MPI process (mpi4py).

    Every exchange waits at most ``timeout`` seconds for the other ranks; past that it prints
    where it waited and which ranks never arrived (a roll call: each rank posts its arrival
    at every exchange) and aborts the MPI job. It also stops early (RankFailedError) when another
    process sends a failure notice (:func:`send_failure_notice`). With ``abort_on_exception``
    (the default) an uncaught exception on any rank prints its traceback with the rank number
    and aborts the job (``sys.excepthook``), so the other ranks never wait for a dead one.
    """

    def __init__(
        self, comm: Any = None, timeout: float = 120.0, abort_on_exception: bool = True
    ) -> None:
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        self.timeout = timeout
        if abort_on_exception:
            install_abort_hook()

    def wait_for_all(self, what: str) -> None:
        """A barrier that stops on a failure notice and aborts the job after ``timeout``,
        naming the ranks that never arrived."""
        __tracebackhide__ = True
        absent = roll_call(self.comm, what)
        req = self.comm.Ibarrier()
        if wait_request(req, self.timeout, what, self.rank, self.abort, absent=absent):
            collect_arrivals(self.comm)

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        __tracebackhide__ = True
        broken = world_broken()
        if broken:
            raise RankFailedError(
                f"rank {self.rank} cannot start {what}: this process's MPI collectives are out "
                f"of step after an earlier failure ({broken})"
            )
        tagged = timed_allgather(
            self.comm, ((what if key is None else key), what, obj), self.timeout, what, self.abort
        )
        if len({k for k, _, _ in tagged}) > 1:
            lines = "; ".join(f"rank {r} at {w}" for r, (_, w, _) in enumerate(tagged))
            raise CollectiveMismatchError(f"rank {self.rank}: ranks are out of step: {lines}")
        return [o for _, _, o in tagged]

    def abort(self, message: str, code: int = 1) -> None:
        """Print ``message`` and end every rank of the job."""
        emit(f"\n[trtdsl] FATAL on rank {self.rank}: {message}\n")
        run_at_abort()
        self.comm.Abort(code)
