"""matmul, softmax, reductions, layer_norm and rms_norm on the NumPy backend against
independent float64 formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    FAST,
    FLOATS,
    FLOATS_BF16,
    QUICK,
    TOL_ACC,
    assert_close,
    assert_equal,
    broadcast_pairs,
    f64,
    np_dtype,
    random_array,
    seeds,
    shapes,
)

import trtdsl as td
from trtdsl import functional as F


def run(net, **feeds):
    return net.run(feeds, backend="numpy")


# -- matmul -----------------------------------------------------------------------------------
def _swap(x, flag):
    return np.swapaxes(x, -1, -2) if flag and x.ndim >= 2 else x


def _matmul64(a, b):
    """Batched matrix product by explicit sums (independent of np.matmul's 1-D rules)."""
    a_vec, b_vec = a.ndim == 1, b.ndim == 1
    if a_vec:
        a = a[None, :]
    if b_vec:
        b = b[:, None]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    out = (a[..., :, :, None] * b[..., None, :, :]).sum(axis=-2)
    if a_vec:
        out = out[..., 0, :]
    if b_vec:
        out = out[..., 0]
    return out


@st.composite
def matmul_cases(draw):
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    kind = draw(st.sampled_from(["matrix", "matrix", "matrix", "vec_a", "vec_b", "vec_both"]))
    batch_a, batch_b = draw(broadcast_pairs(max_rank=2, max_side=3))
    if draw(st.booleans()):
        batch_a = ()
    a_shape = (k,) if kind in ("vec_a", "vec_both") else batch_a + ((k, m) if ta else (m, k))
    b_shape = (k,) if kind in ("vec_b", "vec_both") else batch_b + ((n, k) if tb else (k, n))
    return a_shape, b_shape, ta, tb


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@FAST
@given(case=matmul_cases(), seed=seeds)
def test_matmul(dtype, case, seed):
    a_shape, b_shape, ta, tb = case
    rng = np.random.default_rng(seed)
    a, b = random_array(rng, a_shape, dtype, -1, 1), random_array(rng, b_shape, dtype, -1, 1)
    net = td.Network("mm")
    y = F.matmul(net.input("a", a_shape, dtype), net.input("b", b_shape, dtype), ta, tb)
    expected = _matmul64(_swap(f64(a), ta), _swap(f64(b), tb))
    assert y.shape == expected.shape and y.dtype == td.as_dtype(dtype)
    net.output(y, "y")
    assert_close(run(net, a=a, b=b)["y"], expected, dtype, TOL_ACC[dtype])


def test_matmul_transpose_flags_are_not_swapped():
    net = td.Network("t")
    a, b = net.input("a", (2, 3)), net.input("b", (2, 3))
    net.output(F.matmul(a, b, transpose_a=True), "ta")  # (3, 2) @ (2, 3)
    net.output(F.matmul(a, b, transpose_b=True), "tb")  # (2, 3) @ (3, 2)
    av = np.arange(6, dtype=np.float32).reshape(2, 3)
    bv = np.arange(6, 12, dtype=np.float32).reshape(2, 3)
    out = run(net, a=av, b=bv)
    assert out["ta"].shape == (3, 3) and out["tb"].shape == (2, 2)
    np.testing.assert_array_equal(out["ta"], f64(av).T @ f64(bv))
    np.testing.assert_array_equal(out["tb"], f64(av) @ f64(bv).T)


def test_vector_dot_vector_is_a_0d_array():
    net = td.Network("dot")
    v, w = net.input("v", (3,)), net.input("w", (3,))
    y = v @ w
    assert y.shape == ()
    net.output(y, "y")
    out = run(net, v=np.array([1, 2, 3], np.float32), w=np.array([4, 5, 6], np.float32))["y"]
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float32
    assert float(out) == 32.0


@pytest.mark.parametrize("dtype", FLOATS)
@FAST
@given(rows=st.lists(st.integers(1, 6), min_size=2, max_size=3), seed=seeds)
def test_matmul_with_ndarrays_on_either_side_and_dynamic_rows(dtype, rows, seed):
    rng = np.random.default_rng(seed)
    w = random_array(rng, (4, 3), dtype, -1, 1)
    left = random_array(rng, (2, 5), dtype, -1, 1)
    w64 = rng.uniform(-1, 1, size=(4, 3))  # float64 array: lifted to the tensor's dtype
    net = td.Network("nd")
    x = net.input("x", (None, 4), dtype)
    seq = net.input("seq", (None, 5, None), dtype)
    y1, y2, y3 = x @ w, x @ w64, left @ seq
    assert (y1.shape, y2.shape, y3.shape) == ((None, 3), (None, 3), (None, 2, None))
    assert y1.dtype == y2.dtype == y3.dtype == td.as_dtype(dtype)
    for k, v in {"y1": y1, "y2": y2, "y3": y3}.items():
        net.output(v, k)
    w64r = f64(w64.astype(np_dtype(dtype)))
    for n in rows:
        xv = random_array(rng, (n, 4), dtype, -1, 1)
        sv = random_array(rng, (n, 5, n + 1), dtype, -1, 1)
        out = run(net, x=xv, seq=sv)
        tol = TOL_ACC[dtype]
        assert_close(out["y1"], _matmul64(f64(xv), f64(w)), dtype, tol)
        assert_close(out["y2"], _matmul64(f64(xv), w64r), dtype, tol)
        assert_close(out["y3"], _matmul64(f64(left), f64(sv)), dtype, tol)


# -- softmax ----------------------------------------------------------------------------------
@st.composite
def shape_and_axis(draw, min_rank=1, max_rank=4):
    shape = draw(shapes(min_rank, max_rank))
    return shape, draw(st.integers(-len(shape), len(shape) - 1))


def _softmax64(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@FAST
@given(case=shape_and_axis(), seed=seeds, offset=st.sampled_from([0.0, 100.0, -1000.0]))
def test_softmax_over_each_axis(dtype, case, seed, offset):
    shape, axis = case
    x = random_array(np.random.default_rng(seed), shape, dtype, -4, 4)
    x = (f64(x) + offset).astype(np_dtype(dtype))  # large offsets must not overflow
    net = td.Network("sm")
    y = net.input("x", shape, dtype).softmax(axis=axis)
    net.output(y, "y")
    out = run(net, x=x)["y"]
    assert_close(out, _softmax64(f64(x), axis), dtype, TOL_ACC[dtype])
    np.testing.assert_allclose(f64(out).sum(axis=axis), 1.0, **TOL_ACC[dtype])


def test_softmax_default_axis_is_last_and_dynamic_dims_work():
    net = td.Network("sm")
    x = net.input("x", (None, 3))
    net.output(F.softmax(x), "last")
    net.output(x.softmax(axis=0), "first")
    for n in (1, 4):
        xv = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 3
        out = run(net, x=xv)
        np.testing.assert_allclose(out["last"], _softmax64(f64(xv), -1), rtol=1e-6)
        np.testing.assert_allclose(out["first"], _softmax64(f64(xv), 0), rtol=1e-6)


# -- reductions -------------------------------------------------------------------------------
@st.composite
def reduce_cases(draw):
    shape = draw(shapes(1, 3, 1, 4))
    r = len(shape)
    how = draw(st.sampled_from(["none", "int", "tuple"]))
    if how == "none":
        axes = None
    elif how == "int":
        axes = draw(st.integers(-r, r - 1))
    else:
        picked = draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True))
        axes = tuple(a - r if draw(st.booleans()) else a for a in picked)
    return shape, axes, draw(st.booleans())


