"""CPU-side tests of the ctypes NCCL binding (trtdsl.backends.nccl); GPU: gpu/check_nccl.py."""

from __future__ import annotations

import ctypes
import pickle
import sys

import ml_dtypes
import numpy as np
import pytest

from trtdsl import dtypes as tdt
from trtdsl.backends import nccl
from trtdsl.backends.nccl import communicator, library


def _lib_or_skip() -> ctypes.CDLL:
    try:
        return nccl.load_nccl()
    except nccl.NcclUnavailableError as e:
        pytest.skip(f"libnccl.so.2 not installed here (pip install nvidia-nccl-cu13): {e}")


# --- enum tables: the values nccl.h documents ---------------------------------------------
@pytest.mark.parametrize(
    "dtype, code",
    [
        (np.int8, 0),  # ncclInt8
        (np.uint8, 1),  # ncclUint8
        (np.int32, 2),  # ncclInt32
        (np.uint32, 3),  # ncclUint32
        (np.int64, 4),  # ncclInt64
        (np.uint64, 5),  # ncclUint64
        (np.float16, 6),  # ncclFloat16
        (np.float32, 7),  # ncclFloat32
        (np.float64, 8),  # ncclFloat64
        (ml_dtypes.bfloat16, 9),  # ncclBfloat16
    ],
)
def test_dtype_codes_match_nccl_h(dtype, code):
    assert nccl.nccl_dtype(dtype) == code
    assert nccl.nccl_dtype(np.dtype(dtype)) == code
    assert nccl.nccl_dtype(np.dtype(dtype).name) == code


def test_trtdsl_dtypes_map_to_nccl():
    assert nccl.nccl_dtype(tdt.bfloat16) == 9
    assert nccl.nccl_dtype(tdt.float16) == 6
    assert nccl.nccl_dtype(tdt.float32) == 7


@pytest.mark.parametrize(
    "op, code", [("sum", 0), ("prod", 1), ("max", 2), ("min", 3), ("avg", 4), ("AVG", 4)]
)
def test_reduce_op_codes_match_nccl_h(op, code):
    assert nccl.nccl_op(op) == code


@pytest.mark.parametrize(
    "bad", [np.bool_, tdt.bool_, np.complex64, ">f4", ml_dtypes.float8_e4m3fn, object, "bf16"]
)
def test_unsupported_dtype_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="NCCL has no data type.*supported: int8, .*bfloat16"):
        nccl.nccl_dtype(bad)


@pytest.mark.parametrize("bad", ["mean", "bitand", "", 0, None])
def test_unsupported_op_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="unsupported NCCL reduce op.*sum, prod, max, min, avg"):
        nccl.nccl_op(bad)


@pytest.mark.parametrize(
    "dtype, size", [(ml_dtypes.bfloat16, 2), (np.float16, 2), (np.int8, 1), (np.uint64, 8)]
)
def test_itemsize_used_for_send_recv_offsets(dtype, size):
    assert library._itemsize(dtype) == size == np.dtype(dtype).itemsize


# --- UniqueId ------------------------------------------------------------------------------
def test_unique_id_is_128_bytes_and_pickles_losslessly():
    raw = bytes(np.random.default_rng(0).integers(0, 256, 128, dtype=np.uint8))
    raw = b"\x00" + raw[1:64] + b"\x00\x00" + raw[66:]  # NULs must survive (no c_char trap)
    uid = nccl.UniqueId.from_bytes(raw)
    assert ctypes.sizeof(nccl.UniqueId) == 128
    back = pickle.loads(pickle.dumps(uid))
    assert isinstance(back, nccl.UniqueId)
    assert back.to_bytes() == raw
    assert back == uid
    assert back != nccl.UniqueId.from_bytes(bytes(128))


@pytest.mark.parametrize("n", [0, 127, 129])
def test_unique_id_rejects_wrong_length(n):
    with pytest.raises(ValueError, match="128 bytes"):
        nccl.UniqueId.from_bytes(bytes(n))


# --- loading -------------------------------------------------------------------------------
def test_load_nccl_loads_or_says_what_it_tried():
    try:
        lib = nccl.load_nccl()
    except nccl.NcclUnavailableError as e:
        msg = str(e)
        assert "libnccl.so.2" in msg and "Tried:" in msg and "cuda.pathfinder" in msg
        assert isinstance(e, ImportError)
    else:
        assert hasattr(lib, "ncclAllReduce")
        assert lib.ncclAllReduce.restype is ctypes.c_int
        assert len(lib.ncclAllReduce.argtypes) == 7


