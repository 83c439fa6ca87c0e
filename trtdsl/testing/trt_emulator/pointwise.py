"""Pointwise layers: IElementWise, IUnary, IActivation, ISelect, ICast, IIdentity.

Semantics from TensorRT's operator documentation (ElementWise, Unary, Activation, Select,
Cast, Identity pages) and the 11.4 bindings' enum docstrings. 16-bit floats are computed in
float32 and rounded once to the layer's type; integers use their own type (wrapping).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .graph import (
    BOOL_TYPE,
    LayerView,
    broadcast_shape,
    compute_type,
    enum_name,
    is_float,
    is_int,
    numpy_type,
    type_name,
)

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _int_div(a: np.ndarray, b: np.ndarray, floor: bool) -> np.ndarray:
    if np.any(b == 0):
        raise ZeroDivisionError("integer division by zero")
    q = np.floor_divide(a, b)
    if floor:
        return q
    # DIV on integers rounds toward zero (C semantics); FLOOR_DIV rounds down
    adjust = (q < 0) & (q * b != a)
    return q + adjust.astype(q.dtype)


_NUMERIC = ("float", "int")
# op -> (fn(a, b, is_int), accepted kinds, result is bool)
_ELEMENTWISE: dict[str, tuple[Callable[..., Any], tuple[str, ...], bool]] = {
    "SUM": (lambda a, b, i: a + b, _NUMERIC, False),
    "SUB": (lambda a, b, i: a - b, _NUMERIC, False),
    "PROD": (lambda a, b, i: a * b, _NUMERIC, False),
    "DIV": (lambda a, b, i: _int_div(a, b, False) if i else a / b, _NUMERIC, False),
    "FLOOR_DIV": (lambda a, b, i: _int_div(a, b, True) if i else np.floor(a / b), _NUMERIC, False),
    "POW": (lambda a, b, i: np.power(a, b), ("float",), False),
    "MAX": (lambda a, b, i: np.maximum(a, b), _NUMERIC, False),
    "MIN": (lambda a, b, i: np.minimum(a, b), _NUMERIC, False),
    "EQUAL": (lambda a, b, i: a == b, ("float", "int", "bool"), True),
    "GREATER": (lambda a, b, i: a > b, _NUMERIC, True),
    "LESS": (lambda a, b, i: a < b, _NUMERIC, True),
    "AND": (lambda a, b, i: np.logical_and(a, b), ("bool",), True),
    "OR": (lambda a, b, i: np.logical_or(a, b), ("bool",), True),
    "XOR": (lambda a, b, i: np.logical_xor(a, b), ("bool",), True),
}


def kind(a: np.ndarray) -> str:
    return "float" if is_float(a) else "int" if is_int(a) else "bool"


def elementwise(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``op(input1, input2)`` with TensorRT broadcasting (equal ranks, 1-dims stretch)."""
    v.allow("op")
    a, b = ins
    op = enum_name(v.prop("op"), v.where())
    if op not in _ELEMENTWISE:
        raise v.unsupported(f"ElementWiseOperation.{op}")
    fn, kinds, to_bool = _ELEMENTWISE[op]
    if a.dtype != b.dtype:
        raise v.fail(
            f"input types differ ({type_name(a.dtype)} vs {type_name(b.dtype)}); a strongly "
            "typed network needs an explicit cast"
        )
    if kind(a) not in kinds:
        raise v.fail(f"{op} does not take {type_name(a.dtype)} inputs")
    broadcast_shape(v.where(), a.shape, b.shape)
    ct = compute_type(a.dtype)
    with np.errstate(all="ignore"):
        try:
            out = fn(a.astype(ct), b.astype(ct), kind(a) == "int")
        except ZeroDivisionError as e:
            raise v.fail(str(e)) from None
        return [np.asarray(out, BOOL_TYPE if to_bool else a.dtype)]  # overflow -> inf


_FLOAT_ONLY = ("float",)
_UNARY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], tuple[str, ...]]] = {
    "EXP": (np.exp, _FLOAT_ONLY),
    "LOG": (np.log, _FLOAT_ONLY),
    "SQRT": (np.sqrt, _FLOAT_ONLY),
    "RECIP": (lambda x: 1.0 / x, _FLOAT_ONLY),
    "ABS": (np.abs, _NUMERIC),
    "NEG": (np.negative, _NUMERIC),
    "SIN": (np.sin, _FLOAT_ONLY),
    "COS": (np.cos, _FLOAT_ONLY),
    "TAN": (np.tan, _FLOAT_ONLY),
    "SINH": (np.sinh, _FLOAT_ONLY),
    "COSH": (np.cosh, _FLOAT_ONLY),
    "ASIN": (np.arcsin, _FLOAT_ONLY),
    "ACOS": (np.arccos, _FLOAT_ONLY),
    "ATAN": (np.arctan, _FLOAT_ONLY),
    "ASINH": (np.arcsinh, _FLOAT_ONLY),
    "ACOSH": (np.arccosh, _FLOAT_ONLY),
    "ATANH": (np.arctanh, _FLOAT_ONLY),
    "CEIL": (np.ceil, _FLOAT_ONLY),
    "FLOOR": (np.floor, _FLOAT_ONLY),
    "ERF": (lambda x: _erf(x), _FLOAT_ONLY),
    "NOT": (np.logical_not, ("bool",)),
    "SIGN": (np.sign, _NUMERIC),
    "ROUND": (np.round, _FLOAT_ONLY),  # NumPy rounds half to even, as TensorRT documents
    "ISINF": (np.isinf, _FLOAT_ONLY),
    "ISNAN": (np.isnan, _FLOAT_ONLY),
}


