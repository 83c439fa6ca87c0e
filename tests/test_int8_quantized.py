"""int8 is TensorRT's quantized type (DataType.INT8: "a quantized floating-point value"), not an
integer: arithmetic, comparisons and reductions on it are refused at definition time with an
error naming the layer, the user's file:line and the input shapes; moving, casting and
constants stay allowed (docs/dsl.md, Dtypes)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import trtdsl as td
from trtdsl import functional as F
from trtdsl.ops import BINARY_OPS, REDUCE_KINDS
from trtdsl.ops.elementwise import _binary

HERE = __file__.rsplit("/", 1)[-1]
INT_BINARY = [k for k in BINARY_OPS if k not in ("and", "or", "xor", "pow")]


def assert_refused(fn, layer: str, what: str, inputs: str) -> str:
    with pytest.raises(td.DefinitionError) as info:
        fn()
    msg = str(info.value)
    assert f"layer '{layer}'" in msg, msg
    assert re.search(rf"{re.escape(HERE)}:\d+", msg), msg
    assert "int8 is TensorRT's quantized type" in msg, msg
    assert f"{what} on it is not supported" in msg, msg
    assert "dequantize it first" in msg and "cast it to int32" in msg, msg
    assert f"[inputs: {inputs}" in msg, msg
    return msg


@pytest.mark.parametrize("kind", INT_BINARY)
def test_binary_arithmetic_and_comparisons_refuse_int8(kind: str) -> None:
    net = td.Network("q")
    a = net.input("a", (2, 3), "int8")
    b = net.input("b", (3,), "int8")
    msg = assert_refused(
        lambda: _binary(kind, a, b, None),
        f"{kind}_0",
        f"'{kind}'",
        "a: (2, 3) int8, b: (3,) int8",
    )
    assert msg.count("elementwise:") == 1
    assert [lay.name for lay in net.layers] == ["a", "b"]  # nothing recorded


def test_operators_and_scalars_refuse_int8() -> None:
    net = td.Network("q")
    x = net.input("x", (4,), "int8")
    assert_refused(lambda: x + 1, "add_0", "'add'", "x: (4,) int8, constant_")
    assert_refused(lambda: x * x, "mul_0", "'mul'", "x: (4,) int8, x: (4,) int8")
    assert_refused(lambda: x < x, "less_0", "'less'", "x: (4,) int8, x: (4,) int8")
    assert_refused(lambda: F.clip(x, -1, 1), "max_0", "'max'", "x: (4,) int8, constant_")


@pytest.mark.parametrize("kind", ["abs", "neg"])
def test_unary_arithmetic_refuses_int8(kind: str) -> None:
    x = td.Network("q").input("x", (2, 5), "int8")
    assert_refused(lambda: getattr(F, kind)(x, name="u"), "u", f"'{kind}'", "x: (2, 5) int8")


@pytest.mark.parametrize("kind", [k for k in REDUCE_KINDS if k != "mean"])
def test_reductions_refuse_int8(kind: str) -> None:
    x = td.Network("q").input("x", (2, 3, 4), "int8")
    fn = getattr(F, f"reduce_{kind}")
    assert_refused(
        lambda: fn(x, (0, 2)), f"reduce_{kind}_0", f"reduce '{kind}'", "x: (2, 3, 4) int8"
    )


def test_what_tensorrt_allows_on_int8_still_runs() -> None:
    """Inputs, constants, casts both ways, reshape/transpose/concat/slice/gather/select: data
    movement, no arithmetic. The suggested fix (cast to int32, then compute) works."""
    net = td.Network("q")
    x = net.input("x", (2, 3), "int8")
    c = net.constant(np.array([[-128, 127, 0]], np.int8), name="c")
    moved = td.concat([x, c], axis=0).transpose((1, 0)).reshape((9,))[::2]
    net.output(moved, "moved")
    net.output(x.gather([2, 0], axis=1), "gathered")
    net.output(td.select(np.array([True, False, True]), x, c), "selected")
    net.output(x.cast("int32") + 1, "wide")
    net.output(x.cast("float32").cast("int8"), "round_trip")
    feeds = {"x": np.array([[-5, 0, 7], [100, -100, 1]], np.int8)}
    out = net.run(feeds)
    both = np.concatenate([feeds["x"], [[-128, 127, 0]]]).T.reshape(9)[::2]
    np.testing.assert_array_equal(out["moved"], both)
    assert out["moved"].dtype == np.int8
    np.testing.assert_array_equal(out["gathered"], feeds["x"][:, [2, 0]])
    np.testing.assert_array_equal(
        out["selected"], np.where([True, False, True], feeds["x"], [[-128, 127, 0]])
    )
    np.testing.assert_array_equal(out["wide"], feeds["x"].astype(np.int32) + 1)
    np.testing.assert_array_equal(out["round_trip"], feeds["x"])
