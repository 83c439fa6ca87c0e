"""The NCCL watchdog: no rank waits inside NCCL forever.

A cupy session agrees with the other ranks once per input signature and then goes straight to
NCCL. If a peer then dies, stalls or runs a different network, this rank's NCCL kernels spin and
its host waits for them forever. The watchdog (one per NCCL world, one daemon thread while any
session of that world is open) prevents that, as torch.distributed's NCCL watchdog does:

- after each call a session records a CUDA event on its stream and :meth:`Watchdog.track`\\ s it
  with a deadline (``nccl_timeout`` seconds) and what it runs (network, collectives, file:line);
- every ``interval`` (10 ms) the thread drops finished events and asks every communicator for
  an asynchronous NCCL error (``ncclCommGetAsyncError``) and, under MPI with
  ``MPI_THREAD_MULTIPLE``, whether another rank has sent a failure notice (peeked with
  ``Iprobe``, never received, so the control world's own waits still see it);
- on a passed deadline, an NCCL error or a notice (while work is in flight) it *fires*: records
  the reason, aborts every NCCL communicator of the world (``ncclCommAbort``, so the spinning
  kernels end), reports the reason on stderr and sends a failure notice to the other ranks;
- the session waits for the GPU through :meth:`Watchdog.wait` (the event polled with short
  sleeps), which raises :class:`WatchdogError` once the watchdog fired; so does every later run.

>>> import itertools
>>> class Comm:
...     def async_error(self): return None
>>> class World:
...     rank, aborted = 0, 0
...     def abort_communicators(self): self.aborted += 1; return 1
>>> class Never:            # a CUDA event that never completes
...     done = False
>>> clock = itertools.count(0.0, 6.0).__next__      # 6 s per tick
>>> w = World(); dog = Watchdog(w, clock=clock, thread=False, report=lambda s: None)
>>> dog.attach("session", [Comm()])
>>> dog.track(0, Never(), 10.0, "network 'n' collective(s) 'y' (all_reduce) at a.py:3")
>>> dog.poll(), dog.poll(), w.aborted
(False, True, 1)
>>> dog.fired.split(": ")[0], "within 10 s" in dog.fired
('rank 0', True)
"""

from __future__ import annotations

import atexit
import math
import numbers
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ...errors import ExecutionError, TrtDslError, user_location
from ...worlds.notices import NOTICE_TAG, emit, send_failure_notice

#: The default ``nccl_timeout`` (seconds), torch.distributed's NCCL default.
DEFAULT_TIMEOUT = 600.0
#: How often the thread looks (seconds).
INTERVAL = 0.01
#: A peer's failure notice stops NCCL work only once it has been in flight this long (s): a
#: notice left over from an earlier, handled failure must not abort work that is about to end.
NOTICE_GRACE = 1.0
#: A wait only yields (no sleep) for this long (s), then sleeps a tenth of the time waited.
SPIN = 2e-3
#: A fired watchdog's waiters raise once its abort is done, or after this many seconds.
ABORT_WAIT = 10.0
#: At most this many collectives are named in a report.
MAX_NAMED = 8


class WatchdogError(ExecutionError):
    """The NCCL watchdog fired (a deadline passed, NCCL reported an error, or another rank
    failed): this rank's NCCL communicators were aborted; the message says why."""


