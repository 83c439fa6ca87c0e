"""CPU test of the NCCL watchdog inside cupy sessions: ``CupySession`` runs on a stand-in for
CuPy (NumPy arrays, streams and events whose completion the test controls) and an NCCL world
whose all_reduce stops completing once the peer "stalls". The session must raise WatchdogError
naming the layer and file:line within the timeout (never hang), abort the communicators exactly
once, refuse every later run, and leave no thread behind. GPU: the ``stall`` case of
gpu/run_faults.sh."""

from __future__ import annotations

import ctypes
import threading
import time
import types

import numpy as np
import pytest

import trtdsl as td
from trtdsl.backends.cupy import device, watchdog
from trtdsl.backends.cupy.watchdog import WatchdogError, WatchdogOptionError
from trtdsl.backends.interpreter import RunContext
from trtdsl.backends.session_cupy import CupySession
from trtdsl.errors import ExecutionError
from trtdsl.worlds import World


class Arr(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr``."""

    @property
    def data(self):  # type: ignore[override]
        return types.SimpleNamespace(ptr=self.ctypes.data)


class Gpu:
    """The device: work enqueued while a peer stalls never completes, until ncclCommAbort."""

    def __init__(self) -> None:
        self.hung = False
        self.blocking_reads = 0

    def blocking_read(self) -> None:  # what cudaMemcpy / cudaStreamSynchronize would do
        assert not self.hung, "the host blocked on a GPU that never finishes (a hang)"
        self.blocking_reads += 1


class FakeEvent:
    def __init__(self, gpu: Gpu) -> None:
        self.gpu, self.recorded = gpu, False

    def record(self, stream=None) -> None:
        self.recorded = True

    @property
    def done(self) -> bool:
        return self.recorded and not self.gpu.hung


class FakeStream:
    def __init__(self, gpu: Gpu, ptr: int) -> None:
        self.gpu, self.ptr = gpu, ptr

    def wait_event(self, ev) -> None:
        pass

    def synchronize(self) -> None:
        self.gpu.blocking_read()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def fake_cupy(gpu: Gpu) -> types.SimpleNamespace:
    default = FakeStream(gpu, 0)

    def asnumpy(v, stream=None):
        gpu.blocking_read()
        return np.array(v)

    cuda = types.SimpleNamespace(
        Event=lambda block=False, disable_timing=False: FakeEvent(gpu),
        Stream=lambda non_blocking=False: FakeStream(gpu, 99),
        get_current_stream=lambda: default,
    )
    return types.SimpleNamespace(
        ndarray=Arr,
        dtype=np.dtype,
        asarray=lambda v: np.ascontiguousarray(v).view(Arr),
        ascontiguousarray=lambda v: np.ascontiguousarray(v).view(Arr),
        empty=lambda shape, dtype: np.empty(shape, dtype).view(Arr),
        full=lambda shape, v, dtype: np.full(shape, v, dtype).view(Arr),
        asnumpy=asnumpy,
        cuda=cuda,
    )


class FakeComm:
    """A 2-rank communicator: all_reduce(sum) with a peer holding the same data, until the
    peer stalls (after ``stall_after`` calls): then the work never completes."""

    def __init__(self, gpu: Gpu, stall_after: int | None) -> None:
        self.gpu, self.stall_after, self.calls, self.rank, self.size = gpu, stall_after, 0, 0, 2
        self.aborted = False

    def prepare(self, op, dtype, reduce=None, root=None):
        assert (op, reduce) == ("all_reduce", "sum")

        def call(send, recv, count, stream):
            assert not self.aborted, "an aborted communicator was called (use after free)"
            self.calls += 1
            if self.stall_after is not None and self.calls > self.stall_after:
                self.gpu.hung = True  # the peer never joins: NCCL's kernel spins
                return
            src = np.ctypeslib.as_array((ctypes.c_float * count).from_address(send))
            dst = np.ctypeslib.as_array((ctypes.c_float * count).from_address(recv))
            dst[:] = src * 2  # the peer's identical contribution

        return call

    def async_error(self):
        return None


class FakeNcclWorld(World):
    def __init__(self, gpu: Gpu, stall_after: int | None = None, size: int = 2) -> None:
        self.size, self.rank, self.gpu = size, 0, gpu
        self.comm = FakeComm(gpu, stall_after)
        self.aborts = 0

    def exchange(self, obj, what, key=None):
        return [obj] * self.size  # the peer agrees

    def communicator(self, spec):
        return self.comm

    def abort_communicators(self) -> int:
        self.aborts += 1
        self.comm.aborted = True
        self.gpu.hung = False  # ncclCommAbort ends the spinning kernels
        return 1


class Ctx(RunContext):
    """NumPy references; arrays stay ``Arr`` (CuPy-like) where the interpreter converts."""

    def asarray(self, value):
        return np.asarray(value).view(Arr)


@pytest.fixture
def gpu(monkeypatch):
    g = Gpu()
    monkeypatch.setattr(device, "cupy_module", lambda: fake_cupy(g))
    return g


def _session(world, **options):
    net = td.Network("job", world=world)
    x = net.input("x", (4,))
    net.output(x.all_reduce("sum", name="sum_partials"), "y")
    line = net.collectives[0].where
    return CupySession(net, Ctx, agree=False, **options), line


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("trtdsl-nccl-watchdog")]


def _gone(thread: threading.Thread) -> bool:
    thread.join(0.2)
    return not thread.is_alive()


X = np.arange(4, dtype=np.float32)


@pytest.mark.parametrize("stream", [False, True])
def test_healthy_calls_complete_and_nothing_is_aborted(gpu, stream):
    world = FakeNcclWorld(gpu)
    opts = {"stream": FakeStream(gpu, 7)} if stream else {}
    s, _ = _session(world, nccl_timeout=5.0, **opts)
    dog = s._watch
    assert dog is not None and dog.running and dog._thread.daemon
    for _ in range(5):
        np.testing.assert_array_equal(s.run({"x": X})["y"], X * 2)
    thread = dog._thread
    s.close()
    assert _gone(thread) and world.aborts == 0 and dog.fired is None
    assert dog.in_flight() == 0  # nothing left tracked
    assert world.comm.calls == 5 and gpu.blocking_reads >= 5


def test_a_stalled_peer_ends_the_run_with_the_watchdog_message(gpu, capfd):
    world = FakeNcclWorld(gpu, stall_after=3)
    s, where = _session(world, nccl_timeout=0.05)
    thread = s._watch._thread
    for _ in range(3):
        np.testing.assert_array_equal(s.run({"x": X})["y"], X * 2)
    t0 = time.monotonic()
    with pytest.raises(WatchdogError) as e:
        s.run({"x": X})  # the peer stopped calling: NCCL never completes
    assert time.monotonic() - t0 < 0.5
    msg = str(e.value)
    assert msg == (
        f"rank 0: network 'job' collective(s) 'sum_partials' (all_reduce) at {where} did not "
        "complete within 0.05 s (a peer rank may have died, stalled or run a different "
        "network); NCCL communicators aborted"
    )
    assert where.filename == __file__
    assert world.aborts == 1
    calls = world.comm.calls
    with pytest.raises(WatchdogError) as again:  # every later run: at once, same reason
        s.run({"x": X})
    assert str(again.value) == msg and world.comm.calls == calls
    s.close()  # fired: no wait, no raise
    assert _gone(thread) and world.aborts == 1
    assert msg in capfd.readouterr().err


def test_return_device_still_aborts_and_the_next_run_raises(gpu):
    world = FakeNcclWorld(gpu, stall_after=1)
    s, _ = _session(world, nccl_timeout=0.05, return_device=True)
    s.run({"x": X})
    s.run({"x": X})  # returns at once: the caller syncs (here: never completes)
    deadline = time.monotonic() + 1.0
    while s._watch.fired is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.aborts == 1 and not gpu.hung  # the abort ended the spinning work
    with pytest.raises(WatchdogError, match="did not complete within 0.05 s"):
        s.run({"x": X})
    s.close()


def test_close_waits_through_the_watchdog(gpu):
    world = FakeNcclWorld(gpu, stall_after=0)
    s, _ = _session(world, nccl_timeout=0.05, return_device=True)
    s.run({"x": X})
    thread = s._watch._thread
    with pytest.raises(WatchdogError, match="'sum_partials'"):
        s.close()
    assert s.closed and _gone(thread) and world.aborts == 1


def test_no_watchdog_when_turned_off_or_for_one_rank(gpu):
    before = len(_threads())
    s, _ = _session(FakeNcclWorld(gpu), nccl_timeout=None)
    assert s._watch is None and len(_threads()) == before
    np.testing.assert_array_equal(s.run({"x": X})["y"], X * 2)
    s.close()
    one, _ = _session(FakeNcclWorld(gpu, size=1))
    assert one._watch is None and len(_threads()) == before
    one.close()


def test_one_watchdog_per_world_and_the_thread_ends_with_the_last_session(gpu):
    world = FakeNcclWorld(gpu)
    a, _ = _session(world)
    b, _ = _session(world, nccl_timeout=30)
    assert a._watch is b._watch is watchdog.watchdog_for(world)
    thread = a._watch._thread
    a.close()
    assert thread.is_alive()
    b.close()
    assert _gone(thread)


@pytest.mark.parametrize(
    "bad, match",
    [(0, "positive"), (-3, "positive"), ("600", "number of seconds"), (False, "number of seconds")],
)
def test_the_option_is_validated_without_cupy(bad, match):
    net = td.Network("job", world=td.StaticWorld(2))
    net.output(net.input("x", (4,)).all_reduce("sum"), "y")
    with pytest.raises(WatchdogOptionError, match=match) as e:
        net.compile(backend="cupy", nccl_timeout=bad)
    assert f"{__file__}:" in str(e.value)


def test_events_still_in_flight_are_never_re_recorded(gpu):
    """More calls in flight than the session's event pool: each tracked call keeps its own
    event (re-recording one still queued would tie an old deadline to newer work, and a host
    that stays ahead would make a healthy job look overdue)."""
    world = FakeNcclWorld(gpu)
    s, _ = _session(world, nccl_timeout=600.0, return_device=True)
    s.run({"x": X})  # the first (checked) call completes
    gpu.hung = True  # later work stays in flight; the host runs ahead
    for _ in range(100):
        s.run({"x": X})
    queued = [w for lane in s._watch._lanes.values() for w in lane]
    assert len(queued) >= 100
    assert len({id(w.event) for w in queued}) == len(queued)
    gpu.hung = False  # the work completes: close waits for it and nothing was aborted
    s.close()
    assert world.aborts == 0


def test_a_constant_output_is_the_callers_own_copy(gpu):
    """A network output that is a constant layer: with device outputs the caller gets a copy,
    never the session's cached device constant (writing to it would change later runs)."""

    class CachingCtx(Ctx):  # caches device constants per layer, as CupyContext does
        cache: dict = {}

        def constant(self, layer):
            if id(layer) not in self.cache:  # an array of its own (no base), as on a GPU
                value = layer.attrs["value"]
                dev = self.cache[id(layer)] = Arr(value.shape, value.dtype)
                dev[...] = value
            return self.cache[id(layer)]

    world = FakeNcclWorld(gpu)
    net = td.Network("job", world=world)
    net.output(net.input("x", (4,)).all_reduce("sum"), "y")
    value = np.arange(3, dtype=np.float32)
    net.output(net.constant(value, name="c"), "c")
    s = CupySession(net, CachingCtx, agree=False, nccl_timeout=None, return_device=True)
    for _ in range(3):  # the first call runs checked, the later ones take the fast path
        out = s.run({"x": X})["c"]
        np.testing.assert_array_equal(out, value)
        out[...] = -1  # the caller writes to its output
    s.close()


def test_out_arrays_on_device_and_host_are_checked_and_written(gpu, monkeypatch):
    """``run(feeds, out=...)``: device arrays get one async device copy, host arrays a
    download (then a sync); a missing or mis-shaped out is an error naming it."""
    copies = []

    def memcpy(dst, src, nbytes, kind, stream):  # cudaMemcpyAsync, device to device
        assert kind == 3
        copies.append(nbytes)
        ctypes.memmove(dst, src, nbytes)

    def get(self, stream=None, out=None):  # CuPy's download into a host array
        out[...] = self
        return out

    cp = device.cupy_module()
    cp.cuda.runtime = types.SimpleNamespace(memcpyAsync=memcpy)
    monkeypatch.setattr(device, "cupy_module", lambda: cp)
    monkeypatch.setattr(Arr, "get", get, raising=False)
    s, _ = _session(FakeNcclWorld(gpu), nccl_timeout=None)
    for _ in range(2):  # checked, then the fast path
        on_device = np.zeros(4, np.float32).view(Arr)
        got = s.run({"x": X}, out={"y": on_device})
        assert got["y"] is on_device and copies[-1] == 16
        np.testing.assert_array_equal(on_device, X * 2)
        on_host = np.zeros(4, np.float32)
        reads = gpu.blocking_reads
        assert s.run({"x": X}, out={"y": on_host})["y"] is on_host
        np.testing.assert_array_equal(on_host, X * 2)
        assert gpu.blocking_reads == reads  # this session runs on the caller's stream
    with pytest.raises(ExecutionError, match=r"out= lacks output\(s\) \['y'\]"):
        s.run({"x": X}, out={"z": on_host})
    with pytest.raises(ExecutionError, match=r"out\['y'\] is \(3,\) float32, the output is \(4,\)"):
        s.run({"x": X}, out={"y": np.zeros(3, np.float32)})
    s.close()
