"""FP8/INT8 weights in the tensor-parallel linears: against float64 with the dequantized
weights, across 1/2/4 ranks, lowered through the emulator, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import trtdsl as td
from trtdsl import parallel as P
from trtdsl.backends.tensorrt import lower_network
from trtdsl.ops.quantize import quantize_array
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.trt_emulator import run_ranks

RNG = np.random.default_rng(11)
W1 = RNG.standard_normal((8, 16)).astype(np.float32)
W2 = RNG.standard_normal((16, 8)).astype(np.float32)
X = RNG.standard_normal((4, 8)).astype(np.float32)


def deq(w, dtype):
    q, s = quantize_array(w, dtype, axis=1)
    return q.astype(np.float64) * s


def mlp(world, dtype, prequantized):
    net = td.Network("fp8_mlp", world=world)
    x = net.input("x", (4, 8))
    h = P.column_parallel_linear(x, W1, weight_dtype=dtype, name="up")
    if prequantized:
        q, s = quantize_array(W2, dtype, axis=1)
        y = P.row_parallel_linear(h.relu(), q, weight_scale=s, name="down")
    else:
        y = P.row_parallel_linear(h.relu(), W2, weight_dtype=dtype, name="down")
    net.output(y, "y")
    return net


@pytest.mark.parametrize("dtype", ["float8_e4m3", "int8"])
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_quantized_weights_match_float64(dtype, ranks):
    want = np.maximum(X @ deq(W1, dtype), 0) @ deq(W2, dtype)
    outs = td.InProcessWorld(ranks).run(lambda w: mlp(w, dtype, ranks % 2 == 0).run({"x": X})["y"])
    for out in outs:
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    assert np.max(np.abs(want - np.maximum(X @ W1, 0) @ W2)) > 1e-3  # it is quantized


def test_fp8_linears_lower_and_emulate():
    trt = make_fake_tensorrt()
    nets = [mlp(td.StaticWorld(2, r), "float8_e4m3", False) for r in range(2)]
    lowered = [lower_network(n, trt) for n in nets]
    got = run_ranks([lw[1] for lw in lowered], [{"x": X}] * 2)
    want = np.maximum(X @ deq(W1, "float8_e4m3"), 0) @ deq(W2, "float8_e4m3")
    for g in got:
        np.testing.assert_allclose(g["y"], want, rtol=1e-4, atol=1e-4)


def test_quantized_weight_errors():
    net = td.Network("bad")
    x = net.input("x", (2, 8))
    with pytest.raises(td.DefinitionError, match="weight_dtype must be one of"):
        P.column_parallel_linear(x, W1, weight_dtype="float16")
    with pytest.raises(td.DefinitionError, match="needs an FP8/INT8 weight"):
        P.column_parallel_linear(x, W1, weight_scale=np.ones(16, np.float32))
