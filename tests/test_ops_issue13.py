"""Quantize/dequantize, RoPE, embedding, patchify, pad and top-k: the numpy backend against
independent float64 formulas, hand-worked values, the error paths, and the emulator's own
IQuantize/IDequantize/ITopK evaluators on hand-worked TensorRT networks."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import trtdsl as td
from trtdsl import functional as F
from trtdsl.ops.quantize import quantize_array
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.trt_emulator import EmulatorError, run_network

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
RNG = np.random.default_rng(7)


def run1(build, feeds):
    net = td.Network("t")
    xs = {k: net.input(k, v.shape, td.as_dtype(v.dtype)) for k, v in feeds.items()}
    net.output(build(**xs), "y")
    return net.run(feeds)["y"]


# -- quantize / dequantize -----------------------------------------------------------------
def test_int8_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 63.0, 64.0, -64.5, -100.0, 0.26], np.float32)
    got = run1(lambda x: x.quantize(0.5, "int8"), {"x": x})
    # x / 0.5 = 1, 3, 5, -1, -5, 126, 128 -> 127, -129 -> -128, -200 -> -128, 0.52 -> 1
    assert got.dtype == np.int8
    assert got.tolist() == [1, 3, 5, -1, -5, 126, 127, -128, -128, 1]


def test_fp8_saturates_at_448_and_rounds_to_nearest_even():
    x = np.array([1000.0, -1e6, 448.0, 17.0, 19.0, 0.0, np.nan], np.float32)
    got = run1(lambda x: x.quantize(1.0, "float8_e4m3"), {"x": x})
    assert got.dtype == FP8
    # E4M3 near 16 has step 2: 17 ties -> 16 (even mantissa), 19 ties -> 20
    vals = got.astype(np.float64)
    assert vals[:6].tolist() == [448.0, -448.0, 448.0, 16.0, 20.0, 0.0]
    assert np.isnan(vals[6])


def test_per_channel_and_block_scales_match_float64_formulas():
    x = RNG.uniform(-10, 10, (4, 6)).astype(np.float32)
    sc = np.linspace(0.05, 0.3, 6).astype(np.float32)
    got = run1(lambda x: x.quantize(sc, "int8", axis=1).dequantize(sc, axis=1), {"x": x})
    want = np.clip(np.round(x.astype(np.float64) / sc), -128, 127) * sc
    np.testing.assert_allclose(got, want, rtol=1e-6)
    blk = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)  # blocks of 2 rows x 3 cols
    got = run1(lambda x: x.quantize(blk, "int8").dequantize(blk), {"x": x})
    full = np.kron(blk, np.ones((2, 3)))
    np.testing.assert_allclose(got, np.clip(np.round(x / full), -128, 127) * full, rtol=1e-6)


def test_quantize_array_round_trips_within_half_a_step():
    w = RNG.standard_normal((16, 8)).astype(np.float32)
    q, s = quantize_array(w, "int8", axis=1)
    assert q.dtype == np.int8 and s.shape == (8,)
    assert np.max(np.abs(q * s - w) / s) <= 0.5 + 1e-6
    q8, s8 = quantize_array(w, "float8_e4m3")
    assert q8.dtype == FP8 and s8.shape == ()
    assert np.max(np.abs(np.abs(q8.astype(np.float32)))) == 448.0


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda x: x.quantize(0.0, "int8"), "strictly positive"),
        (lambda x: x.quantize(-1.0, "int8"), "strictly positive"),
        (lambda x: x.quantize(1.0, "int32"), "dtype must be one of"),
        (lambda x: x.quantize(np.ones(4, np.float32), "int8"), "give axis"),
        (lambda x: x.quantize(np.ones(3, np.float32), "int8", axis=1), "3 entries"),
        (lambda x: x.quantize(np.ones((3, 3), np.float32), "int8"), "multiple"),
        (lambda x: x.quantize(x, "int8"), "build-time constant"),
        (lambda x: x.dequantize(1.0), "int8 or float8_e4m3 input"),
        (lambda x: x.quantize(1.0).dequantize(1.0, "int32"), "dtype must be one of"),
        (lambda x: x.quantize(x.network.constant(np.float16(1.0))), "scale must be float32"),
    ],
)
def test_quantize_errors_name_the_problem(build, match):
    net = td.Network("bad")
    x = net.input("x", (2, 4))
    with pytest.raises(td.DefinitionError, match=match):
        build(x)


# -- RoPE ------------------------------------------------------------------------------------
def rope64(x, pos, pairs, theta, interleaved):
    x = x.astype(np.float64)
    inv = theta ** (-np.arange(pairs) * 2.0 / (2 * pairs))
    ang = np.asarray(pos, np.float64)[:, None] * inv
    out = x.copy()
    for i in range(pairs):
        ia, ib = (2 * i, 2 * i + 1) if interleaved else (i, i + pairs)
        a, b = x[..., ia], x[..., ib]
        out[..., ia] = a * np.cos(ang[:, i]) - b * np.sin(ang[:, i])
        out[..., ib] = a * np.sin(ang[:, i]) + b * np.cos(ang[:, i])
    return out


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("pairs", [4, 3])
def test_rope_matches_the_pairwise_rotation(interleaved, pairs):
    x = RNG.standard_normal((3, 5, 8)).astype(np.float32)
    pos = np.array([0, 2, 4, 9, 100])
    net = td.Network("rope")
    xi = net.input("x", x.shape)
    c, s = F.rope_frequencies(pos, 2 * pairs, theta=500.0, net=net)
    net.output(xi.rope(c, s, interleaved=interleaved), "static")
    p = net.input("p", (5,), "int32")
    c2, s2 = F.rope_frequencies(p, 2 * pairs, theta=500.0)
    net.output(xi.rope(c2, s2, interleaved=interleaved), "fed")
    out = net.run({"x": x, "p": pos.astype(np.int32)})
    want = rope64(x, pos, pairs, 500.0, interleaved)
    for k in ("static", "fed"):
        np.testing.assert_allclose(out[k], want, rtol=1e-5, atol=2e-5)


def test_rope_multi_axis_tables_concatenate_per_axis_frequencies():
    pos = np.array([[0, 1, 2], [3, 4, 5]])
    c, s = F.rope_frequencies(pos, 8, axes_dim=(2, 2, 4), net=td.Network("n")).__iter__()
    want = np.concatenate([pos[:, [0]] * 1.0, pos[:, [1]] * 1.0,
                           pos[:, [2]] * np.array([1.0, 0.01])], axis=1)  # fmt: skip
    np.testing.assert_allclose(c.producer.attrs["value"], np.cos(want), rtol=1e-6)
    np.testing.assert_allclose(s.producer.attrs["value"], np.sin(want), rtol=1e-6)


def test_rope_errors():
    net = td.Network("bad")
    x = net.input("x", (2, 4, 6))
    c, s = np.ones((4, 4), np.float32), np.zeros((4, 4), np.float32)
    with pytest.raises(td.DefinitionError, match="do not fit head_dim"):
        x.rope(c, s)
    with pytest.raises(td.DefinitionError, match="positions"):
        x.rope(np.ones((3, 2), np.float32), np.ones((3, 2), np.float32))
    with pytest.raises(td.DefinitionError, match="dtype"):
        x.rope(np.ones((4, 2), np.float16), np.ones((4, 2), np.float16))
    with pytest.raises(td.DefinitionError, match="even int"):
        F.rope_frequencies(np.arange(4), 5, net=net)
    with pytest.raises(td.DefinitionError, match="need net="):
        F.rope_frequencies(np.arange(4), 4)


# -- embedding, patchify, pad, topk -----------------------------------------------------------
def test_embedding_gathers_rows_and_checks_indices():
    table = RNG.standard_normal((5, 3)).astype(np.float32)
    ids = np.array([[4, 0], [2, 2]], np.int32)
    got = run1(lambda ids: F.embedding(ids, table), {"ids": ids})
    np.testing.assert_array_equal(got, table[ids])
    net = td.Network("bad")
    with pytest.raises(td.DefinitionError, match="int32 or int64"):
        F.embedding(net.input("f", (2,)), table)
    with pytest.raises(td.ExecutionError, match="out of range"):
        run1(lambda ids: F.embedding(ids, table), {"ids": np.array([5], np.int32)})


def test_patchify_is_a_stride_p_convolution():
    c, h, w, p, d = 3, 4, 6, 2, 5
    img = RNG.standard_normal((c, h, w)).astype(np.float32)
    kernel = RNG.standard_normal((d, c, p, p))
    got = run1(lambda img: img.patchify(p), {"img": img}).astype(np.float64)
    conv = np.zeros((d, h // p, w // p))
    for o in range(d):
        for i in range(h // p):
            for j in range(w // p):
                conv[o, i, j] = np.sum(img[:, i * p : i * p + p, j * p : j * p + p] * kernel[o])
    np.testing.assert_allclose(got @ kernel.reshape(d, -1).T, conv.reshape(d, -1).T, atol=1e-9)
    back = run1(lambda img: img.patchify(p).unpatchify(p, (h // p, w // p)), {"img": img})
    np.testing.assert_array_equal(back, img)
    net = td.Network("bad")
    with pytest.raises(td.DefinitionError, match="multiples of 4"):
        net.input("i", (3, 6, 6)).patchify(4)
    with pytest.raises(td.DefinitionError, match="is not"):
        net.input("t", (5, 12)).unpatchify(2, (2, 3))


def test_pad_and_its_errors():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = run1(lambda x: x.pad([(1, 0), (0, 2)], 9.0), {"x": x})
    assert got.tolist() == [[9, 9, 9, 9, 9], [0, 1, 2, 9, 9], [3, 4, 5, 9, 9]]
    net = td.Network("bad")
    t = net.input("t", (None, 3))
    with pytest.raises(td.DefinitionError, match="dynamic"):
        t.pad([(1, 0), (0, 0)])
    with pytest.raises(td.DefinitionError, match="ints >= 0"):
        t.pad([(-1, 0)])
    with pytest.raises(td.DefinitionError, match="does not fit"):
        net.input("i", (2,), "int32").pad([(1, 1)], 2.5)


def test_topk_values_and_indices():
    x = np.array([[3.0, 1.0, 4.0, 1.5, 9.0], [2.0, 7.0, 1.0, 8.0, 2.5]], np.float32)
    net = td.Network("tk")
    xi = net.input("x", x.shape)
    v, i = xi.topk(2)
    net.output(v, "v")
    net.output(i, "i")
    v2, i2 = xi.topk(1, axis=0, largest=False)
    net.output(i2, "i2")
    out = net.run({"x": x})
    assert out["v"].tolist() == [[9.0, 4.0], [8.0, 7.0]]
    assert out["i"].tolist() == [[4, 2], [3, 1]] and out["i"].dtype == np.int32
    assert out["i2"].tolist() == [[1, 0, 1, 0, 1]]
    with pytest.raises(td.DefinitionError, match="exceeds"):
        xi.topk(6)
    with pytest.raises(td.DefinitionError, match="k must be"):
        xi.topk(0)


# -- the emulator's evaluators, on hand-written TensorRT networks -----------------------------
def _trt_net(trt, build):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(0)
    keep = []

    def const(arr):
        arr = np.ascontiguousarray(arr)
        keep.append(arr)
        dt = {np.float32: trt.DataType.FLOAT, np.int8: trt.DataType.INT8}[arr.dtype.type]
        w = trt.Weights(dt, int(arr.ctypes.data), int(arr.size))
        keep.append(w)
        return network.add_constant(arr.shape, w).get_output(0)

    out = build(network, const)
    out.name = "y"
    network.mark_output(out)
    return network, keep


def test_emulator_quantize_by_hand():
    trt = make_fake_tensorrt()

    def build(nw, const):
        x = nw.add_input("x", trt.DataType.FLOAT, (2, 3))
        q = nw.add_quantize(x, const(np.array([0.5, 1.0, 2.0], np.float32)), trt.DataType.INT8)
        q.axis = 1
        return q.get_output(0)

    nw, keep = _trt_net(trt, build)
    x = np.array([[0.25, 2.5, 3.0], [100.0, -200.0, -5.0]], np.float32)
    # /scale per column: [0.5, 2.5, 1.5], [200, -200, -2.5] -> ties to even, clamp
    assert run_network(nw, {"x": x})["y"].tolist() == [[0, 2, 2], [127, -128, -2]]


def test_emulator_dequantize_fp8_blocks_and_refusals():
    trt = make_fake_tensorrt()
    q = np.array([[1.0, 2.0, 3.0, 448.0]], np.float32).astype(FP8)

    def build(nw, const):
        x = nw.add_input("q", trt.DataType.FP8, (1, 4))
        dq = nw.add_dequantize(x, const(np.array([[0.5, 2.0]], np.float32)), trt.DataType.FLOAT)
        dq.block_shape = (1, 2)
        return dq.get_output(0)

    nw, keep = _trt_net(trt, build)
    assert run_network(nw, {"q": q})["y"].tolist() == [[0.5, 1.0, 6.0, 896.0]]

    def unblocked(nw, const):
        x = nw.add_input("q", trt.DataType.FP8, (1, 4))
        s = const(np.array([[0.5, 2.0]], np.float32))
        return nw.add_dequantize(x, s, trt.DataType.FLOAT).get_output(0)

    nw, keep = _trt_net(trt, unblocked)
    with pytest.raises(EmulatorError, match="block_shape"):
        run_network(nw, {"q": q})


def test_emulator_topk_by_hand():
    trt = make_fake_tensorrt()

    def build(nw, const):
        x = nw.add_input("x", trt.DataType.FLOAT, (2, 3))
        tk = nw.add_topk(x, trt.TopKOperation.MIN, 2, 1 << 1)
        return tk.get_output(1)

    nw, keep = _trt_net(trt, build)
    x = np.array([[5.0, 1.0, 3.0], [2.0, 2.0, 0.0]], np.float32)
    assert run_network(nw, {"x": x})["y"].tolist() == [[1, 2], [2, 0]]
