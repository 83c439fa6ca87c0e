"""Every definition-time error is a DefinitionError that names the layer, the input shapes and
the user's file:line; run-time errors are ExecutionErrors that say what was wrong.

The offending call and ``line := here()`` share one source line, so the asserted line number is
exactly the line of the call.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

import trtdsl as td
from trtdsl import functional as F

THIS_FILE = os.path.basename(__file__)


def here() -> int:
    """The caller's current line number."""
    return inspect.currentframe().f_back.f_lineno


def check(err, line: int, layer: str | None = None, *parts: str) -> str:
    """The error points at ``THIS_FILE:line``, names ``layer`` and mentions every part."""
    msg = str(err.value)
    assert f"{THIS_FILE}:{line}" in msg, msg
    assert err.value.where is not None and err.value.where.lineno == line, msg
    if layer is not None:
        assert f"layer '{layer}" in msg, msg
        assert err.value.layer is not None and err.value.layer.startswith(layer), msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


@pytest.fixture()
def net():
    return td.Network("err")


# -- shapes -----------------------------------------------------------------------------------
def test_matmul_inner_dim_mismatch(net):
    x, w = net.input("x", (2, 3)), net.input("w", (4, 5))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x @ w)
    check(e, line, "matmul", "x: (2, 3) float32", "w: (4, 5) float32", "3 vs 4")


def test_matmul_transpose_and_batch_mismatch(net):
    x, w = net.input("x", (2, 3, 4)), net.input("w", (5, 4, 2))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), F.matmul(x, w, name="proj"))
    check(e, line, "proj", "(2, 3, 4)", "(5, 4, 2)", "batch")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), F.matmul(x, x, transpose_b=False))
    check(e, line, "matmul", "(2, 3, 4)", "4 vs 3")


def test_matmul_with_an_ndarray_of_the_wrong_shape(net):
    x = net.input("x", (2, 3))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), np.ones((4, 5), np.float32) @ x)
    check(e, line, "matmul", "(4, 5)", "x: (2, 3)", "5 vs 2")


def test_elementwise_broadcast_mismatch(net):
    x, y = net.input("x", (2, 3)), net.input("y", (4,))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x + y)
    check(e, line, "add", "x: (2, 3) float32", "y: (4,) float32", "do not broadcast")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), F.select(x > 0, x, y))
    check(e, line, "select", "(2, 3)", "(4,)")


# -- axes -------------------------------------------------------------------------------------
def test_softmax_bad_axis(net):
    x = net.input("x", (2, 3))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.softmax(axis=2))
    check(e, line, "softmax", "axis 2", "rank 2", "x: (2, 3)")


def test_reduce_bad_axes(net):
    x = net.input("x", (2, 3))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.sum(axis=-3))
    check(e, line, "reduce_sum", "-3", "x: (2, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.mean(axis=(0, -2)))
    check(e, line, "reduce_mean", "repeated axis", "x: (2, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.max(axis="rows"))
    check(e, line, "reduce_max", "'rows'", "x: (2, 3)")


def test_concat_errors(net):
    x, y = net.input("x", (2, 3)), net.input("y", (2, 4))
    h = net.input("h", (2, 3), "float16")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), td.concat([x, x], axis=2))
    check(e, line, "concat", "axis 2", "x: (2, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), td.concat([x, y], axis=0))
    check(e, line, "concat", "x: (2, 3)", "y: (2, 4)", "3 vs 4")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), td.concat([x, h], axis=0))
    check(e, line, "concat", "float32 vs float16", "h: (2, 3) float16")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), td.concat([x, x.sum(axis=0)], axis=0))
    check(e, line, "concat", "rank", "(2, 3)", "(3,)")


