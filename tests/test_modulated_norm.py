"""The ``modulated_norm`` op (trtdsl/ops/adaln.py): the numpy backend and the TensorRT lowering
(run by the emulator) against an independent float64 formula on random shapes, dtypes, kinds,
broadcast forms and eps; every definition error names the layer, the shapes and the line; the
cupy backend's routing to the kernel."""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import FAST, QUICK, TOL_ACC, f64, random_array, seeds

import trtdsl as td
from trtdsl import functional as F
from trtdsl.backends.tensorrt import lower_network
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.trt_emulator import run_network

THIS_FILE = os.path.basename(__file__)
TRT = make_fake_tensorrt()


def formula(x, shift, scale, weight=None, bias=None, kind="layer", eps=1e-6) -> np.ndarray:
    """float64, written out: mean and biased variance by explicit sums over the last axis."""
    x = f64(x)
    d = x.shape[-1]
    if kind == "layer":
        mu = x.sum(-1, keepdims=True) / d
        var = ((x - mu) ** 2).sum(-1, keepdims=True) / d
        y = (x - mu) / np.sqrt(var + eps)
    else:
        y = x / np.sqrt((x**2).sum(-1, keepdims=True) / d + eps)
    if weight is not None:
        y = y * f64(weight)
    if bias is not None:
        y = y + f64(bias)
    return y + y * f64(scale) + f64(shift)


@st.composite
def cases(draw) -> dict:
    """x [..., D] of rank 2-4, shift/scale each a broadcast form of it (rank drop, size-1 dims,
    D last), optional weight/bias, a kind, a dtype, an eps."""
    rank = draw(st.integers(2, 4))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(rank - 1)) + (draw(st.integers(1, 33)),)

    def form() -> tuple:
        lead = list(shape[draw(st.integers(0, rank - 1)) : -1])
        lead = [1 if draw(st.booleans()) else n for n in lead]
        return tuple(lead) + shape[-1:]

    return {
        "shape": shape,
        "shift": form(),
        "scale": form(),
        "weight": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "kind": draw(st.sampled_from(["layer", "rms"])),
        "dtype": draw(st.sampled_from(["float32", "float16", "bfloat16"])),
        "eps": draw(st.sampled_from([1e-6, 1e-5, 1e-3, 0.5])),
    }


def build(c: dict, rng: np.random.Generator, feed_params: bool = True, x_decl: tuple = ()):
    """A network with x (declared ``x_decl`` if given: dynamic dims), shift and scale inputs
    (or constants) and the op; (net, feeds, arrays)."""
    dt, d = c["dtype"], c["shape"][-1]
    arr = {
        "x": random_array(rng, c["shape"], dt, -3, 3),
        "shift": random_array(rng, c["shift"], dt, -1, 1),
        "scale": random_array(rng, c["scale"], dt, -1, 1),
        "weight": random_array(rng, (d,), dt, 0.5, 2) if c["weight"] else None,
        "bias": random_array(rng, (d,), dt, -1, 1) if c["bias"] else None,
    }
    net = td.Network("adaln")
    x = net.input("x", x_decl or c["shape"], dt)
    feeds = {"x": arr["x"]}
    if feed_params:
        sh, sc = net.input("shift", c["shift"], dt), net.input("scale", c["scale"], dt)
        feeds.update(shift=arr["shift"], scale=arr["scale"])
    else:
        sh, sc = arr["shift"], arr["scale"]
    y = x.modulated_norm(
        sh, sc, kind=c["kind"], eps=c["eps"], weight=arr["weight"], bias=arr["bias"]
    )  # fmt: skip
    net.output(y, "y")
    return net, feeds, arr


@FAST
@given(c=cases(), seed=seeds)
def test_numpy_backend_matches_the_float64_formula(c: dict, seed: int) -> None:
    net, feeds, a = build(c, np.random.default_rng(seed), feed_params=bool(seed % 2))
    got = net.run(feeds)["y"]
    assert got.dtype == td.as_dtype(c["dtype"]).numpy and got.shape == c["shape"]
    want = formula(a["x"], a["shift"], a["scale"], a["weight"], a["bias"], c["kind"], c["eps"])
    np.testing.assert_allclose(f64(got), want, **TOL_ACC[c["dtype"]])


