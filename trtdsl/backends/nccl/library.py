"""A small ctypes binding of NCCL (``libnccl.so.2``): the library, its enums and errors.

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
    from trtdsl.backends.nccl import Communicator

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

from ...errors import TrtDslError

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
