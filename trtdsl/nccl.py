"""A small ctypes binding of NCCL (``libnccl.so.2``): communicators and collectives.

Buffers are raw CUDA device pointers (ints; objects with ``__cuda_array_interface__``, such as
CuPy arrays, are accepted too), counts are element counts and streams are ``cudaStream_t``
handles as ints (0: the default stream). Only NumPy is imported here; CuPy is not needed.

>>> import numpy as np
>>> NCCL_DATA_TYPES["bfloat16"], nccl_dtype(np.float32), nccl_op("avg")
(9, 7, 4)

On GPUs, one process a rank (``mpirun -np 2 python3 script.py``)::

    import cupy
    import numpy as np
    from mpi4py import MPI
    from trtdsl.nccl import Communicator

    cupy.cuda.Device(MPI.COMM_WORLD.rank % cupy.cuda.runtime.getDeviceCount()).use()
    with Communicator.from_mpi() as comm:
        x = cupy.ones(1024, cupy.float32)
        comm.all_reduce(x, x, x.size, np.float32, "sum", stream=0)
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .errors import TrtDslError

__all__ = [
    "NCCL_DATA_TYPES",
    "NCCL_REDUCE_OPS",
    "NCCL_RESULTS",
    "CAPSULE_NAME",
    "NcclError",
    "NcclUnavailableError",
    "UniqueId",
    "Communicator",
    "load_nccl",
    "nccl_version",
    "get_unique_id",
    "nccl_dtype",
    "nccl_op",
    "group",
]

# --- The enum values of nccl.h (NCCL 2.x); the one table this package uses. -----------------
#: ncclDataType_t, keyed by NumPy dtype name.
NCCL_DATA_TYPES: dict[str, int] = {
    "int8": 0,  # ncclInt8 / ncclChar
    "uint8": 1,  # ncclUint8
    "int32": 2,  # ncclInt32 / ncclInt
    "uint32": 3,  # ncclUint32
    "int64": 4,  # ncclInt64
    "uint64": 5,  # ncclUint64
    "float16": 6,  # ncclFloat16 / ncclHalf
    "float32": 7,  # ncclFloat32 / ncclFloat
    "float64": 8,  # ncclFloat64 / ncclDouble
    "bfloat16": 9,  # ncclBfloat16 (ml_dtypes.bfloat16)
}
#: ncclRedOp_t for the built-in reductions.
NCCL_REDUCE_OPS: dict[str, int] = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}
#: ncclResult_t names.
NCCL_RESULTS: dict[int, str] = {
    0: "ncclSuccess",
    1: "ncclUnhandledCudaError",
    2: "ncclSystemError",
    3: "ncclInternalError",
    4: "ncclInvalidArgument",
    5: "ncclInvalidUsage",
    6: "ncclRemoteError",
    7: "ncclInProgress",
    8: "ncclTimeout",
}
NCCL_UNIQUE_ID_BYTES = 128
#: The PyCapsule name TensorRT's ``IExecutionContext.set_communicator`` expects.
CAPSULE_NAME = b"ncclComm_t"  # module global: PyCapsule keeps this pointer, not a copy


class NcclError(TrtDslError, RuntimeError):
    """An NCCL call returned an error; ``.function`` and ``.code`` say which and what."""

    def __init__(self, message: str, *, function: str = "", code: int | None = None) -> None:
        self.function = function
        self.code = code
        super().__init__(message)


class NcclUnavailableError(NcclError, ImportError):
    """``libnccl.so.2`` could not be loaded; the message lists every place tried."""


class UniqueId(ctypes.Structure):
    """``ncclUniqueId``: 128 opaque bytes, picklable (e.g. for ``mpi4py`` ``bcast``).

    >>> uid = UniqueId.from_bytes(bytes(range(128)))
    >>> UniqueId.from_bytes(uid.to_bytes()) == uid
    True
    """

    _fields_ = [("internal", ctypes.c_ubyte * NCCL_UNIQUE_ID_BYTES)]

    @classmethod
    def from_bytes(cls, data: bytes) -> UniqueId:
        data = bytes(data)
        if len(data) != NCCL_UNIQUE_ID_BYTES:
            raise ValueError(f"an ncclUniqueId is {NCCL_UNIQUE_ID_BYTES} bytes, got {len(data)}")
        return cls.from_buffer_copy(data)

    def to_bytes(self) -> bytes:
        return bytes(memoryview(self).cast("B"))

    def __reduce__(self):
        return (UniqueId.from_bytes, (self.to_bytes(),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UniqueId) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"UniqueId({self.to_bytes()[:8].hex()}...)"


# --- Library loading and signatures ------------------------------------------------------
_ncclResult_t = ctypes.c_int
_ncclComm_t = ctypes.c_void_p
_ncclDataType_t = ctypes.c_int
_ncclRedOp_t = ctypes.c_int
_cudaStream_t = ctypes.c_void_p
_vp, _cvp, _size, _int = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int

# name: (restype, argtypes, required); signatures from nccl.h (NCCL 2.28).
_SIGNATURES: dict[str, tuple[Any, list[Any], bool]] = {
    "ncclGetVersion": (_ncclResult_t, [ctypes.POINTER(ctypes.c_int)], True),
    "ncclGetUniqueId": (_ncclResult_t, [ctypes.POINTER(UniqueId)], True),
    "ncclCommInitRank": (
        _ncclResult_t,
        [ctypes.POINTER(_ncclComm_t), _int, UniqueId, _int],
        True,
    ),
    "ncclCommFinalize": (_ncclResult_t, [_ncclComm_t], False),  # NCCL >= 2.14
    "ncclCommDestroy": (_ncclResult_t, [_ncclComm_t], True),
    "ncclCommAbort": (_ncclResult_t, [_ncclComm_t], True),
    "ncclGetErrorString": (ctypes.c_char_p, [_ncclResult_t], True),
    "ncclGetLastError": (ctypes.c_char_p, [_ncclComm_t], False),  # NCCL >= 2.13
    "ncclCommCount": (_ncclResult_t, [_ncclComm_t, ctypes.POINTER(_int)], True),
    "ncclCommCuDevice": (_ncclResult_t, [_ncclComm_t, ctypes.POINTER(_int)], True),
    "ncclCommUserRank": (_ncclResult_t, [_ncclComm_t, ctypes.POINTER(_int)], True),
    "ncclAllReduce": (
        _ncclResult_t,
        [_cvp, _vp, _size, _ncclDataType_t, _ncclRedOp_t, _ncclComm_t, _cudaStream_t],
        True,
    ),
    "ncclBroadcast": (
        _ncclResult_t,
        [_cvp, _vp, _size, _ncclDataType_t, _int, _ncclComm_t, _cudaStream_t],
        True,
    ),
    "ncclReduce": (
        _ncclResult_t,
        [_cvp, _vp, _size, _ncclDataType_t, _ncclRedOp_t, _int, _ncclComm_t, _cudaStream_t],
        True,
    ),
    "ncclAllGather": (
        _ncclResult_t,
        [_cvp, _vp, _size, _ncclDataType_t, _ncclComm_t, _cudaStream_t],
        True,
    ),
    "ncclReduceScatter": (
        _ncclResult_t,
        [_cvp, _vp, _size, _ncclDataType_t, _ncclRedOp_t, _ncclComm_t, _cudaStream_t],
        True,
    ),
    # Native since NCCL 2.28; otherwise emulated with grouped ncclSend/ncclRecv.
    "ncclAlltoAll": (
        _ncclResult_t,
        [_cvp, _vp, _size, _ncclDataType_t, _ncclComm_t, _cudaStream_t],
        False,
    ),
    "ncclGather": (
        _ncclResult_t,
        [_cvp, _vp, _size, _ncclDataType_t, _int, _ncclComm_t, _cudaStream_t],
        False,
    ),
    "ncclScatter": (
        _ncclResult_t,
        [_cvp, _vp, _size, _ncclDataType_t, _int, _ncclComm_t, _cudaStream_t],
        False,
    ),
    "ncclSend": (
        _ncclResult_t,
        [_cvp, _size, _ncclDataType_t, _int, _ncclComm_t, _cudaStream_t],
        True,
    ),
    "ncclRecv": (
        _ncclResult_t,
        [_vp, _size, _ncclDataType_t, _int, _ncclComm_t, _cudaStream_t],
        True,
    ),
    "ncclGroupStart": (_ncclResult_t, [], True),
    "ncclGroupEnd": (_ncclResult_t, [], True),
}


def _declare(lib: ctypes.CDLL, where: str) -> None:
    missing = []
    for name, (restype, argtypes, required) in _SIGNATURES.items():
        if not hasattr(lib, name):  # dlsym
            if required:
                missing.append(name)
            continue
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise NcclUnavailableError(f"{where} lacks required NCCL functions: {', '.join(missing)}")


@functools.cache
def load_nccl() -> ctypes.CDLL:
    """Load ``libnccl.so.2`` once and declare its functions' signatures.

    Tries ``cuda.pathfinder.load_nvidia_dynamic_lib("nccl")`` (finds the ``nvidia-nccl-cu*``
    wheels), then ``ctypes.CDLL("libnccl.so.2")`` (the system's search path).

    >>> try:
    ...     lib = load_nccl()
    ... except NcclUnavailableError as e:
    ...     print(e)  # doctest: +SKIP
    """
    tried: list[str] = []
    lib: ctypes.CDLL | None = None
    where = ""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError as e:
        tried.append(f"cuda.pathfinder.load_nvidia_dynamic_lib('nccl'): not importable ({e})")
    else:
        try:
            loaded = load_nvidia_dynamic_lib("nccl")
            where = str(loaded.abs_path)
            lib = ctypes.CDLL(where)
        except Exception as e:  # DynamicLibNotFoundError, OSError, ...
            tried.append(f"cuda.pathfinder.load_nvidia_dynamic_lib('nccl'): {str(e).strip()}")
    if lib is None:
        try:
            where = "libnccl.so.2"
            lib = ctypes.CDLL(where)
        except OSError as e:
            tried.append(f"ctypes.CDLL('libnccl.so.2'): {e}")
    if lib is None:
        raise NcclUnavailableError(
            "could not load NCCL (libnccl.so.2); install nvidia-nccl-cu13 (or -cu12) and "
            "cuda-pathfinder, or put libnccl.so.2 on the loader path. Tried: " + "; ".join(tried)
        )
    _declare(lib, where)
    return lib


def _error_text(lib: ctypes.CDLL, code: int, comm: int | None) -> str:
    text = lib.ncclGetErrorString(code)
    msg = text.decode(errors="replace") if text else "?"
    if hasattr(lib, "ncclGetLastError"):
        last = lib.ncclGetLastError(comm)
        if last:
            msg += f"; last error: {last.decode(errors='replace')}"
    return msg


def _check(lib: ctypes.CDLL, function: str, code: int, comm: int | None = None) -> None:
    if code != 0:
        name = NCCL_RESULTS.get(code, f"ncclResult {code}")
        raise NcclError(
            f"{function} failed with {name} ({code}): {_error_text(lib, code, comm)}",
            function=function,
            code=code,
        )


def nccl_version() -> tuple[int, int, int]:
    """The loaded library's version, e.g. ``(2, 28, 9)``."""
    lib = load_nccl()
    code = ctypes.c_int()
    _check(lib, "ncclGetVersion", lib.ncclGetVersion(ctypes.byref(code)))
    v = code.value
    if v >= 10000:  # NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z from 2.9 on
        return v // 10000, (v % 10000) // 100, v % 100
    return v // 1000, (v % 1000) // 100, v % 100


def get_unique_id() -> UniqueId:
    """A fresh ``ncclUniqueId`` (call on one rank, then share it with the others)."""
    lib = load_nccl()
    uid = UniqueId()
    _check(lib, "ncclGetUniqueId", lib.ncclGetUniqueId(ctypes.byref(uid)))
    return uid


# --- Argument conversion -----------------------------------------------------------------
def nccl_dtype(dtype: Any) -> int:
    """The ``ncclDataType_t`` of a NumPy dtype (or its name, or a ``trtdsl`` DType).

    >>> nccl_dtype("float16")
    6
    """
    dtype = getattr(dtype, "numpy", dtype)  # trtdsl.dtypes.DType
    if isinstance(dtype, str) and dtype in NCCL_DATA_TYPES:
        return NCCL_DATA_TYPES[dtype]
    try:
        npd = np.dtype(dtype)
    except TypeError:
        npd = None
    if npd is not None and npd.isnative and npd.name in NCCL_DATA_TYPES:
        return NCCL_DATA_TYPES[npd.name]
    supported = ", ".join(NCCL_DATA_TYPES)
    raise ValueError(f"NCCL has no data type for {dtype!r}; supported: {supported}")


def nccl_op(op: str | int) -> int:
    """The ``ncclRedOp_t`` of ``"sum"``, ``"prod"``, ``"max"``, ``"min"`` or ``"avg"``.

    >>> nccl_op("max")
    2
    """
    if isinstance(op, str) and op.lower() in NCCL_REDUCE_OPS:
        return NCCL_REDUCE_OPS[op.lower()]
    raise ValueError(f"unsupported NCCL reduce op {op!r}; supported: {', '.join(NCCL_REDUCE_OPS)}")


def _itemsize(dtype: Any) -> int:
    code = nccl_dtype(dtype)
    name = next(k for k, v in NCCL_DATA_TYPES.items() if v == code)
    return int(name.lstrip("abcdefghijklmnopqrstuvwxyz")) // 8  # "bfloat16" -> 2


def _ptr(buf: Any) -> int | None:
    """A device pointer from an int, None (NULL) or a ``__cuda_array_interface__`` object."""
    if buf is None or isinstance(buf, int):
        return buf
    cai = getattr(buf, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    raise TypeError(f"expected a device pointer (int) or a CUDA array, got {type(buf).__name__}")


def _stream(stream: Any) -> int | None:
    if stream is None or isinstance(stream, int):
        return stream or None
    return int(stream.ptr) or None  # cupy.cuda.Stream and friends


def _count(count: int, what: str = "count") -> int:
    count = int(count)
    if count < 0:
        raise ValueError(f"{what} must be >= 0, got {count}")
    return count


@contextmanager
def group() -> Iterator[None]:
    """``ncclGroupStart()`` ... ``ncclGroupEnd()``: fuse the NCCL calls made inside.

    >>> with group():  # doctest: +SKIP
    ...     comm.send(a, n, np.float32, peer=1)
    ...     comm.recv(b, n, np.float32, peer=1)
    """
    lib = load_nccl()
    _check(lib, "ncclGroupStart", lib.ncclGroupStart())
    try:
        yield
    except BaseException:
        lib.ncclGroupEnd()  # close the group; the original error wins
        raise
    _check(lib, "ncclGroupEnd", lib.ncclGroupEnd())


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