@QUICK
@given(c=cases(), seed=seeds, dynamic=st.booleans())
def test_tensorrt_lowering_computes_the_formula(c: dict, seed: int, dynamic: bool) -> None:
    """Lowered through the manifest-checked fake tensorrt, run by the emulator (its own
    INormalization/reduce/elementwise semantics), against the formula and the numpy backend;
    ``dynamic``: x's leading dims declared dynamic."""
    x_decl = (None,) * (len(c["shape"]) - 1) + c["shape"][-1:] if dynamic else ()
    net, feeds, a = build(c, np.random.default_rng(seed), x_decl=x_decl)
    _, network, ctx = lower_network(net, TRT)
    got = run_network(network, feeds)["y"]
    del ctx
    want = formula(a["x"], a["shift"], a["scale"], a["weight"], a["bias"], c["kind"], c["eps"])
    np.testing.assert_allclose(f64(got), want, **TOL_ACC[c["dtype"]])
    np.testing.assert_allclose(f64(got), f64(net.run(feeds)["y"]), **TOL_ACC[c["dtype"]])


def test_dit_shapes_and_the_unfused_chain() -> None:
    """DiT's ``layer_norm(x) * (1 + scale) + shift`` with [B, 1, D] modulation, float32: the
    op equals the three-layer chain it replaces."""
    rng = np.random.default_rng(0)
    x = random_array(rng, (2, 16, 48), "float32")
    shift, scale = (random_array(rng, (2, 1, 48), "float32", -1, 1) for _ in range(2))
    net = td.Network("dit")
    t = net.input("x", x.shape)
    sh, sc = net.input("shift", shift.shape), net.input("scale", scale.shape)
    net.output(F.modulated_norm(t, sh, sc, eps=1e-6, name="norm1"), "fused")
    chain = t.layer_norm(np.ones(48, "float32"), np.zeros(48, "float32"), eps=1e-6)
    net.output(chain * (sc + 1.0) + sh, "chain")
    out = net.run({"x": x, "shift": shift, "scale": scale})
    np.testing.assert_allclose(out["fused"], out["chain"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f64(out["fused"]), formula(x, shift, scale), rtol=1e-5, atol=1e-5)
    layer = net.layer("norm1")
    assert layer.op.describe(layer) == "modulated_norm(layer, eps=1e-06)"


def test_16bit_statistics_are_float32() -> None:
    """x*x of 300..600 overflows float16 (max 65504); the op squares in float32."""
    rng = np.random.default_rng(1)
    x = random_array(rng, (3, 64), "float16", 300, 600)
    zero = np.zeros((1, 64), np.float16)
    for kind in ("layer", "rms"):
        net = td.Network("big")
        net.output(net.input("x", x.shape, "float16").modulated_norm(zero, zero, kind=kind), "y")
        got = net.run({"x": x})["y"]
        assert np.isfinite(f64(got)).all()
        want = formula(x, zero, zero, kind=kind)
        np.testing.assert_allclose(f64(got), want, **TOL_ACC["float16"])


def test_lowering_uses_inormalization_for_layer_and_float32_for_16bit() -> None:
    for kind, dt in (("layer", "float16"), ("rms", "float16"), ("layer", "float32")):
        net = td.Network("low")
        x = net.input("x", (2, 8), dt)
        sh = net.input("sh", (1, 8), dt)
        net.output(x.modulated_norm(sh, sh, kind=kind, name="adaln"), "y")
        _, network, ctx = lower_network(net, TRT)
        made = [m for m, _ in network.created]
        assert ("add_normalization_v2" in made) == (kind == "layer"), made
        assert ("add_reduce" in made) == (kind == "rms"), made
        assert made.count("add_cast") == (4 if dt == "float16" else 0), made  # x, sh, sc, out
        names = {getattr(o, "name", "") for _, o in network.created}
        assert "adaln" in names and any(n.startswith("adaln/") for n in names), names


# -- errors -----------------------------------------------------------------------------------
def here() -> int:
    return inspect.currentframe().f_back.f_lineno


def check(err: Any, line: int, layer: str, *parts: str) -> None:
    msg = str(err.value)
    assert f"{THIS_FILE}:{line}" in msg, msg
    assert err.value.where is not None and err.value.where.lineno == line, msg
    assert f"layer '{layer}" in msg, msg
    for p in parts:
        assert p in msg, (p, msg)


@pytest.fixture()
def net() -> td.Network:
    return td.Network("err")


def test_builder_argument_errors(net: td.Network) -> None:
    x = net.input("x", (2, 3, 8), "float16")
    s = net.input("s", (2, 1, 8), "float16")
    E = td.DefinitionError
    with pytest.raises(E) as e:
        _ = (line := here(), F.modulated_norm(np.ones((2, 8)), s, s))
    check(e, line, "modulated_norm", "x must be a Tensor", "s: (2, 1, 8) float16")
    for kind, shown in (("group", "'group'"), (1, "1")):
        with pytest.raises(E) as e:
            _ = (line := here(), x.modulated_norm(s, s, kind=kind))
        check(e, line, "modulated_norm", "kind must be one of", shown, "x: (2, 3, 8) float16")
    for eps in (0.0, -1e-6, float("inf"), float("nan"), True, "1e-6", None):
        with pytest.raises(E) as e:
            _ = (line := here(), x.modulated_norm(s, s, eps=eps, name="n1"))
        check(e, line, "n1", "eps must be a finite number > 0", repr(eps))
    with pytest.raises(E) as e:
        _ = (line := here(), x.modulated_norm(s, s, name=""))
    check(e, line, "modulated_norm", "layer name must be a non-empty string")
    other = td.Network("other").input("o", (2, 1, 8), "float16")
    with pytest.raises(E) as e:
        _ = (line := here(), x.modulated_norm(other, s))
    check(e, line, "modulated_norm", "different networks", "'err'", "'other'")
    with pytest.raises(E) as e:
        _ = (line := here(), x.modulated_norm(s, s, weight=np.full(8, 1e6)))  # fp16 max 65504
    check(e, line, "modulated_norm", "cannot be represented in float16")


@pytest.mark.parametrize(
    "x_shape, x_dt, sh_shape, sc_shape, p_dt, params, words",
    [
        ((2, 3, 8), "int32", (8,), (8,), "int32", {}, ["x must be float32", "int32"]),
        ((2, 8), "float8_e4m3", (8,), (8,), "float8_e4m3", {}, ["float8_e4m3"]),
        ((8,), "float32", (8,), (8,), "float32", {}, ["rank >= 2", "rank 1"]),
        ((2, None), "float32", (1, None), (1, None), "float32", {}, ["static", "(2, ?)"]),
        ((2, 8), "float32", (8,), (8,), "float16", {}, ["shift dtype float16", "float32"]),
        ((2, 3, 8), "float32", (2, 1, 4), (8,), "float32", {}, ["shift (2, 1, 4)", "D=8"]),
        ((2, 3, 8), "float32", (8,), (2, 2, 8), "float32", {}, ["scale (2, 2, 8)", "(2, 3, 8)"]),
        ((2, 1, 8), "float32", (2, 3, 8), (8,), "float32", {}, ["shift (2, 3, 8)"]),
        ((3, 8), "float32", (1, 3, 8), (8,), "float32", {}, ["shift (1, 3, 8)"]),
        ((3, 8), "float32", (3, 1), (8,), "float32", {}, ["shift (3, 1)", "D=8 last"]),
        ((3, 8), "float32", (8,), (8,), "float32", {"weight": (4,)}, ["weight must be [D]"]),
        ((3, 8), "float32", (8,), (8,), "float32", {"bias": (1, 8)}, ["bias must be [D]"]),
    ],
)  # fmt: skip
def test_shape_and_dtype_errors(net, x_shape, x_dt, sh_shape, sc_shape, p_dt, params, words):
    x = net.input("x", x_shape, x_dt)
    sh, sc = net.input("sh", sh_shape, p_dt), net.input("sc", sc_shape, p_dt)
    kw = {k: net.input(k, v, x_dt) for k, v in params.items()}
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.modulated_norm(sh, sc, name="adaln", **kw))
    check(e, line, "adaln", *words, f"x: {td.ir.format_shape(x_shape)} {x_dt}")


