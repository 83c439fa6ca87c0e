"""The GPU parts of the ring (trtdsl/backends/cupy/ring.py) on the CPU, with stand-ins: the
stream/event wiring, the NCCL group of one send and one receive, and which block attention and
merge run (Triton kernels for fp16/bf16 and their head dims, the float32 array-op fallback
otherwise). The numbers come from tests/test_ring_exec.py; this checks the calls.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import trtdsl.kernels.attention as kernels

from trtdsl.backends.cupy import device, ring
from trtdsl.backends.ring_exec import EVENTS, RingFusion
from trtdsl.errors import ExecutionError


class FakeStream:
    def __init__(self, ptr: int, log: list) -> None:
        self.ptr, self.log = ptr, log

    def record(self, event):
        self.log.append(("record", self.ptr, event.name))
        return event

    def wait_event(self, event):
        self.log.append(("wait", self.ptr, event.name))

    def is_capturing(self) -> bool:
        return False


class FakeCuda:
    def __init__(self, log: list) -> None:
        self.log, self.made = log, 0
        self.current = FakeStream(7, log)

    def Stream(self, non_blocking=False):  # noqa: N802 - CuPy's name
        assert non_blocking, "the comm stream must not sync with the legacy default stream"
        self.made += 1
        return FakeStream(100 + self.made, self.log)

    def Event(self, block=False, disable_timing=False):  # noqa: N802 - CuPy's name
        assert disable_timing and not block
        ev = type("Ev", (), {})()
        ev.name = None
        return ev

    def get_current_stream(self):
        return self.current


class FakeCupy:
    float32 = np.float32

    def __init__(self) -> None:
        self.log: list = []
        self.cuda = FakeCuda(self.log)


def test_streams_record_and_wait_on_the_right_stream():
    cp = FakeCupy()
    streams = ring.CupyStreams(cp, EVENTS)
    for name, ev in streams.events.items():
        ev.name = name
    streams._switch.name = "switch"
    assert streams.comm.ptr == 101 and cp.cuda.made == 1
    streams.record("compute", "start")
    streams.wait("comm", "start")
    cp.cuda.current = FakeStream(9, cp.log)  # the compute stream is whatever is current now
    streams.record("compute", "free0")
    streams.record("comm", "recv1")
    streams.wait("compute", "recv1")
    assert cp.log == [
        ("record", 7, "start"),
        ("wait", 101, "start"),
        ("record", 7, "switch"),  # a new compute stream first waits for the old one's work
        ("wait", 9, "switch"),
        ("record", 9, "free0"),
        ("record", 101, "recv1"),
        ("wait", 9, "recv1"),
    ]


class FakeComm:
    def __init__(self) -> None:
        self.calls: list = []

    @contextlib.contextmanager
    def group(self):
        self.calls.append("group_start")
        yield
        self.calls.append("group_end")

    def send(self, buf, count, dtype, peer, stream):
        self.calls.append(("send", id(buf), count, dtype, peer, stream))

    def recv(self, buf, count, dtype, peer, stream):
        self.calls.append(("recv", id(buf), count, dtype, peer, stream))


def test_transport_is_one_group_of_send_and_recv_on_the_comm_stream():
    comm, stream = FakeComm(), FakeStream(55, [])
    a, b = np.zeros((4, 3, 2), "float16"), np.zeros((4, 3, 2), "float16")
    ring.NcclTransport(comm, stream).sendrecv(a, b, to=2, source=0)
    f16 = np.dtype("float16")
    assert comm.calls == [
        "group_start",
        ("send", id(a), 24, f16, 2, 55),
        ("recv", id(b), 24, f16, 0, 55),
        "group_end",
    ]


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []

    def flash(q, k, v, **kw):
        calls.append(("flash", str(q.dtype), q.shape[-1], kw))
        return np.zeros(q.shape, q.dtype), np.zeros(q.shape[:-1], np.float32)

    def merge(o1, l1, o2, l2, inplace):
        calls.append(("merge", str(o1.dtype), str(o2.dtype), inplace))
        return o1, l1

    monkeypatch.setattr(kernels, "flash_attention", flash)
    monkeypatch.setattr(kernels, "merge_attention", merge)
    return calls


@pytest.mark.parametrize(
    "dtype,d,use_kernels,scale,kernel",
    [
        ("float16", 64, True, 0.125, True),
        ("bfloat16", 128, True, 0.125, True),
        ("float32", 64, True, 0.125, False),  # the kernel takes 16-bit floats only
        ("float16", 80, True, 0.125, False),  # not a kernel head dim
        ("float16", 64, False, 0.125, False),  # ctx.use_kernels = False
        ("float16", 64, True, -1.0, False),  # the kernel wants a positive scale
    ],
)
def test_block_ops_use_the_kernels_where_they_apply(kernel_calls, dtype, d, use_kernels, scale,
                                                    kernel):  # fmt: skip
    import trtdsl as td

    npdt = td.as_dtype(dtype).numpy
    ops = ring.KernelBlockOps(np, np.matmul, use_kernels)
    q = np.random.default_rng(0).standard_normal((2, 3, d)).astype(npdt)
    o, lse = ops.attend(q, q, q, scale=scale, causal=True, q_offset=5, k_offset=4)
    assert o.shape == q.shape and lse.shape == (2, 3) and lse.dtype == np.float32
    if kernel:
        assert kernel_calls == [
            (
                "flash",
                dtype,
                d,
                dict(scale=scale, causal=True, q_offset=5, k_offset=4, return_lse=True),
            )  # fmt: skip
        ]
    else:
        assert kernel_calls == []
        assert o.dtype == np.float32 and np.isfinite(o).all()  # the float32 reference ran
    acc_o, acc_lse = np.zeros((2, 3, d), np.float32), np.zeros((2, 3), np.float32)
    ops.merge(acc_o, acc_lse, o, lse)
    if use_kernels and d in (32, 64, 128, 256):  # a 16-bit o goes in as it is (no cast)
        assert kernel_calls[-1] == ("merge", "float32", str(o.dtype), True)
    else:
        assert not any(c[0] == "merge" for c in kernel_calls)


@pytest.mark.parametrize(
    "dtype,d,use_kernels,scale,engine,cudnn_runs,into",
    [
        ("float16", 64, True, 0.125, "triton", True, True),
        ("bfloat16", 128, True, 0.125, "", True, True),  # the default engine: Triton
        ("bfloat16", 128, True, 0.125, "cudnn", False, True),  # cuDNN cannot: Triton runs
        ("bfloat16", 128, True, 0.125, "cudnn", True, False),  # cuDNN runs: then a merge
        ("float32", 64, True, 0.125, "triton", True, False),
        ("float16", 80, True, 0.125, "triton", True, False),
        ("float16", 64, False, 0.125, "triton", True, False),
        ("float16", 64, True, -1.0, "triton", True, False),
    ],
)
def test_attend_into_accumulates_in_the_kernel_where_triton_runs(
    kernel_calls, monkeypatch, dtype, d, use_kernels, scale, engine, cudnn_runs, into
):
    """The kernel's own accumulation (``flash_attention_into``) exactly where ``attend`` would
    run the Triton kernel; else ``attend`` (cuDNN's or array ops) and ``merge``."""
    import trtdsl as td
    from trtdsl.backends.cupy import attention_engine, cudnn_attention

    def accumulate(q, k, v, o_acc, lse_acc, **kw):
        kernel_calls.append(("into", str(q.dtype), id(o_acc), id(lse_acc), kw))

    def cudnn(q, k, v, **kw):
        kernel_calls.append(("cudnn", str(q.dtype)))
        return np.zeros(q.shape, q.dtype), np.zeros(q.shape[:-1], np.float32)

    monkeypatch.setattr(kernels, "flash_attention_into", accumulate)
    monkeypatch.setenv(attention_engine.ENGINE_ENV, engine)
    monkeypatch.setattr(cudnn_attention, "supported", lambda *a, **k: None if cudnn_runs else "no")
    monkeypatch.setattr(cudnn_attention, "attention", cudnn)
    ops = ring.KernelBlockOps(np, np.matmul, use_kernels)
    q = np.random.default_rng(0).standard_normal((2, 3, d)).astype(td.as_dtype(dtype).numpy)
    acc_o, acc_lse = np.zeros((2, 3, d), np.float32), np.zeros((2, 3), np.float32)
    for first in (True, False):
        kernel_calls.clear()
        ops.attend_into(acc_o, acc_lse, q, q, q, scale=scale, causal=True, q_offset=5,
                        k_offset=4, first=first)  # fmt: skip
        kw = dict(first=first, scale=scale, causal=True, q_offset=5, k_offset=4)
        if into:
            assert kernel_calls == [("into", dtype, id(acc_o), id(acc_lse), kw)]
            continue
        assert not any(c[0] == "into" for c in kernel_calls)
        kernel_ran = use_kernels and dtype != "float32" and d in (64, 128) and scale > 0
        assert any(c[0] == "cudnn" for c in kernel_calls) == kernel_ran  # else array ops
        merged = any(c[0] == "merge" for c in kernel_calls)
        assert merged == (not first and use_kernels and d in (64, 128))  # else array-op merge
        assert np.isfinite(acc_o).all() and np.isfinite(acc_lse).all()


def test_device_refuses_a_world_without_nccl(monkeypatch):
    cp = FakeCupy()
    monkeypatch.setattr(device, "cupy_module", lambda: cp)
    dev = ring.CupyDevice()
    dev.streams(EVENTS)
    with pytest.raises(ExecutionError, match="must be an NcclWorld, got StaticWorld"):
        import trtdsl as td

        dev.transport(td.StaticWorld(2, 0), None)

    class World:
        def communicator(self, spec):
            return ("comm of", spec)

    t = dev.transport(World(), "spec")
    assert t.comm == ("comm of", "spec") and t.stream is dev._streams.comm
    assert dev.array_module(None) is cp
    ctx = type("Ctx", (), {"matmul": staticmethod(np.matmul), "use_kernels": False})()
    assert dev.block_ops(ctx).use_kernels is False
    fusions = ring.cupy_fusions()
    assert list(fusions) == ["ring_attention"] and isinstance(fusions["ring_attention"], RingFusion)
