"""Public entry point on CuPy arrays: an elementwise activation (relu, sigmoid, gelu_erf,
gelu_tanh, silu) in one Triton kernel that reads x once and writes y once, float32 math.

x of any shape (fp16, bf16 or fp32), seen as its ``n`` elements in C order; y has x's shape
and dtype. Launched on the caller's stream with no host synchronization, so it can be
captured in a CUDA graph.

>>> y = activation(x, "gelu_tanh")            # x: cupy [B, S, 4 * D] float16  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .attention import _contiguous_aligned, _cupy, _device_of
from .compile import CompiledKernel, compile_kernel
from .configs import ACT_BLOCK, ACT_DTYPES, ACT_KINDS, act_spec
from .errors import KernelArgumentError, KernelDTypeError, KernelShapeError
from .launch import launch
from .validate import dtype_name, effective_dtype

#: At most this many elements (the grid's x dimension holds 2**31 - 1 programs).
ACT_MAX_N = (2**31 - 1) * ACT_BLOCK
_compiled: dict[tuple[str, str, bool], CompiledKernel] = {}


@dataclass(frozen=True)
class ActProblem:
    """``n`` elements of ``dtype``; ``aligned``: n a multiple of 16 (vector loads)."""

    n: int
    dtype: str
    kind: str

    @property
    def aligned(self) -> bool:
        return self.n % 16 == 0


def check_activation(x: Any, kind: str, out: Any = None, as_dtype: str | None = None) -> ActProblem:
    """Validate ``activation``'s arguments; raises KernelArgumentError subclasses that name
    the shapes and dtypes."""
    if kind not in ACT_KINDS:
        raise KernelArgumentError(f"kind must be one of {ACT_KINDS}, got {kind!r}")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise KernelArgumentError(f"x must be an array, got {type(x).__name__}")
    dt = effective_dtype(x, as_dtype, ACT_DTYPES)
    if dt not in ACT_DTYPES:
        raise KernelDTypeError(f"x dtype {dt} (shape {tuple(x.shape)}) is not one of {ACT_DTYPES}")
    n = math.prod(x.shape)
    if n > ACT_MAX_N:
        raise KernelShapeError(f"x {tuple(x.shape)} has {n} elements; at most {ACT_MAX_N}")
    if out is not None:
        if not hasattr(out, "shape") or not hasattr(out, "dtype"):
            raise KernelArgumentError(f"out must be an array, got {type(out).__name__}")
        if tuple(out.shape) != tuple(x.shape) or dtype_name(out) != dtype_name(x):
            raise KernelShapeError(
                f"out {dtype_name(out)} {tuple(out.shape)} must have x's shape and dtype "
                f"({dtype_name(x)} {tuple(x.shape)})"
            )
    return ActProblem(n, dt, kind)


def _kernel(p: ActProblem) -> CompiledKernel:
    """The compiled variant for ``p`` (memoized in-process)."""
    key = (p.dtype, p.kind, p.aligned)
    if key not in _compiled:
        _compiled[key] = compile_kernel(act_spec(*key))
    return _compiled[key]


def activation(
    x: Any, kind: str, out: Any = None, stream: Any = None, as_dtype: str | None = None
) -> Any:
    """``act(x)`` elementwise, x's shape and dtype (written into ``out`` when given; it may be
    x itself). ``stream``: None (CuPy's current stream), a ``CUstream`` int, a CuPy stream or
    a ``cuda.core`` Stream. ``as_dtype`` ("bfloat16"/"float16") reads 16-bit arrays of another
    dtype (uint16 holding bf16 bits, for CuPy without bfloat16). An x that is not contiguous
    or 16-byte aligned is copied first; ``out`` must be both."""
    p = check_activation(x, kind, out, as_dtype)
    cp = _cupy()
    arrays = [x] if out is None else [x, out]
    for name, a in zip(("x", "out"), arrays):
        if not isinstance(a, cp.ndarray):
            raise KernelArgumentError(f"{name} must be a CuPy array, got {type(a).__name__}")
    if out is not None and not (out.flags.c_contiguous and out.data.ptr % 16 == 0):
        raise KernelArgumentError(
            f"out {tuple(out.shape)} must be C-contiguous and 16-byte aligned (strides "
            f"{out.strides}, address {out.data.ptr:#x})"
        )
    dev = _device_of(*arrays)
    with cp.cuda.Device(dev):
        xc = _contiguous_aligned(x, cp)
        y = cp.empty(x.shape, dtype=x.dtype) if out is None else out
        if p.n == 0:
            return y
        args = [np.uint64(xc.data.ptr), np.uint64(y.data.ptr), np.int64(p.n)]
        launch(_kernel(p), (math.ceil(p.n / ACT_BLOCK), 1, 1), args, device=dev, stream=stream)
    return y
