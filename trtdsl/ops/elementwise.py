"""Elementwise ops: binary arithmetic and comparisons, unary math, activations.

>>> import trtdsl as td
>>> net = td.Network("ew")
>>> x = net.input("x", (2, 3))
>>> y = (x * 2.0 + 1.0).relu()
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, Value
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import TensorLike, fail, network_of, record1, refuse_quantized
from .shapes import broadcast_shapes


def _compute(ctx: Any, x: Any, dtype: dtypes.DType) -> Any:
    """Upcast 16-bit floats to float32 for computing, as TensorRT's kernels accumulate."""
    return x.astype(dtypes.compute_dtype(dtype), copy=False)


def _int_div(xp: Any, a: Any, b: Any) -> Any:
    """Integer division rounding toward zero (C semantics, TensorRT's kDIV on ints)."""
    q = xp.abs(a) // xp.abs(b)
    return xp.where((a < 0) != (b < 0), -q, q)


# name -> (reference(xp, a, b, is_int), allowed dtype kinds, result is bool)
_BINARY: dict[str, tuple[Any, frozenset[str], bool]] = {
    "add": (lambda xp, a, b, i: a + b, frozenset({"float", "int"}), False),
    "sub": (lambda xp, a, b, i: a - b, frozenset({"float", "int"}), False),
    "mul": (lambda xp, a, b, i: a * b, frozenset({"float", "int"}), False),
    "div": (
        lambda xp, a, b, i: _int_div(xp, a, b) if i else a / b,
        frozenset({"float", "int"}),
        False,
    ),
    "floor_div": (
        lambda xp, a, b, i: xp.floor_divide(a, b) if i else xp.floor(a / b),
        frozenset({"float", "int"}),
        False,
    ),
    "pow": (lambda xp, a, b, i: xp.power(a, b), frozenset({"float"}), False),
    "min": (lambda xp, a, b, i: xp.minimum(a, b), frozenset({"float", "int"}), False),
    "max": (lambda xp, a, b, i: xp.maximum(a, b), frozenset({"float", "int"}), False),
    "equal": (lambda xp, a, b, i: a == b, frozenset({"float", "int", "bool"}), True),
    "less": (lambda xp, a, b, i: a < b, frozenset({"float", "int"}), True),
    "greater": (lambda xp, a, b, i: a > b, frozenset({"float", "int"}), True),
    "and": (lambda xp, a, b, i: xp.logical_and(a, b), frozenset({"bool"}), True),
    "or": (lambda xp, a, b, i: xp.logical_or(a, b), frozenset({"bool"}), True),
    "xor": (lambda xp, a, b, i: xp.logical_xor(a, b), frozenset({"bool"}), True),
}

BINARY_OPS: tuple[str, ...] = tuple(_BINARY)
#: Per 16-bit dtype, the kinds whose result is the same computed directly on the 16-bit arrays
#: as through the float32 upcast, in one pass instead of up to five (two upcasts, the op, the
#: downcast and their float32 temporaries). fp16: NumPy and CuPy compute each element in
#: float32 and round once (gpu/check_elementwise16.py checks CuPy bit for bit). bf16: only the
#: selections and comparisons (no rounding at all); CuPy's bf16 multiply gives other bits than
#: float32-then-round (docs/gpu-runs.md, 2026-11-28), so bf16 arithmetic keeps the upcast.
SAME_IN_16BIT: dict[str, frozenset[str]] = {
    "float16": frozenset({"add", "sub", "mul", "min", "max", "equal", "less", "greater"}),
    "bfloat16": frozenset({"min", "max", "equal", "less", "greater"}),
}


