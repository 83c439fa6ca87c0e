"""CPU tests of the NCCL watchdog (trtdsl/backends/cupy/watchdog.py) with fakes for the clock,
the CUDA events, the communicators and the world: deadlines, NCCL async errors, peers' failure
notices, normal completion, waiting, the thread's life, ``nccl_timeout`` validation, and
``Communicator.async_error`` against a stand-in for nccl4py's bindings. GPU: the ``stall`` case
of gpu/run_faults.sh."""

from __future__ import annotations

import threading
import time
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trtdsl as td
from trtdsl.backends import nccl
from trtdsl.backends.cupy import watchdog as wd
from trtdsl.backends.cupy.watchdog import Watchdog, WatchdogError, WatchdogOptionError
from trtdsl.backends.nccl import adapter
from trtdsl.errors import ExecutionError, TrtDslError


# -- fakes ------------------------------------------------------------------------------------
class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Ev:
    """A CUDA event stand-in: done when the test says so (``fail``: the query raises)."""

    def __init__(self, done: bool = False, fail: Exception | None = None) -> None:
        self._done, self.fail, self.queries = done, fail, 0

    @property
    def done(self) -> bool:
        self.queries += 1
        if self.fail is not None:
            raise self.fail
        return self._done


class Comm:
    def __init__(self) -> None:
        self.error: str | None = None
        self.asked = 0

    def async_error(self) -> str | None:
        self.asked += 1
        return self.error


class World:
    def __init__(self, rank: int = 3, size: int = 4, fail_abort: bool = False) -> None:
        self.rank, self.size, self.aborts, self.fail_abort = rank, size, 0, fail_abort

    def abort_communicators(self) -> int:
        self.aborts += 1
        if self.fail_abort:
            raise RuntimeError("ncclCommAbort: boom")
        return 1


def _dog(world=None, clock=None, **kw):
    world = World() if world is None else world
    reports: list[str] = []
    notified: list[str] = []
    dog = Watchdog(
        world,
        clock=clock or Clock(),
        thread=False,
        report=reports.append,
        notify=notified.append,
        **kw,
    )
    return dog, world, reports, notified


def _network():
    net = td.Network("job", world=td.StaticWorld(2))
    x = net.input("x", (4,))
    y = x.all_reduce("sum", name="sum_partials")
    net.output(y.all_gather(name="gathered"), "y")
    return net


# -- deadlines ----------------------------------------------------------------------------------
def test_an_event_that_never_completes_aborts_once_naming_layers_lines_and_timeout():
    net = _network()
    what = wd.describe_collectives(net)
    here = __file__
    lines = {c.name: c.where.lineno for c in net.collectives}
    clock = Clock()
    dog, world, reports, notified = _dog(clock=clock)
    comm = Comm()
    dog.attach("s", [comm])
    ev = Ev()
    dog.track(7, ev, 10.0, what)
    for t in (0.0, 5.0, 10.0):  # not past the deadline yet (deadline = start + 10 s)
        clock.t = 100.0 + t
        assert dog.poll() is False and dog.fired is None
    clock.t = 110.001
    assert dog.poll() is True
    for _ in range(5):
        clock.t += 3
        assert dog.poll() is True
    assert world.aborts == 1
    msg = dog.fired
    assert msg.startswith("rank 3: network 'job' collective(s) ")
    for name in ("sum_partials", "gathered"):
        assert f"'{name}' " in msg and f"{here}:{lines[name]}" in msg
    assert "(all_reduce)" in msg and "(all_gather)" in msg
    assert "did not complete within 10 s" in msg and msg.endswith("NCCL communicators aborted")
    assert "peer rank may have died, stalled or run a different network" in msg
    assert notified == [msg] and len(reports) == 1 and msg in reports[0]
    with pytest.raises(WatchdogError, match="did not complete within 10 s") as e:
        dog.check()
    assert isinstance(e.value, ExecutionError) and str(e.value) == msg
    with pytest.raises(WatchdogError):
        dog.wait(ev, sleep=lambda s: None)
    with pytest.raises(WatchdogError):  # a new session on the world refuses at once
        dog.attach("another", [Comm()])