def test_scalar_shift_and_weight_dtype_are_refused(net: td.Network) -> None:
    x = net.input("x", (3, 8))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.modulated_norm(0.0, np.zeros(8, "float32")))
    check(e, line, "modulated_norm", "shift () must broadcast")
    w16 = net.input("w", (8,), "float16")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.modulated_norm(np.zeros(8), np.zeros(8), weight=w16))
    check(e, line, "modulated_norm", "weight dtype float16 differs from x's float32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.modulated_norm(np.zeros(8), np.zeros(8), bias=w16))
    check(e, line, "modulated_norm", "bias dtype float16")


def test_layer_attrs_are_checked_when_recorded_directly(net: td.Network) -> None:
    """The shape rule refuses what the builder cannot produce (direct ``add_layer`` calls)."""
    from trtdsl.ops.adaln import MODULATED_NORM

    x = net.input("x", (3, 8))
    base = {"kind": "layer", "eps": 1e-6, "weight": False, "bias": False}
    bad = [
        ({"kind": "batch"}, [x, x, x], "unknown kind 'batch'"),
        ({"eps": 0.0}, [x, x, x], "eps must be a finite number > 0"),
        ({"eps": 1}, [x, x, x], "eps must be a finite number > 0"),
        ({"weight": True}, [x, x, x], "expected 4 inputs, got 3"),
        ({}, [x, x, x, x], "expected 3 inputs, got 4"),
    ]
    for attrs, ins, words in bad:
        with pytest.raises(td.DefinitionError) as e:
            _ = (line := here(), net.add_layer(MODULATED_NORM, ins, {**base, **attrs}, name="m"))
        check(e, line, "m", words)


# -- the cupy backend's routing (no GPU: the context is made without CuPy) ---------------------
def test_cupy_context_routes_to_the_kernel_where_it_applies(monkeypatch) -> None:
    import trtdsl.kernels.norm as knorm

    from trtdsl.backends.cupy.backend import CupyContext

    calls = []

    def fake_kernel(x, shift, scale, *, kind, eps, weight, bias):
        calls.append((x.shape, shift.shape, scale.shape, kind, eps, weight, bias))
        return "from-kernel"

    monkeypatch.setattr(knorm, "modulated_norm", fake_kernel)
    ctx = CupyContext.__new__(CupyContext)  # no CuPy here: only the routing is under test
    ctx.use_kernels = True
    net = td.Network("route")

    def layer(x_shape, sh_shape, sc_shape, dt="float16", **kw):
        n = len(net.layers)
        x = net.input(f"x{n}", x_shape, dt)
        sh, sc = net.input(f"s{n}", sh_shape, dt), net.input(f"c{n}", sc_shape, dt)
        lay = x.modulated_norm(sh, sc, **kw).producer
        return lay, [np.zeros(t.shape, t.dtype.numpy) for t in lay.inputs]

    w = np.ones(64, np.float16)
    lay, ins = layer((2, 5, 64), (2, 1, 64), (64,), kind="rms", eps=1e-3, weight=w)
    assert ctx.fused_modulated_norm(lay, ins) == ["from-kernel"]
    assert calls[-1][:5] == ((2, 5, 64), (2, 1, 64), (64,), "rms", 1e-3)
    assert calls[-1][5].shape == (64,) and calls[-1][6] is None
    lay, ins = layer((2, 5, 64), (1, 5, 64), (5, 64), dt="bfloat16", bias=np.ones(64))
    assert ctx.fused_modulated_norm(lay, ins) == ["from-kernel"]
    assert calls[-1][3:6] == ("layer", 1e-6, None) and calls[-1][6].shape == (64,)
    n = len(calls)
    not_for_the_kernel = [
        layer((2, 20000), (20000,), (20000,), dt="float32"),  # D past NORM_MAX_D
        layer((2, 3, 5, 64), (2, 1, 5, 64), (64,)),  # full, broadcast, full: no single split
    ]
    for lay, ins in not_for_the_kernel:
        assert ctx.fused_modulated_norm(lay, ins) is None
    ctx.use_kernels = False
    lay, ins = layer((2, 5, 64), (2, 1, 64), (64,))
    assert ctx.fused_modulated_norm(lay, ins) is None
    assert len(calls) == n