class ElementWise(OpDef):
    """Binary elementwise op with NumPy broadcasting (attr ``kind``: add, sub, ..., xor)."""

    name = "elementwise"

    def infer(self, layer: Layer) -> list[TensorType]:
        kind = layer.attrs["kind"]
        if kind not in _BINARY:
            raise layer.fail(f"unknown elementwise kind {kind!r}; expected one of {BINARY_OPS}")
        a, b = layer.input_types
        if a.dtype != b.dtype:
            raise layer.fail(
                f"dtype clash: {a.dtype} vs {b.dtype} (networks are strongly typed: cast one)"
            )
        _, kinds, to_bool = _BINARY[kind]
        refuse_quantized(layer, a.dtype, f"'{kind}'")
        if a.dtype.kind not in kinds:
            raise layer.fail(f"'{kind}' does not take {a.dtype} inputs")
        shape = broadcast_shapes(layer, a.shape, b.shape)
        return [TensorType(shape, dtypes.bool_ if to_bool else a.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        kind = layer.attrs["kind"]
        fn, _, to_bool = _BINARY[kind]
        dt = layer.input_types[0].dtype
        if kind in SAME_IN_16BIT.get(dt.name, ()):
            a, b = inputs
        else:
            a, b = (_compute(ctx, x, dt) for x in inputs)
        out = fn(ctx.xp, a, b, dt.kind == "int")
        return [out if to_bool else out.astype(dt.numpy, copy=False)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        rank = len(layer.outputs[0].type.shape)
        x, y = (b.expand_rank(t, len(ty.shape), rank) for t, ty in zip(inputs, layer.input_types))
        op = b.enum("ElementWiseOperation", layer.attrs["kind"])
        return [b.out(b.network.add_elementwise(x, y, op), layer)]

    def describe(self, layer: Layer) -> str:
        return layer.attrs["kind"]


def _erf(ctx: Any, x: Any) -> Any:
    return ctx.erf(x)


_UNARY: dict[str, tuple[Any, frozenset[str]]] = {
    "exp": (lambda ctx, x: ctx.xp.exp(x), frozenset({"float"})),
    "log": (lambda ctx, x: ctx.xp.log(x), frozenset({"float"})),
    "sqrt": (lambda ctx, x: ctx.xp.sqrt(x), frozenset({"float"})),
    "recip": (lambda ctx, x: 1.0 / x, frozenset({"float"})),
    "abs": (lambda ctx, x: ctx.xp.abs(x), frozenset({"float", "int"})),
    "neg": (lambda ctx, x: -x, frozenset({"float", "int"})),
    "tanh": (lambda ctx, x: ctx.xp.tanh(x), frozenset({"float"})),
    "erf": (_erf, frozenset({"float"})),
    "sin": (lambda ctx, x: ctx.xp.sin(x), frozenset({"float"})),
    "cos": (lambda ctx, x: ctx.xp.cos(x), frozenset({"float"})),
    "floor": (lambda ctx, x: ctx.xp.floor(x), frozenset({"float"})),
    "ceil": (lambda ctx, x: ctx.xp.ceil(x), frozenset({"float"})),
    "not": (lambda ctx, x: ctx.xp.logical_not(x), frozenset({"bool"})),
}

UNARY_OPS: tuple[str, ...] = tuple(_UNARY)


class Unary(OpDef):
    """Unary math (attr ``kind``: exp, log, sqrt, recip, abs, neg, tanh, erf, sin, cos, ...)."""

    name = "unary"

    def infer(self, layer: Layer) -> list[TensorType]:
        kind = layer.attrs["kind"]
        if kind not in _UNARY:
            raise layer.fail(f"unknown unary kind {kind!r}; expected one of {UNARY_OPS}")
        (x,) = layer.input_types
        refuse_quantized(layer, x.dtype, f"'{kind}'")
        if x.dtype.kind not in _UNARY[kind][1]:
            raise layer.fail(f"'{kind}' does not take {x.dtype} inputs")
        return [x]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        dt = layer.input_types[0].dtype
        out = _UNARY[layer.attrs["kind"]][0](ctx, _compute(ctx, inputs[0], dt))
        return [out.astype(dt.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        kind = layer.attrs["kind"]
        if kind == "tanh":  # TensorRT's tanh is an activation, not a unary op
            return [
                b.out(b.network.add_activation(inputs[0], b.enum("ActivationType", kind)), layer)
            ]
        op = b.enum("UnaryOperation", kind)
        return [b.out(b.network.add_unary(inputs[0], op), layer)]

    def describe(self, layer: Layer) -> str:
        return layer.attrs["kind"]


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

_ACTIVATIONS: dict[str, Any] = {
    "relu": lambda ctx, x: ctx.xp.maximum(x, 0),
    "sigmoid": lambda ctx, x: 1.0 / (1.0 + ctx.xp.exp(-x)),
    "gelu_erf": lambda ctx, x: 0.5 * x * (1.0 + ctx.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda ctx, x: (
        0.5 * x * (1.0 + ctx.xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
    ),
    "silu": lambda ctx, x: x / (1.0 + ctx.xp.exp(-x)),
}

ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)


@runtime_checkable
class FusedActivationContext(Protocol):
    """The optional hook a backend's run context may offer (the cupy backend does): the
    activation layer's outputs from one fused kernel, or None to run the reference."""

    def fused_activation(self, layer: Layer, inputs: list[Any]) -> list[Any] | None: ...


class Activation(OpDef):
    """Activation functions (attr ``kind``: relu, sigmoid, gelu_erf, gelu_tanh, silu)."""

    name = "activation"

    def infer(self, layer: Layer) -> list[TensorType]:
        kind = layer.attrs["kind"]
        if kind not in _ACTIVATIONS:
            raise layer.fail(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")
        (x,) = layer.input_types
        if not x.dtype.is_float:
            raise layer.fail(f"activation '{kind}' needs a float input, got {x.dtype}")
        refuse_quantized(layer, x.dtype, f"activation '{kind}'")
        return [x]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        if isinstance(ctx, FusedActivationContext):
            fused = ctx.fused_activation(layer, inputs)
            if fused is not None:
                return fused
        dt = layer.input_types[0].dtype
        out = _ACTIVATIONS[layer.attrs["kind"]](ctx, _compute(ctx, inputs[0], dt))
        return [out.astype(dt.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        kind = layer.attrs["kind"]
        (x,) = inputs
        if kind == "silu":  # TensorRT has no SiLU activation: x * sigmoid(x)
            sig = b.network.add_activation(x, b.enum("ActivationType", "sigmoid"))
            b.name(sig, layer, "sigmoid")
            prod = b.enum("ElementWiseOperation", "mul")
            return [b.out(b.network.add_elementwise(x, sig.get_output(0), prod), layer)]
        return [b.out(b.network.add_activation(x, b.enum("ActivationType", kind)), layer)]

    def describe(self, layer: Layer) -> str:
        return layer.attrs["kind"]


ELEMENTWISE = ElementWise()
UNARY = Unary()
ACTIVATION = Activation()


def erf_numpy(x: np.ndarray) -> np.ndarray:
    """Exact (float64) erf for the NumPy reference, which has no erf of its own."""
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype, copy=False)


# -- builders ------------------------------------------------------------------------------
def _binary(kind: str, a: TensorLike, b: TensorLike, name: str | None) -> Value:
    return record1(ELEMENTWISE, (a, b), {"kind": kind}, name=name, base=kind)


def _unary(op: OpDef, kind: str, x: Value, name: str | None) -> Value:
    network_of(x, op=kind, name=name)  # a Tensor, not a scalar
    return record1(op, (x,), {"kind": kind}, name=name, base=kind)


@public("elementwise", method=None)
def add(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a + b`` with broadcasting. ``F.add(x, 1.0)``"""
    return _binary("add", a, b, name)


@public("elementwise", method=None)
def sub(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a - b``."""
    return _binary("sub", a, b, name)


@public("elementwise", method=None)
def mul(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a * b``."""
    return _binary("mul", a, b, name)


@public("elementwise", method=None)
def div(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a / b`` (ints: rounds toward zero)."""
    return _binary("div", a, b, name)


@public("elementwise", method=None)
def floor_div(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a // b`` (rounds toward minus infinity)."""
    return _binary("floor_div", a, b, name)


@public("elementwise", method=None)
def pow(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:  # noqa: A001
    """``a ** b`` (floats)."""
    return _binary("pow", a, b, name)


@public("elementwise", method=None)
def minimum(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """Elementwise minimum."""
    return _binary("min", a, b, name)


@public("elementwise", method=None)
def maximum(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """Elementwise maximum."""
    return _binary("max", a, b, name)


@public("elementwise", method=None)
def equal(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a == b`` as bool."""
    return _binary("equal", a, b, name)


@public("elementwise", method=None)
def less(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a < b`` as bool."""
    return _binary("less", a, b, name)


@public("elementwise", method=None)
def greater(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a > b`` as bool."""
    return _binary("greater", a, b, name)


@public("elementwise", method=None)
def less_equal(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a <= b`` as bool (two layers: not greater)."""
    return logical_not(greater(a, b), name=name)


@public("elementwise", method=None)
def greater_equal(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a >= b`` as bool (two layers: not less)."""
    return logical_not(less(a, b), name=name)


@public("elementwise", method=None)
def not_equal(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``a != b`` as bool (two layers: not equal)."""
    return logical_not(equal(a, b), name=name)


@public("elementwise", method=None)
def logical_and(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """Bool ``a and b``."""
    return _binary("and", a, b, name)


@public("elementwise", method=None)
def logical_or(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """Bool ``a or b``."""
    return _binary("or", a, b, name)


@public("elementwise", method=None)
def logical_xor(a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """Bool ``a xor b``."""
    return _binary("xor", a, b, name)


@public("unary", method=None)
def logical_not(x: Value, name: str | None = None) -> Value:
    """Bool not."""
    return _unary(UNARY, "not", x, name)


@public("unary")
def exp(x: Value, name: str | None = None) -> Value:
    """``e ** x``."""
    return _unary(UNARY, "exp", x, name)


@public("unary")
def log(x: Value, name: str | None = None) -> Value:
    """Natural logarithm."""
    return _unary(UNARY, "log", x, name)


@public("unary")
def sqrt(x: Value, name: str | None = None) -> Value:
    """Square root."""
    return _unary(UNARY, "sqrt", x, name)


@public("unary")
def recip(x: Value, name: str | None = None) -> Value:
    """``1 / x``."""
    return _unary(UNARY, "recip", x, name)


@public("unary")
def abs(x: Value, name: str | None = None) -> Value:  # noqa: A001
    """Absolute value."""
    return _unary(UNARY, "abs", x, name)


@public("unary")
def neg(x: Value, name: str | None = None) -> Value:
    """``-x``."""
    return _unary(UNARY, "neg", x, name)


@public("unary")
def tanh(x: Value, name: str | None = None) -> Value:
    """Hyperbolic tangent."""
    return _unary(UNARY, "tanh", x, name)


@public("unary")
def erf(x: Value, name: str | None = None) -> Value:
    """Error function."""
    return _unary(UNARY, "erf", x, name)


@public("unary")
def sin(x: Value, name: str | None = None) -> Value:
    """Sine."""
    return _unary(UNARY, "sin", x, name)


@public("unary")
def cos(x: Value, name: str | None = None) -> Value:
    """Cosine."""
    return _unary(UNARY, "cos", x, name)


@public("unary")
def floor(x: Value, name: str | None = None) -> Value:
    """Round down."""
    return _unary(UNARY, "floor", x, name)


@public("unary")
def ceil(x: Value, name: str | None = None) -> Value:
    """Round up."""
    return _unary(UNARY, "ceil", x, name)


@public("activations")
def relu(x: Value, name: str | None = None) -> Value:
    """``max(x, 0)``."""
    return _unary(ACTIVATION, "relu", x, name)


@public("activations")
def sigmoid(x: Value, name: str | None = None) -> Value:
    """``1 / (1 + exp(-x))``."""
    return _unary(ACTIVATION, "sigmoid", x, name)


@public("activations")
def gelu(x: Value, approximate: str = "none", name: str | None = None) -> Value:
    """GELU; ``approximate="none"`` uses erf, ``"tanh"`` the tanh approximation."""
    kinds = {"none": "gelu_erf", "erf": "gelu_erf", "tanh": "gelu_tanh"}
    if not isinstance(approximate, str) or approximate not in kinds:
        raise fail(
            "gelu", f"approximate must be 'none' or 'tanh', got {approximate!r}", x, name=name
        )
    return _unary(ACTIVATION, kinds[approximate], x, name)


@public("activations")
def silu(x: Value, name: str | None = None) -> Value:
    """``x * sigmoid(x)``."""
    return _unary(ACTIVATION, "silu", x, name)


@public("elementwise")
def clip(x: Value, low: TensorLike, high: TensorLike, name: str | None = None) -> Value:
    """``min(max(x, low), high)`` (two layers)."""
    return minimum(maximum(x, low), high, name=name)
