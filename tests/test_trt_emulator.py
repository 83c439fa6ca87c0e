"""The TensorRT emulator pinned by hand-worked examples: small networks built directly on the
fake ``tensorrt`` module, literal inputs and literal expected outputs worked out by hand from
TensorRT's operator documentation (no NumPy formula on the expected side)."""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.trt_emulator import (
    EmulatorError,
    UnsupportedLayerError,
    run_network,
    run_ranks,
)

TRT = make_fake_tensorrt()
_TYPES = {
    np.dtype(np.float32): "FLOAT",
    np.dtype(np.float16): "HALF",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.bool_): "BOOL",
}


class Net:
    """A fake network under construction, with its feeds and the arrays weights point to."""

    def __init__(self) -> None:
        self.nw = TRT.Builder(TRT.Logger()).create_network(0)
        self.feeds: dict[str, np.ndarray] = {}
        self.keep: list[Any] = []

    def input(self, name: str, value: Any, dtype: Any = np.float32) -> Any:
        arr = np.asarray(value, dtype)
        self.feeds[name] = arr
        return self.nw.add_input(name, getattr(TRT.DataType, _TYPES[arr.dtype]), arr.shape)

    def const(self, value: Any, dtype: Any = np.float32, as_type: str | None = None) -> Any:
        arr = np.ascontiguousarray(np.asarray(value, dtype))
        self.keep.append(arr)
        dt = getattr(TRT.DataType, as_type or _TYPES[arr.dtype])
        w = TRT.Weights(dt, arr.ctypes.data, arr.size)
        return self.nw.add_constant(arr.shape, w).get_output(0)

    def run(self, *outs: Any, **named: Any) -> Any:
        for i, t in enumerate(outs):
            named[f"y{i}"] = t
        for name, t in named.items():
            t = t.get_output(0) if hasattr(t, "get_output") else t
            t.name = name
            self.nw.mark_output(t)
        res = run_network(self.nw, self.feeds)
        return res["y0"] if list(named) == ["y0"] else res


def eq(got: np.ndarray, want: Any, dtype: Any = None) -> None:
    want = np.asarray(want, dtype if dtype is not None else got.dtype)
    assert got.dtype == want.dtype and got.shape == want.shape, (got, want)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), 1e-6, 1e-6)


EW = TRT.ElementWiseOperation


# --- IElementWise ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "a", "b", "want", "dtype"),
    [
        ("SUM", [[1, 2, 3], [4, 5, 6]], [[10], [20]], [[11, 12, 13], [24, 25, 26]], np.float32),
        ("SUB", [5, 1], [3, 3], [2, -2], np.float32),
        ("PROD", [2, -3], [4, 5], [8, -15], np.int32),
        ("DIV", [-7, 7, 6], [2, 2, -4], [-3, 3, -1], np.int32),  # toward zero
        ("FLOOR_DIV", [-7, 7, 6], [2, 2, -4], [-4, 3, -2], np.int32),
        ("FLOOR_DIV", [-7.0, 7.5], [2.0, 2.0], [-4.0, 3.0], np.float32),
        ("DIV", [1.0, -3.0], [4.0, 2.0], [0.25, -1.5], np.float32),
        ("POW", [2.0, 3.0, 4.0], [3.0, 2.0, 0.5], [8.0, 9.0, 2.0], np.float32),
        ("MIN", [1, 5], [3, 2], [1, 2], np.int64),
        ("MAX", [1, 5], [3, 2], [3, 5], np.int8),
        ("SUM", [2048.0, 1.0], [1.0, 0.5], [2048.0, 1.5], np.float16),  # fp16: 2049 -> 2048
    ],
)
def test_elementwise_arithmetic(op: str, a: Any, b: Any, want: Any, dtype: Any) -> None:
    n = Net()
    y = n.nw.add_elementwise(n.input("a", a, dtype), n.input("b", b, dtype), getattr(EW, op))
    eq(n.run(y), want, dtype)


@pytest.mark.parametrize(
    ("op", "want"),
    [
        ("EQUAL", [False, True, False]),
        ("LESS", [True, False, False]),
        ("GREATER", [False, False, True]),
    ],
)
def test_elementwise_comparisons_give_bool(op: str, want: list) -> None:
    n = Net()
    y = n.nw.add_elementwise(n.input("a", [1, 2, 3]), n.input("b", [2, 2, 2]), getattr(EW, op))
    eq(n.run(y), want, bool)