@settings(max_examples=60, deadline=None)
@given(
    timeout=st.floats(0.01, 1e4),
    steps=st.lists(st.floats(0.0, 2e3), min_size=1, max_size=30),
)
def test_fires_at_the_first_look_past_the_deadline(timeout, steps):
    clock = Clock(50.0)
    dog, world, _, _ = _dog(clock=clock)
    dog.attach("s", [Comm()])
    dog.track("lane", Ev(), timeout, "network 'n' collective(s) 'y' (all_reduce) at f.py:1")
    start = clock.t
    times = list(np.cumsum(steps) + start)
    # the reference: the first look whose time is past start + timeout
    expected = next((i for i, t in enumerate(times) if t > start + timeout), None)
    fired_at = None
    for i, t in enumerate(times):
        clock.t = t
        if dog.poll() and fired_at is None:
            fired_at = i
    assert fired_at == expected
    assert world.aborts == (0 if expected is None else 1)


def test_the_oldest_overdue_call_is_named():
    clock = Clock(0.0)
    dog, _, _, _ = _dog(clock=clock)
    dog.attach("s", [Comm()])
    dog.track("a", Ev(), 5.0, "network 'late' collective(s) 'x' (broadcast) at a.py:1")
    clock.t = 1.0
    dog.track("b", Ev(), 1.0, "network 'early' collective(s) 'y' (all_reduce) at b.py:2")
    clock.t = 10.0
    assert dog.poll()
    assert "network 'early'" in dog.fired and "within 1 s" in dog.fired


# -- NCCL async errors, CUDA errors, failure notices ------------------------------------------
def test_an_nccl_async_error_aborts_once_with_the_error_text():
    clock = Clock()
    dog, world, reports, _ = _dog(clock=clock)
    good, bad = Comm(), Comm()
    dog.attach("s1", [good])
    dog.attach("s2", [bad, good])
    dog.track(1, Ev(), 600.0, "network 'n' collective(s) 'y' (all_reduce) at f.py:9")
    assert not dog.poll() and good.asked >= 1 and bad.asked == 1
    bad.error = "ncclRemoteError (6): remote process exited or there was a network error"
    assert dog.poll() and dog.poll()
    assert world.aborts == 1
    assert dog.fired == (
        "rank 3: NCCL reported an asynchronous error while network 'n' collective(s) 'y' "
        "(all_reduce) at f.py:9 were in flight: ncclRemoteError (6): remote process exited or "
        "there was a network error; NCCL communicators aborted"
    )


def test_an_async_error_with_nothing_in_flight_still_aborts():
    dog, world, _, _ = _dog()
    comm = Comm()
    dog.attach("s", [comm])
    comm.error = "ncclSystemError (2): unhandled system error"
    assert dog.poll() and world.aborts == 1
    assert dog.fired.startswith("rank 3: NCCL reported an asynchronous error: ncclSystemError")


def test_a_failing_event_query_is_a_cuda_error_report():
    dog, world, _, _ = _dog()
    dog.attach("s", [Comm()])
    dog.track(0, Ev(fail=RuntimeError("cudaErrorIllegalAddress")), 600.0, "network 'n' x")
    assert dog.poll() and world.aborts == 1
    assert "CUDA error while network 'n' x were in flight" in dog.fired
    assert "RuntimeError: cudaErrorIllegalAddress" in dog.fired


def test_a_peer_notice_stops_work_in_flight_after_the_grace_only():
    clock = Clock(0.0)
    peeks: list[float] = []

    def peek():
        peeks.append(clock.t)
        return 1

    dog, world, _, _ = _dog(clock=clock, peek=peek, notice_grace=1.0)
    dog.attach("s", [Comm()])
    assert not dog.poll() and peeks == []  # nothing in flight: notices are not for us
    ev = Ev()
    dog.track(0, ev, 600.0, "network 'n' collective(s) 'y' (all_reduce) at f.py:1")
    clock.t = 0.5
    assert not dog.poll() and peeks == []  # inside the grace: a stale notice must not abort
    clock.t = 1.5
    assert dog.poll() and world.aborts == 1 and peeks == [1.5]
    assert dog.fired.startswith("rank 3: rank 1 sent a failure notice while network 'n'")


