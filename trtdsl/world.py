"""Rank worlds: who the ranks are and how the NumPy backend exchanges data between them.

- :class:`StaticWorld` - size and rank only, for defining and lowering networks.
- :class:`InProcessWorld` - N simulated ranks as threads of one process (fast tests).
- :class:`MPIWorld` - one rank per process under ``mpiexec -n N`` (mpi4py).

No rank ever waits forever:

- before a network runs, the ranks exchange their collective fingerprints (op, reduce op, root,
  groups, dtype, shape of every collective, in order) and all raise
  :class:`~trtdsl.errors.CollectiveMismatchError` together if they differ (:func:`first_mismatch`
  names the first differing collective and which ranks hold what);
- in an :class:`InProcessWorld`, a rank that raises or returns early stops the ranks waiting for
  it (:class:`~trtdsl.errors.RankFailedError`), and a wait longer than ``timeout`` fails;
- in an :class:`MPIWorld`, an uncaught exception on one rank aborts the job with a report, a rank
  waiting for a collective stops when another rank sends a failure notice (the test helpers of
  :mod:`trtdsl.testing.mpi` do), and a wait longer than ``timeout`` prints where it waited and
  aborts the job.

>>> import trtdsl as td
>>> def per_rank(world):
...     net = td.Network("ar", world=world)
...     net.output(net.input("x", (2,)).all_reduce("sum"), "y")
...     return net.run({"x": __import__("numpy").full(2, world.rank + 1.0, "float32")})["y"]
>>> td.InProcessWorld(3).run(per_rank)[0].tolist()
[6.0, 6.0]
"""

from __future__ import annotations

import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import CollectiveMismatchError, ExecutionError, RankFailedError

#: A collective fingerprint entry as exchanged: (layer name, source line, fingerprint tuple),
#: the fingerprint being ``(op, reduce, root, partition, dtype name, shape)``.
Entry = tuple


def _describe(fp: tuple | None) -> str:
    if fp is None:
        return "no collective (its sequence already ended)"
    op, reduce, root, partition, dtype, shape = fp
    args = [a for a in (reduce, None if root is None else f"root={root}") if a]
    shown = "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"
    groups = "" if len(partition) == 1 else f" groups={[list(g) for g in partition]}"
    return f"{op}({', '.join(args)}) of {shown} {dtype}{groups}"


def _differ(fps: list[tuple | None]) -> bool:
    """True unless every rank holds the same (op, reduce, root, partition) and every group's
    members hold the same dtype and shape."""
    structure = {None if fp is None else fp[:4] for fp in fps}
    if len(structure) > 1 or None in structure:
        return len(structure) > 1
    for group in fps[0][3]:
        if any(not 0 <= r < len(fps) for r in group):
            return True  # the partition names ranks that did not report
        if len({fps[r] for r in group}) > 1:
            return True
    return False


def _report(entries: list[Entry | None]) -> str:
    by_value: dict[Any, list[int]] = {}
    for r, e in enumerate(entries):
        by_value.setdefault(None if e is None else e[2], []).append(r)
    lines = []
    for fp, ranks in by_value.items():
        e = entries[ranks[0]]
        where = f" (layer '{e[0]}' at {e[1]})" if e is not None else ""
        who = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks}"
        lines.append(f"  {who}: {_describe(fp)}{where}")
    return "\n".join(lines)


def first_mismatch(per_rank: Sequence[Sequence[Entry]]) -> str | None:
    """Compare every rank's collective sequence; a message naming the first differing
    collective and which ranks hold what, or None if they agree.

    Ranks must agree on (op, reduce, root, groups) everywhere, and on dtype and shape with the
    members of their own group (different groups may move different shapes). A rank whose
    sequence is shorter is reported as holding "no collective" at that position.

    >>> fp = ("all_reduce", "sum", None, ((0, 1),), "float32", (4,))
    >>> print(first_mismatch([[("a", "f.py:1", fp)], []]))
    ranks disagree on collective #0:
      rank 0: all_reduce(sum) of (4) float32 (layer 'a' at f.py:1)
      rank 1: no collective (its sequence already ended)
    """
    length = max((len(s) for s in per_rank), default=0)
    for k in range(length):
        entries = [s[k] if k < len(s) else None for s in per_rank]
        if _differ([None if e is None else e[2] for e in entries]):
            return f"ranks disagree on collective #{k}:\n" + _report(entries)
    return None


# -- reports that must be seen even while a test framework captures output ------------------
_REPORT_STREAM: Any = None