@pytest.mark.parametrize(
    ("op", "want"),
    [("AND", [1, 0, 0, 0]), ("OR", [1, 1, 1, 0]), ("XOR", [0, 1, 1, 0])],
)
def test_elementwise_logic(op: str, want: list) -> None:
    n = Net()
    a, b = n.input("a", [1, 1, 0, 0], bool), n.input("b", [1, 0, 1, 0], bool)
    eq(n.run(n.nw.add_elementwise(a, b, getattr(EW, op))), want, bool)


def test_elementwise_rules() -> None:
    n = Net()
    n.nw.add_elementwise(n.input("a", [[1.0, 2.0]]), n.input("b", [1.0, 2.0]), EW.SUM)
    with pytest.raises(EmulatorError, match="equal ranks"):
        n.run(n.nw.get_layer(0))
    n = Net()
    y = n.nw.add_elementwise(n.input("a", [1.0]), n.input("b", [1], np.int32), EW.SUM)
    with pytest.raises(EmulatorError, match="explicit cast"):
        n.run(y)
    n = Net()
    y = n.nw.add_elementwise(n.input("a", [1, 1], bool), n.input("b", [1, 0], bool), EW.SUM)
    with pytest.raises(EmulatorError, match="does not take BOOL"):
        n.run(y)
    n = Net()
    y = n.nw.add_elementwise(n.input("a", [[1.0, 2.0]]), n.input("b", [[1.0, 2.0, 3.0]]), EW.SUM)
    with pytest.raises(EmulatorError, match="do not broadcast"):
        n.run(y)


# --- IUnary, IActivation -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "x", "want", "dtype"),
    [
        ("EXP", [0.0, 1.0], [1.0, math.e], np.float32),
        ("LOG", [1.0, math.e], [0.0, 1.0], np.float32),
        ("SQRT", [4.0, 9.0], [2.0, 3.0], np.float32),
        ("RECIP", [4.0, -0.5], [0.25, -2.0], np.float32),
        ("ABS", [-2, 3], [2, 3], np.int32),
        ("NEG", [-2, 3], [2, -3], np.int64),
        ("FLOOR", [-1.5, 1.5], [-2.0, 1.0], np.float32),
        ("CEIL", [-1.5, 1.5], [-1.0, 2.0], np.float32),
        ("SIN", [0.0, math.pi / 2], [0.0, 1.0], np.float32),
        ("COS", [0.0, math.pi], [1.0, -1.0], np.float32),
        ("ERF", [0.0, 10.0], [0.0, 1.0], np.float32),
        ("NOT", [True, False], [False, True], bool),
        ("SIGN", [-3, 0, 5], [-1, 0, 1], np.int32),
        ("ROUND", [0.5, 1.5, 2.5], [0.0, 2.0, 2.0], np.float32),
    ],
)
def test_unary(op: str, x: Any, want: Any, dtype: Any) -> None:
    n = Net()
    eq(n.run(n.nw.add_unary(n.input("x", x, dtype), getattr(TRT.UnaryOperation, op))), want, dtype)


def test_unary_type_rules() -> None:
    n = Net()
    y = n.nw.add_unary(n.input("x", [1], np.int32), TRT.UnaryOperation.EXP)
    with pytest.raises(EmulatorError, match="EXP does not take INT32"):
        n.run(y)


@pytest.mark.parametrize(
    ("act", "alpha", "beta", "x", "want"),
    [
        ("RELU", 0, 0, [-1.0, 2.0], [0.0, 2.0]),
        ("SIGMOID", 0, 0, [0.0], [0.5]),
        ("TANH", 0, 0, [0.0], [0.0]),
        ("LEAKY_RELU", 0.1, 0, [-10.0, 3.0], [-1.0, 3.0]),
        ("ELU", 2.0, 0, [0.0, 1.0], [0.0, 1.0]),
        ("SELU", 1.0, 2.0, [0.0, 1.0], [0.0, 2.0]),
        ("SOFTSIGN", 0, 0, [1.0, -3.0], [0.5, -0.75]),
        ("SOFTPLUS", 1.0, 1.0, [0.0], [math.log(2.0)]),
        ("CLIP", -1.0, 1.0, [-5.0, 0.5, 5.0], [-1.0, 0.5, 1.0]),
        ("HARD_SIGMOID", 0.5, 0.5, [-2.0, 0.0, 2.0], [0.0, 0.5, 1.0]),
        ("SCALED_TANH", 2.0, 0.0, [3.0], [0.0]),
        ("THRESHOLDED_RELU", 1.0, 0, [0.5, 2.0], [0.0, 2.0]),
        ("GELU_ERF", 0, 0, [0.0, 10.0], [0.0, 10.0]),
        ("GELU_TANH", 0, 0, [0.0, -10.0], [0.0, 0.0]),
    ],
)
def test_activation(act: str, alpha: float, beta: float, x: list, want: list) -> None:
    n = Net()
    layer = n.nw.add_activation(n.input("x", x), getattr(TRT.ActivationType, act))
    if alpha:
        layer.alpha = alpha
    if beta:
        layer.beta = beta
    eq(n.run(layer), want)


