"""What trtdsl needs of nccl4py (NVIDIA's NCCL bindings), and what nccl4py lacks.

nccl4py (``pip install nccl4py``; ``import nccl.core``) makes and ends communicators
(``get_unique_id``, ``Communicator.init``, ``split``, ``abort``, ``destroy``, ``ptr``) and its
``nccl.bindings.nccl`` layer calls NCCL with raw pointers, element counts, ``ncclDataType_t`` /
``ncclRedOp_t`` codes and ``cudaStream_t`` ints. This module adds what trtdsl's backends need on
top: the loading (one clear error where nccl4py or libnccl is missing), the dtype table from
NumPy / ml_dtypes / trtdsl names, reduce-op names, the PyCapsule named ``ncclComm_t`` that
TensorRT's ``IExecutionContext.set_communicator`` takes, and :class:`NcclError`.

Tests replace nccl4py with a recording stand-in through :func:`use_modules`.

>>> import numpy as np
>>> NCCL_DATA_TYPES["bfloat16"], nccl_dtype(np.float32), nccl_op("avg")
(9, 7, 4)
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

from ...errors import TrtDslError

# --- The enum values of nccl.h (NCCL 2.x), which nccl4py's NcclDataType / NcclRedOp mirror ---
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
NCCL_UNIQUE_ID_BYTES = 128
#: The PyCapsule name TensorRT's ``IExecutionContext.set_communicator`` expects.
CAPSULE_NAME = b"ncclComm_t"  # module global: PyCapsule keeps this pointer, not a copy
INSTALL_HINT = "pip install 'nccl4py[cu13]' (or 'trtdsl[gpu]'); it needs libnccl (nvidia-nccl-cu13)"


class NcclError(TrtDslError, RuntimeError):
    """An NCCL call failed; ``.function`` names it (``ncclAllReduce``, ...)."""

    def __init__(self, message: str, *, function: str = "", code: int | None = None) -> None:
        self.function = function
        self.code = code
        super().__init__(message)


class NcclUnavailableError(NcclError, ImportError):
    """nccl4py (or the NCCL library under it) cannot be imported here."""


# --- nccl4py, loaded once --------------------------------------------------------------------
class Modules(NamedTuple):
    """nccl4py's two layers: ``core`` (``nccl.core``) and ``bindings`` (``nccl.bindings.nccl``)."""

    core: Any
    bindings: Any


_LOCK = threading.Lock()
_MODULES: Modules | None = None


def use_modules(core: Any, bindings: Any) -> Modules | None:
    """Use these modules instead of nccl4py (tests); returns the previous pair (None: nccl4py)."""
    global _MODULES
    with _LOCK:
        old, _MODULES = _MODULES, None if core is None else Modules(core, bindings)
    return old


def load() -> Modules:
    """nccl4py's modules, imported on first use; NcclUnavailableError saying what to install."""
    global _MODULES
    found = _MODULES
    if found is not None:
        return found
    with _LOCK:
        if _MODULES is None:
            try:
                import nccl.bindings.nccl as bindings
                import nccl.core as core
            except Exception as e:  # ImportError, or OSError/RuntimeError from libnccl
                raise NcclUnavailableError(
                    f"NCCL for the GPU backends comes from nccl4py, which cannot be imported "
                    f"here ({type(e).__name__}: {e}); {INSTALL_HINT}"
                ) from e
            _MODULES = Modules(core, bindings)
        return _MODULES


def nccl_version() -> tuple[int, int, int]:
    """(major, minor, patch) of the loaded libnccl (``ncclGetVersion``)."""
    code = int(load().bindings.get_version())
    return code // 10000, code // 100 % 100, code % 100


def nccl4py_version() -> str:
    return str(getattr(load().core, "__version__", "?"))


def get_unique_id() -> bytes:
    """A new ``ncclUniqueId`` (128 bytes); call it on one rank and share it."""
    try:
        raw = bytes(load().core.get_unique_id())
    except NcclUnavailableError:
        raise
    except Exception as e:
        raise NcclError(f"ncclGetUniqueId failed: {e}", function="ncclGetUniqueId") from e
    if len(raw) != NCCL_UNIQUE_ID_BYTES:
        raise NcclError(f"ncclUniqueId of {len(raw)} bytes, expected {NCCL_UNIQUE_ID_BYTES}")
    return raw


