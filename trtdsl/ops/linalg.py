"""Matrix multiply, softmax, reductions and normalizations.

>>> import trtdsl as td
>>> net = td.Network("mm")
>>> x = net.input("x", (4, 8))
>>> w = net.constant(__import__("numpy").ones((8, 3), "float32"))
>>> y = (x @ w).softmax(axis=-1)
"""

from __future__ import annotations

import numbers
from typing import Any

from .. import dtypes
from ..ir import Layer, TensorType, Value
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import TensorLike, fail, lift, network_of, refuse_quantized, require_bool
from .shapes import broadcast_dim, normalize_axes, normalize_axis


def _compute(x: Any, dtype: dtypes.DType) -> Any:
    return x.astype(dtypes.compute_dtype(dtype), copy=False)


class MatMul(OpDef):
    """Matrix product with NumPy's batch broadcasting and optional transposes of the last two
    dims (attrs ``transpose_a``, ``transpose_b``); a 1-D operand is a vector."""

    name = "matmul"

    def infer(self, layer: Layer) -> list[TensorType]:
        a, b = layer.input_types
        if a.dtype != b.dtype:
            raise layer.fail(f"dtype clash: {a.dtype} vs {b.dtype}")
        if not a.dtype.is_float:
            raise layer.fail(f"matmul needs float inputs, got {a.dtype}")
        refuse_quantized(layer, a.dtype, "matmul")
        if a.rank == 0 or b.rank == 0:
            raise layer.fail("matmul needs inputs of rank >= 1")
        ta, tb = layer.attrs["transpose_a"], layer.attrs["transpose_b"]
        sa, sb = list(a.shape), list(b.shape)
        if ta and a.rank >= 2:
            sa[-1], sa[-2] = sa[-2], sa[-1]
        if tb and b.rank >= 2:
            sb[-1], sb[-2] = sb[-2], sb[-1]
        a_vec, b_vec = len(sa) == 1, len(sb) == 1
        ma = [1] + sa if a_vec else sa
        mb = sb + [1] if b_vec else sb
        k1, k2 = ma[-1], mb[-2]
        if k1 is not None and k2 is not None and k1 != k2:
            raise layer.fail(f"inner dimensions differ: {k1} vs {k2}")
        ba, bb = ma[:-2], mb[:-2]
        n = max(len(ba), len(bb))
        ba, bb = [1] * (n - len(ba)) + ba, [1] * (n - len(bb)) + bb
        batch = []
        for i, (x, y) in enumerate(zip(ba, bb)):
            d = broadcast_dim(x, y)
            if d == "clash":
                raise layer.fail(f"batch dimensions {x} and {y} do not broadcast (dim {i})")
            batch.append(d)
        shape = batch + ([] if a_vec else [ma[-2]]) + ([] if b_vec else [mb[-1]])
        return [TensorType(tuple(shape), a.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        xp = ctx.xp
        dt = layer.input_types[0].dtype
        a, b = inputs
        if layer.attrs["transpose_a"] and a.ndim >= 2:
            a = xp.swapaxes(a, -1, -2)
        if layer.attrs["transpose_b"] and b.ndim >= 2:
            b = xp.swapaxes(b, -1, -2)
        if dt.is_float and dt.itemsize == 2:  # a library's 16-bit GEMM, float32 accumulation
            out = ctx.matmul_rounded(a, b)
            if out is not None:
                return [out]
        return [ctx.matmul(_compute(a, dt), _compute(b, dt)).astype(dt.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        ta_, tb_ = layer.input_types
        a, c = inputs
        ops = []
        # 1-D operands become matrices (row / column vector); the result is reshaped back.
        if ta_.rank == 1:
            a = b.reshape(a, (1, -1), layer, "vec_a")
        if tb_.rank == 1:
            c = b.reshape(c, (-1, 1), layer, "vec_b")
        ra, rc = max(ta_.rank, 2), max(tb_.rank, 2)
        rank = max(ra, rc)
        a, c = b.expand_rank(a, ra, rank), b.expand_rank(c, rc, rank)
        for flag, r in (
            (layer.attrs["transpose_a"], ta_.rank),
            (layer.attrs["transpose_b"], tb_.rank),
        ):
            ops.append(b.enum("MatrixOperation", "transpose" if flag and r >= 2 else "none"))
        mm = b.network.add_matrix_multiply(a, ops[0], c, ops[1])
        out_shape = layer.outputs[0].type.shape
        if ta_.rank == 1 or tb_.rank == 1:
            b.name(mm, layer, "mm")
            dims = tuple(0 if d is None else d for d in out_shape)
            if ta_.rank == 1 and tb_.rank > 1 and out_shape[-1] is None:
                dims = dims[:-1] + (-1,)  # a 0 there would copy the removed row dim (1)
            return [b.reshape(mm.get_output(0), dims or (), layer)]
        return [b.out(mm, layer)]

    def describe(self, layer: Layer) -> str:
        flags = [k for k in ("transpose_a", "transpose_b") if layer.attrs[k]]
        return f"matmul({', '.join(flags)})" if flags else "matmul"


class Softmax(OpDef):
    """Softmax over one axis (attr ``axis``), computed stably."""

    name = "softmax"

    def infer(self, layer: Layer) -> list[TensorType]:
        (x,) = layer.input_types
        if not x.dtype.is_float:
            raise layer.fail(f"softmax needs a float input, got {x.dtype}")
        refuse_quantized(layer, x.dtype, "softmax")
        if x.rank == 0:
            raise layer.fail("softmax needs an input of rank >= 1")
        layer.attrs["axis"] = normalize_axis(layer, layer.attrs["axis"], x.rank)
        return [x]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        xp = ctx.xp
        dt = layer.input_types[0].dtype
        x = _compute(inputs[0], dt)
        ax = layer.attrs["axis"]
        e = xp.exp(x - xp.max(x, axis=ax, keepdims=True))
        return [(e / xp.sum(e, axis=ax, keepdims=True)).astype(dt.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        sm = b.network.add_softmax(inputs[0])
        sm.axes = 1 << layer.attrs["axis"]
        return [b.out(sm, layer)]


_REDUCE = {
    "sum": lambda xp, x, ax, k: xp.sum(x, axis=ax, keepdims=k),
    "mean": lambda xp, x, ax, k: xp.mean(x, axis=ax, keepdims=k),
    "max": lambda xp, x, ax, k: xp.max(x, axis=ax, keepdims=k),
    "min": lambda xp, x, ax, k: xp.min(x, axis=ax, keepdims=k),
    "prod": lambda xp, x, ax, k: xp.prod(x, axis=ax, keepdims=k),
}
REDUCE_KINDS: tuple[str, ...] = tuple(_REDUCE)


class Reduce(OpDef):
    """Reduction over axes (attrs ``kind``: sum, mean, max, min, prod; ``axes``; ``keepdims``)."""

    name = "reduce"

    def infer(self, layer: Layer) -> list[TensorType]:
        (x,) = layer.input_types
        kind = layer.attrs["kind"]
        if kind not in _REDUCE:
            raise layer.fail(f"unknown reduction {kind!r}; expected one of {REDUCE_KINDS}")
        refuse_quantized(layer, x.dtype, f"reduce '{kind}'")
        if x.dtype.kind == "bool" or (kind == "mean" and not x.dtype.is_float):
            raise layer.fail(f"reduce '{kind}' does not take {x.dtype} inputs")
        if x.rank == 0:
            raise layer.fail("reduce needs an input of rank >= 1")
        axes = normalize_axes(layer, layer.attrs["axes"], x.rank)
        layer.attrs["axes"] = axes
        keep = layer.attrs["keepdims"]
        shape = tuple((1 if keep else None) if i in axes else d for i, d in enumerate(x.shape))
        if not keep:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return [TensorType(shape, x.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        dt = layer.input_types[0].dtype
        x = _compute(inputs[0], dt)
        fn = _REDUCE[layer.attrs["kind"]]
        out = fn(ctx.xp, x, layer.attrs["axes"], layer.attrs["keepdims"])
        return [ctx.xp.asarray(out).astype(dt.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        mask = sum(1 << a for a in layer.attrs["axes"])
        op = b.enum("ReduceOperation", layer.attrs["kind"])
        return [b.out(b.network.add_reduce(inputs[0], op, mask, layer.attrs["keepdims"]), layer)]

    def describe(self, layer: Layer) -> str:
        keep = ", keepdims" if layer.attrs["keepdims"] else ""
        return f"reduce_{layer.attrs['kind']}(axes={layer.attrs['axes']}{keep})"


class Normalization(OpDef):
    """Layer norm or RMS norm over trailing axes (attrs ``kind``: 'layer' or 'rms', ``axes``,
    ``eps``). Inputs: x, scale, and for layer norm, bias; scale/bias have the normalized shape."""

    name = "normalization"

    def infer(self, layer: Layer) -> list[TensorType]:
        types = layer.input_types
        x = types[0]
        kind = layer.attrs["kind"]
        if kind not in ("layer", "rms"):
            raise layer.fail(f"unknown normalization {kind!r}; expected 'layer' or 'rms'")
        if not x.dtype.is_float:
            raise layer.fail(f"normalization needs a float input, got {x.dtype}")
        refuse_quantized(layer, x.dtype, f"{kind} normalization")
        if x.rank == 0:
            raise layer.fail("normalization needs an input of rank >= 1")
        axes = normalize_axes(layer, layer.attrs["axes"], x.rank)
        if axes != tuple(range(x.rank - len(axes), x.rank)):
            raise layer.fail(f"normalized axes {axes} must be the trailing axes of rank {x.rank}")
        layer.attrs["axes"] = axes
        norm_shape = tuple(x.shape[a] for a in axes)
        for label, t in zip(("scale", "bias"), types[1:]):
            if t.dtype != x.dtype:
                raise layer.fail(f"{label} dtype {t.dtype} differs from input dtype {x.dtype}")
            if len(t.shape) != len(norm_shape) or any(
                p is not None and q is not None and p != q for p, q in zip(t.shape, norm_shape)
            ):
                raise layer.fail(
                    f"{label} shape {t.shape} must equal normalized shape {norm_shape}"
                )
        if layer.attrs["eps"] <= 0:
            raise layer.fail(f"eps must be > 0, got {layer.attrs['eps']}")
        return [x]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        xp = ctx.xp
        dt = layer.input_types[0].dtype
        x, *params = (_compute(t, dt) for t in inputs)
        ax, eps = layer.attrs["axes"], layer.attrs["eps"]
        if layer.attrs["kind"] == "layer":
            mu = xp.mean(x, axis=ax, keepdims=True)
            var = xp.mean((x - mu) ** 2, axis=ax, keepdims=True)
            y = (x - mu) / xp.sqrt(var + eps) * params[0] + params[1]
        else:
            y = x / xp.sqrt(xp.mean(x * x, axis=ax, keepdims=True) + eps) * params[0]
        return [y.astype(dt.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        rank = layer.input_types[0].rank
        nrank = len(layer.attrs["axes"])
        mask = sum(1 << a for a in layer.attrs["axes"])
        x = inputs[0]
        scale = b.expand_rank(inputs[1], nrank, rank)
        if layer.attrs["kind"] == "layer":
            bias = b.expand_rank(inputs[2], nrank, rank)
            norm = b.network.add_normalization_v2(x, scale, bias, mask)
            norm.epsilon = layer.attrs["eps"]
            return [b.out(norm, layer)]
        # TensorRT has no RMS mode: x * rsqrt(mean(x*x) + eps) * scale, computed in float32
        # for 16-bit inputs like the reference (x*x overflows float16 above 256).
        dt = layer.input_types[0].dtype
        low = dt.is_float and dt.itemsize < 4
        if low:
            f32 = b.dtype("float32")
            x = b.named(b.network.add_cast(x, f32), layer, "x_float32")
            scale = b.named(b.network.add_cast(scale, f32), layer, "scale_float32")
        mul, add = b.enum("ElementWiseOperation", "mul"), b.enum("ElementWiseOperation", "add")
        sq = b.named(b.network.add_elementwise(x, x, mul), layer, "square")
        ms = b.named(
            b.network.add_reduce(sq, b.enum("ReduceOperation", "mean"), mask, True),
            layer,
            "mean_square",
        )
        eps = b.scalar(layer.attrs["eps"], "float32" if low else dt, rank)
        var = b.named(b.network.add_elementwise(ms, eps, add), layer, "add_eps")
        rs = b.named(b.network.add_unary(var, b.enum("UnaryOperation", "sqrt")), layer, "sqrt")
        inv = b.named(b.network.add_unary(rs, b.enum("UnaryOperation", "recip")), layer, "recip")
        xn = b.named(b.network.add_elementwise(x, inv, mul), layer, "normalized")
        if not low:
            return [b.out(b.network.add_elementwise(xn, scale, mul), layer)]
        y = b.named(b.network.add_elementwise(xn, scale, mul), layer, "scaled")
        return [b.out(b.network.add_cast(y, b.dtype(dt)), layer)]


MATMUL = MatMul()
SOFTMAX = Softmax()
REDUCE = Reduce()
NORMALIZATION = Normalization()


# -- builders ------------------------------------------------------------------------------
@public("linear algebra", method=None)
def matmul(
    a: TensorLike,
    b: TensorLike,
    transpose_a: bool = False,
    transpose_b: bool = False,
    name: str | None = None,
) -> Value:
    """Matrix product with batch broadcasting. ``F.matmul(q, k, transpose_b=True)``"""
    net = network_of(a, b, op="matmul", name=name)
    like = a if isinstance(a, Value) else b
    x, y = lift(net, a, like, "matmul"), lift(net, b, like, "matmul")
    attrs = {
        "transpose_a": require_bool("matmul", "transpose_a", transpose_a, a, b, name=name),
        "transpose_b": require_bool("matmul", "transpose_b", transpose_b, a, b, name=name),
    }
    return net.add_layer(MATMUL, (x, y), attrs, name=name)[0]


@public("linear algebra")
def softmax(x: Value, axis: int = -1, name: str | None = None) -> Value:
    """Softmax over ``axis``."""
    return network_of(x, op="softmax", name=name).add_layer(
        SOFTMAX, (x,), {"axis": axis}, name=name
    )[0]


def _reduce(kind: str, x: Value, axis: Any, keepdims: bool, name: str | None) -> Value:
    net = network_of(x, op=f"reduce_{kind}", name=name)
    keep = require_bool(f"reduce_{kind}", "keepdims", keepdims, x, name=name)
    attrs = {"kind": kind, "axes": axis, "keepdims": keep}
    return net.add_layer(REDUCE, (x,), attrs, name=name, base=f"reduce_{kind}")[0]


@public("linear algebra", method="sum")
def reduce_sum(
    x: Value, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Value:
    """Sum over ``axis`` (int, tuple, or None for all)."""
    return _reduce("sum", x, axis, keepdims, name)


@public("linear algebra", method="mean")
def reduce_mean(
    x: Value, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Value:
    """Mean over ``axis``."""
    return _reduce("mean", x, axis, keepdims, name)


@public("linear algebra", method="max")
def reduce_max(
    x: Value, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Value:
    """Maximum over ``axis``."""
    return _reduce("max", x, axis, keepdims, name)


@public("linear algebra", method="min")
def reduce_min(
    x: Value, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Value:
    """Minimum over ``axis``."""
    return _reduce("min", x, axis, keepdims, name)


@public("linear algebra", method="prod")
def reduce_prod(
    x: Value, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Value:
    """Product over ``axis``."""
    return _reduce("prod", x, axis, keepdims, name)


def _eps(eps: Any, x: Value, op: str, name: str | None) -> float:
    """``eps`` as a float; anything but a finite number >= 0 is the layer's DefinitionError."""
    ok = isinstance(eps, numbers.Real) and not isinstance(eps, bool)
    if not ok or not 0 <= float(eps) < float("inf"):
        raise fail(op, f"eps must be a finite number >= 0, got {eps!r}", x, name=name)
    return float(eps)


@public("normalization")
def layer_norm(
    x: Value,
    scale: TensorLike,
    bias: TensorLike,
    axes: Any = -1,
    eps: float = 1e-5,
    name: str | None = None,
) -> Value:
    """Layer normalization over trailing ``axes``; scale/bias have the normalized shape."""
    net = network_of(x, scale, bias, op="layer_norm", name=name)
    s, b = lift(net, scale, x, "layer_norm"), lift(net, bias, x, "layer_norm")
    attrs = {"kind": "layer", "axes": axes, "eps": _eps(eps, x, "layer_norm", name)}
    return net.add_layer(NORMALIZATION, (x, s, b), attrs, name=name, base="layer_norm")[0]


@public("normalization")
def rms_norm(
    x: Value, scale: TensorLike, axes: Any = -1, eps: float = 1e-6, name: str | None = None
) -> Value:
    """RMS normalization ``x / sqrt(mean(x**2) + eps) * scale`` over trailing ``axes``."""
    net = network_of(x, scale, op="rms_norm", name=name)
    s = lift(net, scale, x, "rms_norm")
    attrs = {"kind": "rms", "axes": axes, "eps": _eps(eps, x, "rms_norm", name)}
    return net.add_layer(NORMALIZATION, (x, s), attrs, name=name, base="rms_norm")[0]
