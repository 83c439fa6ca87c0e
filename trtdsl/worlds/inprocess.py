"""``InProcessWorld``: N simulated ranks as threads of one process (a launcher of
:class:`ThreadWorld` ranks); a rank that fails stops the others at their next exchange."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import CollectiveMismatchError, RankFailedError
from .base import World, check_world_args


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


class ThreadWorld(World):
    """One rank of an :class:`InProcessWorld` run (a thread); exchanges go through the hub."""

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
        check_world_args("InProcessWorld", size, 0, timeout)
        self.size, self.timeout = int(size), float(timeout)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        hub = _Hub(self.size, self.timeout)
        results: list[Any] = [None] * self.size

        def target(rank: int) -> None:
            try:
                results[rank] = fn(ThreadWorld(hub, rank), *args, **kwargs)
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