def _axes64(axes, rank):
    if axes is None:
        return tuple(range(rank))
    axes = (axes,) if isinstance(axes, int) else axes
    return tuple(sorted(a % rank for a in axes))


REDUCE = {
    "sum": (lambda x, a, k: x.sum(axis=a, keepdims=k), np.sum, (-3, 3, 0)),
    "mean": (lambda x, a, k: x.mean(axis=a, keepdims=k), np.mean, (-3, 3, 0)),
    "max": (lambda x, a, k: x.max(axis=a, keepdims=k), np.max, (-3, 3, 0)),
    "min": (lambda x, a, k: x.min(axis=a, keepdims=k), np.min, (-3, 3, 0)),
    "prod": (lambda x, a, k: x.prod(axis=a, keepdims=k), np.prod, (0.9, 1.1, 0.9)),
    "F.reduce_sum": (
        lambda x, a, k: F.reduce_sum(x, a, k),
        lambda x, axis, keepdims: np.add.reduce(x, axis=axis, keepdims=keepdims),
        (-3, 3, 0),
    ),
    "F.reduce_prod": (lambda x, a, k: F.reduce_prod(x, a, k), np.prod, (0.9, 1.1, 0.9)),
}


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@pytest.mark.parametrize("kind", sorted(REDUCE))
@QUICK
@given(case=reduce_cases(), seed=seeds)
def test_reduce(kind, dtype, case, seed):
    shape, axes, keepdims = case
    dsl, formula, (low, high, away) = REDUCE[kind]
    x = random_array(np.random.default_rng(seed), shape, dtype, low, high, away_from_zero=away)
    net = td.Network(kind)
    y = dsl(net.input("x", shape, dtype), axes, keepdims)
    ax = _axes64(axes, len(shape))
    expected = formula(f64(x), axis=ax, keepdims=keepdims)
    assert y.shape == np.shape(expected) and y.dtype == td.as_dtype(dtype)
    net.output(y, "y")
    assert_close(run(net, x=x)["y"], expected, dtype, TOL_ACC[dtype])


