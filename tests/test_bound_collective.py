"""CPU test of the cupy backend's per-layer bound NCCL call (``BoundCollective``) with NumPy in
place of CuPy and a recording communicator: counts, output shapes, the stream, and poisoned
off-root outputs (one buffer per shape when reused). GPU: gpu/check_sessions.py."""

from __future__ import annotations

import types

import numpy as np
import pytest

from trtdsl.backends.cupy.world import BoundCollective, run_collective
from trtdsl.ops.collective import CollectiveSpec


class Arr(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr``."""

    @property
    def data(self):  # type: ignore[override]
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _fake_cupy(stream_ptr: int = 4242) -> types.SimpleNamespace:
    stream = types.SimpleNamespace(ptr=stream_ptr)
    return types.SimpleNamespace(
        dtype=np.dtype,
        empty=lambda shape, dtype: np.empty(shape, dtype).view(Arr),
        full=lambda shape, v, dtype: np.full(shape, v, dtype).view(Arr),
        cuda=types.SimpleNamespace(get_current_stream=lambda: stream),
    )


class RecordingComm:
    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size, self.calls, self.prepared = rank, size, [], []

    def prepare(self, op, dtype, reduce=None, root=None):
        self.prepared.append((op, np.dtype(dtype), reduce, root))
        return lambda s, r, n, st: self.calls.append((s, r, n, st))


def _spec(op: str, n: int = 4, root: int | None = None, reduce: str | None = None):
    group = tuple(range(n))
    return CollectiveSpec(op, reduce, root, group, (group,))


@pytest.mark.parametrize(
    "op, reduce, root, out_rows, count_div",
    [
        ("all_reduce", "sum", None, 8, 1),
        ("broadcast", None, 0, 8, 1),
        ("all_gather", None, None, 32, 1),
        ("reduce_scatter", "max", None, 2, 4),
        ("all_to_all", None, None, 8, 4),
        ("scatter", None, 2, 2, 4),
        ("reduce", "sum", 1, 8, 1),  # rank 1 is the root: a fresh buffer, written by NCCL
        ("gather", None, 1, 32, 1),
    ],
)
def test_counts_shapes_and_stream(op, reduce, root, out_rows, count_div):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype(np.float32).view(Arr)
    comm = RecordingComm(rank=1, size=4)
    bound = BoundCollective(_fake_cupy(), comm, _spec(op, 4, root, reduce), np.float32)
    y1, y2 = bound(x), bound(x)
    assert comm.prepared == [(op, np.dtype(np.float32), reduce, root)]
    assert y1.shape == (out_rows, 3) and y1.dtype == np.float32
    assert y1 is not y2  # a defined output is the caller's own new array each call
    assert comm.calls == [
        (x.ctypes.data, y.ctypes.data, x.size // count_div, 4242) for y in (y1, y2)
    ]


@pytest.mark.parametrize("op", ["reduce", "gather"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int32])
def test_off_root_outputs_are_poisoned_and_reused_when_asked(op, dtype):
    x = np.ones((4, 2), dtype).view(Arr)
    comm = RecordingComm(rank=0, size=2)
    spec = _spec(op, 2, root=1, reduce="sum" if op == "reduce" else None)
    reused = BoundCollective(_fake_cupy(), comm, spec, dtype, reuse_undefined=True)
    a, b = reused(x), reused(x)
    assert a is b and len(comm.calls) == 2  # NCCL still runs: the root needs this rank's data
    rows = 4 if op == "reduce" else 8
    c = reused(np.ones((2, 2), dtype).view(Arr))  # another shape: its own buffer
    assert c.shape == ((2 if op == "reduce" else 4), 2) and c is not a
    fresh = BoundCollective(_fake_cupy(), comm, spec, dtype)
    d, e = fresh(x), fresh(x)
    assert d is not e
    for y in (a, c, d, e):
        if np.dtype(dtype).kind == "f":
            assert np.isnan(y.astype(np.float64)).all()
        else:
            assert (y == np.iinfo(dtype).min).all()
    assert a.shape == (rows, 2)


def test_run_collective_is_one_bound_call():
    x = np.arange(8, dtype=np.float32).view(Arr)
    comm = RecordingComm(rank=0, size=2)
    y = run_collective(_fake_cupy(7), comm, _spec("all_gather", 2), x)
    assert y.shape == (16,) and comm.calls == [(x.ctypes.data, y.ctypes.data, 8, 7)]