# --- ISelect, ICast, IIdentity, IConstant/Weights, IShape --------------------------------------
def test_select_cast_identity_shape() -> None:
    n = Net()
    c, a, b = (
        n.input("c", [True, False], bool),
        n.input("a", [1.0, 2.0]),
        n.input("b", [10.0, 20.0]),
    )
    x = n.input("x", [-1.7, 1.7, 2.5, 0.0])
    res = n.run(
        sel=n.nw.add_select(c, a, b),
        to_int=n.nw.add_cast(x, TRT.DataType.INT32),
        to_bool=n.nw.add_cast(x, TRT.DataType.BOOL),
        to_half=n.nw.add_cast(n.const([1 / 3]), TRT.DataType.HALF),
        from_bool=n.nw.add_cast(c, TRT.DataType.FLOAT),
        ident=n.nw.add_identity(x),
        shape=n.nw.add_shape(n.const(np.zeros((2, 3)))),
    )
    eq(res["sel"], [1.0, 20.0])
    eq(res["to_int"], [-1, 1, 2, 0], np.int32)  # truncation toward zero
    eq(res["to_bool"], [True, True, True, False], bool)
    eq(res["to_half"], [0.333251953125], np.float16)  # nearest fp16 to 1/3
    eq(res["from_bool"], [1.0, 0.0])
    eq(res["ident"], [-1.7, 1.7, 2.5, 0.0])
    eq(res["shape"], [2, 3], np.int64)


def test_weights_are_read_as_their_declared_type() -> None:
    n = Net()
    res = n.run(
        bf16=n.const([1.5, -2.0], ml_dtypes.bfloat16),
        as_half=n.const([1.0], ml_dtypes.bfloat16, as_type="HALF"),  # bytes 0x3F80
        flags=n.const([True, False, True], bool),
        int8=n.const([[-128, 127]], np.int8),
    )
    eq(res["bf16"], [1.5, -2.0], ml_dtypes.bfloat16)
    eq(res["as_half"], [1.875], np.float16)  # 0x3F80 as fp16: 2^0 * (1 + 896/1024)
    eq(res["flags"], [True, False, True], bool)
    eq(res["int8"], [[-128, 127]], np.int8)
    n = Net()
    y = n.const([0, 2], np.uint8, as_type="BOOL")
    with pytest.raises(EmulatorError, match="other than 0/1"):
        n.run(y)
    n = Net()
    arr = np.zeros(3, np.float32)
    w = TRT.Weights(TRT.DataType.FLOAT, arr.ctypes.data, 3)
    with pytest.raises(EmulatorError, match="weights hold 3 values"):
        n.run(n.nw.add_constant((2, 2), w))


# --- IShuffle ----------------------------------------------------------------------------------
X23 = [[0, 1, 2], [3, 4, 5]]


def _shuffle(first=None, dims=None, second=None, zero=None, dyn=None) -> Any:
    n = Net()
    sh = n.nw.add_shuffle(n.input("x", X23))
    if first:
        sh.first_transpose = TRT.Permutation(first)
    if dims is not None:
        sh.reshape_dims = dims
    if second:
        sh.second_transpose = TRT.Permutation(second)
    if zero is not None:
        sh.zero_is_placeholder = zero
    if dyn is not None:
        sh.set_input(1, n.const(dyn, np.int64))
    return n.run(sh)


