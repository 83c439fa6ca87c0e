"""Event timing shared by the GPU benchmarks (CuPy's events for our kernels, torch's for the
yardsticks): ``median_ms(fn, cupy_events, reps=20, warmup=3)``."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Events = Callable[[], tuple[Any, Any, Callable[[Any, Any], float]]]


def median_ms(
    fn: Callable[[], Any], events: Events, reps: int, warmup: int, inner: int = 1, per: int = 1
) -> float:
    """Median over ``reps`` of ``inner`` back-to-back calls of ``fn`` timed by two events, in
    milliseconds per call of the timed work (``fn`` does ``per`` calls: a graph of several),
    after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end, elapsed = events()
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(elapsed(start, end) / (inner * per))
    return statistics.median(times)


def cupy_events() -> tuple[Any, Any, Callable[[Any, Any], float]]:
    import cupy as cp

    return cp.cuda.Event(), cp.cuda.Event(), cp.cuda.get_elapsed_time


def torch_events() -> tuple[Any, Any, Callable[[Any, Any], float]]:
    import torch

    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    return a, b, lambda x, y: x.elapsed_time(y)