@pytest.mark.parametrize("kind", ["sum", "max", "min", "prod"])
@FAST
@given(case=reduce_cases(), seed=seeds)
def test_reduce_int32_is_exact(kind, case, seed):
    shape, axes, keepdims = case
    x = random_array(np.random.default_rng(seed), shape, "int32", -5, 5)
    net = td.Network(kind)
    dsl = {"sum": F.reduce_sum, "max": F.reduce_max, "min": F.reduce_min, "prod": F.reduce_prod}
    net.output(dsl[kind](net.input("x", shape, "int32"), axes, keepdims), "y")
    ax = _axes64(axes, len(shape))
    expected = {"sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod}[kind](
        x.astype(np.int64), axis=ax, keepdims=keepdims
    )
    assert_equal(run(net, x=x)["y"], expected.astype(np.int32), "int32")


def test_reduce_dynamic_dims():
    net = td.Network("r")
    x = net.input("x", (None, 4))
    cols, rows = x.sum(axis=0), x.max(axis=-1, keepdims=True)
    assert cols.shape == (4,) and rows.shape == (None, 1)
    net.output(cols, "cols")
    net.output(rows, "rows")
    net.output(x.mean(), "all")
    for n in (1, 3):
        xv = np.arange(n * 4, dtype=np.float32).reshape(n, 4) - 2
        out = run(net, x=xv)
        np.testing.assert_array_equal(out["cols"], f64(xv).sum(axis=0))
        np.testing.assert_array_equal(out["rows"], f64(xv).max(axis=1)[:, None])
        assert out["all"].shape == () and float(out["all"]) == pytest.approx(f64(xv).mean())