class WatchdogOptionError(TrtDslError, ValueError):
    """``nccl_timeout`` is not a positive number of seconds or None (names the user's line)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} (at {user_location()})")


def validate_nccl_timeout(value: Any) -> float | None:
    """``nccl_timeout`` as seconds (None: no watchdog); without CuPy, so testable anywhere.

    >>> validate_nccl_timeout(30), validate_nccl_timeout(None)
    (30.0, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise WatchdogOptionError(
            f"nccl_timeout must be a number of seconds or None, got {value!r}"
        )
    seconds = float(value)
    if not seconds > 0 or not math.isfinite(seconds):
        raise WatchdogOptionError(
            f"nccl_timeout must be a positive, finite number of seconds (or None to turn the "
            f"NCCL watchdog off), got {value!r}"
        )
    return seconds


# -- what the watchdog reads ----------------------------------------------------------------------
class Event(Protocol):
    """A CUDA event (``cupy.cuda.Event``): ``done`` is True once the work before it finished."""

    @property
    def done(self) -> bool: ...


class ErrorSource(Protocol):
    """An NCCL communicator (:class:`~trtdsl.backends.nccl.Communicator`)."""

    def async_error(self) -> str | None: ...


class AbortableWorld(Protocol):
    """An NCCL world (:class:`~trtdsl.backends.cupy.NcclWorld`)."""

    rank: int

    def abort_communicators(self) -> int: ...


@dataclass(slots=True)
class Work:
    """One tracked call: done when ``event`` is; overdue after ``deadline`` (clock seconds)."""

    event: Event
    start: float
    deadline: float
    timeout: float
    what: str


def describe_collectives(network: Any) -> str:
    """What a network's multi-rank collectives are, for reports:
    ``network 'n' collective(s) 'y' (all_reduce) at a.py:3, ...``."""
    layers = [c for c in network.collectives if c.spec.n > 1]
    named = [f"'{c.name}' ({c.spec.op}) at {c.where}" for c in layers[:MAX_NAMED]]
    if len(layers) > MAX_NAMED:
        named.append(f"and {len(layers) - MAX_NAMED} more")
    return f"network '{network.name}' collective(s) {', '.join(named)}"


def mpi_notices(world: Any) -> tuple[Callable[[], int | None] | None, Callable[[str], Any] | None]:
    """(peek, notify) for an NCCL world whose control world is MPI and whose MPI library gives
    ``MPI_THREAD_MULTIPLE`` (peek: the rank of a pending failure notice, or None; notify: send
    one); (None, None) otherwise: then only the abort hook or timeouts tell the other ranks."""
    from ...worlds import MPIWorld

    if not isinstance(getattr(world, "control", None), MPIWorld):
        return None, None
    from mpi4py import MPI

    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        return None, None

    def peek() -> int | None:
        if MPI.Is_finalized():
            return None
        status = MPI.Status()
        if MPI.COMM_WORLD.Iprobe(source=MPI.ANY_SOURCE, tag=NOTICE_TAG, status=status):
            return int(status.Get_source())
        return None

    def notify(reason: str) -> None:
        if not MPI.Is_finalized():
            send_failure_notice(f"stopped its NCCL work ({reason})")

    return peek, notify


# -- the watchdog ----------------------------------------------------------------------------
class Watchdog:
    """Tracks one NCCL world's in-flight work; see the module docstring.

    ``clock``, ``peek``, ``notify`` and ``report`` are injectable (tests); ``setup`` runs
    first in the thread (select the world's CUDA device, so the event queries do not make a
    context on device 0); ``thread=False`` never starts a thread (call :meth:`poll` yourself).
    """

    def __init__(
        self,
        world: AbortableWorld,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = INTERVAL,
        peek: Callable[[], int | None] | None = None,
        notify: Callable[[str], Any] | None = None,
        report: Callable[[str], Any] = emit,
        notice_grace: float = NOTICE_GRACE,
        setup: Callable[[], Any] | None = None,
        thread: bool = True,
    ) -> None:
        self._world = weakref.ref(world)
        self.rank = int(world.rank)
        self.clock, self.interval, self.notice_grace = clock, interval, notice_grace
        self._peek, self._notify, self._report, self._setup = peek, notify, report, setup
        self._use_thread = thread
        self._lock = threading.Lock()
        self._lanes: dict[Hashable, deque[Work]] = {}
        self._owners: dict[int, list[ErrorSource]] = {}
        self._fired: str | None = None
        self._settled = threading.Event()  # set once the firing's abort and notice are done
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what sessions call ------------------------------------------------------------------
    @property
    def fired(self) -> str | None:
        """Why the watchdog fired (the message), or None."""
        return self._fired

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def attach(self, owner: object, comms: Iterable[ErrorSource]) -> None:
        """A session starts using the world (its communicators are watched for async errors);
        starts the thread. WatchdogError if the watchdog already fired."""
        self.check()
        with self._lock:
            self._owners[id(owner)] = list(comms)
            # a stopped thread may still be alive until it next wakes: start a fresh one
            if self._use_thread and (not self.running or self._stop.is_set()):
                self._start()

    def detach(self, owner: object) -> None:
        """A session is done (closed): finished work is dropped; the thread stops when no
        session is left."""
        with self._lock:
            self._owners.pop(id(owner), None)
            last = not self._owners
            self._advance()
        if last:
            self.stop()

    def track(self, lane: Hashable, event: Event, timeout: float, what: str) -> None:
        """Watch ``event`` (recorded after a call's work on the stream ``lane``): it must be
        done within ``timeout`` seconds. Events of one lane complete in order."""
        now = self.clock()
        q = self._lanes.get(lane)
        if q is None:  # lanes are never removed, so later calls need no lock: a deque's
            with self._lock:  # append and popleft are atomic
                q = self._lanes.setdefault(lane, deque())
        q.append(Work(event, now, now + timeout, timeout, what))

    def check(self) -> None:
        """Raise WatchdogError if the watchdog fired (once its abort is done, or after
        ``ABORT_WAIT`` seconds if ncclCommAbort itself hangs)."""
        if self._fired is not None:
            self._settled.wait(ABORT_WAIT)
            raise WatchdogError(self._fired)

    def wait(self, event: Event, sleep: Callable[[float], Any] = time.sleep) -> None:
        """Wait for ``event``; WatchdogError as soon as the watchdog fires (also when the abort
        is what completed the event: its results are garbage). The first ``SPIN`` seconds
        only yield (as a spinning CUDA sync would), then each sleep is a tenth of the time
        waited so far (at most 1 ms), so a wait costs at most ~10% more than the work."""
        __tracebackhide__ = True
        start = -1.0
        while not event.done:
            if not self.running:  # no thread (or it died): look ourselves
                self.poll()
            self.check()
            now = time.perf_counter()
            if start < 0:
                start = now
            waited = now - start
            sleep(0.0 if waited < SPIN else min(waited * 0.1, 1e-3))
        self.check()  # fired before the abort ended the work: the event is done, not valid

    def in_flight(self) -> int:
        """How many tracked calls are not known to be finished."""
        with self._lock:
            return sum(len(q) for q in self._lanes.values())

    # -- the thread ------------------------------------------------------------------------------
    def _start(self) -> None:
        _register_atexit()
        _LIVE.add(self)
        self._stop = stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(stop,), name=f"trtdsl-nccl-watchdog-r{self.rank}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it wakes at once); tracking and the fired state stay."""
        self._stop.set()

    def _run(self, stop: threading.Event) -> None:
        try:
            if self._setup is not None:
                self._setup()
        except Exception as e:  # noqa: BLE001 - watch anyway (queries may still work)
            self._report(f"[trtdsl] rank {self.rank}: NCCL watchdog set-up: {e}\n")
        while not stop.wait(self.interval):
            try:
                if self.poll():
                    return
            except Exception as e:  # noqa: BLE001 - a broken watchdog must say so, not spin
                self._report(
                    f"[trtdsl] rank {self.rank}: the NCCL watchdog stopped: "
                    f"{type(e).__name__}: {e}\n"
                )
                return

    def poll(self) -> bool:
        """One look (the thread calls this every ``interval``): drop finished work, then fire
        on a passed deadline, an NCCL error or a peer's failure notice. True once fired."""
        if self._fired is not None:
            return True
        now = self.clock()
        with self._lock:
            heads, broken = self._advance()
            comms = {id(c): c for cs in self._owners.values() for c in cs}.values()
        if broken is not None:
            work, err = broken
            return self._fire(
                f"rank {self.rank}: CUDA error while {work.what} were in flight: "
                f"{type(err).__name__}: {err}; NCCL communicators aborted"
            )
        overdue = [w for w in heads if now > w.deadline]
        if overdue:
            w = min(overdue, key=lambda w: w.deadline)
            return self._fire(
                f"rank {self.rank}: {w.what} did not complete within {w.timeout:g} s (a peer "
                "rank may have died, stalled or run a different network); NCCL communicators "
                "aborted"
            )
        for comm in comms:
            err = comm.async_error()
            if err:
                during = f" while {heads[0].what} were in flight" if heads else ""
                return self._fire(
                    f"rank {self.rank}: NCCL reported an asynchronous error{during}: {err}; "
                    "NCCL communicators aborted"
                )
        if heads and self._peek is not None:
            oldest = min(heads, key=lambda w: w.start)
            if now - oldest.start >= self.notice_grace:
                src = self._peek()
                if src is not None:
                    return self._fire(
                        f"rank {self.rank}: rank {src} sent a failure notice while "
                        f"{oldest.what} were in flight (for {now - oldest.start:.1f} s); NCCL "
                        "communicators aborted"
                    )
        return False

    def _advance(self) -> tuple[list[Work], tuple[Work, BaseException] | None]:
        """Drop finished work (under the lock); the oldest unfinished call of each lane, and
        the first event whose query failed (a CUDA error), if any."""
        heads: list[Work] = []
        for lane in list(self._lanes):
            q = self._lanes[lane]
            try:
                while q and q[0].event.done:
                    q.popleft()
            except Exception as e:  # noqa: BLE001 - cudaEventQuery failed: the GPU is broken
                return heads, (q[0], e)
            if q:
                heads.append(q[0])
        return heads, None

    def _fire(self, reason: str) -> bool:
        with self._lock:
            if self._fired is not None:
                return True
            self._fired = reason  # first: a waiter that sees its event done checks this next
        self._report(f"\n[trtdsl] NCCL watchdog: {reason}\n")
        world = self._world()
        if world is not None:
            try:
                world.abort_communicators()
            except Exception as e:  # noqa: BLE001 - reported; the reason stands
                self._report(f"[trtdsl] rank {self.rank}: aborting NCCL failed: {e}\n")
        if self._notify is not None:
            try:
                self._notify(reason)
            except Exception as e:  # noqa: BLE001 - the abort hook still ends the job
                self._report(f"[trtdsl] rank {self.rank}: failure notice not sent: {e}\n")
        self._settled.set()
        self._stop.set()
        return True


# -- one watchdog per NCCL world -------------------------------------------------------------
_BY_WORLD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BY_WORLD_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[Watchdog] = weakref.WeakSet()
_ATEXIT = False


def watchdog_for(world: AbortableWorld) -> Watchdog:
    """The world's watchdog (made on first use; MPI failure notices where they are safe)."""
    with _BY_WORLD_LOCK:
        dog = _BY_WORLD.get(world)
        if dog is None:
            peek, notify = mpi_notices(world)
            setup = _use_device(world)
            dog = _BY_WORLD[world] = Watchdog(world, peek=peek, notify=notify, setup=setup)
        return dog


def _use_device(world: Any) -> Callable[[], Any] | None:
    """Select the world's CUDA device (``NcclWorld.device``) in the calling thread."""
    device = getattr(world, "device", None)
    if not isinstance(device, int):
        return None

    def use() -> None:
        from .device import cupy_module

        cupy_module().cuda.Device(device).use()

    return use


def session_watchdog(
    network: Any, comms: Sequence[ErrorSource], timeout: float | None
) -> Watchdog | None:
    """The watchdog a cupy session uses, or None where none is needed: ``timeout`` None, a
    world of one rank, no multi-rank collective (``comms`` empty)."""
    world = network.world
    if timeout is None or world is None or world.size == 1 or not comms:
        return None
    return watchdog_for(world)


def _register_atexit() -> None:
    """Stop every thread before interpreter exit (registered after mpi4py's MPI_Finalize
    hook, so it runs before it)."""
    global _ATEXIT
    if not _ATEXIT:
        _ATEXIT = True
        atexit.register(stop_all)


def stop_all() -> None:
    """Stop every watchdog thread of this process."""
    for dog in list(_LIVE):
        dog.stop()