def test_shuffle() -> None:
    eq(_shuffle(first=[1, 0]), [[0, 3], [1, 4], [2, 5]], np.float32)
    eq(_shuffle(dims=(-1,)), [0, 1, 2, 3, 4, 5], np.float32)
    eq(_shuffle(dims=(3, 2)), [[0, 1], [2, 3], [4, 5]], np.float32)
    eq(_shuffle(dims=(0, 1, -1)), [[[0, 1, 2]], [[3, 4, 5]]], np.float32)  # 0 copies dim 0
    eq(_shuffle(first=[1, 0], dims=(6,)), [0, 3, 1, 4, 2, 5], np.float32)
    eq(_shuffle(dims=(3, 2), second=[1, 0]), [[0, 2, 4], [1, 3, 5]], np.float32)
    eq(_shuffle(dyn=[3, -1]), [[0, 1], [2, 3], [4, 5]], np.float32)
    eq(_shuffle(dyn=[0, 3, 1], zero=True), [[[0], [1], [2]], [[3], [4], [5]]], np.float32)
    with pytest.raises(EmulatorError, match="reshape"):
        _shuffle(dims=(0, 3, 1), zero=False)  # 0 is a size: 0 values != 6
    with pytest.raises(EmulatorError, match="not a permutation"):
        _shuffle(first=[0, 0])


# --- ISlice ------------------------------------------------------------------------------------
def _slice(x: list, start: int, size: int, stride: int, mode: str | None = None, **dyn: Any):
    """A 1-D slice; ``dyn`` keys in_start/in_size/in_stride/in_fill feed inputs 1-4."""
    n = Net()
    sl = n.nw.add_slice(n.input("x", x), (start,), (size,), (stride,))
    if mode:
        sl.mode = getattr(TRT.SampleMode, mode)
    for i, key in enumerate(("in_start", "in_size", "in_stride", "in_fill"), 1):
        if key in dyn:
            sl.set_input(i, n.const(dyn[key], np.float32 if key == "in_fill" else np.int64))
    return n.run(sl)


def test_slice() -> None:
    ten = list(range(10))
    eq(_slice(ten, 1, 3, 3), [1, 4, 7], np.float32)
    eq(_slice(ten, 9, 3, -2), [9, 7, 5], np.float32)
    eq(_slice(ten, 2, 4, 0), [2, 2, 2, 2], np.float32)
    eq(_slice(ten, 8, 4, 1, "WRAP"), [8, 9, 0, 1], np.float32)
    eq(_slice(ten, -2, 3, 1, "CLAMP"), [0, 0, 0], np.float32)
    eq(_slice(ten, 8, 4, 1, "FILL", in_fill=[-1.0]), [8, 9, -1, -1], np.float32)
    eq(_slice(ten, 8, 4, 1, "FILL"), [8, 9, 0, 0], np.float32)
    eq(_slice([0, 1, 2, 3], -2, 8, 1, "REFLECT"), [2, 1, 0, 1, 2, 3, 2, 1], np.float32)
    eq(_slice(ten, 0, 1, 1, in_start=[2], in_size=[2]), [2, 3], np.float32)
    eq(_slice(ten, 0, 1, 1, in_stride=[4], in_size=[3]), [0, 4, 8], np.float32)
    with pytest.raises(EmulatorError, match="STRICT_BOUNDS"):
        _slice(ten, 8, 3, 1)
    n = Net()
    sl = n.nw.add_slice(n.input("x", X23), (0,), (2,), (1,))
    sl.axes = (1,)  # start/size/stride apply to axis 1 only
    eq(n.run(sl), [[0, 1], [3, 4]], np.float32)


# --- IConcatenation, IGather -------------------------------------------------------------------
def test_concatenation() -> None:
    n = Net()
    cat = n.nw.add_concatenation([n.input("a", [[1], [2]]), n.input("b", [[3, 4], [5, 6]])])
    cat.axis = 1
    eq(n.run(cat), [[1, 3, 4], [2, 5, 6]], np.float32)
    n = Net()  # default axis: rank - 3, or 0 below rank 3
    cat = n.nw.add_concatenation([n.input("a", [[1, 2]]), n.input("b", [[3, 4]])])
    eq(n.run(cat), [[1, 2], [3, 4]], np.float32)


def _gather(data: Any, idx: Any, axis: int = 0, mode: str | None = None, ne: int = 0) -> Any:
    n = Net()
    g = n.nw.add_gather(n.input("d", data), n.input("i", idx, np.int32), axis)
    if mode:
        g.mode = getattr(TRT.GatherMode, mode)
    if ne:
        g.num_elementwise_dims = ne
    return n.run(g)


