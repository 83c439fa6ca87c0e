"""Rank worlds: who the ranks are and how the NumPy backend exchanges data between them.

- :class:`StaticWorld` - size and rank only, for defining and lowering networks.
- :class:`InProcessWorld` - N simulated ranks as threads of one process (fast tests).
- :class:`MPIWorld` - one rank per process under ``mpiexec -n N`` (mpi4py).

No rank ever waits forever: a rank that fails aborts the others, and a rank that waits longer
than ``timeout`` seconds for the others reports where it waited and ends the whole run.

>>> import trtdsl as td
>>> def per_rank(world):
...     net = td.Network("ar", world=world)
...     net.output(net.input("x", (2,)).all_reduce("sum"), "y")
...     return net.run({"x": __import__("numpy").full(2, world.rank + 1.0, "float32")})["y"]
>>> td.InProcessWorld(3).run(per_rank)[0].tolist()
[6.0, 6.0]
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import CollectiveMismatchError, ExecutionError, RankFailedError

#: A collective fingerprint entry as exchanged: (layer name, source line, fingerprint tuple).
Entry = tuple


def _describe(fp: tuple | None) -> str:
    if fp is None:
        return "no collective (its sequence already ended)"
    op, reduce, root, partition, dtype, shape = fp
    args = [a for a in (reduce, None if root is None else f"root={root}") if a]
    shown = "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"
    groups = "" if len(partition) == 1 else f" groups={[list(g) for g in partition]}"
    return f"{op}({', '.join(args)}) of {shown} {dtype}{groups}"


def first_mismatch(per_rank: list[list[Entry]]) -> str | None:
    """Compare every rank's collective sequence; a message naming the first differing
    collective and which ranks hold what, or None if they agree.

    Ranks must agree on (op, reduce, root, groups) everywhere, and on dtype and shape with the
    members of their own group.
    """
    length = max((len(s) for s in per_rank), default=0)
    for k in range(length):
        entries = [s[k] if k < len(s) else None for s in per_rank]
        fps = [e[2] if e is not None else None for e in entries]
        structure = [None if fp is None else fp[:4] for fp in fps]
        differ = len(set(structure)) > 1
        if not differ and fps[0] is not None:
            for group in fps[0][3]:
                if len({fps[r] for r in group}) > 1:
                    differ = True
                    break
        if differ:
            by_value: dict[Any, list[int]] = {}
            for r, fp in enumerate(fps):
                by_value.setdefault(fp, []).append(r)
            lines = []
            for fp, ranks in by_value.items():
                e = entries[ranks[0]]
                where = f" (layer '{e[0]}' at {e[1]})" if e is not None else ""
                lines.append(f"  ranks {ranks}: {_describe(fp)}{where}")
            return f"ranks disagree on collective #{k}:\n" + "\n".join(lines)
    return None


class World:
    """Base class: ``size``, ``rank`` and ``exchange`` (an all-gather of Python objects)."""

    size: int
    rank: int

    def exchange(self, obj: Any, what: str) -> list[Any]:
        """Every rank's ``obj``, in rank order. ``what`` names the step for error reports."""
        raise NotImplementedError

    def agree(self, entries: list[Entry]) -> None:
        """Raise CollectiveMismatchError on every rank unless all ranks hold the same
        collective sequence. Called by ``Network.run`` before any work."""
        if self.size == 1:
            return
        per_rank = self.exchange(entries, "collective fingerprint check")
        msg = first_mismatch(per_rank)
        if msg:
            raise CollectiveMismatchError(f"rank {self.rank}: {msg}")

    def collective(self, layer: Any, x: np.ndarray) -> np.ndarray:
        """Run one collective layer (NumPy semantics) by exchanging every rank's input."""
        from .ops.collective import COLLECTIVE, simulate

        spec = layer.attrs["spec"]
        entry = (layer.name, str(layer.where), COLLECTIVE.fingerprint(layer, x.shape))
        gathered = self.exchange((entry, np.asarray(x)), f"collective '{layer.name}'")
        msg = first_mismatch([[g[0]] for g in gathered])
        if msg:
            raise CollectiveMismatchError(f"rank {self.rank}: {msg}")
        outs = simulate(spec, [gathered[r][1] for r in spec.group])
        return outs[spec.group.index(self.rank)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, rank={self.rank})"