def test_split_errors(net):
    x = net.input("x", (4, 6))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.split(2, axis=2))
    check(e, line, "split", "axis 2", "x: (4, 6)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.split(4, axis=1))
    check(e, line, "split", "4 equal pieces", "x: (4, 6)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.split([1, 2], axis=0))
    check(e, line, "split", "(1, 2)", "size 4", "x: (4, 6)")


def test_gather_errors(net):
    x = net.input("x", (4, 6))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.gather([0, 1], axis=-3))
    check(e, line, "gather", "-3", "x: (4, 6)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.gather([0, 6], axis=1))
    check(e, line, "gather", "index 6", "size 6", "x: (4, 6)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.gather([0.5], axis=1))
    check(e, line, "gather", "integers", "x: (4, 6)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), F.gather(x, net.input("i", (2,), "float32")))
    check(e, line, "gather", "int32 or int64", "i: (2,) float32")


# -- dtypes -----------------------------------------------------------------------------------
def test_dtype_clashes(net):
    x, h = net.input("x", (2, 3)), net.input("h", (2, 3), "float16")
    i = net.input("i", (2, 3), "int32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x * h)
    check(e, line, "mul", "float32 vs float16", "x: (2, 3) float32", "h: (2, 3) float16")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x @ h.transpose())
    check(e, line, "matmul", "float32 vs float16")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), td.where(x > 0, x, h))
    check(e, line, "select", "float32 vs float16")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), td.where(x, x, x))
    check(e, line, "select", "condition must be bool")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), i.softmax())
    check(e, line, "softmax", "int32", "i: (2, 3) int32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), i.exp())
    check(e, line, "exp", "int32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x & x)
    check(e, line, "and", "float32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.layer_norm(np.ones(3, np.float16), np.zeros(3, np.float16)))
    check(e, line, "layer_norm", "float16 differs", "x: (2, 3) float32")


def test_scalars_that_the_dtype_cannot_hold(net):
    i, h = net.input("i", (3,), "int32"), net.input("h", (3,), "float16")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), i * 2.5)
    check(e, line, "mul", "2.5", "int32", "i: (3,) int32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), h + 1e6)
    check(e, line, "add", "float16", "h: (3,) float16")


def test_bad_dtype_strings(net):
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.input("x", (2,), "float13"))
    check(e, line, None, "float13", "input 'x'")
    x = net.input("y", (2,))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.cast("complex64"))
    check(e, line, "cast", "complex64", "y: (2,) float32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.constant(np.ones(2, np.complex64)))
    check(e, line, None, "complex64")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.constant(1.0, dtype="float13"))
    check(e, line, None, "float13")