def test_gather() -> None:
    d = [[1, 2, 3], [4, 5, 6]]
    eq(_gather(d, [2, 0], axis=1), [[3, 1], [6, 4]], np.float32)
    eq(_gather(d, [[1], [0]], axis=0), [[[4, 5, 6]], [[1, 2, 3]]], np.float32)
    eq(_gather(d, 1, axis=0), [4, 5, 6], np.float32)
    eq(_gather(d, [[2], [0]], axis=1, ne=1), [[3], [4]], np.float32)
    eq(_gather(d, [[1, 0, 1], [0, 0, 0]], 0, "ELEMENT"), [[4, 2, 6], [1, 2, 3]], np.float32)
    eq(_gather([[1, 2], [3, 4]], [[1, 0], [0, 1]], mode="ND"), [3, 2], np.float32)
    eq(_gather([[1, 2], [3, 4]], [[1], [0]], mode="ND"), [[3, 4], [1, 2]], np.float32)
    for bad in ([3], [-1]):
        with pytest.raises(EmulatorError, match="outside"):
            _gather(d, bad, axis=1)


# --- IMatrixMultiply, ISoftMax, IReduce, INormalization ----------------------------------------
MO = TRT.MatrixOperation
A22, B22 = [[1, 2], [3, 4]], [[5, 6], [7, 8]]


@pytest.mark.parametrize(
    ("a", "op0", "b", "op1", "want"),
    [
        (A22, "NONE", B22, "NONE", [[19, 22], [43, 50]]),
        (A22, "NONE", B22, "TRANSPOSE", [[17, 23], [39, 53]]),
        (A22, "TRANSPOSE", B22, "NONE", [[26, 30], [38, 44]]),
        ([1, 2], "VECTOR", B22, "NONE", [19, 22]),
        (A22, "NONE", [1, 1], "VECTOR", [3, 7]),
        ([[[1, 0]], [[0, 1]]], "NONE", [B22], "NONE", [[[5, 6]], [[7, 8]]]),  # batch 2 x 1
    ],
)
def test_matrix_multiply(a: Any, op0: str, b: Any, op1: str, want: Any) -> None:
    n = Net()
    mm = n.nw.add_matrix_multiply(
        n.input("a", a), getattr(MO, op0), n.input("b", b), getattr(MO, op1)
    )
    eq(n.run(mm), want, np.float32)


def test_matrix_multiply_accumulates_fp16_in_float32() -> None:
    n = Net()
    a = n.input("a", [[2048, 1, 1]], np.float16)  # in fp16, 2048 + 1 rounds back to 2048
    mm = n.nw.add_matrix_multiply(a, MO.NONE, n.input("b", [[1], [1], [1]], np.float16), MO.NONE)
    eq(n.run(mm), [[2050]], np.float16)
    n = Net()
    mm = n.nw.add_matrix_multiply(n.input("a", [[1, 2, 3]]), MO.NONE, n.input("b", A22), MO.NONE)
    with pytest.raises(EmulatorError, match="inner dims differ"):
        n.run(mm)


def test_softmax() -> None:
    n = Net()
    sm = n.nw.add_softmax(n.input("x", [[0, 0], [0, math.log(3)]]))
    sm.axes = 1 << 1
    eq(n.run(sm), [[0.5, 0.5], [0.25, 0.75]], np.float32)
    n = Net()  # default axis: rank - 3, or 0 below rank 3
    eq(
        n.run(n.nw.add_softmax(n.input("x", [[0, 0], [math.log(3), 0]]))),
        [[0.25, 0.5], [0.75, 0.5]],
        np.float32,
    )
    n = Net()
    sm = n.nw.add_softmax(n.input("x", [[0.0, 1.0]]))
    sm.axes = 0b11
    with pytest.raises(EmulatorError, match="exactly one axis"):
        n.run(sm)


@pytest.mark.parametrize(
    ("op", "axes", "keep", "want"),
    [
        ("SUM", 0b10, False, [6, 15]),
        ("SUM", 0b10, True, [[6], [15]]),
        ("AVG", 0b01, False, [2.5, 3.5, 4.5]),
        ("MAX", 0b11, False, 6),
        ("MIN", 0b01, True, [[1, 2, 3]]),
        ("PROD", 0b10, False, [6, 120]),
    ],
)
def test_reduce(op: str, axes: int, keep: bool, want: Any) -> None:
    n = Net()
    r = n.nw.add_reduce(
        n.input("x", [[1, 2, 3], [4, 5, 6]]), getattr(TRT.ReduceOperation, op), axes, keep
    )
    eq(n.run(r), want, np.float32)


