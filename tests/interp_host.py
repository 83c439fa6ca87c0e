"""Host stand-ins for the kernel tests that launch through Triton's CPU interpreter behind a
fake CuPy (norm, activation): the fake ``cupy`` module and its arrays, and what the interpreter
needs of a kernel argument that points at host memory."""

from __future__ import annotations

import sys
import types
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import numpy as np


class RawPointer:
    """A raw host address with a Triton dtype: the interpreter reads and writes the memory at
    ``data_ptr()`` in place (its storage is itself; copies to and from a "device" do nothing)."""

    def __init__(self, ptr: int, dtype: Any) -> None:
        self.ptr, self.dtype = ptr, dtype

    def data_ptr(self) -> int:
        return self.ptr

    def untyped_storage(self) -> RawPointer:
        return self

    def cpu(self) -> RawPointer:
        return self

    def copy_(self, other: Any) -> None:
        pass

    def new_empty(self, *a: Any, **k: Any) -> RawPointer:
        return self

    def set_(self, *a: Any) -> RawPointer:
        return self

    def storage_offset(self) -> int:
        return 0

    def size(self) -> tuple[int, ...]:
        return (1,)

    def stride(self) -> tuple[int, ...]:
        return (1,)


class DevArray(np.ndarray):
    """A host array posing as a CuPy one: ``.data.ptr`` and ``.device.id`` only."""

    @property
    def data(self):  # type: ignore[override]
        return SimpleNamespace(ptr=self.ctypes.data)

    @property
    def device(self) -> SimpleNamespace:
        return SimpleNamespace(id=0)


def dev(a: np.ndarray) -> DevArray:
    """A C-contiguous copy of ``a`` as a :class:`DevArray` (0-d stays 0-d)."""
    return np.array(a, order="C").view(DevArray)


def poisoned_empty(shape: tuple, dtype: Any) -> DevArray:
    """``cupy.empty`` that fills with all-ones bits (NaN for floats), so unwritten is visible."""
    a = np.empty(shape, dtype)
    a.reshape(-1).view(np.uint8).fill(0xFF)
    return a.view(DevArray)


def install_fake_cupy() -> types.ModuleType:
    """Put a stand-in ``cupy`` in ``sys.modules``: what the kernels' entry points use
    (``ndarray``, ``empty``, ``array``, ``cuda.Device``), nothing else."""
    cp = types.ModuleType("cupy")
    cp.ndarray = DevArray
    cp.empty = poisoned_empty
    cp.array = lambda a, order, copy: np.array(a, order=order, copy=copy).view(DevArray)
    cp.cuda = SimpleNamespace(Device=lambda i: nullcontext())
    sys.modules["cupy"] = cp
    return cp