def unique_id_from_bytes(raw: bytes) -> Any:
    """nccl4py's ``UniqueId`` from the 128 bytes of :func:`get_unique_id`."""
    raw = bytes(raw)
    if len(raw) != NCCL_UNIQUE_ID_BYTES:
        raise ValueError(f"an ncclUniqueId is {NCCL_UNIQUE_ID_BYTES} bytes, got {len(raw)}")
    return load().core.UniqueId.from_bytes(raw)


# --- dtypes and ops ----------------------------------------------------------------------------
_DTYPE_CACHE: dict[Any, int] = {}


def nccl_dtype(dtype: Any) -> int:
    """The ``ncclDataType_t`` code of a NumPy / ml_dtypes / trtdsl dtype or dtype name."""
    code = _DTYPE_CACHE.get(dtype) if isinstance(dtype, (np.dtype, type, str)) else None
    if code is not None:
        return code
    name = None
    numpy = getattr(dtype, "numpy", None)  # trtdsl DType
    try:
        dt = np.dtype(numpy if isinstance(numpy, np.dtype) else dtype)
        if dt.isnative or dt.itemsize == 1:
            name = dt.name
    except TypeError:
        pass
    if name not in NCCL_DATA_TYPES:
        raise ValueError(
            f"NCCL has no data type for {dtype!r}; supported: {', '.join(NCCL_DATA_TYPES)}"
        )
    code = NCCL_DATA_TYPES[name]
    if isinstance(dtype, (np.dtype, type, str)):
        _DTYPE_CACHE[dtype] = code
    return code


def nccl_op(op: str | int) -> int:
    """The ``ncclRedOp_t`` code of a reduce op name (sum, prod, max, min, avg)."""
    code = NCCL_REDUCE_OPS.get(op.lower()) if isinstance(op, str) else None
    if code is None:
        raise ValueError(
            f"unsupported NCCL reduce op {op!r}; supported: {', '.join(NCCL_REDUCE_OPS)}"
        )
    return code


def itemsize(dtype: Any) -> int:
    numpy = getattr(dtype, "numpy", None)
    return np.dtype(numpy if isinstance(numpy, np.dtype) else dtype).itemsize


def pointer(buf: Any) -> int:
    """A device pointer: an int, None (NULL), or an object with ``__cuda_array_interface__``
    or ``data.ptr`` (CuPy)."""
    if buf is None:
        return 0
    if isinstance(buf, (int, np.integer)):
        return int(buf)
    data = getattr(buf, "data", None)
    ptr = getattr(data, "ptr", None)
    if isinstance(ptr, int):
        return ptr
    cai = getattr(buf, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    raise TypeError(f"expected a device pointer or a device array, got {type(buf).__name__}")


def stream_handle(stream: Any) -> int:
    """A ``cudaStream_t`` as an int: an int, None (0), or an object with ``.ptr`` / ``.handle``."""
    if stream is None:
        return 0
    if isinstance(stream, (int, np.integer)):
        return int(stream)
    for attr in ("ptr", "handle"):
        v = getattr(stream, attr, None)
        if v is not None:
            return int(v)
    raise TypeError(f"expected a CUDA stream handle, got {type(stream).__name__}")


def count(n: Any, what: str = "count") -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"{what} must be a non-negative int, got {n!r}")
    return int(n)


@contextmanager
def group() -> Iterator[None]:
    """``ncclGroupStart`` ... ``ncclGroupEnd`` (nccl4py's ``group_start`` / ``group_end``)."""
    core = load().core
    core.group_start()
    try:
        yield
    finally:
        core.group_end()


# --- the PyCapsule for TensorRT ----------------------------------------------------------------
def capsule(ptr: int) -> Any:
    """A PyCapsule named ``ncclComm_t`` holding the communicator pointer ``ptr``, for
    ``IExecutionContext.set_communicator`` (which does not take an int)."""
    if not ptr:
        raise NcclError("no NCCL communicator to put in a capsule (null pointer)")
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(ptr, CAPSULE_NAME, None)


def capsule_pointer(cap: Any) -> int:
    """The pointer inside a ``ncclComm_t`` capsule (checks the name)."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return int(get(cap, CAPSULE_NAME) or 0)
