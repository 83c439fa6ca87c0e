"""Network inspection (summary, to_dot), layer and tensor naming, and Tensor misuse."""

from __future__ import annotations

import inspect
import io
import os
import re

import numpy as np
import pytest

import trtdsl as td
from trtdsl import functional as F

THIS_FILE = os.path.basename(__file__)


def here() -> int:
    return inspect.currentframe().f_back.f_lineno


@pytest.fixture()
def mlp():
    """x (?, 4) f16 -> @ W (4, 8) -> + b (8,) -> relu 'act' -> split in two -> softmax."""
    net = td.Network("mlp")
    x = net.input("x", (None, 4), "float16")
    w = net.constant(np.ones((4, 8), np.float16), name="W")
    h = (x @ w + np.zeros(8)).relu(name="act")  # the float64 bias becomes a float16 constant
    p, q = h.split(2, axis=1)
    net.output(p, "p")
    net.output(q.softmax(), "q")
    return net


def rows(text: str) -> list[list[str]]:
    """The table rows of a summary, split into cells (two or more spaces apart)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("---")) + 1
    end = next(i for i, ln in enumerate(lines) if ln.startswith("outputs:"))
    return [re.split(r"\s{2,}", ln.strip()) for ln in lines[start:end]]


# -- summary ----------------------------------------------------------------------------------
def test_summary_table(mlp):
    text = mlp.summary(print_it=False)
    lines = text.splitlines()
    assert lines[0] == "Network 'mlp': 8 layers"
    assert re.split(r"\s{2,}", lines[1].strip()) == [
        "layer",
        "op",
        "output shape",
        "dtype",
        "params",
    ]
    table = rows(text)
    by_name = {r[0]: r for r in table if len(r) == 5}
    assert by_name["x"] == ["x", "input", "(?, 4)", "float16", "0"]
    assert by_name["W"] == ["W", "constant", "(4, 8)", "float16", str(4 * 8 * 2)]
    assert by_name["matmul_0"] == ["matmul_0", "matmul", "(?, 8)", "float16", "0"]
    assert by_name["constant_0"] == ["constant_0", "constant", "(8,)", "float16", str(8 * 2)]
    assert by_name["add_0"][1:] == ["add", "(?, 8)", "float16", "0"]
    assert by_name["act"][1:] == ["relu", "(?, 8)", "float16", "0"]
    assert by_name["split_0"][1].startswith("split(") and by_name["split_0"][2] == "(?, 4)"
    assert by_name["softmax_0"][1:] == ["softmax(axis=1)", "(?, 4)", "float16", "0"]
    # the split's second output gets its own row with no name, op or params
    i = [r[0] for r in table].index("split_0")
    assert table[i + 1] == ["(?, 4)", "float16"]
    assert [r[0] for r in table if len(r) == 5] == [layer.name for layer in mlp.layers]
    assert "outputs: p <- split_0:0, q <- softmax_0" in lines
    assert lines[-1] == f"parameters: {4 * 8 * 2 + 8 * 2} bytes"


def test_summary_prints_to_a_file_or_stdout(mlp, capsys):
    buf = io.StringIO()
    text = mlp.summary(file=buf)
    assert buf.getvalue() == text
    assert capsys.readouterr().out == ""
    mlp.summary()
    assert capsys.readouterr().out == text


def test_summary_describes_op_attributes():
    net = td.Network("ops")
    x = net.input("x", (2, 3, 4))
    x.sum(axis=(0, -1), keepdims=True, name="r")
    F.matmul(x, x, transpose_b=True, name="mm")
    x.transpose((2, 0, 1), name="t")
    x.cast("int32", name="c")
    net.constant(np.zeros((3, 5), np.int64), name="k")
    table = {r[0]: r for r in rows(net.summary(print_it=False)) if len(r) == 5}
    assert table["r"][1:3] == ["reduce_sum(axes=(0, 2), keepdims)", "(1, 3, 1)"]
    assert table["mm"][1:3] == ["matmul(transpose_b)", "(2, 3, 3)"]
    assert table["t"][1:3] == ["transpose(perm=(2, 0, 1))", "(4, 2, 3)"]
    assert table["c"][2:4] == ["(2, 3, 4)", "int32"]
    assert table["k"][4] == str(3 * 5 * 8)
    assert net.summary(print_it=False).splitlines()[-1] == "parameters: 120 bytes"


# -- to_dot -----------------------------------------------------------------------------------
ID = r'"(?:[^"\\]|\\.)*"'
NODE = re.compile(rf"^  ({ID}) \[label=({ID}), shape=(box|ellipse)(, [a-z]+=(?:{ID}|\w+))*\];$")
EDGE = re.compile(rf"^  ({ID}) -> ({ID}) \[label=({ID})\];$")


def parse_dot(text: str):
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[0].endswith(" {")
    assert lines[-1] == "}"
    nodes, edges = {}, []
    for ln in lines[1:-1]:
        if ln.strip() in ("rankdir=TB;", "node [shape=box, fontsize=10];"):
            continue
        if m := NODE.match(ln):
            nodes[m.group(1)[1:-1]] = m.group(2)[1:-1]
        elif m := EDGE.match(ln):
            edges.append((m.group(1)[1:-1], m.group(2)[1:-1], m.group(3)[1:-1]))
        else:
            raise AssertionError(f"not a dot statement: {ln!r}")
    assert text.count("{") == text.count("}") == 1
    return lines[0], nodes, edges


def test_to_dot(mlp):
    head, nodes, edges = parse_dot(mlp.to_dot())
    assert head == 'digraph "mlp" {'
    for layer in mlp.layers:
        assert layer.name in nodes
        assert nodes[layer.name].startswith(layer.name + "\\n")  # dot's newline escape
    assert nodes["out:p"] == "p" and nodes["out:q"] == "q"
    assert ("x", "matmul_0", "(?, 4) float16") in edges
    assert ("W", "matmul_0", "(4, 8) float16") in edges
    assert ("act", "split_0", "(?, 8) float16") in edges
    assert ("split_0", "out:p", "split_0:0: (?, 4) float16") in edges
    assert ("split_0", "softmax_0", "split_0:1: (?, 4) float16") in edges
    assert ("softmax_0", "out:q", "(?, 4) float16") in edges
    # one edge per layer input plus one per output, and every edge joins known nodes
    n_inputs = sum(len(layer.inputs) for layer in mlp.layers)
    assert len(edges) == n_inputs + len(mlp.outputs)
    assert all(a in nodes and b in nodes for a, b, _ in edges)


def test_to_dot_escapes_quotes_and_backslashes():
    net = td.Network('say "hi"')
    x = net.input("x", (2,))
    net.output(x.relu(name='a"b\\c'), "y")
    head, nodes, edges = parse_dot(net.to_dot())
    assert head == 'digraph "say \\"hi\\"" {'
    assert 'a\\"b\\\\c' in nodes
    assert ("x", 'a\\"b\\\\c', "(2,) float32") in edges


# -- naming -----------------------------------------------------------------------------------
def test_explicit_names():
    net = td.Network("n")
    x = net.input("x", (2, 3))
    y = x.softmax(name="probs")
    assert y.name == "probs" and y.producer.name == "probs"
    assert net.layer("probs") is y.producer and net.layer("probs").outputs == [y]
    assert net.layer("x").op.name == "input"
    net.output(y)  # the output name defaults to the tensor's name
    assert list(net.outputs) == ["probs"]
    out = net.run({"x": np.zeros((2, 3), np.float32)})
    np.testing.assert_allclose(out["probs"], np.full((2, 3), 1 / 3), rtol=1e-6)


def test_auto_names_are_unique_and_by_kind():
    net = td.Network("n")
    x = net.input("x", (2, 4))
    a = x.relu()
    b = x.relu()
    c = x + x
    d = x.sum(axis=0)
    e = x.gelu()
    f = x.gelu(approximate="tanh")
    assert [a.name, b.name, c.name, d.name] == ["relu_0", "relu_1", "add_0", "reduce_sum_0"]
    assert e.name != f.name
    x.relu(name="relu_3")  # an explicit name that an automatic one would take later
    g, h = x.relu(), x.relu()
    assert (g.name, h.name) == ("relu_2", "relu_4")
    for _ in range(20):
        x = (x * 1.0).softmax().transpose().transpose()[:, 1:].reshape((2, -1))
        x = td.concat([x, x[:, :1]], axis=1)
    names = [layer.name for layer in net.layers]
    assert len(names) == len(set(names))
    tensor_names = [t.name for layer in net.layers for t in layer.outputs]
    assert len(tensor_names) == len(set(tensor_names))


def test_multi_output_tensor_names():
    net = td.Network("n")
    parts = net.input("x", (6,)).split([1, 2, 3], name="qkv")
    assert [p.name for p in parts] == ["qkv:0", "qkv:1", "qkv:2"]
    assert [p.index for p in parts] == [0, 1, 2]
    assert [p.shape for p in parts] == [(1,), (2,), (3,)]
    assert all(p.producer is net.layer("qkv") for p in parts)


def test_layers_remember_the_users_line():
    net = td.Network("n")
    x = net.input("x", (2,))
    _ = (line := here(), x.exp(name="e"))
    where = net.layer("e").where
    assert where.lineno == line and os.path.basename(where.filename) == THIS_FILE
    assert where.function == "test_layers_remember_the_users_line"
    assert str(where).endswith(f"{THIS_FILE}:{line}")


def test_a_tensor_is_output_once():
    net = td.Network("n")
    x = net.input("x", (2,))
    y = x.exp()
    net.output(y, "a")
    with pytest.raises(td.DefinitionError, match="already output 'a'"):
        net.output(y, "b")


def test_reprs():
    net = td.Network("n")
    x = net.input("x", (None, 4), "float16")
    net.output(x.relu(), "y")
    assert repr(x) == "Tensor('x', shape=(?, 4), dtype=float16)"
    assert repr(net) == "Network('n', layers=2, inputs=['x'], outputs=['y'])"
    assert repr(td.float16) == "trtdsl.float16" and str(td.bfloat16) == "bfloat16"
    assert x.ndim == x.rank == 2 and x.dtype is td.float16 and x.shape == (None, 4)


def test_dtype_names_and_sizes():
    assert td.as_dtype("float16") is td.float16
    assert td.as_dtype(np.float32) is td.float32
    assert td.as_dtype(np.dtype("int64")) is td.int64
    assert td.as_dtype("bool_") is td.bool_ and td.as_dtype(bool) is td.bool_
    assert [d.itemsize for d in (td.float32, td.float16, td.bfloat16, td.int8, td.bool_)] == [
        4,
        2,
        2,
        1,
        1,
    ]
    with pytest.raises(ValueError, match="float13"):
        td.as_dtype("float13")


# -- Tensor misuse ----------------------------------------------------------------------------
def test_truth_value_is_an_error():
    net = td.Network("n")
    x = net.input("x", (2,))
    with pytest.raises(TypeError, match="truth value of tensor 'x'"):
        bool(x)
    with pytest.raises(TypeError, match="truth value"):
        if x > 0:  # a comparison is a Tensor too
            pass
    with pytest.raises(TypeError, match="truth value"):
        _ = x and x
    with pytest.raises(TypeError, match="truth value"):
        _ = not x


def test_iteration_is_an_error():
    net = td.Network("n")
    x = net.input("x", (3, 2))
    with pytest.raises(TypeError, match="not iterable"):
        iter(x)
    with pytest.raises(TypeError, match="not iterable"):
        list(x)
    with pytest.raises(TypeError, match="not iterable"):
        a, b, c = x
    with pytest.raises(TypeError, match="not iterable"):
        for _ in x:
            pass


def test_len():
    net = td.Network("n")
    assert len(net.input("x", (3, 2))) == 3
    with pytest.raises(TypeError, match="no static length"):
        len(net.input("d", (None, 2)))
    with pytest.raises(TypeError, match="no static length"):
        len(net.input("s", ()))


def test_no_conversion_to_python_numbers():
    net = td.Network("n")
    x = net.input("x", ())
    with pytest.raises(TypeError):
        float(x)
    with pytest.raises(TypeError):
        int(x)


# -- run results ------------------------------------------------------------------------------
def test_outputs_never_alias_feeds_or_constants():
    net = td.Network("own")
    x = net.input("x", (2, 3))
    net.output(x, "x_out")
    net.output(x.reshape((3, 2)), "r")
    net.output(x.expand_dims(0), "e")
    net.output(net.constant(np.ones(2)), "k")
    xv = np.zeros((2, 3), np.float32)
    out = net.run({"x": xv})
    for name, v in out.items():
        assert not np.shares_memory(v, xv), name
        assert v.flags.writeable, name
    out["k"][0] = 5.0  # the caller's copy: the network's constant is unchanged
    out["r"][0, 0] = 7.0
    again = net.run({"x": xv})
    assert again["k"].tolist() == [1.0, 1.0] and xv[0, 0] == 0