def test_normalization() -> None:
    n = Net()
    x = n.input("x", [[1, 3], [4, 0]])
    norm = n.nw.add_normalization_v2(x, n.const([[2, 3]]), n.const([[1, 0]]), 0b10)
    norm.epsilon = 0.0
    # row [1, 3]: mean 2, var 1 -> [-1, 1]; row [4, 0]: mean 2, var 4 -> [1, -1]
    eq(n.run(norm), [[-1, 3], [3, -3]], np.float32)
    n = Net()  # default epsilon 1e-5; over both axes: mean 1, var 1
    norm = n.nw.add_normalization_v2(
        n.input("x", [[0, 2], [0, 2]]), n.const([[1, 1]]), n.const([[0, 0]]), 0b11
    )
    s = 1 / math.sqrt(1 + 1e-5)
    eq(n.run(norm), [[-s, s], [-s, s]], np.float32)
    n = Net()
    norm = n.nw.add_normalization_v2(n.input("x", [[1, 3]]), n.const([1, 1]), n.const([0, 0]), 2)
    with pytest.raises(EmulatorError, match="equal ranks"):
        n.run(norm)


# --- IAttention --------------------------------------------------------------------------------
def _attention(
    q: list, k: list, v: list, causal: str = "NONE", norm: str = "SOFTMAX", mask: Any = None
) -> Any:
    n = Net()
    qkv = [n.input(name, np.reshape(t, (1, 1, -1, 1))) for name, t in zip("qkv", (q, k, v))]
    att = n.nw.add_attention_v2(
        *qkv, getattr(TRT.AttentionNormalizationOp, norm), getattr(TRT.CausalMaskKind, causal)
    )
    if mask is not None:
        m = np.asarray(mask)
        att.mask = n.input("m", m.reshape((1, 1) + m.shape), m.dtype)
    return n.run(att.get_output(0))[0, 0, :, 0]


def test_attention() -> None:
    eq(_attention([0, 0], [1, 2], [2, 4]), [3, 3], np.float32)  # uniform weights
    eq(_attention([0, 0], [1, 2], [2, 4], "UPPER_LEFT"), [2, 3], np.float32)
    eq(_attention([0], [1, 2], [2, 4], "UPPER_LEFT"), [2], np.float32)
    eq(_attention([0], [1, 2], [2, 4], "LOWER_RIGHT"), [3], np.float32)
    eq(_attention([0, 0], [1, 2], [2, 4], mask=[[True, False], [False, True]]), [2, 4], np.float32)
    eq(_attention([0], [1, 2], [2, 4], mask=np.float32([[0, math.log(3)]])), [3.5], np.float32)
    eq(_attention([1], [1, 2], [2, 4], norm="NONE"), [10], np.float32)  # no implicit scaling
    eq(_attention([math.log(3)], [0, 1], [2, 4]), [3.5], np.float32)
    with pytest.raises(EmulatorError, match="cannot be used together"):
        _attention([0], [1, 2], [2, 4], "UPPER_LEFT", mask=[[True, True]])


# --- IDistCollective over in-process ranks -----------------------------------------------------
def _collective(op: str, red: str, root: int, groups: Any, xs: list, n: int | None = None):
    nets, feeds = [], []
    for x in xs:
        net = Net()
        layer = net.nw.add_dist_collective(
            net.input("x", x),
            getattr(TRT.CollectiveOperation, op),
            getattr(TRT.ReduceOperation, red),
            root,
            groups,
        )
        layer.num_ranks = n or len(groups or xs)
        out = layer.get_output(0)
        out.name = "y"
        net.nw.mark_output(out)
        nets.append(net)
        feeds.append(net.feeds)
    return [res["y"] for res in run_ranks([m.nw for m in nets], feeds, timeout=10)]


X0, X1 = [[1], [2]], [[3], [4]]
NAN = float("nan")


