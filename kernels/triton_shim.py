"""Triton's ``jit`` and ``triton.language`` (and Gluon's ``jit``, ``constexpr_function``,
language and Hopper module) for the kernel sources, or stand-ins where Triton is not installed
(the sources still import; the decorators are then the identity), so the package imports on
machines without Triton and only ``compile.py`` needs it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

try:
    import triton
    import triton.language as tl

    jit: Any = triton.jit
except ImportError:  # pragma: no cover - exercised where triton is absent
    tl = None

    def jit(fn: Any) -> Any:
        return fn


try:
    from triton.experimental import gluon as _gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia import hopper

    gluon_jit: Any = _gluon.jit
    constexpr_function: Any = _gluon.constexpr_function
except ImportError:  # pragma: no cover - exercised where triton is absent
    gl = SimpleNamespace(constexpr=lambda value: value)
    hopper = SimpleNamespace(
        fence_async_shared=None, mbarrier=None, tma=None, warpgroup_mma=None,
        warpgroup_mma_wait=None,
    )  # fmt: skip
    gluon_jit = constexpr_function = jit


__all__ = ["constexpr_function", "gl", "gluon_jit", "hopper", "jit", "tl"]
