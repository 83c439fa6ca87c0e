"""IQuantizeLayer, IDequantizeLayer and ITopKLayer.

Semantics from TensorRT's operator documentation (Quantize, Dequantize, TopK pages) and the
IQuantizeLayer class reference, written without looking at ``trtdsl.ops``:

* Quantize: ``output = clamp(round(input / scale))``, rounding to nearest with ties to even,
  clamping to [-128, 127] for INT8 and [-448, 448] for FP8 (E4M3). Input FLOAT/HALF/BF16, the
  scale of the input's type and strictly positive; output type ``to_type`` (INT8 or FP8).
* Dequantize: ``output = input * scale``, input INT8 or FP8, output (and scale) ``to_type``.
* Scale granularity: a 0-D scale is per-tensor; a 1-D scale is per-channel along ``axis``
  (its size = that dim); a scale of the input's rank is a block scale with ``block_shape``
  (-1: the whole dim), each scale dim = input dim / block dim.
* TopK: the k largest (MAX) or smallest (MIN) along the single axis of the ``axes`` bitmask,
  sorted; indices of ``indices_type`` (INT32 when unset). Ties: the lower index first (what
  this emulator picks; TensorRT does not document an order).
"""

from __future__ import annotations

import operator
from typing import Any

import ml_dtypes
import numpy as np

from .graph import LayerView, dims, enum_name, is_float, numpy_type, type_name

_FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
_INT8 = np.dtype(np.int8)
_RANGE = {_INT8: (-128.0, 127.0), _FP8: (-448.0, 448.0)}
_UNQUANTIZED = ("FLOAT", "HALF", "BF16")


def _expand_scale(v: LayerView, x_shape: tuple[int, ...], scale: np.ndarray) -> np.ndarray:
    """The scale as a float64 array of ``x_shape``, checked against the layer's granularity."""
    s = scale.astype(np.float64)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise v.fail("scale coefficients must be finite and strictly positive")
    rank = len(x_shape)
    block = v.prop("block_shape")
    if s.ndim == 0:
        if block is not None:
            raise v.fail("block_shape set with a scalar (per-tensor) scale")
        return np.broadcast_to(s, x_shape)
    if s.ndim == 1 and block is None:
        axis = v.prop("axis")
        if axis is None:
            raise v.fail("a 1-D (per-channel) scale needs the axis property")
        axis = operator.index(axis)
        if not -rank <= axis < rank:
            raise v.fail(f"axis {axis} out of range for rank {rank}")
        axis %= rank
        if s.shape[0] != x_shape[axis]:
            raise v.fail(f"scale has {s.shape[0]} entries, axis {axis} has {x_shape[axis]}")
        shape = [1] * rank
        shape[axis] = -1
        return np.broadcast_to(s.reshape(shape), x_shape)
    if block is None:
        raise v.fail(f"a scale of rank {s.ndim} needs block_shape (input rank {rank})")
    bs = dims(block, f"{v.where()} block_shape")
    if len(bs) != rank or s.ndim != rank:
        raise v.fail(f"block_shape {bs} and scale rank {s.ndim} must match input rank {rank}")
    out = s
    for i, (d, b, n) in enumerate(zip(x_shape, bs, s.shape)):
        b = d if b == -1 else b
        if b < 1 or d % b or d // b != n:
            raise v.fail(f"dim {i}: input {d}, block {b}, scale {n}: scale must be input / block")
        out = np.repeat(out, b, axis=i)
    return out


def quantize(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    v.allow("axis", "block_shape", "to_type")
    x, scale = ins[0], ins[1]
    if len(ins) > 2 and ins[2] is not None:
        raise v.unsupported("zero point input")
    out_t = numpy_type(v.prop("to_type", v.args.get("output_type")))
    if out_t not in _RANGE:
        raise v.fail(f"output type {type_name(out_t)} is not INT8 or FP8")
    if type_name(x.dtype) not in _UNQUANTIZED:
        raise v.fail(f"input type {type_name(x.dtype)} is not FLOAT, HALF or BF16")
    if scale.dtype != x.dtype:
        raise v.fail(f"scale type {type_name(scale.dtype)} differs from input {type_name(x.dtype)}")
    s = _expand_scale(v, x.shape, scale)
    # divide in float32, as a kernel on the input type would after widening 16-bit floats
    val = (x.astype(np.float32) / s.astype(np.float32)).astype(np.float64)
    lo, hi = _RANGE[out_t]
    if out_t == _INT8:  # np.round rounds half to even
        return [np.clip(np.round(val), lo, hi).astype(_INT8)]
    # FP8: saturate (E4M3 has no infinities), then round to nearest even
    return [np.clip(val, lo, hi).astype(_FP8)]


def dequantize(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    v.allow("axis", "block_shape", "to_type")
    q, scale = ins[0], ins[1]
    if len(ins) > 2 and ins[2] is not None:
        raise v.unsupported("zero point input")
    out_t = numpy_type(v.prop("to_type", v.args.get("output_type")))
    if type_name(out_t) not in _UNQUANTIZED:
        raise v.fail(f"output type {type_name(out_t)} is not FLOAT, HALF or BF16")
    if q.dtype not in _RANGE:
        raise v.fail(f"input type {type_name(q.dtype)} is not INT8 or FP8")
    if scale.dtype != out_t:
        raise v.fail(f"scale type {type_name(scale.dtype)} differs from output {type_name(out_t)}")
    s = _expand_scale(v, q.shape, scale)
    return [(q.astype(np.float32) * s.astype(np.float32)).astype(out_t)]


def topk(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    v.allow("op", "k", "axes", "indices_type")
    x = ins[0]
    op = enum_name(v.prop("op"), v.where())
    k = operator.index(v.prop("k"))
    axes = operator.index(v.prop("axes"))
    bits = [i for i in range(x.ndim) if axes >> i & 1]
    if len(bits) != 1 or axes >> x.ndim:
        raise v.fail(f"axes bitmask {axes:#b} must name exactly one of {x.ndim} dims")
    ax = bits[0]
    if not 0 < k <= min(3840, x.shape[ax]):
        raise v.fail(f"k={k} not in [1, min(3840, {x.shape[ax]})]")
    if not (is_float(x) or x.dtype in (np.int32, np.int64)):
        raise v.fail(f"input type {type_name(x.dtype)} not supported")
    it = v.prop("indices_type")
    idx_t = np.dtype(np.int32) if it is None else numpy_type(it)
    moved = np.moveaxis(x.astype(np.float64), ax, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    order = np.empty((flat.shape[0], k), np.int64)
    for r, row in enumerate(flat):  # rank by (value, index), the best first
        sign = -1.0 if op == "MAX" else 1.0 if op == "MIN" else None
        if sign is None:
            raise v.unsupported(f"TopKOperation.{op}")
        order[r] = sorted(range(row.size), key=lambda i: (sign * row[i], i))[:k]
    order = order.reshape(moved.shape[:-1] + (k,))
    values = np.take_along_axis(np.moveaxis(x, ax, -1), order, axis=-1)
    return [np.moveaxis(values, -1, ax), np.moveaxis(order, -1, ax).astype(idx_t)]
