"""Errors of the kernels package (argument errors are ValueErrors)."""

from __future__ import annotations


class KernelArgumentError(ValueError):
    """Arguments the kernels cannot take; the message names the shapes and dtypes."""


class KernelDTypeError(KernelArgumentError):
    """An unsupported or inconsistent dtype."""


class KernelShapeError(KernelArgumentError):
    """Shapes that do not fit together, or an unsupported head_dim."""


class KernelCompileError(RuntimeError):
    """Triton is missing, compilation failed, or a cache entry is unusable."""


class KernelLaunchError(RuntimeError):
    """cuda.core or CuPy is missing, or the driver refused a load or launch."""