# -- reshape, transpose, slices ---------------------------------------------------------------
def test_bad_reshapes(net):
    x = net.input("x", (2, 3))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.reshape((4, -1)))
    check(e, line, "reshape", "(2, 3)", "6 elements", "(4, -1)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.reshape((-1, -1)))
    check(e, line, "reshape", "at most one -1", "x: (2, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.reshape((0, 0, 0)))
    check(e, line, "reshape", "position 2", "x: (2, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.reshape((7,)))
    check(e, line, "reshape", "(7,)", "x: (2, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.reshape((2, None)))
    check(e, line, "reshape", "ints", "x: (2, 3)")
    d = net.input("d", (None, 6))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), d.reshape((0, 4)))  # the copied dim cancels: 6 != 4
    check(e, line, "reshape", "d: (?, 6)")


def test_bad_transpose_perms(net):
    x = net.input("x", (2, 3))
    for perm in [(0, 0), (0, 5), (1, -3), (0,), (0, 1, 2)]:
        with pytest.raises(td.DefinitionError) as e:
            _ = (line := here(), x.transpose(perm))
        check(e, line, "transpose", str(perm), "x: (2, 3)")


def test_slices_out_of_range(net):
    x = net.input("x", (4, 5))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x[4])
    check(e, line, "getitem", "index 4", "size 4", "x: (4, 5)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x[:, -6])
    check(e, line, "getitem", "-6", "size 5", "x: (4, 5)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x[1, 2, 3])
    check(e, line, "getitem", "too many indices", "x: (4, 5)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x[::-1])
    check(e, line, "getitem", "step", "x: (4, 5)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x[..., ...])
    check(e, line, "getitem", "'...'", "x: (4, 5)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x["a"])
    check(e, line, "getitem", "'a'", "x: (4, 5)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), F.slice(x, (0, 3), (2, 2), (1, 2)))
    check(e, line, "slice", "exceeds 5", "x: (4, 5)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), F.slice(x, (0,), (2,)))
    check(e, line, "slice", "2 entries", "x: (4, 5)")
    d = net.input("d", (None, 5))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), d[1:3])
    check(e, line, "getitem", "dynamic dim 0", "d: (?, 5)")


def test_expand_dims_and_squeeze_errors(net):
    x = net.input("x", (2, 1, 3))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.expand_dims(4))
    check(e, line, "expand_dims", "axis 4", "x: (2, 1, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.squeeze(0))
    check(e, line, "squeeze", "size 2", "x: (2, 1, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.squeeze(3, name="sq"))
    check(e, line, "sq", "axis 3", "x: (2, 1, 3)")


def test_normalization_argument_errors(net):
    x = net.input("x", (2, 3, 4))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.layer_norm(np.ones(3), np.zeros(3)))
    check(e, line, "layer_norm", "normalized shape (4,)", "x: (2, 3, 4)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.rms_norm(np.ones((2, 3)), axes=(0, 1)))
    check(e, line, "rms_norm", "trailing", "x: (2, 3, 4)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.rms_norm(np.ones(4), eps=0.0))
    check(e, line, "rms_norm", "eps", "x: (2, 3, 4)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.gelu(approximate="fast"))
    check(e, line, "gelu", "'fast'", "x: (2, 3, 4)")


# -- names and networks -----------------------------------------------------------------------
def test_unknown_layer_name(net):
    net.input("x", (2,)).relu(name="act")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.layer("nope"))
    check(e, line, None, "unknown layer 'nope'", "act")
    assert net.layer("act").op.name == "activation"


def test_duplicate_output_name(net):
    x = net.input("x", (2,))
    net.output(x.relu(), "y")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.output(x.exp(), "y"))
    check(e, line, None, "duplicate output name 'y'", "(2,)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.output(x.exp(), "x"))
    check(e, line, None, "'x'", "input")


def test_duplicate_input_name(net):
    net.input("x", (2,))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.input("x", (3,), "float16"))
    check(e, line, None, "duplicate input name 'x'", "(2,)", "(3,)")


def test_duplicate_layer_name(net):
    x = net.input("x", (2,))
    x.relu(name="a")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x.sigmoid(name="a"))
    check(e, line, "a", "duplicate layer name 'a'", "x: (2,) float32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.input("a", (2,)))
    check(e, line, "a", "duplicate layer name 'a'")


def test_failed_layer_leaves_its_name_free(net):
    x = net.input("x", (2, 3))
    with pytest.raises(td.DefinitionError):
        x.softmax(axis=5, name="probs")
    assert x.softmax(name="probs").name == "probs"


def test_tensors_from_two_networks():
    a_net, b_net = td.Network("a"), td.Network("b")
    a, b = a_net.input("x", (2, 3)), b_net.input("y", (2, 3))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), a + b)
    check(e, line, "add", "different networks", "'a'", "'b'", "x: (2, 3)", "y: (2, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), td.concat([a, b]))
    check(e, line, "concat", "different networks", "x: (2, 3)", "y: (2, 3)")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), F.matmul(a, b, transpose_b=True))
    check(e, line, "matmul", "different networks")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), b_net.output(a, "z"))
    check(e, line, None, "Tensor of this network")


def test_non_tensor_arguments(net):
    x = net.input("x", (2,))
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), F.softmax(np.ones(3)))
    check(e, line, "softmax", "no Tensor")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), x + "one")
    check(e, line, "add", "str", "x: (2,) float32")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.input("bad", (2, -3)))
    check(e, line, None, "-3", "input 'bad'")
    with pytest.raises(td.DefinitionError) as e:
        _ = (line := here(), net.input("bad", 3.5))
    check(e, line, None, "3.5", "input 'bad'")


