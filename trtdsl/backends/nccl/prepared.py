"""Collectives with everything but the buffers bound: the per-call path of compiled sessions.

A :class:`PreparedCollective` is made once per collective layer (op, dtype code, reduce-op code,
root, the raw nccl4py function and the communicator handle resolved then) and called with
device pointers, an element count and a ``cudaStream_t`` int, so a call costs one Python call
into nccl4py's bindings. Counts follow the :class:`~.communicator.Communicator` methods: elements
of ``send`` for all_reduce/broadcast/reduce/all_gather/gather, of ``recv`` for
reduce_scatter/scatter, per peer for all_to_all.

>>> call = comm.prepare("all_reduce", np.float32, reduce="sum")     # doctest: +SKIP
>>> call(x.data.ptr, y.data.ptr, x.size, stream.ptr)                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .adapter import NcclError, nccl_dtype, nccl_op

#: NCCL's C function behind each collective, for error messages.
C_NAMES = {
    "all_reduce": "ncclAllReduce",
    "broadcast": "ncclBroadcast",
    "reduce": "ncclReduce",
    "all_gather": "ncclAllGather",
    "reduce_scatter": "ncclReduceScatter",
    "all_to_all": "ncclAlltoAll",
    "gather": "ncclGather",
    "scatter": "ncclScatter",
}


class _Comm(Protocol):
    """What a prepared call needs of :class:`~.communicator.Communicator` (and, on NCCL <
    2.28, its ``all_to_all`` / ``gather`` / ``scatter`` send/recv versions)."""

    rank: int
    size: int
    closed: bool

    def _handle(self, function: str) -> Any: ...
    def _use_native(self, native: bool | None, function: str) -> bool: ...


class PreparedCollective:
    """One collective of one communicator with its codes bound; ``call(send, recv, count,
    stream)`` with int pointers. ``root`` is the group index (rooted ops only)."""

    __slots__ = ("op", "function", "_fn", "_comm")

    def __init__(
        self,
        comm: _Comm,
        bindings: Any,
        op: str,
        dtype: Any,
        reduce: str | None = None,
        root: int | None = None,
    ) -> None:
        if op not in C_NAMES:
            raise ValueError(f"unknown collective {op!r}; one of {', '.join(C_NAMES)}")
        self.op, self.function, self._comm = op, C_NAMES[op], comm
        rooted = op in ("broadcast", "reduce", "gather", "scatter")
        if rooted and (root is None or not 0 <= root < comm.size):
            raise ValueError(f"{op} needs a root in [0, {comm.size}), got {root!r}")
        if op in ("all_reduce", "reduce", "reduce_scatter") and reduce is None:
            raise ValueError(f"{op} needs a reduce op")
        h = comm._handle(self.function)
        dt = nccl_dtype(dtype)
        self._fn = self._bind(bindings, op, dt, dtype, reduce, root, h)

    def _bind(
        self, b: Any, op: str, dt: int, dtype: Any, reduce: str | None, root: Any, h: Any
    ) -> Callable[[int, int, int, int], Any]:
        comm = self._comm
        if op == "all_reduce":
            fn, red = b.all_reduce, nccl_op(reduce)  # type: ignore[arg-type]
            return lambda s, r, n, st: fn(s, r, n, dt, red, h, st)
        if op == "reduce":
            fn, red = b.reduce, nccl_op(reduce)  # type: ignore[arg-type]
            return lambda s, r, n, st: fn(s, r, n, dt, red, root, h, st)
        if op == "reduce_scatter":
            fn, red = b.reduce_scatter, nccl_op(reduce)  # type: ignore[arg-type]
            return lambda s, r, n, st: fn(s, r, n, dt, red, h, st)
        if op == "broadcast":
            fn = b.broadcast
            return lambda s, r, n, st: fn(s, r, n, dt, root, h, st)
        if op == "all_gather":
            fn = b.all_gather
            return lambda s, r, n, st: fn(s, r, n, dt, h, st)
        native = comm._use_native(None, self.function)
        if native and op == "all_to_all":
            fn = b.allto_all
            return lambda s, r, n, st: fn(s, r, n, dt, h, st)
        if native and op == "gather":
            fn = b.gather
            return lambda s, r, n, st: fn(s, r, n, dt, root, h, st)
        if native and op == "scatter":
            fn = b.scatter
            return lambda s, r, n, st: fn(s, r, n, dt, root, h, st)
        # NCCL < 2.28: the communicator's grouped send/recv versions (already wrapped)
        method = getattr(comm, op)
        if op == "all_to_all":
            return lambda s, r, n, st: method(s, r, n, dtype, st, native=False)
        return lambda s, r, n, st: method(s, r, n, dtype, root, st, native=False)

    def __call__(self, send: int, recv: int, count: int, stream: int) -> None:
        if self._comm.closed:  # aborted or destroyed: its handle is freed
            raise NcclError(
                f"{self.function}: the NCCL communicator is closed (aborted after a failure, or "
                "closed with its world)",
                function=self.function,
            )
        try:
            self._fn(send, recv, count, stream)
        except NcclError:
            raise
        except Exception as e:
            raise NcclError(
                f"{self.function} failed: {type(e).__name__}: {e}", function=self.function
            ) from e

    def __repr__(self) -> str:
        return f"PreparedCollective({self.op}, rank {self._comm.rank} of {self._comm.size})"
