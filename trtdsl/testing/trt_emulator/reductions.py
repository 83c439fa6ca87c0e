"""Layers that accumulate: IMatrixMultiply, ISoftMax, IReduce, INormalization (v2), IAttention.

Semantics from TensorRT's operator documentation (MatrixMultiply, SoftMax, Reduce,
Normalization, Attention pages) and the 11.4 bindings' docstrings. Floats accumulate in
float32 and the result is rounded once to the layer's type, as TensorRT's kernels do.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .graph import BOOL_TYPE, LayerView, broadcast_shape, enum_name, is_float, type_name


def _axes(mask: Any, rank: int, v: LayerView, what: str = "axes") -> tuple[int, ...]:
    mask = operator.index(mask)
    if mask <= 0 or mask >> max(rank, 1):
        raise v.fail(f"{what} bitmask {mask:#b} is empty or names a dim >= rank {rank}")
    return tuple(i for i in range(rank) if mask >> i & 1)


def _float_input(v: LayerView, x: np.ndarray) -> None:
    if not is_float(x):
        raise v.fail(f"needs float inputs, got {type_name(x.dtype)}")


def matrix_multiply(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``op0(input0) x op1(input1)``: NONE takes the last two dims as a matrix, TRANSPOSE
    swaps them, VECTOR takes the last dim as a vector; batch dims (equal count) broadcast 1s."""
    v.allow("op0", "op1")
    a, b = ins
    _float_input(v, a)
    if a.dtype != b.dtype:
        raise v.fail(f"input types differ ({type_name(a.dtype)} vs {type_name(b.dtype)})")
    ops = [enum_name(v.prop(k), v.where()) for k in ("op0", "op1")]
    mats = []
    for x, op in zip((a, b), ops):
        if op not in ("NONE", "TRANSPOSE", "VECTOR"):
            raise v.unsupported(f"MatrixOperation.{op}")
        need = 1 if op == "VECTOR" else 2
        if x.ndim < need:
            raise v.fail(f"an operand of rank {x.ndim} with MatrixOperation.{op}")
        x = x.astype(np.float32)
        mats.append(np.swapaxes(x, -1, -2) if op == "TRANSPOSE" else x)
    (x, y), (op_a, op_b) = mats, ops
    batch_a = x.shape[: -1 if op_a == "VECTOR" else -2]
    batch_b = y.shape[: -1 if op_b == "VECTOR" else -2]
    batch = broadcast_shape(f"{v.where()} batch dims", batch_a, batch_b)
    k_a = x.shape[-1]
    k_b = y.shape[-1] if op_b == "VECTOR" else y.shape[-2]
    if k_a != k_b:
        raise v.fail(f"inner dims differ: {k_a} vs {k_b} (shapes {a.shape}, {b.shape}, {ops})")
    xm = x[..., None, :] if op_a == "VECTOR" else x
    ym = y[..., :, None] if op_b == "VECTOR" else y
    out = np.matmul(xm, ym)
    if op_a == "VECTOR":
        out = out[..., 0, :]
    if op_b == "VECTOR":
        out = out[..., 0]
    assert out.shape[: len(batch)] == batch
    return [out.astype(a.dtype)]