@pytest.mark.parametrize(
    ("op", "red", "root", "groups", "want"),
    [
        ("ALL_REDUCE", "SUM", -1, [0, 1], [[[4], [6]], [[4], [6]]]),
        ("ALL_REDUCE", "MAX", -1, [0, 1], [[[3], [4]], [[3], [4]]]),
        ("ALL_REDUCE", "MIN", -1, [], [[[1], [2]], [[1], [2]]]),
        ("ALL_REDUCE", "PROD", -1, [0, 1], [[[3], [8]], [[3], [8]]]),
        ("ALL_REDUCE", "AVG", -1, [0, 1], [[[2], [3]], [[2], [3]]]),
        ("BROADCAST", "NONE", 1, [0, 1], [X1, X1]),
        ("REDUCE", "SUM", 0, [0, 1], [[[4], [6]], [[NAN], [NAN]]]),
        ("ALL_GATHER", "NONE", -1, [0, 1], [X0 + X1, X0 + X1]),
        ("ALL_GATHER", "NONE", -1, [1, 0], [X1 + X0, X1 + X0]),  # group order
        ("REDUCE_SCATTER", "SUM", -1, [0, 1], [[[4]], [[6]]]),
        ("REDUCE_SCATTER", "SUM", -1, [1, 0], [[[6]], [[4]]]),
        ("ALL_TO_ALL", "NONE", -1, [0, 1], [[[1], [3]], [[2], [4]]]),
        ("GATHER", "NONE", 1, [0, 1], [[[NAN]] * 4, X0 + X1]),
        ("SCATTER", "NONE", 1, [0, 1], [[[3]], [[4]]]),
        ("SCATTER", "NONE", 0, [1, 0], [[[2]], [[1]]]),  # rank 1 is member 0 of [1, 0]
    ],
)
def test_collectives_on_two_ranks(op: str, red: str, root: int, groups: list, want: list):
    for got, w in zip(_collective(op, red, root, groups, [X0, X1]), want):
        np.testing.assert_array_equal(got, np.asarray(w, np.float32))


def test_collectives_in_subgroups_of_four_ranks() -> None:
    xs = [[[1]], [[2]], [[4]], [[8]]]
    nets = []
    for r, x in enumerate(xs):
        net = Net()
        group = [0, 1] if r < 2 else [3, 2]
        layer = net.nw.add_dist_collective(
            net.input("x", x),
            TRT.CollectiveOperation.ALL_GATHER,
            TRT.ReduceOperation.NONE,
            -1,
            group,
        )
        layer.num_ranks = 2
        out = layer.get_output(0)
        out.name = "y"
        net.nw.mark_output(out)
        nets.append(net)
    got = run_ranks([m.nw for m in nets], [m.feeds for m in nets], timeout=10)
    assert [g["y"].ravel().tolist() for g in got] == [[1, 2], [1, 2], [8, 4], [8, 4]]


def test_collective_errors() -> None:
    with pytest.raises(EmulatorError, match="num_ranks is 3"):
        _collective("ALL_REDUCE", "SUM", -1, [0, 1], [X0, X1], n=3)
    with pytest.raises(EmulatorError, match="NONE exactly"):
        _collective("ALL_REDUCE", "NONE", -1, [0, 1], [X0, X1])
    with pytest.raises(EmulatorError, match="root 2 is not"):
        _collective("BROADCAST", "NONE", 2, [0, 1], [X0, X1])
    with pytest.raises(EmulatorError, match="ranks disagree"):
        _collective("ALL_REDUCE", "SUM", -1, [0, 1], [X0, [[1], [2], [3]]])


# --- what the emulator does not model is an error ----------------------------------------------
def test_unmodelled_layers_and_properties_raise() -> None:
    n = Net()
    y = n.nw.add_non_zero(n.input("x", [1.0, 2.0]))  # (ITopKLayer is modelled now)
    with pytest.raises(UnsupportedLayerError, match="INonZeroLayer"):
        n.run(y.get_output(0))
    n = Net()
    y = n.nw.add_unary(n.input("x", [1.0]), TRT.UnaryOperation.EXP)
    y.num_ranks = 2
    with pytest.raises(UnsupportedLayerError, match="num_ranks"):
        n.run(y)
    n = Net()
    norm = n.nw.add_normalization_v2(n.input("x", [[1.0]]), n.const([[1]]), n.const([[0]]), 2)
    norm.num_groups = 2
    with pytest.raises(UnsupportedLayerError, match="num_groups"):
        n.run(norm)
    n = Net()
    with pytest.raises(EmulatorError, match="no feed"):
        n.nw.add_input("x", TRT.DataType.FLOAT, (2,))
        n.run(n.nw.add_identity(n.nw.get_input(0)))