def test_load_failure_names_both_attempts(monkeypatch):
    def no_cdll(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setitem(sys.modules, "cuda.pathfinder", None)  # import fails
    monkeypatch.setattr(ctypes, "CDLL", no_cdll)
    with pytest.raises(nccl.NcclUnavailableError) as info:
        nccl.load_nccl.__wrapped__()
    msg = str(info.value)
    assert "cuda.pathfinder.load_nvidia_dynamic_lib('nccl'): not importable" in msg
    assert "ctypes.CDLL('libnccl.so.2'): libnccl.so.2: cannot open" in msg


def test_real_library_version_and_unique_id():
    lib = _lib_or_skip()
    major, minor, patch = nccl.nccl_version()
    assert major == 2 and minor >= 0 and patch >= 0
    a, b = nccl.get_unique_id(), nccl.get_unique_id()
    assert len(a.to_bytes()) == 128 and a.to_bytes() != bytes(128) and a != b
    if (major, minor) >= (2, 28):
        assert all(hasattr(lib, f) for f in ("ncclAlltoAll", "ncclGather", "ncclScatter"))


def test_real_library_error_text():
    lib = _lib_or_skip()
    with pytest.raises(nccl.NcclError, match=r"ncclFoo failed with ncclInvalidArgument \(4\)"):
        library._check(lib, "ncclFoo", 4)


# --- call plumbing, against a recording stand-in for the library ---------------------------
class FakeLib:
    """Records calls; exports only the names given (hasattr == dlsym)."""

    def __init__(self, exports: set[str]) -> None:
        self.exports = exports
        self.calls: list[tuple] = []
        self.result = 0

    def __getattr__(self, name: str):
        if name not in self.exports:
            raise AttributeError(name)

        def fn(*args):
            self.calls.append((name, *args))
            if name == "ncclGetErrorString":
                return b"invalid usage"
            if name == "ncclGetLastError":
                return b"peer 1 is gone"
            return self.result

        return fn


BASE = {n for n, (_, _, required) in library._SIGNATURES.items() if required}
COMM = 0xC0FFEE


def _comm(monkeypatch, exports=BASE, rank=0, size=3) -> tuple[nccl.Communicator, FakeLib]:
    lib = FakeLib(set(exports) | {"ncclCommFinalize", "ncclGetLastError"})
    for module in (library, communicator):  # group() loads it from library
        monkeypatch.setattr(module, "load_nccl", lambda: lib)
    comm = object.__new__(nccl.Communicator)
    comm._lib, comm._comm, comm._rank, comm._size = lib, COMM, rank, size
    return comm, lib


def test_all_reduce_passes_arguments_in_c_order(monkeypatch):
    comm, lib = _comm(monkeypatch)
    comm.all_reduce(0x1000, 0x2000, 5, ml_dtypes.bfloat16, "avg", stream=77)
    assert lib.calls == [("ncclAllReduce", 0x1000, 0x2000, 5, 9, 4, COMM, 77)]


def test_nccl_error_carries_strings_and_function(monkeypatch):
    comm, lib = _comm(monkeypatch)
    lib.result = 5
    with pytest.raises(nccl.NcclError) as info:
        comm.broadcast(0x1000, 0x1000, 4, np.float32, root=2)
    assert info.value.function == "ncclBroadcast" and info.value.code == 5
    assert str(info.value) == (
        "ncclBroadcast failed with ncclInvalidUsage (5): invalid usage; last error: peer 1 is gone"
    )


def test_fallback_all_to_all_uses_grouped_send_recv_at_byte_offsets(monkeypatch):
    comm, lib = _comm(monkeypatch, rank=1, size=3)
    comm.all_to_all(0x1000, 0x9000, 4, np.float16, stream=0)  # 4 halves = 8 bytes per peer
    names = [c[0] for c in lib.calls]
    assert names[0] == "ncclGroupStart" and names[-1] == "ncclGroupEnd"
    sends = [c[1:5] for c in lib.calls if c[0] == "ncclSend"]
    recvs = [c[1:5] for c in lib.calls if c[0] == "ncclRecv"]
    assert sends == [(0x1000 + 8 * p, 4, 6, p) for p in range(3)]
    assert recvs == [(0x9000 + 8 * p, 4, 6, p) for p in range(3)]


def test_native_all_to_all_used_when_exported(monkeypatch):
    comm, lib = _comm(monkeypatch, exports=BASE | {"ncclAlltoAll"})
    comm.all_to_all(0x1000, 0x9000, 4, np.float16)
    assert lib.calls == [("ncclAlltoAll", 0x1000, 0x9000, 4, 6, COMM, None)]
    monkeypatch.setattr(communicator, "nccl_version", lambda: (2, 27, 0))
    with pytest.raises(nccl.NcclError, match=r"ncclGather is not exported by this NCCL \(\(2, 27"):
        comm.gather(0x1000, 0x9000, 4, np.float16, native=True)


def test_fallback_gather_and_scatter_only_root_talks_to_everyone(monkeypatch):
    root, _ = _comm(monkeypatch, rank=2, size=3)
    root.gather(0x1000, 0x9000, 2, np.int64, root=2)
    peers = [c[4] for c in root._lib.calls if c[0] == "ncclRecv"]
    assert peers == [0, 1, 2]
    assert [c[1] for c in root._lib.calls if c[0] == "ncclRecv"] == [0x9000 + 16 * p for p in peers]
    leaf, _ = _comm(monkeypatch, rank=0, size=3)
    leaf.scatter(0x1000, 0x9000, 2, np.int64, root=2)
    assert [c[0] for c in leaf._lib.calls] == ["ncclGroupStart", "ncclRecv", "ncclGroupEnd"]
    assert leaf._lib.calls[1][1:5] == (0x9000, 2, 4, 2)


def test_bad_root_and_negative_count_fail_before_calling_nccl(monkeypatch):
    comm, lib = _comm(monkeypatch, size=2)
    with pytest.raises(ValueError, match=r"root must be in \[0, 2\), got 2"):
        comm.reduce(0x1000, None, 8, np.float32, "sum", root=2)
    with pytest.raises(ValueError, match="count must be >= 0"):
        comm.all_reduce(0x1000, 0x1000, -1, np.float32)
    with pytest.raises(ValueError, match="no data type"):
        comm.all_reduce(0x1000, 0x1000, 1, np.bool_)
    assert lib.calls == []


def test_cuda_array_interface_and_stream_objects_are_accepted(monkeypatch):
    class Arr:
        __cuda_array_interface__ = {"data": (0xABC000, False)}

    class Stream:
        ptr = 0x5150

    comm, lib = _comm(monkeypatch)
    comm.reduce(Arr(), None, 3, np.int32, "max", root=0, stream=Stream())
    assert lib.calls == [("ncclReduce", 0xABC000, None, 3, 2, 2, 0, COMM, 0x5150)]
    with pytest.raises(TypeError, match="device pointer"):
        comm.all_reduce(np.zeros(3), 0, 3, np.float64)


def test_capsule_is_named_ncclComm_t_and_holds_the_pointer(monkeypatch):
    comm, _ = _comm(monkeypatch)
    cap = comm.capsule()
    api = ctypes.pythonapi
    api.PyCapsule_IsValid.restype = ctypes.c_int
    api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    assert type(cap).__name__ == "PyCapsule"
    assert api.PyCapsule_IsValid(cap, b"ncclComm_t") == 1
    assert api.PyCapsule_IsValid(cap, b"other") == 0
    assert api.PyCapsule_GetPointer(cap, b"ncclComm_t") == COMM


def test_close_finalizes_then_destroys_once(monkeypatch):
    comm, lib = _comm(monkeypatch)
    with comm:
        pass
    comm.close()
    assert lib.calls == [("ncclCommFinalize", COMM), ("ncclCommDestroy", COMM)]
    assert comm.closed
    with pytest.raises(nccl.NcclError, match="closed"):
        comm.ptr  # noqa: B018
    with pytest.raises(nccl.NcclError, match="closed"):
        comm.all_reduce(1, 1, 1, np.float32)


def test_group_ends_even_when_the_body_raises(monkeypatch):
    _, lib = _comm(monkeypatch)
    with pytest.raises(KeyError), nccl.group():
        raise KeyError("x")
    assert [c[0] for c in lib.calls] == ["ncclGroupStart", "ncclGroupEnd"]


def test_communicator_rejects_bad_rank_before_loading():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        nccl.Communicator(2, bytes(128), 2)


# --- the NumPy reference of gpu/check_nccl.py, on hand-worked examples ----------------------
@pytest.fixture(scope="module")
def check_script():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "gpu" / "check_nccl.py"
    spec = importlib.util.spec_from_file_location("check_nccl", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_nccl"] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("check_nccl", None)


def test_reference_block_layouts_for_three_ranks(check_script):
    # rank r sends [10r, 10r+1, ..., 10r+5]: 3 blocks of 2
    xs = [np.arange(6, dtype=np.int32) + 10 * r for r in range(3)]
    s = check_script.spec_for
    np.testing.assert_array_equal(s("all_to_all", xs, 2, 1, -1, None, "int32").expected,
                                  [2, 3, 12, 13, 22, 23])  # fmt: skip
    np.testing.assert_array_equal(s("scatter", xs, 2, 2, 1, None, "int32").expected, [14, 15])
    np.testing.assert_array_equal(s("reduce_scatter", xs, 2, 0, -1, "sum", "int32").expected,
                                  [30, 33])  # fmt: skip
    assert s("gather", xs, 6, 0, 1, None, "int32").expected is None  # off-root
    assert s("gather", xs, 6, 1, 1, None, "int32").expected.tolist() == list(np.concatenate(xs))
    assert s("reduce", xs, 6, 0, 2, "max", "int32").expected is None


def test_reference_int_avg_truncates_and_floats_compare_with_rounding(check_script):
    xs = [np.array([-3, 3, 7], np.int32), np.array([0, 0, 0], np.int32)]
    assert check_script.reduce_ref(xs, "avg", "int32").tolist() == [-1, 1, 3]
    want = np.array([1.0, 2.0, 3.0])
    got = want.astype(ml_dtypes.bfloat16)
    assert check_script.compare(got, want, "bfloat16", "sum", 2) == ""
    got[1] = np.nan  # a poisoned element that was never written
    assert "1 never written" in check_script.compare(got, want, "bfloat16", "sum", 2)