# -- run time ---------------------------------------------------------------------------------
@pytest.fixture()
def small():
    net = td.Network("small")
    x, y = net.input("x", (None, 4)), net.input("y", (None, 4))
    net.output(x + y, "z")
    return net


def test_missing_and_unknown_feeds(small):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(td.ExecutionError, match=r"missing input\(s\) \['y'\]"):
        small.run({"x": x})
    with pytest.raises(td.ExecutionError, match=r"unknown input\(s\) \['w'\].*\['x', 'y'\]"):
        small.run({"x": x, "y": x, "w": x})


def test_wrong_feed_dtype_and_shape(small):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(td.ExecutionError, match=r"input 'y': got dtype float64, expected float32"):
        small.run({"x": x, "y": np.ones((2, 4))})
    with pytest.raises(
        td.ExecutionError, match=r"input 'y': got shape \(2, 5\), expected \(\?, 4\)"
    ):
        small.run({"x": x, "y": np.ones((2, 5), np.float32)})
    with pytest.raises(td.ExecutionError, match=r"input 'x': got shape \(8,\)"):
        small.run({"x": np.ones(8, np.float32), "y": x})


def test_inconsistent_dynamic_dims_name_the_layer():
    net = td.Network("dyn")
    x, y = net.input("x", (None, 4)), net.input("y", (None, 4))
    _ = (line := here(), net.output(F.add(x, y, name="sum_xy"), "z"))
    with pytest.raises(td.ExecutionError) as e:
        net.run({"x": np.ones((3, 4), np.float32), "y": np.ones((5, 4), np.float32)})
    msg = str(e.value)
    assert "layer 'sum_xy'" in msg and f"{THIS_FILE}:{line}" in msg, msg
    assert "(3, 4)" in msg and "(5, 4)" in msg, msg


def test_inconsistent_dynamic_inner_dim_of_matmul():
    net = td.Network("dyn")
    a, b = net.input("a", (2, None)), net.input("b", (None, 3))
    _ = (line := here(), net.output(a @ b, "c"))
    with pytest.raises(td.ExecutionError) as e:
        net.run({"a": np.ones((2, 4), np.float32), "b": np.ones((5, 3), np.float32)})
    assert "layer 'matmul_0'" in str(e.value) and f"{THIS_FILE}:{line}" in str(e.value)


def test_gather_index_out_of_range_at_run_time():
    net = td.Network("emb")
    ids = net.input("ids", (None,), "int32")
    table = net.constant(np.arange(10, dtype=np.float32).reshape(5, 2))
    _ = (line := here(), net.output(table.gather(ids), "e"))
    for bad in ([0, 5], [-1]):  # TensorRT's gather takes indices in [0, 5)
        with pytest.raises(td.ExecutionError) as e:
            net.run({"ids": np.array(bad, np.int32)})
        msg = str(e.value)
        assert "layer 'gather_0'" in msg and f"{THIS_FILE}:{line}" in msg, msg
        assert "[0, 5)" in msg and str(bad[-1]) in msg, msg


def test_backend_errors(small):
    feeds = {"x": np.ones((1, 4), np.float32), "y": np.ones((1, 4), np.float32)}
    with pytest.raises(ValueError, match="unknown backend"):
        small.run(feeds, backend="tpu")
    with pytest.raises(TypeError, match="no options"):
        small.run(feeds, backend="numpy", fast=True)


def test_error_classes():
    assert issubclass(td.DefinitionError, td.TrtDslError)
    assert issubclass(td.DefinitionError, ValueError)
    assert issubclass(td.ExecutionError, td.TrtDslError)
    assert issubclass(td.ExecutionError, RuntimeError)
