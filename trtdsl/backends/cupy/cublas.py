"""Matrix products that a CUDA graph can capture: cuBLAS called through ctypes.

CuPy refuses every cuBLAS call while a stream is capturing ("calling cuBLAS API during stream
capture is currently unsupported"), though cuBLAS itself supports capture when its stream and
workspace are set beforehand. A session compiled with ``cuda_graph=True`` therefore runs its
matrix products through :class:`CapturableGemm`: one cuBLAS handle bound to the session's stream
with a workspace of its own, and ``cublasGemmStridedBatchedEx`` with float32 accumulation (as
CuPy's ``matmul`` does; no TF32).

Layout: ``a [..., m, k] @ b [..., k, n] -> [..., m, n]`` with NumPy batch broadcasting; row-major
C = A B is computed as column-major C^T = B^T A^T.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from ...errors import ExecutionError

# cublas_api.h / library_types.h
_OP_N = 0
_R_16F, _R_32F, _R_16BF = 2, 0, 14
_COMPUTE_32F = 68
_GEMM_DEFAULT = -1
_CUDA_TYPES = {"float16": _R_16F, "float32": _R_32F, "bfloat16": _R_16BF}
WORKSPACE_BYTES = 32 * 2**20

_LIB: Any = None


def _library() -> Any:
    global _LIB
    if _LIB is None:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        lib = ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)
        vp, i, ll = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
        lib.cublasSetStream_v2.argtypes = [vp, vp]
        lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
        lib.cublasDestroy_v2.argtypes = [vp]
        lib.cublasGemmStridedBatchedEx.argtypes = [
            vp, i, i, i, i, i, vp, vp, i, i, ll, vp, i, i, ll, vp, vp, i, i, ll, i, i, i,
        ]  # fmt: skip
        _LIB = lib
    return _LIB


def _check(status: int, what: str) -> None:
    if status != 0:
        raise ExecutionError(f"cuBLAS {what} failed with status {status}")


class CapturableGemm:
    """cuBLAS bound to one stream (set once, before any capture) with its own workspace."""

    def __init__(self, cp: Any, stream: Any) -> None:
        self.cp, self.stream = cp, stream
        self.lib = _library()
        self.handle = ctypes.c_void_p()
        _check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "create")
        self.workspace = cp.empty(WORKSPACE_BYTES, dtype=cp.uint8)
        _check(self.lib.cublasSetStream_v2(self.handle, stream.ptr), "set stream")
        _check(
            self.lib.cublasSetWorkspace_v2(self.handle, self.workspace.data.ptr, WORKSPACE_BYTES),
            "set workspace",
        )
        self.kept: list[Any] = []
        self._one = ctypes.c_float(1.0)
        self._zero = ctypes.c_float(0.0)

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` of 16/32-bit floats of one dtype, on the bound stream."""
        cp = self.cp
        dtype = str(a.dtype)
        if dtype not in _CUDA_TYPES or b.dtype != a.dtype:
            return None  # the caller falls back to CuPy (outside a capture)
        vec_a, vec_b = a.ndim == 1, b.ndim == 1
        a = a[None, :] if vec_a else a
        b = b[:, None] if vec_b else b
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        count = 1
        for d in batch:
            count *= d
        out = cp.empty(batch + (m, n), dtype=a.dtype)
        if count and m and n and not k:  # an empty sum (cuBLAS refuses ld = 0)
            out.fill(0)
        elif count and m and n:
            (a_arr, a_stride), (b_arr, b_stride) = (
                self._operand(a, batch, m * k),
                self._operand(b, batch, k * n),
            )  # the arrays stay referenced until the call below is enqueued
            t = _CUDA_TYPES[dtype]
            _check(
                self.lib.cublasGemmStridedBatchedEx(
                    self.handle, _OP_N, _OP_N, n, m, k, ctypes.byref(self._one),
                    b_arr.data.ptr, t, n, b_stride, a_arr.data.ptr, t, k, a_stride,
                    ctypes.byref(self._zero), out.data.ptr, t, n, m * n, count, _COMPUTE_32F,
                    _GEMM_DEFAULT,
                ),
                "gemm",
            )  # fmt: skip
            if self.stream.is_capturing():  # the graph reads them at every replay
                self.kept += [a_arr, b_arr]
        if vec_a:
            out = out[..., 0, :]
        if vec_b:
            out = out[..., 0]
        return out

    def _operand(self, x: Any, batch: tuple, size: int) -> tuple[Any, int]:
        """A C-contiguous operand and its batch stride: stride 0 when the batch is broadcast
        from a single matrix, else materialized to the full batch."""
        cp = self.cp
        if all(d == 1 for d in x.shape[:-2]):
            return cp.ascontiguousarray(x.reshape(x.shape[-2:])), 0
        return cp.ascontiguousarray(cp.broadcast_to(x, batch + x.shape[-2:])), size

    def close(self) -> None:
        if self.handle:
            self.lib.cublasDestroy_v2(self.handle)
            self.handle = ctypes.c_void_p()
        self.kept = []


_BY_STREAM: dict[tuple[int, int], CapturableGemm] = {}
_MAX_STREAMS = 8


def stream_gemm(cp: Any) -> CapturableGemm:
    """A :class:`CapturableGemm` bound to the current device's current stream, made once per
    (device, stream) and kept (at most ``_MAX_STREAMS``; the oldest is closed first)."""
    stream = cp.cuda.get_current_stream()
    key = (cp.cuda.runtime.getDevice(), stream.ptr)
    gemm = _BY_STREAM.get(key)
    if gemm is None:
        if len(_BY_STREAM) >= _MAX_STREAMS:  # its work done first: the workspace is freed
            old = _BY_STREAM.pop(next(iter(_BY_STREAM)))
            old.stream.synchronize()
            old.close()
        gemm = _BY_STREAM[key] = CapturableGemm(cp, stream)
    return gemm