def test_no_notice_no_abort():
    clock = Clock(0.0)
    dog, world, _, _ = _dog(clock=clock, peek=lambda: None, notice_grace=0.0)
    dog.attach("s", [Comm()])
    dog.track(0, Ev(), 600.0, "n")
    for t in range(1, 20):
        clock.t = float(t)
        assert not dog.poll()
    assert world.aborts == 0


def test_abort_and_notice_failures_are_reported_and_the_reason_stands():
    world = World(fail_abort=True)
    reports: list[str] = []

    def notify(reason):
        raise OSError("MPI is gone")

    clock = Clock(0.0)
    dog = Watchdog(world, clock=clock, thread=False, report=reports.append, notify=notify)
    dog.attach("s", [Comm()])
    dog.track(0, Ev(), 1.0, "network 'n' collective(s) 'y' (all_reduce) at f.py:1")
    clock.t = 2.0
    assert dog.poll() and world.aborts == 1
    text = "".join(reports)
    assert "aborting NCCL failed: ncclCommAbort: boom" in text
    assert "failure notice not sent: MPI is gone" in text
    with pytest.raises(WatchdogError, match="within 1 s"):
        dog.check()


# -- normal completion ------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 4)),  # (lane, how many calls)
        min_size=1,
        max_size=8,
    ),
    order=st.randoms(use_true_random=False),
)
def test_finished_work_is_dropped_and_nothing_is_aborted(plan, order):
    clock = Clock(0.0)
    dog, world, _, _ = _dog(clock=clock)
    dog.attach("s", [Comm()])
    lanes: dict[int, list[Ev]] = {}
    for lane, n in plan:
        for _ in range(n):
            ev = Ev()
            lanes.setdefault(lane, []).append(ev)
            dog.track(lane, ev, 30.0, "n")
    # complete each lane in order (one stream), lanes interleaved at random
    pending = {lane: list(evs) for lane, evs in lanes.items()}
    while pending:
        lane = order.choice(sorted(pending))
        pending[lane].pop(0)._done = True
        if not pending[lane]:
            del pending[lane]
        clock.t += 1.0
        assert not dog.poll()
        assert dog.in_flight() == sum(len(v) for v in pending.values())  # reference count
    clock.t += 1e6  # long after every deadline: finished work is never overdue
    assert not dog.poll() and dog.in_flight() == 0 and world.aborts == 0 and dog.fired is None


def test_wait_returns_when_the_event_is_done_and_raises_once_fired():
    clock = Clock(0.0)
    dog, _, _, _ = _dog(clock=clock)
    dog.attach("s", [Comm()])
    ev = Ev()
    sleeps: list[float] = []

    def sleep(s):  # the GPU finishes after a few looks
        sleeps.append(s)
        if len(sleeps) == 4:
            ev._done = True

    dog.wait(ev, sleep=sleep)
    assert len(sleeps) == 4 and all(0 <= s <= 1e-3 for s in sleeps)
    assert sleeps[0] == 0.0  # the first looks only yield, as a spinning CUDA sync would

    stuck = Ev()
    dog.track(0, stuck, 1.0, "network 'n' collective(s) 'y' (all_reduce) at f.py:1")

    def sleep_and_fire(s):
        clock.t += 0.6
        dog.poll()

    with pytest.raises(WatchdogError, match="within 1 s"):
        dog.wait(stuck, sleep=sleep_and_fire)


def test_wait_raises_when_the_abort_is_what_completed_the_event():
    class AbortingWorld(World):
        def __init__(self, ev):
            super().__init__()
            self.ev = ev

        def abort_communicators(self):
            self.ev._done = True  # ncclCommAbort ends the spinning kernels
            return super().abort_communicators()

    ev = Ev()
    clock = Clock(0.0)
    world = AbortingWorld(ev)  # the watchdog holds its world weakly
    dog = Watchdog(world, clock=clock, thread=False, report=lambda s: None)
    dog.attach("s", [Comm()])
    dog.track(0, ev, 1.0, "n")
    clock.t = 5.0
    dog.poll()
    assert ev._done and world.aborts == 1
    with pytest.raises(WatchdogError):  # done, but only because of the abort: garbage
        dog.wait(ev, sleep=lambda s: None)


