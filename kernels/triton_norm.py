"""Triton source of the fused adaLN norm kernel (compiled ahead of time by ``compile.py``).

``Y = norm(X) [* W] [+ B] * (1 + SCALE) + SHIFT`` row by row, with float32 statistics:
layer norm ``(x - mean) / sqrt(var + eps)`` or RMS norm ``x / sqrt(mean(x^2) + eps)`` over
the ``D`` values of a row. Layouts (row-major, contiguous):

- ``X``, ``Y`` [R, D] (one dtype: fp16, bf16 or fp32); ``W``, ``B`` [D] or unused
  (``has_w``/``has_b`` = 0).
- ``SHIFT``, ``SCALE``: row ``r = o * inner + i`` reads the ``D`` values at element offset
  ``o * so + i * si`` (``so``/``si`` per tensor; 0 broadcasts). DiT's ``[B, 1, D]`` against
  ``x [B, S, D]``: ``inner = S``, ``so = D``, ``si = 0``.

One program normalizes ``ROWS`` rows of ``BLOCK_D >= D`` columns held in registers (x is read
once and y written once); masks cover ``D < BLOCK_D`` and the last rows.

This module imports without Triton (the decorator then is the identity).
"""

from __future__ import annotations

from .triton_shim import jit as _jit
from .triton_shim import tl


@_jit
def modulated_norm_fwd(
    X,
    SHIFT,
    SCALE,
    W,
    B,
    Y,
    n_rows,
    D,
    inner,
    shift_so,
    shift_si,
    scale_so,
    scale_si,
    eps,
    has_w,
    has_b,
    BLOCK_D: tl.constexpr,
    ROWS: tl.constexpr,
    RMS: tl.constexpr,
):
    """Grid (cdiv(R, ROWS),): rows [pid * ROWS, pid * ROWS + ROWS) of X into Y."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    in_r = rows < n_rows
    in_c = cols < D
    mask = in_r[:, None] & in_c[None, :]
    offs = rows[:, None] * D + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if RMS:
        mean_sq = tl.sum(x * x, axis=1) / D
        xn = x * tl.rsqrt(mean_sq + eps)[:, None]
    else:
        mean = tl.sum(x, axis=1) / D
        xc = tl.where(mask, x - mean[:, None], 0.0)
        var = tl.sum(xc * xc, axis=1) / D
        xn = xc * tl.rsqrt(var + eps)[:, None]
    if has_w != 0:
        w = tl.load(W + cols, mask=in_c, other=0.0).to(tl.float32)
        xn = xn * w[None, :]
    if has_b != 0:
        b = tl.load(B + cols, mask=in_c, other=0.0).to(tl.float32)
        xn = xn + b[None, :]
    o = rows // inner
    i = rows - o * inner
    shift_off = o * shift_so + i * shift_si
    scale_off = o * scale_so + i * scale_si
    shift = tl.load(SHIFT + shift_off[:, None] + cols[None, :], mask=mask, other=0.0)
    scale = tl.load(SCALE + scale_off[:, None] + cols[None, :], mask=mask, other=0.0)
    y = xn * (1.0 + scale.to(tl.float32)) + shift.to(tl.float32)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