def set_report_stream(stream: Any) -> None:
    """Where fatal MPI reports go (default ``sys.stderr``). The pytest plugin points this at a
    duplicate of the real stderr, since pytest captures fd 2 while a test runs."""
    global _REPORT_STREAM
    _REPORT_STREAM = stream


def report_stream() -> Any:
    return sys.stderr if _REPORT_STREAM is None else _REPORT_STREAM


def emit(text: str) -> None:
    """Write a fatal report to :func:`report_stream` and flush it."""
    sys.stdout.flush()
    out = report_stream()
    out.write(text)
    out.flush()


# -- failure notices between MPI processes --------------------------------------------------
#: The point-to-point tag of failure notices on ``MPI.COMM_WORLD`` (apart from collectives).
NOTICE_TAG = 31293


class _Notices:
    """Failure notices: small point-to-point messages on ``COMM_WORLD`` with their own tag.

    A rank that fails while others may be waiting for it in a collective calls :meth:`send`;
    the waiting ranks see the notice (:meth:`poll`) and stop with RankFailedError instead of
    waiting for the timeout. A notice has a kind: ``"failed"`` (the sender failed but may still
    reach the next synchronisation point of the test helpers) or ``"left"`` (the sender has left
    the test altogether, so nobody should wait for it anywhere in that test).

    A rank that stopped waiting leaves its pending collective behind, so its world is *broken*
    (:func:`world_broken`): later exchanges refuse to start, and the test plugin ends the job
    after reporting. Counters let synchronisation points (:mod:`trtdsl.testing.mpi`) receive
    the notices nobody consumed, so none goes stale.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.consumed: dict[int, int] = {}
        self.requests: list[Any] = []
        self.broken: str | None = None

    @staticmethod
    def _comm() -> Any:
        from mpi4py import MPI

        return MPI.COMM_WORLD

    def send(self, message: str, kind: str = "failed") -> None:
        comm = self._comm()
        me, size = comm.Get_rank(), comm.Get_size()
        if size == 1:
            return
        for dest in range(size):
            if dest != me:
                self.requests.append(comm.isend((me, kind, message), dest=dest, tag=NOTICE_TAG))
        self.sent += 1
        self.requests = [q for q in self.requests if not q.Test()]

    def poll(self) -> tuple[int, str, str] | None:
        from mpi4py import MPI

        comm = self._comm()
        status = MPI.Status()
        if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=NOTICE_TAG, status=status):
            return None
        src = status.Get_source()
        sender, kind, message = comm.recv(source=src, tag=NOTICE_TAG)
        self.consumed[src] = self.consumed.get(src, 0) + 1
        return sender, kind, message

    def drain(self, sent_by: Sequence[int]) -> None:
        """Receive every notice not yet consumed, given how many each rank has sent so far."""
        comm = self._comm()
        me = comm.Get_rank()
        for src, n in enumerate(sent_by):
            while src != me and self.consumed.get(src, 0) < n:
                comm.recv(source=src, tag=NOTICE_TAG)
                self.consumed[src] = self.consumed.get(src, 0) + 1


NOTICES = _Notices()


def send_failure_notice(message: str, kind: str = "failed") -> None:
    """Tell every other MPI process that this one failed (``message`` completes "rank R ..."),
    so that ranks waiting for it in an :class:`MPIWorld` collective stop instead of timing
    out. ``kind="left"``: this rank has also left the test (see :class:`_Notices`)."""
    NOTICES.send(message, kind)


def world_broken() -> str | None:
    """Why this process's MPI collectives are out of step (a wait was abandoned), or None."""
    return NOTICES.broken


def mark_world_broken(reason: str) -> None:
    """Record that this process's MPI collectives are out of step; later exchanges refuse."""
    if NOTICES.broken is None:
        NOTICES.broken = reason


def wait_request(
    req: Any,
    timeout: float,
    what: str,
    rank: int,
    on_timeout: Callable[[str], Any],
    notices: bool | frozenset[str] = True,
) -> bool:
    """Wait for an MPI request; stop with RankFailedError when another rank sends a failure
    notice (of any kind if ``notices`` is True, of the kinds in it if a set); after ``timeout``
    seconds call ``on_timeout(message)`` and return False (if it returns). True once the
    request completed."""
    __tracebackhide__ = True
    start = time.monotonic()
    deadline = start + timeout
    delay = 0.0
    while not req.Test():
        if notices:
            peer = NOTICES.poll()
            if peer is not None and (notices is True or peer[1] in notices):
                src, _, message = peer
                text = f"rank {rank} stopped waiting at {what}: rank {src} {message}"
                mark_world_broken(text)
                raise RankFailedError(text)
        if time.monotonic() > deadline:
            on_timeout(
                f"rank {rank} waited more than {timeout:g} s at {what}: another rank did not "
                "get there (it failed, hangs, or runs a different sequence of collectives)"
            )
            return False
        # yield the CPU at once at first (ranks often share cores), back off to 2 ms later
        time.sleep(delay)
        if time.monotonic() - start > 0.002:
            delay = min(max(delay * 2, 1e-5), 0.002)
    return True