# -- the thread -------------------------------------------------------------------------------
def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("trtdsl-nccl-watchdog")}


def test_waiters_raise_only_once_the_abort_is_done(monkeypatch):
    release = threading.Event()
    order: list[str] = []

    class SlowWorld(World):
        def abort_communicators(self):
            release.wait(0.5)  # ncclCommAbort takes a while
            order.append("aborted")
            return super().abort_communicators()

    world = SlowWorld(rank=0)
    clock = Clock(0.0)
    dog = Watchdog(world, clock=clock, thread=False, report=lambda s: None)
    dog.attach("s", [Comm()])
    dog.track(0, Ev(), 1.0, "n")
    clock.t = 2.0
    firing = threading.Thread(target=dog.poll)
    firing.start()
    while dog.fired is None:
        time.sleep(0.001)

    def waiter():
        with pytest.raises(WatchdogError):
            dog.check()
        order.append("raised")

    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.02)
    assert order == []  # fired, abort still running: the waiter has not raised yet
    release.set()
    w.join(0.5)
    firing.join(0.5)
    assert order == ["aborted", "raised"] and world.aborts == 1
    monkeypatch.setattr(wd, "ABORT_WAIT", 0.01)  # an abort that hangs: raise anyway
    hung = Watchdog(World(), thread=False)
    hung._fired = "rank 3: stuck"
    t0 = time.monotonic()
    with pytest.raises(WatchdogError, match="stuck"):
        hung.check()
    assert time.monotonic() - t0 < 0.2


def test_the_thread_is_a_daemon_and_stops_when_the_last_session_detaches():
    world = World(rank=5)
    dog = Watchdog(world, interval=0.005, report=lambda s: None)
    assert not dog.running
    dog.attach("a", [Comm()])
    dog.attach("b", [Comm()])
    thread = dog._thread
    assert dog.running and thread.daemon and thread.name == "trtdsl-nccl-watchdog-r5"
    dog.detach("a")
    time.sleep(0.03)
    assert dog.running  # session b still open
    dog.detach("b")
    thread.join(0.2)
    assert not thread.is_alive() and not dog.running
    dog.attach("c", [Comm()])  # a new session starts a new thread
    assert dog.running and dog._thread is not thread
    dog.stop()
    dog._thread.join(0.2)
    assert not dog.running and world.aborts == 0


def test_a_session_opened_right_after_the_last_one_closed_is_watched():
    """detach stops the thread, which stays alive until it next wakes; an attach in that
    window must start a fresh thread, or nothing would fire for the new session."""
    world = World(rank=1)
    dog = Watchdog(world, interval=0.2, report=lambda s: None)  # a slow thread: a wide window
    dog.attach("a", [Comm()])
    old = dog._thread
    dog.detach("a")
    dog.attach("b", [Comm()])  # at once, while the old thread still sleeps
    assert dog._thread is not old and dog.running
    old.join(0.5)
    assert not old.is_alive() and dog.running  # the new one watches on
    stuck = Ev()
    dog.track(0, stuck, 0.05, "network 'n' collective(s) 'y' (all_reduce) at f.py:1")
    with pytest.raises(WatchdogError, match="did not complete within 0.05 s"):
        dog.wait(stuck)
    assert world.aborts == 1


def test_a_waiter_looks_itself_when_no_thread_runs():
    world = World(rank=0)
    clock = Clock()
    dog = Watchdog(world, clock=clock, thread=False, report=lambda s: None)
    dog.attach("s", [Comm()])
    stuck = Ev()
    dog.track(0, stuck, 1.0, "network 'n' collective(s) 'y' (all_reduce) at f.py:1")
    clock.t += 2.0  # past the deadline; no thread to notice it
    with pytest.raises(WatchdogError, match="did not complete within 1 s"):
        dog.wait(stuck, sleep=lambda s: None)
    assert world.aborts == 1


