"""``Communicator``: one rank's NCCL communicator (nccl4py underneath) and its collectives.

The collectives take device pointers (ints) or device arrays (CuPy), element counts, dtypes
(NumPy / ml_dtypes / trtdsl, or names) and ``cudaStream_t`` ints, as NCCL's C API does; they go
straight to nccl4py's ``nccl.bindings.nccl`` functions, with no per-call buffer resolution.

Communicators are made collectively. :meth:`Communicator.for_partition` makes one per group of a
partition of a world's ranks with a single ``world.exchange`` of the groups' unique ids (timed,
and stopped by another rank's failure notice), so a rank that cannot make its part reports it to
every rank instead of leaving them blocked in NCCL.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .adapter import (
    NcclError,
    capsule,
    count,
    get_unique_id,
    group,
    load,
    nccl_dtype,
    nccl_version,
    pointer,
    stream_handle,
    unique_id_from_bytes,
)
from .prepared import PreparedCollective

#: ncclResult_t names (nccl.h), for async error reports.
NCCL_RESULTS = {
    0: "ncclSuccess",
    1: "ncclUnhandledCudaError",
    2: "ncclSystemError",
    3: "ncclInternalError",
    4: "ncclInvalidArgument",
    5: "ncclInvalidUsage",
    6: "ncclRemoteError",
    7: "ncclInProgress",
}


def _wrap(function: str, e: BaseException) -> NcclError:
    if isinstance(e, NcclError):
        return e
    return NcclError(f"{function} failed: {type(e).__name__}: {e}", function=function)


class Communicator:
    """One rank of an NCCL communicator on the current CUDA device.

    Select the device first (``cupy.cuda.Device(i).use()``). Close it on every rank with
    :meth:`close` (or a ``with`` block); :meth:`abort` frees it without waiting for the others.
    """

    def __init__(self, nranks: int, unique_id: bytes, rank: int) -> None:
        if not 0 <= rank < nranks:
            raise ValueError(f"rank must be in [0, {nranks}), got {rank}")
        mods = load()
        uid = unique_id_from_bytes(unique_id)
        try:
            comm = mods.core.Communicator.init(nranks, rank, uid)
        except Exception as e:
            raise _wrap("ncclCommInitRank", e) from e
        self._setup(comm, rank, nranks)

    def _setup(self, comm: Any, rank: int, size: int) -> None:
        mods = load()
        self._n4p = comm
        self._b = mods.bindings
        self._rank, self._size = rank, size
        self._ptr = int(comm.ptr)
        self._h = mods.bindings.Comm(self._ptr)  # nccl4py's non-owning handle for its C calls
        self._native: bool | None = None
        self._lock = threading.Lock()  # async_error (another thread) vs. close/abort

    @classmethod
    def wrap(cls, comm: Any, rank: int, size: int) -> Communicator:
        """Adopt an existing nccl4py ``Communicator`` (this object then closes it)."""
        self = object.__new__(cls)
        self._setup(comm, rank, size)
        return self

    # -- making communicators over a world ---------------------------------------------------
    @classmethod
    def for_partition(
        cls, world: Any, partition: Sequence[Sequence[int]] | None = None
    ) -> Communicator:
        """This rank's communicator for its group of ``partition`` (default: all ranks),
        collectively over ``world`` (anything with ``rank``, ``size``, ``exchange``).

        The first member of each group makes the group's unique id; one ``world.exchange``
        carries every group's id and every rank's readiness, so all ranks fail together (with
        every rank's reason) when one cannot take part.
        """
        me, size = world.rank, world.size
        groups = [tuple(range(size))] if partition is None else [tuple(g) for g in partition]
        mine = next((g for g in groups if me in g), None)
        payload: tuple[str | None, bytes | None] = (None, None)
        try:
            if mine is None:
                raise ValueError(f"rank {me} is in no group of {groups}")
            load()
            if me == mine[0]:
                payload = (None, get_unique_id())
        except Exception as e:
            payload = (f"{type(e).__name__}: {e}", None)
        what = f"making NCCL communicators for groups {[list(g) for g in groups]}"
        gathered = world.exchange(payload, what, key=("nccl-unique-id", tuple(groups)))
        errors = [f"rank {r}: {err}" for r, (err, _) in enumerate(gathered) if err]
        if errors:
            raise NcclError(f"rank {me}: cannot start {what}: " + "; ".join(errors))
        assert mine is not None
        return cls(len(mine), gathered[mine[0]][1], mine.index(me))

    @classmethod
    def from_mpi(cls, comm: Any = None, timeout: float = 120.0) -> Communicator:
        """One communicator over all ranks of an mpi4py communicator (default
        ``MPI.COMM_WORLD``), the unique id exchanged with a timed, failure-notice-aware
        all-gather. Select each rank's CUDA device first."""
        from ...worlds import MPIWorld

        world = MPIWorld(comm, timeout=timeout, abort_on_exception=False)
        return cls.for_partition(world)

    # -- properties ------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._n4p is None

    @property
    def ptr(self) -> int:
        """The ``ncclComm_t`` as an int."""
        if self._n4p is None:
            raise NcclError("the NCCL communicator is closed", function="Communicator.ptr")
        return self._ptr

    @property
    def nccl4py(self) -> Any:
        """The underlying ``nccl.core.Communicator``."""
        return self._n4p

    @property
    def device(self) -> int:
        """The CUDA device ordinal the communicator was created on (ncclCommCuDevice)."""
        _ = self.ptr
        try:
            return int(self._b.comm_cu_device(self._h))
        except Exception as e:
            raise _wrap("ncclCommCuDevice", e) from e

    def capsule(self) -> Any:
        """A PyCapsule named ``b"ncclComm_t"`` holding the communicator, for TensorRT's
        ``IExecutionContext.set_communicator``. Keep the Communicator open while it is used."""
        return capsule(self.ptr)

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Finalize and destroy (collective: all ranks call it); a second call does nothing."""
        with self._lock:
            comm, self._n4p = self._n4p, None
        if comm is None:
            return
        try:
            comm.destroy()  # nccl4py finalizes first
        except Exception as e:
            raise _wrap("ncclCommDestroy", e) from e

    def abort(self) -> None:
        """``ncclCommAbort``: free the communicator without waiting for the other ranks."""
        with self._lock:
            comm, self._n4p = self._n4p, None
        if comm is None:
            return
        try:
            comm.abort()
        except Exception as e:
            raise _wrap("ncclCommAbort", e) from e

    def async_error(self) -> str | None:
        """``ncclCommGetAsyncError``: what went wrong with work in flight (e.g. ``ncclRemoteError
        (6): ...``), or None (fine, in progress, closed, or being closed by another thread).
        Safe to call from a watchdog thread while this one runs collectives."""
        if not self._lock.acquire(blocking=False):
            return None  # close/abort is swapping the handle out right now
        try:
            if self._n4p is None:
                return None
            try:
                code = int(self._b.comm_get_async_error(self._h))
            except Exception as e:
                return f"ncclCommGetAsyncError failed: {type(e).__name__}: {e}"
            if code in (0, 7):  # ncclSuccess, ncclInProgress
                return None
            return f"{NCCL_RESULTS.get(code, 'ncclResult')} ({code}): {self._explain(code)}"
        finally:
            self._lock.release()

    def _explain(self, code: int) -> str:
        parts = []
        for what, call in (
            ("", lambda: self._b.get_error_string(code)),
            ("last error: ", lambda: self._b.get_last_error(self._h)),
        ):
            try:
                text = str(call()).strip()
            except Exception:  # noqa: BLE001 - older nccl4py: the code alone
                continue
            if text:
                parts.append(what + text)
        return "; ".join(parts) or "no description"

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        state = "closed" if self._n4p is None else hex(self._ptr)
        return f"Communicator(rank={self._rank}, size={self._size}, {state})"

    # -- calls -----------------------------------------------------------------------------------
    def _root(self, root: int, what: str = "root") -> int:
        if not 0 <= root < self._size:
            raise ValueError(f"{what} must be in [0, {self._size}), got {root}")
        return int(root)

    def _handle(self, function: str) -> Any:
        if self._n4p is None:
            raise NcclError("the NCCL communicator is closed", function=function)
        return self._h

    def _use_native(self, native: bool | None, function: str) -> bool:
        if native is False:
            return False
        if self._native is None:
            self._native = nccl_version() >= (2, 28, 0)
        if native and not self._native:
            raise NcclError(
                f"{function} needs NCCL >= 2.28, have {nccl_version()}", function=function
            )
        return self._native

    def _collective(
        self,
        op: str,
        send: Any,
        recv: Any,
        n: int,
        dtype: Any,
        stream: Any,
        *,
        reduce: str | None = None,
        root: int | None = None,
        native: bool | None = None,
    ) -> None:
        """One call of ``op``: :meth:`prepare` (the one place that knows NCCL's argument
        order) with the arguments resolved from arrays or ints."""
        call = self.prepare(op, dtype, reduce, root, native=native)
        call(pointer(send), pointer(recv), n, stream_handle(stream))

    def all_reduce(
        self, send: Any, recv: Any, count_: int, dtype: Any, op: str = "sum", stream: Any = 0
    ) -> None:
        """recv = op over ranks of send (``count_`` elements each); in place if send == recv."""
        self._collective("all_reduce", send, recv, count(count_), dtype, stream, reduce=op)

    def broadcast(
        self, send: Any, recv: Any, count_: int, dtype: Any, root: int = 0, stream: Any = 0
    ) -> None:
        """recv = root's send on every rank (send is read on the root only)."""
        self._collective("broadcast", send, recv, count(count_), dtype, stream, root=root)

    def reduce(
        self,
        send: Any,
        recv: Any,
        count_: int,
        dtype: Any,
        op: str = "sum",
        root: int = 0,
        stream: Any = 0,
    ) -> None:
        """recv on the root = op over ranks of send; recv may be None (NULL) elsewhere."""
        n = count(count_)
        self._collective("reduce", send, recv, n, dtype, stream, reduce=op, root=root)

    def all_gather(self, send: Any, recv: Any, sendcount: int, dtype: Any, stream: Any = 0) -> None:
        """recv[i*sendcount:(i+1)*sendcount] = rank i's send, on every rank."""
        self._collective("all_gather", send, recv, count(sendcount, "sendcount"), dtype, stream)

    def reduce_scatter(
        self, send: Any, recv: Any, recvcount: int, dtype: Any, op: str = "sum", stream: Any = 0
    ) -> None:
        """recv on rank i = block i (``recvcount`` elements) of op over ranks of send."""
        n = count(recvcount, "recvcount")
        self._collective("reduce_scatter", send, recv, n, dtype, stream, reduce=op)

    def all_to_all(
        self,
        send: Any,
        recv: Any,
        count_per_peer: int,
        dtype: Any,
        stream: Any = 0,
        *,
        native: bool | None = None,
    ) -> None:
        """Block j of send goes to rank j, landing in block (this rank) of its recv.

        ``native``: None uses ncclAlltoAll where NCCL >= 2.28, False forces grouped send/recv.
        """
        n = count(count_per_peer, "count_per_peer")
        self._collective("all_to_all", send, recv, n, dtype, stream, native=native)

    def gather(
        self,
        send: Any,
        recv: Any,
        sendcount: int,
        dtype: Any,
        root: int = 0,
        stream: Any = 0,
        *,
        native: bool | None = None,
    ) -> None:
        """On the root, recv block i = rank i's send; recv is not used elsewhere."""
        n = count(sendcount, "sendcount")
        self._collective("gather", send, recv, n, dtype, stream, root=root, native=native)

    def scatter(
        self,
        send: Any,
        recv: Any,
        recvcount: int,
        dtype: Any,
        root: int = 0,
        stream: Any = 0,
        *,
        native: bool | None = None,
    ) -> None:
        """recv on rank i = block i of the root's send; send is not used elsewhere."""
        n = count(recvcount, "recvcount")
        self._collective("scatter", send, recv, n, dtype, stream, root=root, native=native)

    def send(self, buf: Any, count_: int, dtype: Any, peer: int, stream: Any = 0) -> None:
        """ncclSend ``count_`` elements to ``peer`` (pair with its :meth:`recv`)."""
        h = self._handle("ncclSend")
        args = (pointer(buf), count(count_), nccl_dtype(dtype), self._root(peer, "peer"))
        try:
            self._b.send(*args, h, stream_handle(stream))
        except Exception as e:
            raise _wrap("ncclSend", e) from e

    def recv(self, buf: Any, count_: int, dtype: Any, peer: int, stream: Any = 0) -> None:
        """ncclRecv ``count_`` elements from ``peer``."""
        h = self._handle("ncclRecv")
        args = (pointer(buf), count(count_), nccl_dtype(dtype), self._root(peer, "peer"))
        try:
            self._b.recv(*args, h, stream_handle(stream))
        except Exception as e:
            raise _wrap("ncclRecv", e) from e

    def prepare(
        self,
        op: str,
        dtype: Any,
        reduce: str | None = None,
        root: int | None = None,
        *,
        native: bool | None = None,
    ) -> PreparedCollective:
        """``op`` with its codes bound, for repeated calls with int pointers:
        ``call(send_ptr, recv_ptr, count, stream_ptr)`` (counts as in the methods above;
        ``native`` as in :meth:`all_to_all`)."""
        return PreparedCollective(self, self._b, op, dtype, reduce, root, native)

    group = staticmethod(group)
