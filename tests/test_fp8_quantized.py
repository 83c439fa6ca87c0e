"""float8_e4m3 is TensorRT's quantized FP8 type, as int8 is its quantized 8-bit type: arithmetic,
comparisons, reductions, activations, softmax, norms, matmul and attention on it are refused at
definition time (layer, user's file:line, input shapes), where the GPU backend would otherwise
compute on its uint8 bit patterns; moving, casting, quantize and dequantize stay allowed and
compute the right values (docs/dsl.md, Quantization)."""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest

import trtdsl as td
from trtdsl import functional as F
from trtdsl.ops import BINARY_OPS, REDUCE_KINDS
from trtdsl.ops.elementwise import _binary

HERE = __file__.rsplit("/", 1)[-1]
FP8 = "float8_e4m3"


def assert_refused(fn, layer: str, what: str, inputs: str) -> None:
    with pytest.raises(td.DefinitionError) as info:
        fn()
    msg = str(info.value)
    assert f"layer '{layer}'" in msg, msg
    assert re.search(rf"{re.escape(HERE)}:\d+", msg), msg
    assert "float8_e4m3 is TensorRT's quantized FP8 type" in msg, msg
    assert f"{what} on it is not supported" in msg and "dequantize it first" in msg, msg
    assert f"[inputs: {inputs}" in msg, msg


@pytest.mark.parametrize("kind", [k for k in BINARY_OPS if k not in ("and", "or", "xor")])
def test_binary_ops_refuse_fp8(kind: str) -> None:
    net = td.Network("q")
    a, b = net.input("a", (2, 3), FP8), net.input("b", (3,), FP8)
    assert_refused(lambda: _binary(kind, a, b, None), f"{kind}_0", f"'{kind}'", f"a: (2, 3) {FP8}")
    assert [lay.name for lay in net.layers] == ["a", "b"]  # nothing recorded


@pytest.mark.parametrize("kind", ["abs", "neg", "exp", "sqrt"])
def test_unary_ops_refuse_fp8(kind: str) -> None:
    x = td.Network("q").input("x", (2, 5), FP8)
    assert_refused(lambda: getattr(F, kind)(x, name="u"), "u", f"'{kind}'", f"x: (2, 5) {FP8}")


@pytest.mark.parametrize("kind", REDUCE_KINDS)
def test_reductions_refuse_fp8(kind: str) -> None:
    x = td.Network("q").input("x", (2, 3, 4), FP8)
    fn = getattr(F, f"reduce_{kind}")
    assert_refused(lambda: fn(x, 0), f"reduce_{kind}_0", f"reduce '{kind}'", "x: (2, 3, 4)")


@pytest.mark.parametrize("build, layer, what", [
    (lambda n, x: x.relu(), "relu_0", "activation 'relu'"),
    (lambda n, x: x.gelu(approximate="tanh"), "gelu_tanh_0", "activation 'gelu_tanh'"),
    (lambda n, x: F.softmax(x), "softmax_0", "softmax"),
    (lambda n, x: F.matmul(x, F.transpose(x, (1, 0))), "matmul_0", "matmul"),
    (lambda n, x: F.rms_norm(x, n.constant(np.ones(8, ml_dtypes.float8_e4m3fn))),
     "rms_norm_0", "rms normalization"),
    (lambda n, x: F.attention(*[x.reshape((1, 4, 8))] * 3), "attention_0", "attention"),
])  # fmt: skip
def test_compute_ops_refuse_fp8(build, layer: str, what: str) -> None:
    net = td.Network("q")
    x = net.input("x", (4, 8), FP8)
    assert_refused(lambda: build(net, x), layer, what, "")


def test_int8_keeps_its_own_message() -> None:
    x = td.Network("q").input("x", (4,), "int8")
    with pytest.raises(td.DefinitionError, match="int8 is TensorRT's quantized type.*int32"):
        _ = x + x


def test_what_tensorrt_allows_on_fp8_runs_and_computes_the_right_values() -> None:
    """Quantize, move (concat, transpose, reshape, slice), cast and dequantize: the values are
    the float32 inputs rounded to FP8 E4M3 (ml_dtypes' rounding, an independent reference)."""
    rng = np.random.default_rng(11)
    xs = rng.uniform(-3, 3, (2, 3)).astype(np.float32)
    net = td.Network("q")
    x = net.input("x", (2, 3))
    q = x.quantize(0.5, FP8)  # codes x / 0.5, FP8
    moved = td.concat([q, q], axis=0).transpose((1, 0)).reshape((12,))[::2]
    net.output(moved.dequantize(0.5, "float32"), "deq")
    net.output(F.cast(moved, "float32"), "cast")
    out = net.run({"x": xs})
    codes = (xs / np.float32(0.5)).astype(ml_dtypes.float8_e4m3fn)
    want = np.concatenate([codes, codes], axis=0).T.reshape(12)[::2].astype(np.float32)
    np.testing.assert_array_equal(out["cast"], want)
    np.testing.assert_array_equal(out["deq"], want * np.float32(0.5))