def test_the_thread_fires_by_itself_and_ends():
    world = World(rank=0)
    reports: list[str] = []
    dog = Watchdog(world, interval=0.005, report=reports.append)
    dog.attach("s", [Comm()])
    stuck = Ev()
    dog.track(0, stuck, 0.05, "network 'n' collective(s) 'y' (all_reduce) at f.py:1")
    t0 = time.monotonic()
    with pytest.raises(WatchdogError, match="did not complete within 0.05 s"):
        dog.wait(stuck)  # real sleeps; the thread fires after ~0.05 s
    assert time.monotonic() - t0 < 0.2
    dog._thread.join(0.2)
    assert not dog.running and world.aborts == 1 and len(reports) == 1


def test_the_thread_sets_up_first_and_a_failing_set_up_is_reported():
    ran: list[str] = []
    reports: list[str] = []
    dog = Watchdog(
        World(rank=2),
        interval=0.005,
        report=reports.append,
        setup=lambda: ran.append(threading.current_thread().name),
    )
    dog.attach("s", [Comm()])
    dog.stop()
    dog._thread.join(0.2)
    assert ran == ["trtdsl-nccl-watchdog-r2"] and reports == []

    def broken():
        raise RuntimeError("no such device")

    bad = Watchdog(World(rank=2), interval=0.005, report=reports.append, setup=broken)
    bad.attach("s", [Comm()])
    time.sleep(0.02)
    assert bad.running  # still watching
    bad.stop()
    bad._thread.join(0.2)
    assert reports == ["[trtdsl] rank 2: NCCL watchdog set-up: no such device\n"]


def test_the_world_device_is_selected_in_the_thread(monkeypatch):
    used: list[int] = []
    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(
            Device=lambda i: types.SimpleNamespace(use=lambda: used.append(i))
        )
    )
    monkeypatch.setattr("trtdsl.backends.cupy.device.cupy_module", lambda: fake)
    world = World(rank=1, size=2)
    world.device = 5
    wd._use_device(world)()
    assert used == [5]
    assert wd._use_device(World()) is None  # no device: nothing to select


def test_stop_all_stops_every_thread():
    dogs = [Watchdog(World(rank=r), interval=0.005) for r in range(3)]
    for d in dogs:
        d.attach("s", [Comm()])
    threads = [d._thread for d in dogs]
    wd.stop_all()
    for t in threads:
        t.join(0.2)
        assert not t.is_alive()


# -- one watchdog per world; when there is none --------------------------------------------
def test_session_watchdog_only_where_needed_and_one_per_world():
    class Net:
        def __init__(self, world):
            self.world = world

    w = World(rank=0, size=2)
    comms = [Comm()]
    assert wd.session_watchdog(Net(w), comms, None) is None  # nccl_timeout=None: off
    assert wd.session_watchdog(Net(World(rank=0, size=1)), comms, 600.0) is None
    assert wd.session_watchdog(Net(None), comms, 600.0) is None
    assert wd.session_watchdog(Net(w), [], 600.0) is None  # no multi-rank collective
    a = wd.session_watchdog(Net(w), comms, 600.0)
    assert isinstance(a, Watchdog) and wd.session_watchdog(Net(w), comms, 5.0) is a
    assert wd.session_watchdog(Net(World(rank=0, size=2)), comms, 600.0) is not a
    assert not a.running  # made, not started: sessions attach


def test_mpi_notices_only_with_an_mpi_control_world():
    assert wd.mpi_notices(World()) == (None, None)
    assert wd.mpi_notices(types.SimpleNamespace(control=td.StaticWorld(2))) == (None, None)


