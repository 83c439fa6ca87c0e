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

from .adapter import NcclError, group, itemsize, nccl_dtype, nccl_op

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
    """What a prepared call needs of :class:`~.communicator.Communicator` (``send`` / ``recv``:
    the grouped fallbacks of all_to_all, gather and scatter on NCCL < 2.28)."""

    rank: int
    size: int
    closed: bool

    def _handle(self, function: str) -> Any: ...
    def _root(self, root: int, what: str = "root") -> int: ...
    def _use_native(self, native: bool | None, function: str) -> bool: ...
    def send(self, buf: Any, count_: int, dtype: Any, peer: int, stream: Any = 0) -> None: ...
    def recv(self, buf: Any, count_: int, dtype: Any, peer: int, stream: Any = 0) -> None: ...


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
        native: bool | None = None,
    ) -> None:
        if op not in C_NAMES:
            raise ValueError(f"unknown collective {op!r}; one of {', '.join(C_NAMES)}")
        self.op, self.function, self._comm = op, C_NAMES[op], comm
        h = comm._handle(self.function)
        if op in ("broadcast", "reduce", "gather", "scatter"):
            if root is None:
                raise ValueError(f"{op} needs a root")
            root = comm._root(root)
        if op in ("all_reduce", "reduce", "reduce_scatter") and reduce is None:
            raise ValueError(f"{op} needs a reduce op")
        dt = nccl_dtype(dtype)
        self._fn = self._bind(bindings, op, dt, dtype, reduce, root, h, native)

    def _bind(
        self,
        b: Any,
        op: str,
        dt: int,
        dtype: Any,
        reduce: str | None,
        root: Any,
        h: Any,
        native: bool | None,
    ) -> Callable[[int, int, int, int], Any]:
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
        if self._comm._use_native(native, self.function):
            if op == "all_to_all":
                fn = b.allto_all
                return lambda s, r, n, st: fn(s, r, n, dt, h, st)
            fn = b.gather if op == "gather" else b.scatter
            return lambda s, r, n, st: fn(s, r, n, dt, root, h, st)
        return self._grouped(op, dtype, root)

    def _grouped(self, op: str, dtype: Any, root: Any) -> Callable[[int, int, int, int], Any]:
        """all_to_all, gather or scatter as one NCCL group of sends and receives (NCCL < 2.28,
        or ``native=False``); blocks at byte offsets ``peer * count * itemsize``."""
        comm, size = self._comm, self._comm.size
        item = itemsize(dtype)

        def call(s: int, r: int, n: int, st: int) -> None:
            step = n * item
            with group():
                if op == "all_to_all":
                    for peer in range(size):
                        comm.send(s + peer * step, n, dtype, peer, st)
                        comm.recv(r + peer * step, n, dtype, peer, st)
                elif op == "gather":
                    comm.send(s, n, dtype, root, st)
                    if comm.rank == root:
                        for peer in range(size):
                            comm.recv(r + peer * step, n, dtype, peer, st)
                else:  # scatter
                    if comm.rank == root:
                        for peer in range(size):
                            comm.send(s + peer * step, n, dtype, peer, st)
                    comm.recv(r, n, dtype, root, st)

        return call

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