def unary(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``op(input)``; ISINF/ISNAN give bool, the others keep the input type."""
    v.allow("op")
    (x,) = ins
    op = enum_name(v.prop("op"), v.where())
    if op not in _UNARY:
        raise v.unsupported(f"UnaryOperation.{op}")
    fn, kinds = _UNARY[op]
    if kind(x) not in kinds:
        raise v.fail(f"{op} does not take {type_name(x.dtype)} inputs")
    with np.errstate(all="ignore"):
        out = fn(x.astype(compute_type(x.dtype)))
    return [np.asarray(out, BOOL_TYPE if op in ("ISINF", "ISNAN") else x.dtype)]


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# ActivationType -> f(x, alpha, beta), from the bindings' ActivationType member docs
_ACTIVATIONS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "RELU": lambda x, a, b: np.maximum(x, 0),
    "SIGMOID": lambda x, a, b: 1.0 / (1.0 + np.exp(-x)),
    "TANH": lambda x, a, b: np.tanh(x),
    "LEAKY_RELU": lambda x, a, b: np.where(x >= 0, x, a * x),
    "ELU": lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)),
    "SELU": lambda x, a, b: np.where(x > 0, b * x, b * (a * np.exp(x) - a)),
    "SOFTSIGN": lambda x, a, b: x / (1 + np.abs(x)),
    "SOFTPLUS": lambda x, a, b: a * np.log(np.exp(b * x) + 1),
    "CLIP": lambda x, a, b: np.maximum(a, np.minimum(b, x)),
    "HARD_SIGMOID": lambda x, a, b: np.maximum(0, np.minimum(1, a * x + b)),
    "SCALED_TANH": lambda x, a, b: a * np.tanh(b * x),
    "THRESHOLDED_RELU": lambda x, a, b: np.where(x > a, x, 0),
    "GELU_ERF": lambda x, a, b: 0.5 * x * (1 + _erf(math.sqrt(0.5) * x)),
    "GELU_TANH": lambda x, a, b: 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (0.044715 * x**3 + x))),
}


def activation(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``type(input)`` with ``alpha``/``beta`` (default 0) where the type uses them."""
    v.allow("type", "alpha", "beta")
    (x,) = ins
    act = enum_name(v.prop("type"), v.where())
    if act not in _ACTIVATIONS:
        raise v.unsupported(f"ActivationType.{act}")
    if not is_float(x):
        raise v.fail(f"activations need a float input, got {type_name(x.dtype)}")
    alpha, beta = float(v.prop("alpha", 0.0)), float(v.prop("beta", 0.0))
    with np.errstate(all="ignore"):
        out = _ACTIVATIONS[act](x.astype(np.float32), alpha, beta)
    return [np.asarray(out, np.float32).astype(x.dtype)]


def select(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``where(condition, then_input, else_input)``, broadcast like elementwise."""
    v.allow()
    c, a, b = ins
    if c.dtype != BOOL_TYPE:
        raise v.fail(f"the condition must be BOOL, got {type_name(c.dtype)}")
    if a.dtype != b.dtype:
        raise v.fail(f"then/else types differ ({type_name(a.dtype)} vs {type_name(b.dtype)})")
    broadcast_shape(v.where(), c.shape, a.shape, b.shape)
    return [np.where(c, a, b).astype(a.dtype)]


def convert(x: np.ndarray, to: np.dtype) -> np.ndarray:
    """TensorRT's cast: float -> int truncates toward zero, anything -> bool is ``!= 0``,
    bool -> number is 0/1, between 16-bit floats through float32."""
    if to == BOOL_TYPE:
        return x != 0
    if is_float(x) and np.issubdtype(to, np.integer):
        with np.errstate(all="ignore"):
            return np.trunc(x.astype(np.float64)).astype(to)
    if is_float(x):
        return x.astype(np.float32).astype(to)
    return x.astype(to)


def cast(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """The input converted to ``to_type``."""
    v.allow("to_type")
    (x,) = ins
    return [convert(x, numpy_type(v.prop("to_type")))]


def identity(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """A copy (a strongly typed network's identity keeps the type)."""
    v.allow()
    (x,) = ins
    return [x.copy()]