def timed_allgather(
    comm: Any,
    obj: Any,
    timeout: float,
    what: str,
    on_timeout: Callable[[str], Any],
    notices: bool | frozenset[str] = True,
) -> list[Any]:
    """Every rank's ``obj`` (pickled), by two non-blocking collectives (sizes, then bytes) that
    are polled, so the wait yields the CPU, stops on a failure notice (if ``notices``) and
    calls ``on_timeout`` after ``timeout`` seconds instead of blocking forever."""
    __tracebackhide__ = True
    from mpi4py import MPI

    data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    size, rank = comm.Get_size(), comm.Get_rank()
    sizes = np.zeros(size, np.int64)
    req = comm.Iallgather(np.array([data.size], np.int64), sizes)
    if not wait_request(req, timeout, what, rank, on_timeout, notices):
        raise RankFailedError(f"rank {rank} gave up waiting at {what}")
    displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    buf = np.empty(int(sizes.sum()), np.uint8)
    req = comm.Iallgatherv(data, [buf, sizes.tolist(), displs.tolist(), MPI.BYTE])
    # everyone is past the first step: the second completes, notices are not for it
    if not wait_request(req, timeout, what, rank, on_timeout, notices=False):
        raise RankFailedError(f"rank {rank} gave up waiting at {what}")
    return [pickle.loads(buf[d : d + n].tobytes()) for d, n in zip(displs, sizes)]


# -- worlds --------------------------------------------------------------------------------
class World:
    """Base class: ``size``, ``rank`` and ``exchange`` (an all-gather of Python objects)."""

    size: int
    rank: int

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        """Every rank's ``obj``, in rank order. ``what`` names the step for error reports;
        ranks must be at the same ``key`` (default: ``what``) or they all fail."""
        raise NotImplementedError

    def agree(self, entries: Sequence[Entry], what: str = "running the network") -> None:
        """Raise CollectiveMismatchError on every rank unless all ranks hold the same
        collective sequence (see :func:`first_mismatch`). Called by ``Network.run`` before
        any work, so mismatched ranks fail together instead of hanging."""
        __tracebackhide__ = True
        if self.size == 1:
            return
        per_rank = self.exchange(list(entries), f"collective check before {what}", key="agree")
        msg = first_mismatch(per_rank)
        if msg:
            raise CollectiveMismatchError(f"rank {self.rank}, before {what}: {msg}")

    def collective(self, layer: Any, x: np.ndarray) -> np.ndarray:
        """Run one collective layer (NumPy semantics) by exchanging every rank's input."""
        from .ops.collective import simulate

        spec = layer.attrs["spec"]
        x = np.asarray(x)
        inputs = agree_on_collective(self, layer, x.shape, payload=x)
        outs = simulate(spec, [inputs[r] for r in spec.group])
        return outs[spec.group.index(self.rank)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, rank={self.rank})"


def agree_on_collective(world: World, layer: Any, shape: tuple, payload: Any = None) -> list[Any]:
    """Exchange this rank's fingerprint of collective ``layer`` (with its run-time input
    ``shape``) and ``payload``; every rank raises alike if the ranks disagree or a split does not
    divide. Returns every rank's payload, in rank order."""
    from .ops.collective import COLLECTIVE

    entry = (layer.name, str(layer.where), COLLECTIVE.fingerprint(layer, tuple(shape)))
    gathered = world.exchange((entry, payload), f"collective '{layer.name}'", key="collective")
    entries = [g[0] for g in gathered]
    if _differ([e[2] for e in entries]):
        raise CollectiveMismatchError(
            f"rank {world.rank}: ranks disagree at run time on collective '{layer.name}' "
            f"(defined at {layer.where}):\n" + _report(entries)
        )
    check_split(layer.attrs["spec"], [e[2][5] for e in entries], layer)
    return [g[1] for g in gathered]


