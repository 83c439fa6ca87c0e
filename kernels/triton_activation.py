"""Triton source of the elementwise activation kernel (compiled ahead of time by ``compile.py``).

``Y[i] = act(X[i])`` over ``n`` contiguous elements (X, Y one dtype: fp16, bf16 or fp32; any
shape seen as a 1-D array), float32 math in registers, one rounding at the store. ``KIND``
(constexpr, ``configs.ACT_KINDS``): 0 relu, 1 sigmoid, 2 gelu_erf, 3 gelu_tanh, 4 silu.
gelu_tanh uses ``0.5 x (1 + tanh(u)) = x / (1 + exp(-2u))``, ``u = sqrt(2/pi) (x + 0.044715
x^3)`` (the same function; no tanh needed). One program handles ``BLOCK`` elements; the mask
covers the tail.

This module imports without Triton (the decorator then is the identity).
"""

from __future__ import annotations

from .triton_shim import jit as _jit
from .triton_shim import tl


@_jit
def activation_fwd(X, Y, n, BLOCK: tl.constexpr, KIND: tl.constexpr):
    """Grid (cdiv(n, BLOCK),): elements [pid * BLOCK, pid * BLOCK + BLOCK) of X into Y."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if KIND == 0:
        y = tl.where(x < 0.0, 0.0, x)  # NaN stays NaN, as maximum(x, 0)
    elif KIND == 1:
        y = 1.0 / (1.0 + tl.exp(-x))
    elif KIND == 2:
        y = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    elif KIND == 3:
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        y = x / (1.0 + tl.exp(-2.0 * u))
    else:
        y = x / (1.0 + tl.exp(-x))
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
