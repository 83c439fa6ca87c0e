"""Quantize / dequantize, mirroring TensorRT 11's IQuantizeLayer and IDequantizeLayer.

``quantize``: ``q = saturate(round_to_nearest_even(x / scale))`` to INT8 ([-128, 127]) or FP8
E4M3 (``float8_e4m3``, [-448, 448]); ``dequantize``: ``y = q * scale`` in float32, rounded once
to the output dtype. Symmetric only (TensorRT's zero point must be 0, so there is none here).

The scale must be a build-time constant (TensorRT's rule) of strictly positive values, with the
float dtype of the unquantized side (``x`` for quantize, the output for dequantize). Its shape
picks the granularity:

* ``()`` (a Python number): **per-tensor**;
* ``[x.shape[axis]]`` with ``axis=``: **per-channel** (TensorRT's ``axis`` property);
* the rank of ``x``, each dim dividing ``x``'s: **block** scales (TensorRT's ``block_shape``,
  supported by the Quantize/Dequantize operators for INT8 and FP8 as for INT4/FP4): a block of
  ``x.shape[i] // scale.shape[i]`` elements along every dim i shares one scale.

On the ``cupy`` backend FP8 values (which CuPy has no dtype for) travel as their bit patterns
(uint8); dequantize decodes them with a 256-entry table, quantize to FP8 rounds on the host.

>>> import numpy as np, trtdsl as td
>>> net = td.Network("q")
>>> x = net.input("x", (2, 4))
>>> q = x.quantize(0.5, "int8")                      # per-tensor INT8
>>> y = q.dequantize(0.5, "float32")
>>> net.output(y, "y")
>>> net.run({"x": np.array([[0.2, 0.3, 100, -1.25]] * 2, "float32")})["y"][0].tolist()
[0.0, 0.5, 63.5, -1.0]
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, Value
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import fail, is_int, network_of

#: Quantized dtypes and their saturation bounds (TensorRT's Quantize clamping ranges).
QUANTIZED = {"int8": (-128.0, 127.0), "float8_e4m3": (-448.0, 448.0)}
#: The dtypes a scale (and the unquantized side) may have.
UNQUANTIZED = ("float32", "float16", "bfloat16")

_FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
#: FP8 E4M3 bit pattern -> float32 value (NaN for 0x7f / 0xff).
FP8_TABLE = np.arange(256, dtype=np.uint8).view(_FP8).astype(np.float32)


def granularity(layer: Layer, x: TensorType, s: TensorType, axis: Any) -> tuple[str, Any]:
    """("tensor", None), ("channel", axis) or ("block", block_shape) from the scale's shape."""
    if s.rank == 0:
        if axis is not None:
            raise layer.fail("a per-tensor (scalar) scale takes no axis")
        return "tensor", None
    if s.rank == 1 and x.rank != 1 or (s.rank == 1 and axis is not None):
        if axis is None:
            raise layer.fail(f"a 1-D scale {s.shape} is per-channel: give axis=")
        if not is_int(axis) or not -x.rank <= axis < x.rank:
            raise layer.fail(f"axis {axis!r} is out of range for rank {x.rank}")
        ax = int(axis) % x.rank
        if None not in (x.shape[ax], s.shape[0]) and x.shape[ax] != s.shape[0]:
            raise layer.fail(
                f"per-channel scale has {s.shape[0]} entries, axis {ax} of the input has "
                f"{x.shape[ax]}"
            )
        return "channel", ax
    if s.rank != x.rank:
        raise layer.fail(
            f"scale of shape {s.shape}: need a scalar (per-tensor), 1-D with axis (per-channel) "
            f"or rank {x.rank} (block scales)"
        )
    if axis is not None:
        raise layer.fail("block scales take no axis (the scale's shape gives the blocks)")
    block = []
    for i, (d, n) in enumerate(zip(x.shape, s.shape)):
        if d is None or n is None or n < 1 or d % n:
            raise layer.fail(
                f"block scales: dim {i} of the input ({d}) must be static and a multiple of the "
                f"scale's ({n})"
            )
        block.append(d // n)
    return "block", tuple(block)


def broadcast_scale(xp: Any, scale: Any, mode: str, info: Any, rank: int) -> Any:
    """The scale as float32, broadcastable against the input."""
    s = scale.astype(xp.float32)
    if mode == "channel":
        return s.reshape(tuple(-1 if i == info else 1 for i in range(rank)))
    if mode == "block":
        for i, n in enumerate(info):
            if n > 1:
                s = xp.repeat(s, n, axis=i)
    return s


def fp8_values(xp: Any, q: Any) -> Any:
    """float32 values of FP8 data: an FP8 array, or its uint8 bit patterns (on CuPy)."""
    if q.dtype == np.uint8:
        return xp.asarray(FP8_TABLE)[q]
    return q.astype(xp.float32)


def quantize_values(xp: Any, v: Any, to: str) -> Any:
    """Round float32 ``v`` (already divided by the scale) to ``to``, saturating."""
    lo, hi = QUANTIZED[to]
    v = xp.clip(v, np.float32(lo), np.float32(hi))  # NaN stays NaN
    if to == "int8":
        return xp.rint(v).astype(xp.int8)  # rint: round half to even
    if xp is np:
        return v.astype(_FP8)
    host = np.asarray(v.get()).astype(_FP8)  # CuPy has no FP8 dtype: round on the host
    return xp.asarray(host.view(np.uint8))


def _check_scale(layer: Layer, s: TensorType, want: dtypes.DType) -> None:
    if s.dtype != want:
        raise layer.fail(f"the scale must be {want} (the unquantized dtype), got {s.dtype}")


class Quantize(OpDef):
    """IQuantizeLayer: attrs ``dtype`` (int8 / float8_e4m3), ``axis`` (per-channel or None)."""

    name = "quantize"

    def resolve(self, layer: Layer) -> Any:
        x, s = layer.input_types
        if x.dtype.name not in UNQUANTIZED:
            raise layer.fail(f"quantize takes {', '.join(UNQUANTIZED)} input, got {x.dtype}")
        _check_scale(layer, s, x.dtype)
        return granularity(layer, x, s, layer.attrs["axis"])

    def infer(self, layer: Layer) -> list[TensorType]:
        x = layer.input_types[0]
        return [TensorType(x.shape, dtypes.as_dtype(layer.attrs["dtype"]))]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        xp, (x, scale) = ctx.xp, inputs
        mode, info = layer.spec
        s = broadcast_scale(xp, scale, mode, info, x.ndim)
        return [quantize_values(xp, x.astype(xp.float32) / s, layer.attrs["dtype"])]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        q = b.network.add_quantize(inputs[0], inputs[1], b.dtype(layer.attrs["dtype"]))
        _set_granularity(q, layer.spec)
        return [b.out(q, layer)]


class Dequantize(OpDef):
    """IDequantizeLayer: attrs ``dtype`` (the float output), ``axis``."""

    name = "dequantize"

    def resolve(self, layer: Layer) -> Any:
        q, s = layer.input_types
        if q.dtype.name not in QUANTIZED:
            raise layer.fail(f"dequantize takes int8 or float8_e4m3 input, got {q.dtype}")
        out = dtypes.as_dtype(layer.attrs["dtype"])
        _check_scale(layer, s, out)
        return granularity(layer, q, s, layer.attrs["axis"])

    def infer(self, layer: Layer) -> list[TensorType]:
        return [TensorType(layer.input_types[0].shape, dtypes.as_dtype(layer.attrs["dtype"]))]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        xp, (q, scale) = ctx.xp, inputs
        mode, info = layer.spec
        s = broadcast_scale(xp, scale, mode, info, q.ndim)
        v = fp8_values(xp, q) if layer.input_types[0].dtype.name != "int8" else q.astype(s.dtype)
        return [(v * s).astype(dtypes.as_dtype(layer.attrs["dtype"]).numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        dq = b.network.add_dequantize(inputs[0], inputs[1], b.dtype(layer.attrs["dtype"]))
        _set_granularity(dq, layer.spec)
        return [b.out(dq, layer)]


def _set_granularity(trt_layer: Any, spec: tuple[str, Any]) -> None:
    mode, info = spec
    if mode == "channel":
        trt_layer.axis = int(info)
    elif mode == "block":
        trt_layer.block_shape = tuple(int(n) for n in info)


QUANTIZE = Quantize()
DEQUANTIZE = Dequantize()


# -- host-side helpers ---------------------------------------------------------------------
def quantize_array(
    w: Any, dtype: str = "float8_e4m3", axis: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a NumPy array on the host as the layer does: ``(q, scale)`` with the scale
    ``amax / qmax`` per tensor (``axis=None``, a 0-d float32 array) or per channel along
    ``axis`` (float32 ``[w.shape[axis]]``). All-zero channels get scale 1.

    >>> q, s = quantize_array(np.array([[1.0, -2.0], [0.5, 4.0]]), "int8", axis=1)
    >>> q.tolist(), s.round(4).tolist()
    ([[127, -64], [64, 127]], [0.0079, 0.0315])
    """
    if dtype not in QUANTIZED:
        raise ValueError(f"dtype must be one of {sorted(QUANTIZED)}, got {dtype!r}")
    a = np.asarray(w, np.float32)
    qmax = QUANTIZED[dtype][1]
    if axis is None:
        amax = np.float32(np.max(np.abs(a))) if a.size else np.float32(0)
        scale = np.asarray(amax / qmax if amax > 0 else 1.0, np.float32)
        s = scale
    else:
        axis %= a.ndim
        others = tuple(i for i in range(a.ndim) if i != axis)
        amax = np.max(np.abs(a), axis=others) if a.size else np.zeros(a.shape[axis], np.float32)
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        s = scale.reshape(tuple(-1 if i == axis else 1 for i in range(a.ndim)))
    return quantize_values(np, a / s, dtype), scale


# -- builders ------------------------------------------------------------------------------
def _scale(net: Any, scale: Any, dtype: dtypes.DType, op: str, x: Any, name: Any) -> Value:
    """The scale as a constant tensor of ``dtype``; checks it is constant and positive."""
    if isinstance(scale, Value):
        prod = scale.producer
        if prod.op.name != "constant":
            raise fail(op, "the scale must be a build-time constant (TensorRT's rule)", x, scale)
        values = prod.attrs["value"]
        s = scale
    else:
        is_num = isinstance(scale, (int, float, np.number)) or (
            isinstance(scale, np.ndarray) and scale.dtype.kind in "biuf"
        )
        if isinstance(scale, bool) or not is_num:
            raise fail(op, f"scale must be a number or NumPy array, got {scale!r}", x, name=name)
        values = np.asarray(scale, dtype.numpy)
        s = None
    v = np.asarray(values, np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise fail(op, "every scale must be finite and strictly positive (TensorRT's rule)", x)
    if s is None:
        s = net.constant(values, name=None if name is None else f"{name}.scale")
    return s


@public("quantization")
def quantize(
    x: Value, scale: Any, dtype: Any = "int8", *, axis: int | None = None, name: str | None = None
) -> Value:
    """Quantize ``x`` (TensorRT's IQuantizeLayer): ``saturate(round_half_even(x / scale))`` as
    ``int8`` (clamped to [-128, 127]) or ``float8_e4m3`` (clamped to +-448). ``scale``: a number
    (per-tensor), a 1-D array with ``axis`` (per-channel) or an array of ``x``'s rank (block
    scales); constant and > 0.

    ``q = x.quantize(amax / 448, "float8_e4m3")``
    """
    net = network_of(x, op="quantize", name=name)
    dt = _dtype(dtype, QUANTIZED, "quantize", x, name)
    if not isinstance(x, Value):
        raise fail("quantize", "x must be a Tensor", name=name)
    s = _scale(net, scale, x.dtype, "quantize", x, name)
    return net.add_layer(QUANTIZE, [x, s], {"dtype": dt, "axis": axis}, name=name)[0]


@public("quantization")
def dequantize(
    q: Value,
    scale: Any,
    dtype: Any = "float32",
    *,
    axis: int | None = None,
    name: str | None = None,
) -> Value:
    """Dequantize int8 / float8_e4m3 ``q`` to ``dtype`` (TensorRT's IDequantizeLayer):
    ``q * scale`` in float32, rounded once. ``scale`` as for :func:`quantize`, of ``dtype``.

    ``w = F.dequantize(net.constant(w_fp8), w_scale, "float16", axis=1)``
    """
    net = network_of(q, op="dequantize", name=name)
    dt = _dtype(dtype, UNQUANTIZED, "dequantize", q, name)
    s = _scale(net, scale, dtypes.as_dtype(dt), "dequantize", q, name)
    return net.add_layer(DEQUANTIZE, [q, s], {"dtype": dt, "axis": axis}, name=name)[0]


def _dtype(dtype: Any, allowed: Any, op: str, x: Any, name: Any) -> str:
    try:
        dt = dtypes.as_dtype(dtype).name
    except ValueError as e:
        raise fail(op, str(e), x, name=name) from None
    if dt not in allowed:
        raise fail(op, f"dtype must be one of {', '.join(allowed)}, got {dt}", x, name=name)
    return dt
