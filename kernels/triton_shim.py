"""Triton's ``jit`` and ``triton.language`` for the kernel sources, or stand-ins where Triton is
not installed (the sources still import; the decorator is then the identity), so the package
imports on machines without Triton and only ``compile.py`` needs it."""

from __future__ import annotations

from typing import Any

try:
    import triton
    import triton.language as tl

    jit: Any = triton.jit
except ImportError:  # pragma: no cover - exercised where triton is absent
    tl = None

    def jit(fn: Any) -> Any:
        return fn


__all__ = ["jit", "tl"]
