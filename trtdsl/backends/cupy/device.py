"""CuPy, imported on first use with a clear error where it is missing."""

from __future__ import annotations

from typing import Any

from ...errors import ExecutionError


def cupy_module() -> Any:
    """``import cupy``, or ExecutionError saying how to install it."""
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ExecutionError(
            "the cupy backend needs CuPy and a CUDA GPU (pip install 'trtdsl[gpu]')"
        ) from e
    return cupy
