"""Public entry point on CuPy arrays: the fused adaLN norm ``norm(x) [* w + b] * (1 + scale)
+ shift`` (DiT's ``modulate``), one Triton kernel that reads x once and writes y once.

x ``[..., D]`` (fp16, bf16 or fp32; D up to ``configs.NORM_MAX_D``), shift/scale broadcastable
to x with D last (``[B, 1, D]``, ``[1, S, D]``, ``[S, D]``, ``[D]``, ... see
``norm_checks.plan_rows``), weight/bias ``[D]`` or None; all of x's dtype. Statistics in
float32; ``kind`` "layer" (mean and variance) or "rms". Launched on the caller's stream with no
host synchronization, so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .attention import _contiguous_aligned, _cupy, _device_of
from .compile import CompiledKernel, compile_kernel
from .configs import NormConfig, norm_block, norm_config, norm_spec
from .errors import KernelArgumentError
from .launch import launch
from .norm_checks import NormProblem, check_norm

_compiled: dict[tuple, CompiledKernel] = {}


def _kernel(p: NormProblem, config: NormConfig | None) -> tuple[CompiledKernel, NormConfig]:
    """The compiled variant for ``p`` (memoized in-process) and its launch config."""
    block = norm_block(p.d)
    cfg = config or norm_config(p.d)
    key = (p.dtype, p.kind, block, p.aligned, cfg)
    if key not in _compiled:
        _compiled[key] = compile_kernel(norm_spec(p.dtype, p.kind, block, p.aligned, cfg))
    return _compiled[key], cfg


def modulated_norm(
    x: Any,
    shift: Any,
    scale: Any,
    *,
    kind: str = "layer",
    eps: float = 1e-6,
    weight: Any = None,
    bias: Any = None,
    stream: Any = None,
    config: NormConfig | None = None,
    as_dtype: str | None = None,
) -> Any:
    """``y`` (x's shape and dtype): ``norm(x) [* weight] [+ bias] * (1 + scale) + shift`` over
    the last axis. ``stream``: None (CuPy's current stream), a ``CUstream`` int, a CuPy stream
    or a ``cuda.core`` Stream. ``config`` overrides the table (for sweeps). ``as_dtype``
    ("bfloat16"/"float16") reads 16-bit arrays of another dtype (uint16 holding bf16 bits, for
    CuPy without bfloat16); y then has x's storage dtype. Arguments that are not contiguous or
    16-byte aligned are copied first."""
    p = check_norm(x, shift, scale, weight, bias, kind=kind, eps=eps, as_dtype=as_dtype)
    cp = _cupy()
    named = {"x": x, "shift": shift, "scale": scale, "weight": weight, "bias": bias}
    arrays = {k: a for k, a in named.items() if a is not None}
    for name, a in arrays.items():
        if not isinstance(a, cp.ndarray):
            raise KernelArgumentError(f"{name} must be a CuPy array, got {type(a).__name__}")
    dev = _device_of(*arrays.values())
    with cp.cuda.Device(dev):
        a = {k: _contiguous_aligned(v, cp) for k, v in arrays.items()}
        y = cp.empty(x.shape, dtype=x.dtype)
        if p.rows == 0:
            return y
        ck, cfg = _kernel(p, config)
        xp = a["x"].data.ptr
        args = [np.uint64(a[k].data.ptr if k in a else xp) for k in named]
        args.append(np.uint64(y.data.ptr))
        args += [np.int64(p.rows), np.int32(p.d), np.int64(p.inner)]
        args += [np.int64(s) for s in p.shift_strides + p.scale_strides]
        args += [np.float32(eps), np.int32(weight is not None), np.int32(bias is not None)]
        grid = (math.ceil(p.rows / cfg.rows), 1, 1)
        launch(ck, grid, args, device=dev, stream=stream)
    return y