class StaticWorld(World):
    """A world of known size and rank that cannot communicate: define and lower networks."""

    def __init__(self, size: int, rank: int = 0) -> None:
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"need size >= 1 and 0 <= rank < size, got size={size} rank={rank}")
        self.size, self.rank = size, rank

    def exchange(self, obj: Any, what: str) -> list[Any]:
        if self.size == 1:
            return [obj]
        raise ExecutionError(
            f"StaticWorld(size={self.size}) cannot communicate ({what}); run with MPIWorld() "
            "under mpiexec or with InProcessWorld"
        )


class _Hub:
    """Shared state of an InProcessWorld run: one slot per rank and a breakable barrier."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size, self.timeout = size, timeout
        self.slots: list[Any] = [None] * size
        self.barrier = threading.Barrier(size)
        self.failures: dict[int, BaseException] = {}
        self.lock = threading.Lock()

    def fail(self, rank: int, exc: BaseException) -> None:
        with self.lock:
            self.failures.setdefault(rank, exc)
        self.barrier.abort()

    def wait(self, rank: int, what: str) -> None:
        try:
            self.barrier.wait(self.timeout)
        except threading.BrokenBarrierError:
            with self.lock:
                failed = {r: e for r, e in self.failures.items() if r != rank}
            if failed:
                r, e = min(failed.items())
                raise RankFailedError(
                    f"rank {rank} stopped at {what}: rank {r} failed with {type(e).__name__}: {e}"
                ) from None
            raise RankFailedError(
                f"rank {rank} waited more than {self.timeout} s at {what}: another rank did "
                "not get there (it hangs, or runs a different sequence of collectives)"
            ) from None

    def exchange(self, rank: int, obj: Any, what: str) -> list[Any]:
        self.slots[rank] = obj
        self.wait(rank, what)
        out = list(self.slots)
        self.wait(rank, what)
        return out


class _ThreadRank(World):
    def __init__(self, hub: _Hub, rank: int) -> None:
        self._hub, self.size, self.rank = hub, hub.size, rank

    def exchange(self, obj: Any, what: str) -> list[Any]:
        return self._hub.exchange(self.rank, obj, what)


class InProcessWorld:
    """N simulated ranks, each a thread running the same function with its own World.

    ``run(fn)`` calls ``fn(world)`` once per rank and returns the results in rank order. If any
    rank raises, the others stop at their next exchange and ``run`` re-raises the first
    failure, noting its rank.
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

        threads = [
            threading.Thread(target=target, args=(r,), name=f"trtdsl-rank-{r}", daemon=True)
            for r in range(self.size)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.timeout * 4
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            alive = [r for r, t in enumerate(threads) if t.is_alive()]
            raise RankFailedError(f"ranks {alive} did not finish within {self.timeout * 4} s")
        if hub.failures:
            primary = {r: e for r, e in hub.failures.items() if not isinstance(e, RankFailedError)}
            rank, exc = min((primary or hub.failures).items())
            note = f"raised on rank {rank} of an InProcessWorld({self.size}) run"
            if hasattr(exc, "add_note"):
                exc.add_note(note)
            raise exc
        return results


class MPIWorld(World):
    """One rank per MPI process (mpi4py). Waits at most ``timeout`` seconds for the other
    ranks at each exchange; past that it prints where it waited and aborts the MPI job."""

    def __init__(self, comm: Any = None, timeout: float = 120.0) -> None:
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        self.timeout = timeout

    def wait_for_all(self, what: str) -> None:
        """A barrier that gives up after ``timeout`` seconds and aborts the job with a report."""
        req = self.comm.Ibarrier()
        deadline = time.monotonic() + self.timeout
        delay = 1e-5
        while not req.Test():
            if time.monotonic() > deadline:
                self.abort(
                    f"rank {self.rank} waited more than {self.timeout} s at {what}: another "
                    "rank did not get there (it failed, hangs, or runs a different sequence "
                    "of collectives)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def exchange(self, obj: Any, what: str) -> list[Any]:
        self.wait_for_all(what)
        tagged = self.comm.allgather((what, obj))
        tags = [t for t, _ in tagged]
        if len(set(tags)) > 1:
            lines = "; ".join(f"rank {r} at {t}" for r, t in enumerate(tags))
            raise CollectiveMismatchError(f"rank {self.rank}: ranks are out of step: {lines}")
        return [o for _, o in tagged]

    def abort(self, message: str, code: int = 1) -> None:
        """Print ``message`` and end every rank of the job."""
        sys.stderr.write(f"\n[trtdsl] FATAL on rank {self.rank}: {message}\n")
        sys.stderr.flush()
        self.comm.Abort(code)
