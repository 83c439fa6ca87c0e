"""NCCL communicators: one rank's ``ncclComm_t`` and the collectives on it."""

from __future__ import annotations

import ctypes
from typing import Any

from .library import (
    CAPSULE_NAME,
    NcclError,
    UniqueId,
    _check,
    _count,
    _itemsize,
    _ncclComm_t,
    _ptr,
    _stream,
    get_unique_id,
    group,
    load_nccl,
    nccl_dtype,
    nccl_op,
    nccl_version,
)


# --- Communicator ------------------------------------------------------------------------
class Communicator:
    """One rank of an NCCL communicator on the current CUDA device.

    The caller selects the CUDA device before creating it (``cudaSetDevice`` /
    ``cupy.cuda.Device(i).use()``). Close it with :meth:`close` (or a ``with`` block) on every
    rank; it is not closed by garbage collection, since finalizing waits for the other ranks.

    >>> uid = get_unique_id()  # doctest: +SKIP
    >>> comm = Communicator(1, uid, 0)  # doctest: +SKIP
    """

    def __init__(self, nranks: int, unique_id: UniqueId | bytes, rank: int) -> None:
        if not 0 <= rank < nranks:
            raise ValueError(f"rank must be in [0, {nranks}), got {rank}")
        if not isinstance(unique_id, UniqueId):
            unique_id = UniqueId.from_bytes(unique_id)
        self._lib = load_nccl()
        handle = _ncclComm_t()
        code = self._lib.ncclCommInitRank(ctypes.byref(handle), nranks, unique_id, rank)
        _check(self._lib, "ncclCommInitRank", code)
        self._comm: int | None = handle.value
        self._rank = rank
        self._size = nranks

    @classmethod
    def from_mpi(cls, comm: Any = None) -> Communicator:
        """Create one over an mpi4py communicator (default ``MPI.COMM_WORLD``), collectively.

        Rank 0 makes the unique id and broadcasts it. Select each rank's CUDA device first;
        this does not pick one.
        """
        if comm is None:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        raw: bytes | str | None = None
        if comm.Get_rank() == 0:
            try:
                raw = get_unique_id().to_bytes()
            except NcclError as e:  # tell the other ranks instead of leaving them waiting
                raw = str(e)
        raw = comm.bcast(raw, root=0)
        if isinstance(raw, str):
            raise NcclError(f"rank 0 could not make an ncclUniqueId: {raw}")
        return cls(comm.Get_size(), UniqueId.from_bytes(raw), comm.Get_rank())

    # -- properties
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._comm is None

    @property
    def ptr(self) -> int:
        """The ``ncclComm_t`` as an int."""
        if self._comm is None:
            raise NcclError("the NCCL communicator is closed", function="Communicator.ptr")
        return self._comm

    @property
    def device(self) -> int:
        """The CUDA device ordinal the communicator was created on (ncclCommCuDevice)."""
        out = ctypes.c_int()
        self._call("ncclCommCuDevice", self.ptr, ctypes.byref(out))
        return out.value

    def capsule(self) -> Any:
        """A PyCapsule named ``b"ncclComm_t"`` holding the communicator, for TensorRT's
        ``IExecutionContext.set_communicator``. Keep the Communicator open while it is used."""
        return _capsule_new(self.ptr, CAPSULE_NAME)

    # -- lifetime
    def close(self) -> None:
        """``ncclCommFinalize`` then ``ncclCommDestroy``; collective; a second call does nothing."""
        if self._comm is None:
            return
        comm, self._comm = self._comm, None
        if hasattr(self._lib, "ncclCommFinalize"):
            _check(self._lib, "ncclCommFinalize", self._lib.ncclCommFinalize(comm), comm)
        _check(self._lib, "ncclCommDestroy", self._lib.ncclCommDestroy(comm))

    def abort(self) -> None:
        """``ncclCommAbort``: free the communicator without waiting for the other ranks."""
        if self._comm is None:
            return
        comm, self._comm = self._comm, None
        _check(self._lib, "ncclCommAbort", self._lib.ncclCommAbort(comm))

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._comm is None else hex(self._comm)
        return f"Communicator(rank={self._rank}, size={self._size}, {state})"

    # -- calls
    def _call(self, name: str, *args: Any) -> None:
        _check(self._lib, name, getattr(self._lib, name)(*args), self._comm)

    def _root(self, root: int, what: str = "root") -> int:
        if not 0 <= root < self._size:
            raise ValueError(f"{what} must be in [0, {self._size}), got {root}")
        return root

    def _has(self, name: str, native: bool | None) -> bool:
        if native is None:
            return hasattr(self._lib, name)
        if native and not hasattr(self._lib, name):
            raise NcclError(
                f"{name} is not exported by this NCCL ({nccl_version()})", function=name
            )
        return native

    def all_reduce(
        self, send: Any, recv: Any, count: int, dtype: Any, op: str = "sum", stream: Any = 0
    ) -> None:
        """recv = op over ranks of send (``count`` elements each); in place if send == recv."""
        self._call(
            "ncclAllReduce", _ptr(send), _ptr(recv), _count(count), nccl_dtype(dtype),
            nccl_op(op), self.ptr, _stream(stream),
        )  # fmt: skip

    def broadcast(
        self, send: Any, recv: Any, count: int, dtype: Any, root: int = 0, stream: Any = 0
    ) -> None:
        """recv = root's send on every rank (send is read on the root only)."""
        self._call(
            "ncclBroadcast", _ptr(send), _ptr(recv), _count(count), nccl_dtype(dtype),
            self._root(root), self.ptr, _stream(stream),
        )  # fmt: skip

    def reduce(
        self,
        send: Any,
        recv: Any,
        count: int,
        dtype: Any,
        op: str = "sum",
        root: int = 0,
        stream: Any = 0,
    ) -> None:
        """recv on the root = op over ranks of send; recv may be None (NULL) elsewhere."""
        self._call(
            "ncclReduce", _ptr(send), _ptr(recv), _count(count), nccl_dtype(dtype), nccl_op(op),
            self._root(root), self.ptr, _stream(stream),
        )  # fmt: skip

    def all_gather(self, send: Any, recv: Any, sendcount: int, dtype: Any, stream: Any = 0) -> None:
        """recv[i*sendcount:(i+1)*sendcount] = rank i's send, on every rank."""
        self._call(
            "ncclAllGather", _ptr(send), _ptr(recv), _count(sendcount, "sendcount"),
            nccl_dtype(dtype), self.ptr, _stream(stream),
        )  # fmt: skip

    def reduce_scatter(
        self, send: Any, recv: Any, recvcount: int, dtype: Any, op: str = "sum", stream: Any = 0
    ) -> None:
        """recv on rank i = block i (``recvcount`` elements) of op over ranks of send."""
        self._call(
            "ncclReduceScatter", _ptr(send), _ptr(recv), _count(recvcount, "recvcount"),
            nccl_dtype(dtype), nccl_op(op), self.ptr, _stream(stream),
        )  # fmt: skip

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

        ``native``: None uses ncclAlltoAll when exported, False forces grouped send/recv.
        """
        n, dt, s = _count(count_per_peer, "count_per_peer"), nccl_dtype(dtype), _stream(stream)
        sp, rp = _ptr(send), _ptr(recv)
        if self._has("ncclAlltoAll", native):
            self._call("ncclAlltoAll", sp, rp, n, dt, self.ptr, s)
            return
        step = n * _itemsize(dtype)
        with group():
            for peer in range(self._size):
                self.send(sp + peer * step, n, dtype, peer, s)
                self.recv(rp + peer * step, n, dtype, peer, s)

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
        n, dt, s = _count(sendcount, "sendcount"), nccl_dtype(dtype), _stream(stream)
        sp, rp, root = _ptr(send), _ptr(recv), self._root(root)
        if self._has("ncclGather", native):
            self._call("ncclGather", sp, rp, n, dt, root, self.ptr, s)
            return
        step = n * _itemsize(dtype)
        with group():
            self.send(sp, n, dtype, root, s)
            if self._rank == root:
                for peer in range(self._size):
                    self.recv(rp + peer * step, n, dtype, peer, s)

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
        n, dt, s = _count(recvcount, "recvcount"), nccl_dtype(dtype), _stream(stream)
        sp, rp, root = _ptr(send), _ptr(recv), self._root(root)
        if self._has("ncclScatter", native):
            self._call("ncclScatter", sp, rp, n, dt, root, self.ptr, s)
            return
        step = n * _itemsize(dtype)
        with group():
            if self._rank == root:
                for peer in range(self._size):
                    self.send(sp + peer * step, n, dtype, peer, s)
            self.recv(rp, n, dtype, root, s)

    def send(self, send: Any, count: int, dtype: Any, peer: int, stream: Any = 0) -> None:
        """ncclSend ``count`` elements to ``peer`` (pair with its :meth:`recv`)."""
        peer = self._root(peer, "peer")
        self._call(
            "ncclSend",
            _ptr(send),
            _count(count),
            nccl_dtype(dtype),
            peer,
            self.ptr,
            _stream(stream),
        )

    def recv(self, recv: Any, count: int, dtype: Any, peer: int, stream: Any = 0) -> None:
        """ncclRecv ``count`` elements from ``peer``."""
        peer = self._root(peer, "peer")
        self._call(
            "ncclRecv",
            _ptr(recv),
            _count(count),
            nccl_dtype(dtype),
            peer,
            self.ptr,
            _stream(stream),
        )

    group = staticmethod(group)


def _capsule_new(ptr: int, name: bytes) -> Any:
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(ptr, name, None)