def check_split(spec: Any, shapes: Sequence[tuple], layer: Any) -> None:
    """Run-time check (all ranks alike) that a splitting collective's axis 0 divides by the
    group size in every group; dynamic dimensions are only known now."""
    from .ops.collective import SPLITTING

    if spec.op not in SPLITTING:
        return
    bad = [(list(g), shapes[g[0]][0]) for g in spec.partition if shapes[g[0]][0] % len(g) != 0]
    if bad:
        detail = "; ".join(f"group {g}: axis 0 is {d}" for g, d in bad)
        raise ExecutionError(
            f"layer '{layer.name}' (defined at {layer.where}): {spec.op} splits axis 0 into "
            f"group-size chunks, but at run time {detail} (not divisible)"
        )


class StaticWorld(World):
    """A world of known size and rank that cannot communicate: define and lower networks."""

    def __init__(self, size: int, rank: int = 0) -> None:
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"need size >= 1 and 0 <= rank < size, got size={size} rank={rank}")
        self.size, self.rank = size, rank

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        if self.size == 1:
            return [obj]
        raise ExecutionError(
            f"StaticWorld(size={self.size}) cannot communicate ({what}); run with MPIWorld() "
            "under mpiexec or with InProcessWorld"
        )


class _Hub:
    """Shared state of an InProcessWorld run: one slot per rank and a barrier that fails as
    soon as a rank has failed or returned (it can then never be complete)."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size, self.timeout = size, timeout
        self.slots: list[Any] = [None] * size
        self.keys: list[Any] = [None] * size
        self.cond = threading.Condition()
        self.count = 0
        self.generation = 0
        self.waiting: dict[int, str] = {}
        self.failures: dict[int, BaseException] = {}
        self.returned: set[int] = set()

    def fail(self, rank: int, exc: BaseException) -> None:
        with self.cond:
            self.failures.setdefault(rank, exc)
            self.cond.notify_all()

    def finish(self, rank: int) -> None:
        with self.cond:
            self.returned.add(rank)
            self.cond.notify_all()

    def _stop(self, rank: int, what: str) -> RankFailedError | None:
        failed = {r: e for r, e in self.failures.items() if r != rank}
        if failed:
            primary = {r: e for r, e in failed.items() if not isinstance(e, RankFailedError)}
            r, e = min((primary or failed).items())
            return RankFailedError(
                f"rank {rank} stopped at {what}: rank {r} failed with {type(e).__name__}: {e}"
            )
        if self.returned:
            done = sorted(self.returned)
            return RankFailedError(
                f"rank {rank} waits at {what}, but rank{'s' if len(done) > 1 else ''} "
                f"{done[0] if len(done) == 1 else done} already returned: the ranks ran "
                "different numbers of exchanges (collectives or network runs)"
            )
        return None

    def wait(self, rank: int, what: str) -> None:
        with self.cond:
            gen = self.generation
            self.count += 1
            if self.count == self.size:
                self.count = 0
                self.generation += 1
                self.waiting.clear()
                self.cond.notify_all()
                return
            self.waiting[rank] = what
            deadline = time.monotonic() + self.timeout
            while self.generation == gen:
                err = self._stop(rank, what)
                if err is None and time.monotonic() >= deadline:
                    absent = [r for r in range(self.size) if r not in self.waiting]
                    others = "; ".join(
                        f"rank {r} at {w}" for r, w in sorted(self.waiting.items()) if r != rank
                    )
                    who = f"rank {absent[0]}" if len(absent) == 1 else f"ranks {absent}"
                    err = RankFailedError(
                        f"rank {rank} waited more than {self.timeout:g} s at {what}: {who} "
                        "did not get there (hangs or runs a different sequence of collectives)"
                        + (f"; waiting: {others}" if others else "")
                    )
                if err is not None:
                    raise err
                self.cond.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))

    def exchange(self, rank: int, obj: Any, what: str, key: Any) -> list[Any]:
        self.slots[rank] = obj
        self.keys[rank] = (key, what)
        self.wait(rank, what)
        out, keys = list(self.slots), list(self.keys)
        self.wait(rank, what)
        if len({k for k, _ in keys}) > 1:
            lines = "; ".join(f"rank {r} at {w}" for r, (_, w) in enumerate(keys))
            raise CollectiveMismatchError(f"rank {rank}: ranks are out of step: {lines}")
        return out


class _ThreadRank(World):
    def __init__(self, hub: _Hub, rank: int) -> None:
        self._hub, self.size, self.rank = hub, hub.size, rank

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        return self._hub.exchange(self.rank, obj, what, what if key is None else key)


class InProcessWorld:
    """N simulated ranks, each a thread running the same function with its own World.

    ``run(fn)`` calls ``fn(world)`` once per rank and returns the results in rank order. If any
    rank raises, the others stop at their next exchange (RankFailedError) and ``run`` re-raises
    the first failure (the lowest rank's original exception, with a note naming its rank). A
    rank waiting longer than ``timeout`` seconds for the others fails, naming the ranks that
    did not arrive.
    """

    def __init__(self, size: int, timeout: float = 60.0) -> None:
        if size < 1:
            raise ValueError(f"world size must be >= 1, got {size}")
        self.size, self.timeout = size, timeout

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        hub = _Hub(self.size, self.timeout)
        results: list[Any] = [None] * self.size

        def target(rank: int) -> None:
            try:
                results[rank] = fn(_ThreadRank(hub, rank), *args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - reported after join
                hub.fail(rank, e)
            else:
                hub.finish(rank)

        threads = [
            threading.Thread(target=target, args=(r,), name=f"trtdsl-rank-{r}", daemon=True)
            for r in range(self.size)
        ]
        for t in threads:
            t.start()
        # wait for every rank; once one has failed, give the others ``timeout`` more seconds
        deadline = time.monotonic() + self.timeout * 4
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            if hub.failures:
                deadline = min(deadline, time.monotonic() + self.timeout)
            next(t for t in threads if t.is_alive()).join(0.05)
        alive = [r for r, t in enumerate(threads) if t.is_alive()]
        if hub.failures:
            primary = {r: e for r, e in hub.failures.items() if not isinstance(e, RankFailedError)}
            rank, exc = min((primary or hub.failures).items())
            note = f"raised on rank {rank} of an InProcessWorld({self.size}) run"
            if alive:
                note += f"; ranks {alive} were still running (stuck outside collectives)"
            if hasattr(exc, "add_note") and note not in getattr(exc, "__notes__", ()):
                exc.add_note(note)
            raise exc
        if alive:
            raise RankFailedError(
                f"ranks {alive} of an InProcessWorld({self.size}) run did not finish within "
                f"{self.timeout * 4:g} s (stuck outside collectives)"
            )
        return results


_HOOK_INSTALLED = False


def _install_abort_hook() -> None:
    """Make an uncaught exception on one MPI process print its traceback with the rank and
    abort the whole job, instead of leaving the other ranks waiting for it."""
    global _HOOK_INSTALLED
    if _HOOK_INSTALLED:
        return
    _HOOK_INSTALLED = True
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.Get_size() == 1 or issubclass(kind, (KeyboardInterrupt, SystemExit)):
            previous(kind, value, tb)
            return
        text = "".join(traceback.format_exception(kind, value, tb))
        emit(
            f"\n[trtdsl] rank {comm.Get_rank()} of {comm.Get_size()} raised an uncaught "
            f"exception; aborting the MPI job:\n{text}"
        )
        comm.Abort(1)

    sys.excepthook = hook


class MPIWorld(World):
    """One rank per MPI process (mpi4py).

    Every exchange waits at most ``timeout`` seconds for the other ranks; past that it prints
    where it waited and aborts the MPI job. It also stops early (RankFailedError) when another
    process sends a failure notice (:func:`send_failure_notice`). With ``abort_on_exception``
    (the default) an uncaught exception on any rank prints its traceback with the rank number
    and aborts the job (``sys.excepthook``), so the other ranks never wait for a dead one.
    """

    def __init__(
        self, comm: Any = None, timeout: float = 120.0, abort_on_exception: bool = True
    ) -> None:
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        self.timeout = timeout
        if abort_on_exception:
            _install_abort_hook()

    def wait_for_all(self, what: str) -> None:
        """A barrier that stops on a failure notice and aborts the job after ``timeout``."""
        __tracebackhide__ = True
        wait_request(self.comm.Ibarrier(), self.timeout, what, self.rank, self.abort)

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        __tracebackhide__ = True
        broken = world_broken()
        if broken:
            raise RankFailedError(
                f"rank {self.rank} cannot start {what}: this process's MPI collectives are out "
                f"of step after an earlier failure ({broken})"
            )
        tagged = timed_allgather(
            self.comm, ((what if key is None else key), what, obj), self.timeout, what, self.abort
        )
        if len({k for k, _, _ in tagged}) > 1:
            lines = "; ".join(f"rank {r} at {w}" for r, (_, w, _) in enumerate(tagged))
            raise CollectiveMismatchError(f"rank {self.rank}: ranks are out of step: {lines}")
        return [o for _, _, o in tagged]

    def abort(self, message: str, code: int = 1) -> None:
        """Print ``message`` and end every rank of the job."""
        emit(f"\n[trtdsl] FATAL on rank {self.rank}: {message}\n")
        self.comm.Abort(code)
