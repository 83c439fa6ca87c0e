#!/usr/bin/env python3
# ruff: noqa: B023 - each closure is used within the loop iteration that makes it
"""What the NCCL watchdog costs a call, on one GPU: ``python3 gpu/profile_watchdog.py``.

Times (mean us over 20000 calls) what a watched session adds per call: reading the current
stream, re-recording a pooled CUDA event, ``Watchdog.track``, and the three together, with the
watchdog's thread running (polling every 10 ms) and not; plus an empty CUDA launch for scale.
"""

from __future__ import annotations

import sys
import time

from trtdsl.backends.cupy.watchdog import Watchdog


class _World:
    rank = 0

    def abort_communicators(self) -> int:
        return 0


class _Comm:
    def async_error(self) -> None:
        return None


def per_call(fn, n: int = 20000) -> float:
    for _ in range(200):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> int:
    import cupy as cp

    stream = cp.cuda.get_current_stream()
    pool = [cp.cuda.Event(block=False, disable_timing=True) for _ in range(64)]
    x = cp.ones(256, cp.float32)
    world = _World()
    rows = []
    for threaded in (False, True):
        dog = Watchdog(world, thread=threaded)
        owner = object()
        dog.attach(owner, [_Comm()])
        state = {"i": 0}

        def record() -> None:
            i = state["i"]
            state["i"] = (i + 1) % 64
            pool[i].record(stream)

        def track() -> None:
            dog.track(stream.ptr, pool[0], 600.0, "work")

        def watched() -> None:
            s = cp.cuda.get_current_stream()
            i = state["i"]
            state["i"] = (i + 1) % 64
            ev = pool[i]
            ev.record(s)
            dog.track(s.ptr, ev, 600.0, "work")

        cases = {
            "get_current_stream": cp.cuda.get_current_stream,
            "event.record": record,
            "Watchdog.track": track,
            "all three": watched,
            "x += 1 (a launch)": lambda: x.__iadd__(1),
        }
        for name, fn in cases.items():
            t = per_call(fn)
            stream.synchronize()
            if not threaded:
                dog.poll()  # drop what finished (no thread to do it)
            rows.append((threaded, name, t))
        dog.detach(owner)
        dog.stop()
    print(f"{'thread':>7} {'what':>22} {'us/call':>8}")
    for threaded, name, t in rows:
        print(f"{str(threaded):>7} {name:>22} {t:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
