"""Float64 NumPy reference of the kernels' semantics (used by the GPU check and the tests).

Attention:
q [..., Sq, D], k/v [..., Sk, D] (any leading dims, broadcast-free: equal); o [..., Sq, D],
lse [..., Sq]; query i is at position q_offset + i, key j at k_offset + j; causal allows key j
for query i iff k_offset + j <= q_offset + i. Rows with no allowed key: o = 0, lse = -inf.
"""

from __future__ import annotations

import math

import numpy as np


def attention_mask(seq_q: int, seq_k: int, causal: bool, q_offset: int, k_offset: int):
    """[Sq, Sk] bool: which keys each query row may see."""
    if not causal:
        return np.ones((seq_q, seq_k), dtype=bool)
    qpos = q_offset + np.arange(seq_q)[:, None]
    kpos = k_offset + np.arange(seq_k)[None, :]
    return kpos <= qpos


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    causal: bool = False,
    q_offset: int = 0,
    k_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(o, lse) in float64 by the direct formula with a stable softmax."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    s = scale * np.einsum("...id,...jd->...ij", q, k)
    mask = attention_mask(q.shape[-2], k.shape[-2], causal, q_offset, k_offset)
    s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True) if s.shape[-1] else np.full(s.shape[:-1] + (1,), -np.inf)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m_safe)
    denom = e.sum(axis=-1, keepdims=True)
    empty = denom == 0
    o = np.einsum("...ij,...jd->...id", e / np.where(empty, 1.0, denom), v)
    with np.errstate(divide="ignore"):
        lse = np.where(empty, -np.inf, m_safe + np.log(np.where(empty, 1.0, denom)))[..., 0]
    return o, lse


def merge(
    o1: np.ndarray, lse1: np.ndarray, o2: np.ndarray, lse2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(o, lse) of two partial results over disjoint keys, in float64."""
    o1, o2 = (np.asarray(x, dtype=np.float64) for x in (o1, o2))
    lse1, lse2 = (np.asarray(x, dtype=np.float64) for x in (lse1, lse2))
    lse = np.logaddexp(lse1, lse2)
    both_empty = np.isneginf(lse)
    safe = np.where(both_empty, 0.0, lse)
    w1 = np.where(both_empty, 0.0, np.exp(lse1 - safe))
    w2 = np.where(both_empty, 0.0, np.exp(lse2 - safe))
    return o1 * w1[..., None] + o2 * w2[..., None], lse


def modulated_norm(
    x: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    kind: str = "layer",
    eps: float = 1e-6,
) -> np.ndarray:
    """float64 ``norm(x) [* weight] [+ bias] * (1 + scale) + shift`` over the last axis:
    layer norm ``(x - mean) / sqrt(var + eps)`` (biased variance) or RMS norm
    ``x / sqrt(mean(x**2) + eps)``; shift/scale broadcast against x."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "layer":
        mu = x.mean(axis=-1, keepdims=True)
        y = (x - mu) / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
    else:
        y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * np.asarray(weight, dtype=np.float64)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    scale64, shift64 = (np.asarray(a, dtype=np.float64) for a in (scale, shift))
    return y * (1.0 + scale64) + shift64


def _erf(x: np.ndarray) -> np.ndarray:
    """float64 erf by ``math.erf`` (NumPy has none), once per distinct value."""
    u, inv = np.unique(x, return_inverse=True)
    return np.vectorize(math.erf, otypes=[np.float64])(u)[inv.reshape(x.shape)]


def activation(x: np.ndarray, kind: str) -> np.ndarray:
    """float64 activation: relu ``max(x, 0)``, sigmoid ``1 / (1 + e^-x)``, gelu_erf
    ``x/2 (1 + erf(x / sqrt 2))``, gelu_tanh ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``,
    silu ``x / (1 + e^-x)``."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "relu":
            return np.maximum(x, 0.0)
        if kind == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if kind == "gelu_erf":
            return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
        if kind == "gelu_tanh":
            u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
            return 0.5 * x * (1.0 + np.tanh(u))
        if kind == "silu":
            return x / (1.0 + np.exp(-x))
    raise ValueError(f"unknown activation {kind!r}")