# -- normalizations ---------------------------------------------------------------------------
def _layer_norm64(x, scale, bias, nd, eps):
    axes = tuple(range(x.ndim - nd, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _rms_norm64(x, scale, nd, eps):
    axes = tuple(range(x.ndim - nd, x.ndim))
    return x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps) * scale


@st.composite
def norm_cases(draw):
    shape = draw(shapes(1, 3, 1, 6))
    nd = draw(st.integers(1, min(2, len(shape))))
    axes = draw(
        st.sampled_from(
            [
                tuple(range(-nd, 0)),
                tuple(range(len(shape) - nd, len(shape))),
                -1 if nd == 1 else (-1, -2),
            ]
        )
    )
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    return shape, nd, axes, eps


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@FAST
@given(case=norm_cases(), seed=seeds, scale_as=st.sampled_from(["dtype", "float64"]))
def test_layer_norm(dtype, case, seed, scale_as):
    shape, nd, axes, eps = case
    rng = np.random.default_rng(seed)
    x = random_array(rng, shape, dtype, -3, 3)
    scale = random_array(rng, shape[-nd:], dtype, 0.5, 2)
    bias = random_array(rng, shape[-nd:], dtype, -1, 1)
    if scale_as == "float64":  # float64 weights are lifted to the input's dtype
        scale, bias = f64(scale), f64(bias)
    net = td.Network("ln")
    y = net.input("x", shape, dtype).layer_norm(scale, bias, axes=axes, eps=eps)
    assert y.shape == shape and y.dtype == td.as_dtype(dtype)
    net.output(y, "y")
    expected = _layer_norm64(f64(x), f64(scale), f64(bias), nd, eps)
    assert_close(run(net, x=x)["y"], expected, dtype, TOL_ACC[dtype])


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@FAST
@given(case=norm_cases(), seed=seeds)
def test_rms_norm(dtype, case, seed):
    shape, nd, axes, eps = case
    rng = np.random.default_rng(seed)
    x = random_array(rng, shape, dtype, -3, 3)
    scale = random_array(rng, shape[-nd:], dtype, 0.5, 2)
    net = td.Network("rms")
    t = net.input("x", shape, dtype)
    s = net.constant(scale)
    y = t.rms_norm(s, axes=axes, eps=eps)
    assert y.shape == shape and y.dtype == td.as_dtype(dtype)
    net.output(y, "y")
    expected = _rms_norm64(f64(x), f64(scale), nd, eps)
    assert_close(run(net, x=x)["y"], expected, dtype, TOL_ACC[dtype])


def test_norms_default_eps_and_dynamic_batch():
    net = td.Network("n")
    x = net.input("x", (None, 8))
    scale, bias = np.linspace(0.5, 2, 8).astype(np.float32), np.linspace(-1, 1, 8)
    net.output(x.layer_norm(scale, bias), "ln")
    net.output(F.rms_norm(x, scale), "rms")
    for n in (1, 5):
        xv = (np.arange(n * 8, dtype=np.float32).reshape(n, 8) % 5) * 0.01  # small variance
        out = run(net, x=xv)
        assert out["ln"].shape == (n, 8)
        # eps defaults: 1e-5 for layer_norm, 1e-6 for rms_norm (visible at this small scale)
        ln = _layer_norm64(f64(xv), f64(scale), f64(bias.astype(np.float32)), 1, 1e-5)
        np.testing.assert_allclose(out["ln"], ln, rtol=1e-4, atol=1e-4)
        rms = _rms_norm64(f64(xv), f64(scale), 1, 1e-6)
        np.testing.assert_allclose(out["rms"], rms, rtol=1e-4, atol=1e-5)


# --- a backend's 16-bit GEMM (RunContext.matmul_rounded) -------------------------------------
def _run_matmul(ctx_cls, a, b, **attrs):
    from trtdsl.backends.interpreter import Program

    net = td.Network("mm")
    x, y = net.input("a", a.shape, str(a.dtype)), net.input("b", b.shape, str(b.dtype))
    net.output(F.matmul(x, y, **attrs), "c")
    ctx = ctx_cls(net, {"a": a, "b": b}, None)
    return Program(net).execute(ctx)["c"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True)])
def test_a_backends_16bit_gemm_gets_the_transposed_operands_and_its_result_is_used(dtype, ta, tb):
    from trtdsl.backends.interpreter import RunContext

    rng = np.random.default_rng(3)
    dt = np.dtype(dtype) if dtype == "float16" else __import__("ml_dtypes").bfloat16
    a = rng.standard_normal((2, 5, 3) if not ta else (2, 3, 5)).astype(dt)
    b = rng.standard_normal((3, 4) if not tb else (4, 3)).astype(dt)
    seen = []

    class Gemm(RunContext):
        def matmul_rounded(self, x, y):  # an independent product: float64, rounded once
            seen.append((x.shape, y.shape, x.dtype, y.dtype))
            return (x.astype(np.float64) @ y.astype(np.float64)).astype(x.dtype)

    got = _run_matmul(Gemm, a, b, transpose_a=ta, transpose_b=tb)
    assert seen == [((2, 5, 3), (3, 4), a.dtype, b.dtype)]  # transposes applied first
    aa = np.swapaxes(a, -1, -2) if ta else a
    bb = b.T if tb else b
    want = (aa.astype(np.float64) @ bb.astype(np.float64)).astype(dt)
    assert got.dtype == dt and np.array_equal(got, want)


def test_without_a_16bit_gemm_the_reference_upcasts_and_float32_never_asks():
    from trtdsl.backends.interpreter import RunContext

    asked = []

    class Refuses(RunContext):
        def matmul_rounded(self, x, y):
            asked.append(x.dtype)
            return None

    rng = np.random.default_rng(4)
    a16, b16 = rng.standard_normal((4, 3)).astype("float16"), rng.standard_normal((3, 2))
    got = _run_matmul(Refuses, a16, b16.astype("float16"))
    want = (a16.astype(np.float32) @ b16.astype("float16").astype(np.float32)).astype("float16")
    assert np.array_equal(got, want) and asked == [np.dtype("float16")]
    a32, b32 = a16.astype("float32"), b16.astype("float32")
    assert np.allclose(_run_matmul(Refuses, a32, b32), a32 @ b32) and len(asked) == 1