def softmax(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """Softmax along the one axis of the ``axes`` bitmask (default: rank - 3, or 0)."""
    v.allow("axes")
    (x,) = ins
    _float_input(v, x)
    default = 1 << max(0, x.ndim - 3)
    axes = _axes(v.prop("axes", default), x.ndim, v)
    if len(axes) != 1:
        raise v.fail(f"softmax takes exactly one axis, the mask names {axes}")
    xf = x.astype(np.float32)
    e = np.exp(xf - xf.max(axis=axes[0], keepdims=True))
    return [(e / e.sum(axis=axes[0], keepdims=True)).astype(x.dtype)]


_REDUCE = {
    "SUM": np.sum,
    "PROD": np.prod,
    "MAX": np.max,
    "MIN": np.min,
    "AVG": np.mean,
}


def reduce_values(op: str, x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
    """``op`` over ``axes``: floats in float32, integers in their own type."""
    xc = x.astype(np.float32) if is_float(x) else x
    with np.errstate(all="ignore"):
        out = _REDUCE[op](xc, axis=axes, keepdims=keep)
    return np.asarray(out).astype(x.dtype)


def reduce(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``op`` over the dims of the ``axes`` bitmask, keeping them (size 1) if ``keep_dims``."""
    v.allow("op", "axes", "keep_dims")
    (x,) = ins
    op = enum_name(v.prop("op"), v.where())
    if op not in _REDUCE:
        raise v.unsupported(f"ReduceOperation.{op}")
    if x.dtype == BOOL_TYPE or (op == "AVG" and not is_float(x)):
        raise v.fail(f"ReduceOperation.{op} of {type_name(x.dtype)} is not modelled")
    axes = _axes(v.prop("axes"), x.ndim, v)
    return [reduce_values(op, x, axes, bool(v.prop("keep_dims", False)))]


def normalization(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias``, mean and (biased) variance over the
    ``axesMask`` dims; scale and bias have the input's rank and broadcast to it."""
    v.allow("epsilon", "axes", "num_groups")
    if v.method != "add_normalization_v2":
        raise v.unsupported(f"{v.method} (only add_normalization_v2 is modelled)")
    x, scale, bias = ins
    _float_input(v, x)
    if operator.index(v.prop("num_groups", 1)) != 1:
        raise v.unsupported("num_groups != 1 (group normalization) is not modelled")
    for label, t in (("scale", scale), ("bias", bias)):
        if t.dtype != x.dtype:
            raise v.fail(f"{label} type {type_name(t.dtype)} differs from the input's")
        if broadcast_shape(f"{v.where()} {label}", x.shape, t.shape) != x.shape:
            raise v.fail(f"{label} shape {t.shape} does not broadcast to {x.shape}")
    mask = v.args.get("axesMask") if "axes" not in v.set_names else v.prop("axes")
    axes = _axes(mask, x.ndim, v, "axesMask")
    eps = float(v.prop("epsilon", 1e-5))
    xf = x.astype(np.float32)
    mean = xf.mean(axis=axes, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (xf - mean) / np.sqrt(var + np.float32(eps))
    return [(y * scale.astype(np.float32) + bias.astype(np.float32)).astype(x.dtype)]


def attention(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """IAttention (``add_attention_v2``): ``norm(q @ k^T + mask) @ v`` over [B, H, S, D]
    (no implicit scale: TensorRT expects q or k pre-scaled); GQA repeats kv heads; ``mask`` is
    bool (True attends) or additive; ``causal_kind`` UPPER_LEFT (key j <= query i) or
    LOWER_RIGHT (j <= i + s_kv - s_q)."""
    v.allow("norm_op", "causal_kind", "causal", "mask", "decomposable", "num_ranks")
    if v.method != "add_attention_v2":
        raise v.unsupported(f"{v.method} is not modelled")
    if operator.index(v.prop("num_ranks", 1)) != 1:
        raise v.unsupported("multi-device attention (num_ranks > 1) is not modelled")
    q, k, val = ins[:3]
    if len(ins) > 3:
        raise v.unsupported("inputs beyond query, key, value")
    for t in (k, val):
        if t.dtype != q.dtype:
            raise v.fail(f"q/k/v types differ ({type_name(q.dtype)} vs {type_name(t.dtype)})")
    _float_input(v, q)
    if q.ndim != 4 or k.shape != val.shape or k.ndim != 4:
        raise v.fail(f"needs q [B,Hq,Sq,D] and k = v [B,Hkv,Skv,D], got {q.shape}, {k.shape}")
    b, hq, sq, d = q.shape
    _, hkv, skv, _ = k.shape
    if k.shape[0] != b or k.shape[3] != d or hq % hkv:
        raise v.fail(f"q {q.shape} and k/v {k.shape} do not match (Hq must be a multiple of Hkv)")
    kf = np.repeat(k.astype(np.float32), hq // hkv, axis=1)
    vf = np.repeat(val.astype(np.float32), hq // hkv, axis=1)
    s = q.astype(np.float32) @ np.swapaxes(kf, -1, -2)
    kind = enum_name(v.prop("causal_kind"), v.where()) if v.prop("causal_kind") else "NONE"
    if kind == "NONE" and v.prop("causal", False):
        kind = "UPPER_LEFT"
    mask = v.prop("mask")
    if mask is not None and kind != "NONE":
        raise v.fail("a mask and causal masking cannot be used together")
    allowed = None
    if kind in ("UPPER_LEFT", "LOWER_RIGHT"):
        shift = skv - sq if kind == "LOWER_RIGHT" else 0
        allowed = np.arange(skv)[None, :] <= np.arange(sq)[:, None] + shift
    elif kind != "NONE":
        raise v.unsupported(f"CausalMaskKind.{kind}")
    if mask is not None:
        m = ev.value(mask)
        if m.ndim != 4 or m.shape[2:] != (sq, skv):
            raise v.fail(f"mask shape {m.shape} is not [a0, a1, {sq}, {skv}]")
        broadcast_shape(f"{v.where()} mask", m.shape, s.shape)
        if m.dtype == BOOL_TYPE:
            allowed = m
        elif m.dtype == q.dtype:
            s = s + m.astype(np.float32)
        else:
            raise v.fail(f"mask type {type_name(m.dtype)}: must be BOOL or the query's type")
    if allowed is not None:
        s = np.where(allowed, s, -np.inf)
    norm = enum_name(v.prop("norm_op"), v.where()) if v.prop("norm_op") else "SOFTMAX"
    if norm == "SOFTMAX":
        with np.errstate(all="ignore"):
            e = np.exp(s - s.max(axis=-1, keepdims=True))
            p = e / e.sum(axis=-1, keepdims=True)
    elif norm == "NONE":
        p = np.where(np.isneginf(s), 0.0, s)
    else:
        raise v.unsupported(f"AttentionNormalizationOp.{norm}")
    return [(p @ vf).astype(q.dtype)]
