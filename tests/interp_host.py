"""What Triton's CPU interpreter needs of a kernel argument that points at host memory, for the
kernel tests that launch through the interpreter behind a CuPy stand-in (norm, activation)."""

from __future__ import annotations

from typing import Any


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
