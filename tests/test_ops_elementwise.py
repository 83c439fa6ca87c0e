"""Elementwise ops (binary arithmetic, comparisons, logic, unary math, activations) on the NumPy
backend against independent float64 formulas, with broadcasting, scalars and dynamic dims."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    FAST,
    FLOATS,
    FLOATS_BF16,
    INTS,
    QUICK,
    assert_close,
    assert_equal,
    broadcast_np,
    broadcast_pairs,
    erf64,
    f64,
    integer_grid,
    np_dtype,
    random_array,
    seeds,
    shapes,
)

import trtdsl as td
from trtdsl import functional as F


def run(net, **feeds):
    return net.run(feeds, backend="numpy")


# -- binary arithmetic ------------------------------------------------------------------------
# name -> (DSL call, float64 formula, (low, high, away_from_zero) for a, same for b)
def _floor_div64(a, b):
    return np.floor(a / b)


BINARY_FLOAT = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, (-3, 3, 0), (-3, 3, 0)),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, (-3, 3, 0), (-3, 3, 0)),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, (-3, 3, 0), (-3, 3, 0)),
    "div": (lambda a, b: a / b, lambda a, b: a / b, (-3, 3, 0), (0, 3, 0.5)),
    "pow": (lambda a, b: a**b, lambda a, b: np.exp(b * np.log(a)), (0.5, 2, 0), (-2, 2, 0)),
    "min": (F.minimum, lambda a, b: np.where(a < b, a, b), (-3, 3, 0), (-3, 3, 0)),
    "max": (F.maximum, lambda a, b: np.where(a > b, a, b), (-3, 3, 0), (-3, 3, 0)),
    "F.add": (F.add, lambda a, b: a + b, (-3, 3, 0), (-3, 3, 0)),
    "F.mul": (F.mul, lambda a, b: a * b, (-3, 3, 0), (-3, 3, 0)),
    "F.sub": (F.sub, lambda a, b: a - b, (-3, 3, 0), (-3, 3, 0)),
    "F.div": (F.div, lambda a, b: a / b, (-3, 3, 0), (0, 3, 0.5)),
    "F.pow": (F.pow, lambda a, b: np.exp(b * np.log(a)), (0.5, 2, 0), (-2, 2, 0)),
}


def _draw(rng, shape, dtype, spec):
    low, high, away = spec
    return random_array(rng, shape, dtype, low, high, away_from_zero=away)


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@pytest.mark.parametrize("op", sorted(BINARY_FLOAT))
@QUICK
@given(pair=broadcast_pairs(), seed=seeds)
def test_binary_float_broadcast(op, dtype, pair, seed):
    dsl, formula, sa, sb = BINARY_FLOAT[op]
    rng = np.random.default_rng(seed)
    a, b = _draw(rng, pair[0], dtype, sa), _draw(rng, pair[1], dtype, sb)
    net = td.Network(op)
    y = dsl(net.input("a", a.shape, dtype), net.input("b", b.shape, dtype))
    assert y.shape == broadcast_np(a.shape, b.shape)
    assert y.dtype == td.as_dtype(dtype)
    net.output(y, "y")
    assert_close(run(net, a=a, b=b)["y"], formula(f64(a), f64(b)), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@FAST
@given(shape=shapes(1, 3), seed=seeds)
def test_floor_div_float(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    a = random_array(rng, shape, dtype, -20, 20)
    b = random_array(rng, shape, dtype, 0, 4, away_from_zero=0.5)
    net = td.Network("fd")
    net.output(net.input("a", shape, dtype) // net.input("b", shape, dtype), "y")
    y = run(net, a=a, b=b)["y"]
    q = f64(a) / f64(b)
    # a quotient within rounding of an integer may floor either way in float32: skip those
    clear = np.abs(q - np.round(q)) > 1e-4 * np.maximum(1, np.abs(q))
    assert y.dtype == np_dtype(dtype)
    np.testing.assert_array_equal(f64(y)[clear], np.floor(q)[clear])


def test_floor_div_and_div_float_exact_quotients():
    net = td.Network("fd")
    a, b = net.input("a", (6,)), net.input("b", (6,))
    net.output(a // b, "fd")
    net.output(a / b, "d")
    av = np.array([7, -7, 7, -7, 6, -6], np.float32)
    bv = np.array([2, 2, -2, -2, 3, 3], np.float32)
    out = run(net, a=av, b=bv)
    assert out["fd"].tolist() == [3, -4, -4, 3, 2, -2]
    assert out["d"].tolist() == [3.5, -3.5, -3.5, 3.5, 2, -2]


BINARY_INT = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    # TensorRT's kDIV on integers rounds toward zero (C semantics)
    "div": (lambda a, b: a / b, lambda a, b: np.trunc(a / b)),
    "floor_div": (lambda a, b: a // b, lambda a, b: np.floor(a / b)),
    "min": (F.minimum, np.minimum),
    "max": (F.maximum, np.maximum),
}


@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("op", sorted(BINARY_INT))
@QUICK
@given(pair=broadcast_pairs(3), seed=seeds)
def test_binary_int(op, dtype, pair, seed):
    dsl, formula = BINARY_INT[op]
    rng = np.random.default_rng(seed)
    a = random_array(rng, pair[0], dtype, -50, 50)
    b = random_array(rng, pair[1], dtype, -9, 9, away_from_zero=1)
    net = td.Network(op)
    net.output(dsl(net.input("a", a.shape, dtype), net.input("b", b.shape, dtype)), "y")
    expected = formula(f64(a), f64(b)).astype(np_dtype(dtype))
    assert_equal(run(net, a=a, b=b)["y"], expected, dtype)


def test_int_div_rounds_toward_zero_and_floor_div_rounds_down():
    net = td.Network("idiv")
    a, b = net.input("a", (4,), "int32"), net.input("b", (4,), "int32")
    net.output(a / b, "div")
    net.output(a // b, "floor_div")
    av = np.array([7, -7, 7, -7], np.int32)
    bv = np.array([2, 2, -2, -2], np.int32)
    out = run(net, a=av, b=bv)
    assert out["div"].tolist() == [3, -3, -3, 3]
    assert out["floor_div"].tolist() == [3, -4, -4, 3]
    assert out["div"].dtype == np.int32


# -- scalars and arrays as operands -----------------------------------------------------------
SCALAR_EXPRS = {
    "x * 2.0": (lambda x: x * 2.0, lambda x: x * 2.0),
    "2.0 * x": (lambda x: 2.0 * x, lambda x: 2.0 * x),
    "1.0 - x": (lambda x: 1.0 - x, lambda x: 1.0 - x),
    "x - 1": (lambda x: x - 1, lambda x: x - 1.0),
    "x + 0.5": (lambda x: x + 0.5, lambda x: x + 0.5),
    "x / 4": (lambda x: x / 4, lambda x: x / 4.0),
    "3.0 / x": (lambda x: 3.0 / x, lambda x: 3.0 / x),
    "x ** 2": (lambda x: x**2, lambda x: x * x),
    "2.0 ** x": (lambda x: 2.0**x, lambda x: np.exp2(x)),
    "np.float32(3) * x": (lambda x: np.float32(3) * x, lambda x: 3.0 * x),
    "np.float64(0.25) + x": (lambda x: np.float64(0.25) + x, lambda x: 0.25 + x),
    "np.int64(5) - x": (lambda x: np.int64(5) - x, lambda x: 5.0 - x),
    "-x": (lambda x: -x, lambda x: -x),
    "+x": (lambda x: +x, lambda x: x),
    "abs(x)": (lambda x: abs(x), np.abs),
    "min(x, 0.5)": (lambda x: F.minimum(x, 0.5), lambda x: np.minimum(x, 0.5)),
    "max(-1, x)": (lambda x: F.maximum(-1.0, x), lambda x: np.maximum(x, -1.0)),
    "clip(x, -1, 1)": (lambda x: x.clip(-1.0, 1.0), lambda x: np.minimum(np.maximum(x, -1), 1)),
}


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@pytest.mark.parametrize("expr", sorted(SCALAR_EXPRS))
@QUICK
@given(shape=shapes(0, 3), seed=seeds)
def test_scalar_operands_keep_the_tensor_dtype(expr, dtype, shape, seed):
    dsl, formula = SCALAR_EXPRS[expr]
    x = random_array(np.random.default_rng(seed), shape, dtype, away_from_zero=0.25)
    net = td.Network("s")
    y = dsl(net.input("x", shape, dtype))
    assert isinstance(y, td.Tensor) and y.dtype == td.as_dtype(dtype) and y.shape == shape
    net.output(y, "y")
    assert_close(run(net, x=x)["y"], formula(f64(x)), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@FAST
@given(pair=broadcast_pairs(3), seed=seeds)
def test_ndarray_operands_on_either_side(dtype, pair, seed):
    rng = np.random.default_rng(seed)
    x = random_array(rng, pair[0], dtype)
    c = random_array(rng, pair[1], dtype)  # same dtype: becomes a constant as it is
    c64 = rng.uniform(-2, 2, size=pair[1])  # float64: becomes a constant of x's dtype
    net = td.Network("arr")
    t = net.input("x", x.shape, dtype)
    outs = {"c+t": c + t, "t-c": t - c, "c*t": c * t, "t/c64": t / (c64 + 3.0), "c64-t": c64 - t}
    for k, v in outs.items():
        assert isinstance(v, td.Tensor), k
        assert v.dtype == td.as_dtype(dtype), k
        net.output(v, k)
    out = run(net, x=x)
    c64r = f64(c64.astype(np_dtype(dtype)))
    c64p3 = f64((c64 + 3.0).astype(np_dtype(dtype)))
    assert_close(out["c+t"], f64(c) + f64(x), dtype)
    assert_close(out["t-c"], f64(x) - f64(c), dtype)
    assert_close(out["c*t"], f64(c) * f64(x), dtype)
    assert_close(out["t/c64"], f64(x) / c64p3, dtype)
    assert_close(out["c64-t"], c64r - f64(x), dtype)


def test_int_tensor_with_int_scalars():
    net = td.Network("i")
    i = net.input("i", (5,), "int32")
    net.output(i * 3 - 1, "a")
    net.output(i // 2, "b")
    net.output(-7 / i, "c")
    net.output(i * 2.0, "d")  # 2.0 is exactly an int32
    iv = np.array([-3, -1, 1, 2, 7], np.int32)
    out = run(net, i=iv)
    assert_equal(out["a"], np.array([-10, -4, 2, 5, 20]), "int32")
    assert_equal(out["b"], np.array([-2, -1, 0, 1, 3]), "int32")
    assert_equal(out["c"], np.array([2, 7, -7, -3, -1]), "int32")
    assert_equal(out["d"], np.array([-6, -2, 2, 4, 14]), "int32")


# -- dynamic dims -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@FAST
@given(rows=st.lists(st.integers(1, 6), min_size=2, max_size=3), cols=st.integers(1, 5))
def test_dynamic_rows_fed_different_sizes(dtype, rows, cols):
    net = td.Network("dyn")
    x, y = net.input("x", (None, cols), dtype), net.input("y", (None, cols), dtype)
    bias = net.input("bias", (cols,), dtype)
    col = net.input("col", (None, 1), dtype)
    z = (x * y + bias) - col
    assert z.shape == (None, cols)
    net.output(z, "z")
    rng = np.random.default_rng(len(rows) * 100 + cols)
    b = random_array(rng, (cols,), dtype)
    for n in rows:
        xv, yv = random_array(rng, (n, cols), dtype), random_array(rng, (n, cols), dtype)
        cv = random_array(rng, (n, 1), dtype)
        got = run(net, x=xv, y=yv, bias=b, col=cv)["z"]
        assert got.shape == (n, cols)
        # three roundings to the dtype along the chain (x*y, +bias, -col)
        tol = {"float32": {"rtol": 1e-5, "atol": 1e-5}, "float16": {"rtol": 1e-2, "atol": 2e-2}}
        assert_close(got, f64(xv) * f64(yv) + f64(b) - f64(cv), dtype, tol[dtype])


def test_dynamic_dims_broadcast_against_each_other():
    net = td.Network("outer")
    a, b = net.input("a", (None, 1)), net.input("b", (1, None))
    z = a * b
    assert z.shape == (None, None)
    net.output(z, "z")
    for m, n in ((1, 4), (3, 1), (2, 5)):
        av = np.arange(1, m + 1, dtype=np.float32).reshape(m, 1)
        bv = np.arange(1, n + 1, dtype=np.float32).reshape(1, n) * 10
        np.testing.assert_array_equal(run(net, a=av, b=bv)["z"], f64(av) @ f64(bv))


# -- comparisons and logic --------------------------------------------------------------------
COMPARE = {
    "equal": (F.equal, np.equal),
    "not_equal": (F.not_equal, np.not_equal),
    "less": (lambda a, b: a < b, np.less),
    "greater": (lambda a, b: a > b, np.greater),
    "less_equal": (lambda a, b: a <= b, np.less_equal),
    "greater_equal": (lambda a, b: a >= b, np.greater_equal),
    "F.less": (F.less, np.less),
    "F.greater_equal": (F.greater_equal, np.greater_equal),
}


@pytest.mark.parametrize("dtype", FLOATS_BF16 + ("int32",))
@pytest.mark.parametrize("op", sorted(COMPARE))
@QUICK
@given(pair=broadcast_pairs(3), seed=seeds)
def test_comparisons(op, dtype, pair, seed):
    dsl, formula = COMPARE[op]
    rng = np.random.default_rng(seed)
    a, b = integer_grid(rng, pair[0], dtype), integer_grid(rng, pair[1], dtype)
    net = td.Network(op)
    y = dsl(net.input("a", a.shape, dtype), net.input("b", b.shape, dtype))
    assert y.dtype == td.bool_
    net.output(y, "y")
    assert_equal(run(net, a=a, b=b)["y"], formula(f64(a), f64(b)), "bool")


def test_comparisons_with_scalars_on_either_side():
    net = td.Network("cmp")
    x = net.input("x", (5,))
    net.output(x < 0.5, "lt")
    net.output(0.5 < x, "rgt")  # Python turns this into x > 0.5
    net.output(x >= 1, "ge")
    net.output(F.equal(x, 1.0), "eq")
    xv = np.array([-1, 0.5, 1, 2, 0.25], np.float32)
    out = run(net, x=xv)
    assert out["lt"].tolist() == [True, False, False, False, True]
    assert out["rgt"].tolist() == [False, False, True, True, False]
    assert out["ge"].tolist() == [False, False, True, True, False]
    assert out["eq"].tolist() == [False, False, True, False, False]


LOGIC = {
    "and": (lambda a, b: a & b, lambda a, b: [x and y for x, y in zip(a, b)]),
    "or": (lambda a, b: a | b, lambda a, b: [x or y for x, y in zip(a, b)]),
    "xor": (lambda a, b: a ^ b, lambda a, b: [x != y for x, y in zip(a, b)]),
    "F.and": (F.logical_and, lambda a, b: [x and y for x, y in zip(a, b)]),
    "F.or": (F.logical_or, lambda a, b: [x or y for x, y in zip(a, b)]),
    "F.xor": (F.logical_xor, lambda a, b: [x != y for x, y in zip(a, b)]),
}


@pytest.mark.parametrize("op", sorted(LOGIC))
@FAST
@given(pair=broadcast_pairs(3), seed=seeds)
def test_logical_binary(op, pair, seed):
    dsl, formula = LOGIC[op]
    rng = np.random.default_rng(seed)
    a, b = random_array(rng, pair[0], "bool"), random_array(rng, pair[1], "bool")
    net = td.Network(op)
    net.output(dsl(net.input("a", a.shape, "bool"), net.input("b", b.shape, "bool")), "y")
    shape = broadcast_np(a.shape, b.shape)
    ab, bb = np.broadcast_to(a, shape).ravel().tolist(), np.broadcast_to(b, shape).ravel().tolist()
    expected = np.array(formula(ab, bb), dtype=bool).reshape(shape)
    assert_equal(run(net, a=a, b=b)["y"], expected, "bool")


@FAST
@given(shape=shapes(0, 3), seed=seeds)
def test_logical_not(shape, seed):
    a = random_array(np.random.default_rng(seed), shape, "bool")
    net = td.Network("not")
    t = net.input("a", shape, "bool")
    net.output(~t, "inv")
    net.output(F.logical_not(t), "f")
    out = run(net, a=a)
    expected = np.array([not v for v in a.ravel().tolist()], dtype=bool).reshape(shape)
    assert_equal(out["inv"], expected, "bool")
    assert_equal(out["f"], expected, "bool")


def test_select_on_a_comparison_masks_values():
    net = td.Network("mask")
    x = net.input("x", (2, 3))
    net.output(td.where(x > 0, x, 0.0), "relu")
    xv = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(run(net, x=xv)["relu"], np.maximum(f64(xv), 0))


# -- unary math -------------------------------------------------------------------------------
# name -> (DSL call, float64 formula, (low, high, away_from_zero))
UNARY = {
    "exp": (lambda x: x.exp(), np.exp, (-4, 4, 0)),
    "log": (lambda x: x.log(), np.log, (0.05, 5, 0)),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, (0, 5, 0)),
    "recip": (lambda x: x.recip(), lambda x: 1.0 / x, (0, 4, 0.25)),
    "abs": (lambda x: abs(x), lambda x: np.where(x < 0, -x, x), (-3, 3, 0)),
    "F.abs": (F.abs, lambda x: np.where(x < 0, -x, x), (-3, 3, 0)),
    "neg": (lambda x: -x, lambda x: -x, (-3, 3, 0)),
    "F.neg": (F.neg, lambda x: -x, (-3, 3, 0)),
    "tanh": (lambda x: x.tanh(), np.tanh, (-4, 4, 0)),
    "erf": (lambda x: x.erf(), erf64, (-3, 3, 0)),
    "sin": (lambda x: x.sin(), np.sin, (-4, 4, 0)),
    "cos": (lambda x: x.cos(), np.cos, (-4, 4, 0)),
    "floor": (lambda x: x.floor(), np.floor, (-5, 5, 0)),
    "ceil": (lambda x: F.ceil(x), np.ceil, (-5, 5, 0)),
    "F.exp": (F.exp, np.exp, (-4, 4, 0)),
    "F.log": (F.log, np.log, (0.05, 5, 0)),
}


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@pytest.mark.parametrize("op", sorted(UNARY))
@QUICK
@given(shape=shapes(0, 4), seed=seeds)
def test_unary(op, dtype, shape, seed):
    dsl, formula, (low, high, away) = UNARY[op]
    x = random_array(np.random.default_rng(seed), shape, dtype, low, high, away_from_zero=away)
    net = td.Network(op)
    y = dsl(net.input("x", shape, dtype))
    assert y.shape == shape and y.dtype == td.as_dtype(dtype)
    net.output(y, "y")
    assert_close(run(net, x=x)["y"], formula(f64(x)), dtype)


@pytest.mark.parametrize("dtype", INTS)
@FAST
@given(shape=shapes(1, 3), seed=seeds)
def test_unary_int_abs_neg(dtype, shape, seed):
    x = random_array(np.random.default_rng(seed), shape, dtype, -100, 100)
    net = td.Network("iabs")
    t = net.input("x", shape, dtype)
    net.output(abs(t), "abs")
    net.output(-t, "neg")
    out = run(net, x=x)
    assert_equal(out["abs"], np.where(x < 0, -f64(x), f64(x)).astype(np_dtype(dtype)), dtype)
    assert_equal(out["neg"], (-f64(x)).astype(np_dtype(dtype)), dtype)


def test_unary_floor_ceil_at_halves_and_negatives():
    net = td.Network("fc")
    x = net.input("x", (6,))
    net.output(x.floor(), "floor")
    net.output(x.ceil(), "ceil")
    xv = np.array([-2.5, -0.5, 0.5, 1.0, 2.7, -3.0], np.float32)
    out = run(net, x=xv)
    assert out["floor"].tolist() == [-3, -1, 0, 1, 2, -3]
    assert out["ceil"].tolist() == [-2, 0, 1, 1, 3, -3]


# -- activations ------------------------------------------------------------------------------
def _gelu_tanh64(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {
    "relu": (lambda x: x.relu(), lambda x: np.where(x > 0, x, 0.0)),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: 1.0 / (1.0 + np.exp(-x))),
    "gelu_erf": (lambda x: x.gelu(), lambda x: 0.5 * x * (1.0 + erf64(x / math.sqrt(2.0)))),
    "gelu_erf_named": (
        lambda x: F.gelu(x, approximate="erf"),
        lambda x: x * 0.5 * (1.0 + erf64(x * math.sqrt(0.5))),
    ),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), _gelu_tanh64),
    "silu": (lambda x: x.silu(), lambda x: x / (1.0 + np.exp(-x))),
    "F.relu": (F.relu, lambda x: np.maximum(x, 0.0)),
    "F.sigmoid": (F.sigmoid, lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))),
}


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@pytest.mark.parametrize("op", sorted(ACTIVATIONS))
@QUICK
@given(shape=shapes(0, 4), seed=seeds)
def test_activations(op, dtype, shape, seed):
    dsl, formula = ACTIVATIONS[op]
    x = random_array(np.random.default_rng(seed), shape, dtype, -6, 6)
    net = td.Network(op)
    y = dsl(net.input("x", shape, dtype))
    assert y.shape == shape and y.dtype == td.as_dtype(dtype)
    net.output(y, "y")
    assert_close(run(net, x=x)["y"], formula(f64(x)), dtype)


def test_gelu_variants_differ_measurably():
    """gelu 'none' and 'tanh' are different functions (the test above would not notice if the
    DSL mapped both to one kind and the formulas agreed within tolerance)."""
    net = td.Network("g")
    x = net.input("x", (3,))
    net.output(x.gelu(), "erf")
    net.output(x.gelu(approximate="tanh"), "tanh")
    xv = np.array([-3.0, -1.5, 2.0], np.float32)
    out = run(net, x=xv)
    exact = 0.5 * f64(xv) * (1 + erf64(f64(xv) / math.sqrt(2)))
    np.testing.assert_allclose(out["erf"], exact, rtol=1e-6, atol=1e-7)
    assert np.max(np.abs(f64(out["tanh"]) - exact)) > 1e-4


def test_activations_saturate_without_nan():
    net = td.Network("sat")
    x = net.input("x", (4,), "float16")
    net.output(x.sigmoid(), "sig")
    net.output(x.silu(), "silu")
    net.output(x.exp(), "exp")
    xv = np.array([-60000, -20, 20, 60000], np.float16)
    out = run(net, x=xv)
    assert out["sig"].tolist() == [0.0, pytest.approx(2.06e-9, abs=1e-7), 1.0, 1.0]
    assert out["silu"][-1] == np.float16(60000) and out["silu"][0] == 0
    assert np.isinf(out["exp"][-1]) and out["exp"][0] == 0
    assert not np.isnan(out["sig"]).any() and not np.isnan(out["silu"]).any()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["add", "sub", "mul", "min", "max"])
def test_16_bit_arithmetic_is_float32_rounded_once(kind, dtype):
    """fp16/bf16 add, sub, mul, min, max equal the float32 result rounded to the 16-bit type
    (TensorRT's kernels compute 16-bit elementwise ops in float32), bit for bit, over a wide
    exponent range with broadcasting, inf and NaN (these fp16 kinds and bf16 min/max run on the
    16-bit arrays directly, bf16 arithmetic through the float32 upcast: ``SAME_IN_16BIT``)."""
    rng = np.random.default_rng(7)
    npdt = np_dtype(dtype)
    span = 14 if dtype == "float16" else 100  # from subnormals to overflow, per type
    a32 = rng.standard_normal((3, 40, 17)) * np.exp2(rng.uniform(-span, span, (3, 40, 17)))
    b32 = rng.standard_normal((3, 1, 17)) * np.exp2(rng.uniform(-span, span, (3, 1, 17)))
    a32[0, 0, :3], b32[1, 0, :3] = [np.inf, -np.inf, np.nan], [np.nan, np.inf, -0.0]
    with np.errstate(over="ignore", invalid="ignore"):
        a, b = a32.astype(npdt), b32.astype(npdt)
        net = td.Network("ew16")
        x, y = net.input("a", a.shape, dtype), net.input("b", b.shape, dtype)
        call = {"add": lambda p, q: p + q, "sub": lambda p, q: p - q, "mul": lambda p, q: p * q,
                "min": F.minimum, "max": F.maximum}[kind]  # fmt: skip
        net.output(call(x, y), "out")
        got = run(net, a=a, b=b)["out"]
        op = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "min": np.minimum,
              "max": np.maximum}[kind]  # fmt: skip
        want = op(a.astype(np.float32), b.astype(np.float32)).astype(npdt)
    assert got.dtype == npdt
    np.testing.assert_array_equal(f64(got), f64(want))  # NaN where NaN, bit-equal elsewhere
    num = ~np.isnan(f64(want))
    assert np.array_equal(np.signbit(f64(got))[num], np.signbit(f64(want))[num])  # -0.0 kept