def test_describe_names_only_multi_rank_collectives_and_caps_the_list():
    net = td.Network("many", world=td.StaticWorld(2))
    x = net.input("x", (4,))
    solo = x.all_reduce("sum", groups=[[0], [1]], name="solo")
    y = solo
    for i in range(wd.MAX_NAMED + 3):
        y = y.all_reduce("max", name=f"c{i}")
    net.output(y, "y")
    text = wd.describe_collectives(net)
    assert "'solo'" not in text and "'c0' (all_reduce)" in text
    assert f"'c{wd.MAX_NAMED - 1}'" in text and f"'c{wd.MAX_NAMED}'" not in text
    assert text.endswith("and 3 more")


# -- the option ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "good, seconds", [(1, 1.0), (2.5, 2.5), (np.float32(3), 3.0), (None, None)]
)
def test_nccl_timeout_values(good, seconds):
    assert wd.validate_nccl_timeout(good) == seconds


@pytest.mark.parametrize(
    "bad, match",
    [
        (0, "positive, finite"),
        (-1.0, "positive, finite"),
        (float("nan"), "positive, finite"),
        (float("inf"), "positive, finite"),
        ("10", "a number of seconds or None"),
        (True, "a number of seconds or None"),
        ([5], "a number of seconds or None"),
    ],
)
def test_nccl_timeout_errors_name_the_callers_line(bad, match):
    with pytest.raises(WatchdogOptionError, match=match) as e:
        wd.validate_nccl_timeout(bad)
    assert isinstance(e.value, TrtDslError) and isinstance(e.value, ValueError)
    assert f"{__file__}:" in str(e.value) and repr(bad) in str(e.value)


# -- Communicator.async_error against a stand-in for nccl4py's bindings ----------------------
class FakeBindings:
    def __init__(self) -> None:
        self.code = 0
        self.fail: Exception | None = None
        self.queried: list[int] = []

        class Comm:
            def __init__(self, handle):
                self.handle = handle

        self.Comm = Comm
        self.get_error_string = lambda code: {
            6: "remote process exited or there was a network error"
        }.get(code, "?")

    def comm_get_async_error(self, h):
        self.queried.append(h.handle)
        if self.fail is not None:
            raise self.fail
        return self.code

    def get_last_error(self, h):
        return "NET/IB : peer 10.0.0.2 closed the connection"


@pytest.fixture
def n4p():
    b = FakeBindings()

    class N4PComm:
        ptr = 0xABC

        def abort(self):
            pass

        def destroy(self):
            pass

    core = types.SimpleNamespace()
    old = nccl.use_modules(core, b)
    yield b, N4PComm
    adapter._MODULES = old


def test_async_error_codes(n4p):
    b, N4PComm = n4p
    c = nccl.Communicator.wrap(N4PComm(), 0, 2)
    assert c.async_error() is None and b.queried == [0xABC]  # ncclSuccess
    b.code = 7
    assert c.async_error() is None  # ncclInProgress
    b.code = 6
    assert c.async_error() == (
        "ncclRemoteError (6): remote process exited or there was a network error; "
        "last error: NET/IB : peer 10.0.0.2 closed the connection"
    )
    b.code = 42
    assert c.async_error().startswith("ncclResult (42): ?")
    b.fail = RuntimeError("invalid communicator")
    assert c.async_error() == "ncclCommGetAsyncError failed: RuntimeError: invalid communicator"


def test_async_error_is_none_while_closing_and_after(n4p):
    b, N4PComm = n4p
    b.code = 6
    c = nccl.Communicator.wrap(N4PComm(), 1, 2)
    with c._lock:  # close/abort on another thread is swapping the handle out
        assert c.async_error() is None
    assert b.queried == []
    c.abort()
    assert c.async_error() is None and b.queried == []
    d = nccl.Communicator.wrap(N4PComm(), 1, 2)
    d.close()
    assert d.async_error() is None and b.queried == []


def test_async_error_without_descriptions(n4p):
    b, N4PComm = n4p
    b.code = 3
    del b.get_error_string  # an older nccl4py
    c = nccl.Communicator.wrap(N4PComm(), 0, 2)
    assert c.async_error() == (
        "ncclInternalError (3): last error: NET/IB : peer 10.0.0.2 closed the connection"
    )
    b.get_last_error = lambda h: ""
    assert c.async_error() == "ncclInternalError (3): no description"
