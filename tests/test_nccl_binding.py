"""CPU tests of the nccl4py adapter (trtdsl.backends.nccl) against a recording stand-in for
nccl4py (its ``nccl.core`` and ``nccl.bindings.nccl``); GPU: gpu/check_nccl.py."""

from __future__ import annotations

import ctypes
import types

import ml_dtypes
import numpy as np
import pytest

import trtdsl as td
from trtdsl import dtypes as tdt
from trtdsl.backends import nccl
from trtdsl.backends.nccl import adapter


# --- enum tables: the values nccl.h documents (nccl4py's NcclDataType / NcclRedOp) ---------
@pytest.mark.parametrize(
    "dtype, code",
    [
        (np.int8, 0),
        (np.uint8, 1),
        (np.int32, 2),
        (np.uint32, 3),
        (np.int64, 4),
        (np.uint64, 5),
        (np.float16, 6),
        (np.float32, 7),
        (np.float64, 8),
        (ml_dtypes.bfloat16, 9),
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


# --- a recording stand-in for nccl4py ----------------------------------------------------------
class FakeN4P:
    """``core`` and ``bindings`` modules that record every call."""

    def __init__(self, version: int = 22809, fail_uid: bool = False) -> None:
        self.calls: list[tuple] = []
        calls = self.calls
        core, b = types.ModuleType("nccl.core"), types.ModuleType("nccl.bindings.nccl")

        class UniqueId:
            def __init__(self, raw: bytes) -> None:
                self.raw = raw

            def __bytes__(self) -> bytes:
                return self.raw

            @staticmethod
            def from_bytes(raw: bytes) -> UniqueId:
                return UniqueId(bytes(raw))

        class Communicator:
            def __init__(self, nranks: int, rank: int, uid: UniqueId) -> None:
                self.nranks, self.rank_, self.uid, self.ptr = nranks, rank, uid, 0xC0FFEE + rank

            @classmethod
            def init(cls, nranks: int, rank: int, uid: UniqueId) -> Communicator:
                calls.append(("init", nranks, rank, bytes(uid)))
                return cls(nranks, rank, uid)

            def destroy(self) -> None:
                calls.append(("destroy", self.ptr))

            def abort(self) -> None:
                calls.append(("abort", self.ptr))

        def get_unique_id() -> UniqueId:
            if fail_uid:
                raise RuntimeError("no network interface")
            return UniqueId(bytes(range(128)))

        class Comm:
            def __init__(self, handle: int) -> None:
                self.handle = handle

        def rec(name):
            def fn(*args):
                calls.append((name, *[a.handle if isinstance(a, Comm) else a for a in args]))

            return fn

        core.UniqueId, core.Communicator, core.get_unique_id = UniqueId, Communicator, get_unique_id
        core.group_start, core.group_end = rec("group_start"), rec("group_end")
        b.Comm, b.get_version = Comm, lambda: version
        for name in (
            "all_reduce broadcast reduce all_gather reduce_scatter allto_all gather scatter "
            "send recv"
        ).split():
            setattr(b, name, rec(name))
        b.comm_cu_device = lambda comm: 3
        self.core, self.bindings = core, b


@pytest.fixture
def fake(monkeypatch):
    f = FakeN4P()
    old = nccl.use_modules(f.core, f.bindings)
    yield f
    adapter._MODULES = old


def _comm(size: int = 3, rank: int = 0) -> nccl.Communicator:
    return nccl.Communicator(size, bytes(range(128)), rank)


def test_init_passes_nranks_rank_uid(fake):
    c = _comm(4, 2)
    assert fake.calls == [("init", 4, 2, bytes(range(128)))]
    assert (c.rank, c.size, c.ptr, c.device) == (2, 4, 0xC0FFEE + 2, 3)
    c.close()
    c.close()
    assert fake.calls[-1] == ("destroy", 0xC0FFEE + 2) and c.closed
    with pytest.raises(nccl.NcclError, match="closed"):
        _ = c.ptr


def test_collectives_pass_arguments_in_c_order(fake):
    c = _comm(3, 1)
    h = c.ptr
    c.all_reduce(0x1000, 0x2000, 5, ml_dtypes.bfloat16, "avg", stream=77)
    c.broadcast(0x1000, 0x2000, 5, np.float32, root=2, stream=0)
    c.reduce(0x1000, None, 5, "float16", "max", root=0, stream=9)
    c.all_gather(0x1000, 0x2000, 4, np.int32, stream=1)
    c.reduce_scatter(0x1000, 0x2000, 4, np.float64, "prod", stream=1)
    c.all_to_all(0x1000, 0x2000, 4, np.int8, stream=1)
    c.gather(0x1000, 0x2000, 4, np.uint8, root=1, stream=1)
    c.scatter(0x1000, 0x2000, 4, np.int64, root=1, stream=1)
    assert fake.calls[1:] == [
        ("all_reduce", 0x1000, 0x2000, 5, 9, 4, h, 77),
        ("broadcast", 0x1000, 0x2000, 5, 7, 2, h, 0),
        ("reduce", 0x1000, 0, 5, 6, 2, 0, h, 9),
        ("all_gather", 0x1000, 0x2000, 4, 2, h, 1),
        ("reduce_scatter", 0x1000, 0x2000, 4, 8, 1, h, 1),
        ("allto_all", 0x1000, 0x2000, 4, 0, h, 1),
        ("gather", 0x1000, 0x2000, 4, 1, 1, h, 1),
        ("scatter", 0x1000, 0x2000, 4, 4, 1, h, 1),
    ]


def test_p2p_fallback_uses_grouped_send_recv_at_byte_offsets(fake):
    c = _comm(3, 1)
    c.all_to_all(0x1000, 0x9000, 4, np.float16, stream=0, native=False)
    names = [x[0] for x in fake.calls[1:]]
    assert names[0] == "group_start" and names[-1] == "group_end"
    sends = [x[1:5] for x in fake.calls if x[0] == "send"]
    recvs = [x[1:5] for x in fake.calls if x[0] == "recv"]
    assert sends == [(0x1000 + 8 * p, 4, 6, p) for p in range(3)]
    assert recvs == [(0x9000 + 8 * p, 4, 6, p) for p in range(3)]


def test_old_nccl_has_no_native_alltoall(monkeypatch):
    f = FakeN4P(version=22703)
    old = nccl.use_modules(f.core, f.bindings)
    try:
        c = _comm(2, 0)
        c.gather(0x1000, 0x2000, 2, np.float32, root=0)
        assert "gather" not in [x[0] for x in f.calls] and "send" in [x[0] for x in f.calls]
        with pytest.raises(nccl.NcclError, match="needs NCCL >= 2.28"):
            c.scatter(0x1000, 0x2000, 2, np.float32, native=True)
    finally:
        adapter._MODULES = old


def test_argument_errors(fake):
    c = _comm(2, 0)
    with pytest.raises(ValueError, match="root must be in"):
        c.broadcast(1, 2, 3, np.float32, root=2)
    with pytest.raises(ValueError, match="count must be a non-negative int"):
        c.all_reduce(1, 2, -1, np.float32)
    with pytest.raises(TypeError, match="device pointer"):
        c.all_reduce("x", 2, 1, np.float32)


def test_binding_errors_become_ncclerror_with_the_function(fake):
    def boom(*a):
        raise RuntimeError("ncclInvalidUsage")

    fake.bindings.all_reduce = boom
    c = _comm(2, 0)
    with pytest.raises(nccl.NcclError, match="ncclAllReduce failed: RuntimeError") as info:
        c.all_reduce(1, 2, 3, np.float32)
    assert info.value.function == "ncclAllReduce"


def test_capsule_holds_the_pointer_under_its_name(fake):
    c = _comm(2, 1)
    cap = c.capsule()
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    assert api.PyCapsule_GetName(cap) == b"ncclComm_t"
    assert nccl.capsule_pointer(cap) == c.ptr


def test_for_partition_one_exchange_per_partition(fake):
    def per_rank(world):
        a = nccl.Communicator.for_partition(world)
        b = nccl.Communicator.for_partition(world, [(0, 2), (1, 3)])
        return (a.rank, a.size), (b.rank, b.size)

    got = td.InProcessWorld(4).run(per_rank)
    assert got == [((0, 4), (0, 2)), ((1, 4), (0, 2)), ((2, 4), (1, 2)), ((3, 4), (1, 2))]


def test_a_failing_leader_fails_every_rank_instead_of_blocking(monkeypatch):
    f = FakeN4P(fail_uid=True)
    old = nccl.use_modules(f.core, f.bindings)
    try:

        def per_rank(world):
            with pytest.raises(nccl.NcclError, match="rank 0: NcclError: ncclGetUniqueId"):
                nccl.Communicator.for_partition(world)
            return True

        assert td.InProcessWorld(3).run(per_rank) == [True] * 3
        assert not [c for c in f.calls if c[0] == "init"]
    finally:
        adapter._MODULES = old


def test_missing_nccl4py_is_a_clear_error(monkeypatch):
    import sys

    old = nccl.use_modules(None, None)
    monkeypatch.setitem(sys.modules, "nccl", None)
    monkeypatch.setitem(sys.modules, "nccl.core", None)
    monkeypatch.setitem(sys.modules, "nccl.bindings", None)
    monkeypatch.setitem(sys.modules, "nccl.bindings.nccl", None)
    try:
        with pytest.raises(nccl.NcclUnavailableError, match="nccl4py.*pip install"):
            nccl.load()
    finally:
        adapter._MODULES = old


# --- prepared collectives (the sessions' per-call path) -----------------------------------------
PREPARED_CASES = [  # (op, dtype, reduce, root, count) -> the C call nccl.h documents
    ("all_reduce", ml_dtypes.bfloat16, "avg", None, 5, ("all_reduce", 0x1000, 0x2000, 5, 9, 4)),
    ("broadcast", np.float32, None, 2, 5, ("broadcast", 0x1000, 0x2000, 5, 7, 2)),
    ("reduce", np.float16, "max", 0, 5, ("reduce", 0x1000, 0x2000, 5, 6, 2, 0)),
    ("all_gather", np.int32, None, None, 4, ("all_gather", 0x1000, 0x2000, 4, 2)),
    ("reduce_scatter", np.float64, "prod", None, 4, ("reduce_scatter", 0x1000, 0x2000, 4, 8, 1)),
    ("all_to_all", np.int8, None, None, 4, ("allto_all", 0x1000, 0x2000, 4, 0)),
    ("gather", np.uint8, None, 1, 4, ("gather", 0x1000, 0x2000, 4, 1, 1)),
    ("scatter", np.int64, None, 1, 4, ("scatter", 0x1000, 0x2000, 4, 4, 1)),
]


@pytest.mark.parametrize("op, dtype, red, root, n, want", PREPARED_CASES)
def test_prepared_collective_makes_the_same_c_call(fake, op, dtype, red, root, n, want):
    c = _comm(3, 1)
    call = c.prepare(op, dtype, reduce=red, root=root)
    call(0x1000, 0x2000, n, 77)
    call(0x1000, 0x2000, n, 78)  # reusable: one C call per Python call
    assert fake.calls[1:] == [(*want, c.ptr, 77), (*want, c.ptr, 78)]


def test_prepared_collective_on_old_nccl_uses_grouped_send_recv(monkeypatch):
    f = FakeN4P(version=22703)
    old = nccl.use_modules(f.core, f.bindings)
    try:
        c = _comm(2, 0)
        c.prepare("gather", np.float32, root=0)(0x1000, 0x2000, 2, 5)
        names = [x[0] for x in f.calls[1:]]
        assert "gather" not in names and names.count("recv") == 2 and names[0] == "group_start"
    finally:
        adapter._MODULES = old


def test_prepared_collective_argument_errors(fake):
    c = _comm(3, 1)
    with pytest.raises(ValueError, match="unknown collective"):
        c.prepare("all_sum", np.float32)
    with pytest.raises(ValueError, match=r"root must be in \[0, 3\)"):
        c.prepare("broadcast", np.float32, root=3)
    with pytest.raises(ValueError, match="needs a root"):
        c.prepare("gather", np.float32)
    with pytest.raises(ValueError, match="needs a reduce op"):
        c.prepare("all_reduce", np.float32)
    with pytest.raises(ValueError, match="no data type"):
        c.prepare("all_gather", np.complex64)
    c.close()
    with pytest.raises(nccl.NcclError, match="closed"):
        c.prepare("all_gather", np.float32)


def test_prepared_collective_wraps_binding_errors(fake):
    def boom(*a):
        raise RuntimeError("unhandled cuda error")

    fake.bindings.all_gather = boom
    call = _comm(3, 1).prepare("all_gather", np.float32)
    with pytest.raises(nccl.NcclError, match="ncclAllGather failed: RuntimeError") as e:
        call(1, 2, 3, 0)
    assert e.value.function == "ncclAllGather"


def test_a_prepared_call_on_a_closed_or_aborted_communicator_raises(fake):
    for end in ("close", "abort"):
        c = _comm(3, 1)
        call = c.prepare("all_reduce", np.float32, reduce="sum")
        getattr(c, end)()
        n = len(fake.calls)
        with pytest.raises(nccl.NcclError, match="ncclAllReduce: the NCCL communicator is closed"):
            call(0x1000, 0x2000, 4, 0)
        assert len(fake.calls) == n  # NCCL was not called with the freed handle
