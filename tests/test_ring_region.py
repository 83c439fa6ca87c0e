"""Regions in the IR (``Network.add_region``) and fused steps in ``Program(net, fusions=...)``:
a fusable region becomes one step (its layers skipped, values freed as before); one that is not
runs its layers, with the reason in ``program.notes``. Backends without fusions (numpy, the
TensorRT lowering) run the layers unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

import trtdsl as td
from trtdsl import functional as F
from trtdsl.backends.interpreter import Program, RunContext
from trtdsl.errors import DefinitionError, ExecutionError


def calls_recorder():
    calls = []

    def fusion(region, inputs, ctx, check):
        calls.append((region.name, [a.copy() for a in inputs], check))
        return [inputs[0] * region.params["factor"] + 1.0]  # not what the layers compute

    return fusion, calls


def scaled_net(extra_use: bool = False, output_inside: bool = False):
    """x -> [a = x*2; b = a+1] (region "scale", output b) -> y = b*3."""
    net = td.Network("n")
    x = net.input("x", (3,))
    since = len(net.layers)
    a = F.mul(x, 2.0, name="a")
    b = F.add(a, 1.0, name="b")
    region = net.add_region("scale", [x], [b], since=since, params={"factor": 5.0}, name="r")
    y = F.mul(b, 3.0, name="y")
    net.output(y, "y")
    if extra_use:
        net.output(F.mul(a, 1.0, name="peek"), "peek")
    if output_inside:
        net.output(a, "a_out")
    return net, region


def test_fused_region_is_one_step():
    net, region = scaled_net()
    fusion, calls = calls_recorder()
    program = Program(net, fusions={"scale": fusion})
    names = [lay.name for lay, *_ in program.steps]
    assert names == ["x", "r", "constant_2", "y"]  # the region's constants went with it
    x = np.array([1.0, 2.0, 3.0], "float32")
    out = program.execute(RunContext(net, {"x": x}, None))["y"]
    np.testing.assert_allclose(out, (x * 5.0 + 1.0) * 3.0)  # the fusion's formula ran
    assert calls[-1][0] == "r" and calls[-1][2] is True
    program.execute(RunContext(net, {"x": x}, None), check=False)
    assert calls[-1][2] is False
    # without the fusion (numpy backend): the layers
    np.testing.assert_allclose(net.run({"x": x})["y"], (x * 2 + 1) * 3)
    assert "a" in [lay.name for lay, *_ in Program(net).steps]


def test_fused_step_output_is_checked():
    net, _ = scaled_net()
    program = Program(net, fusions={"scale": lambda r, ins, ctx, check: [ins[0][:2]]})
    with pytest.raises(ExecutionError, match="layer 'r'.*output 0 is \\(2,\\)"):
        program.execute(RunContext(net, {"x": np.ones(3, "float32")}, None))


@pytest.mark.parametrize(
    "variant,reason",
    [
        ("extra_use", "layer 'peek' outside the region reads 'a' from inside it"),
        ("output_inside", "network output 'a_out' is 'a', made inside the region"),
    ],
)
def test_unfusable_regions_run_their_layers(variant, reason):
    net, _ = scaled_net(**{variant: True})
    fusion, calls = calls_recorder()
    program = Program(net, fusions={"scale": fusion})
    assert program.notes == [f"region 'r' (scale) runs layer by layer: {reason}"]
    x = np.ones(3, "float32")
    np.testing.assert_allclose(program.execute(RunContext(net, {"x": x}, None))["y"], 9.0)
    assert calls == []


def test_region_reading_an_undeclared_value_is_not_fused():
    net = td.Network("n")
    x = net.input("x", (3,))
    z = net.input("z", (3,))
    since = len(net.layers)
    b = F.add(x, z, name="b")
    net.add_region("scale", [x], [b], since=since, params={"factor": 1.0}, name="r")
    net.output(b, "y")
    program = Program(net, fusions={"scale": calls_recorder()[0]})
    assert program.notes == [
        "region 'r' (scale) runs layer by layer: layer 'b' reads 'z', which is not an input of "
        "the region"
    ]


def test_overlapping_and_interleaved_regions():
    net = td.Network("n")
    x = net.input("x", (3,))
    a = F.mul(x, 2.0, name="a")
    since_b = len(net.layers)
    b = F.add(a, 1.0, name="b")
    net.add_region("scale", [x], [b], since=1, params={"factor": 1.0}, name="outer")
    net.add_region("scale", [a], [b], since=since_b, params={"factor": 1.0}, name="inner")
    net.output(b, "y")
    program = Program(net, fusions={"scale": calls_recorder()[0]})
    assert program.notes == [
        "region 'inner' (scale) runs layer by layer: it overlaps a region fused before it"
    ]
    net2 = td.Network("m")
    x = net2.input("x", (3,))
    a = F.mul(x, 2.0, name="a")
    c = F.mul(x, 5.0, name="c")
    b = F.add(a, 1.0, name="b")
    region = net2.add_region("scale", [x], [b], since=1, name="r")
    net2.output(b + c, "y")
    region.layers = tuple(lay for lay in region.layers if lay.name != "c")  # c between its layers
    program = Program(net2, fusions={"scale": calls_recorder()[0]})
    assert program.notes == [
        "region 'r' (scale) runs layer by layer: its layers are not contiguous layers of the "
        "network"
    ]
    region.layers, region.inputs = tuple(net2.layers[1:7]), (a,)  # a is made inside
    program = Program(net2, fusions={"scale": calls_recorder()[0]})
    assert program.notes == [
        "region 'r' (scale) runs layer by layer: its input 'a' is made after the region starts"
    ]
    x = np.ones(3, "float32")
    np.testing.assert_allclose(program.execute(RunContext(net2, {"x": x}, None))["y"], 8.0)


def test_fusions_only_for_their_kind():
    net, _ = scaled_net()
    program = Program(net, fusions={"other": calls_recorder()[0]})
    assert [lay for lay, *_ in program.steps] == net.layers
    assert program.notes == []


def test_add_region_refuses_bad_arguments():
    net = td.Network("n")
    x = net.input("x", (3,))
    other = td.Network("o").input("w", (3,))
    y = x + 1.0
    with pytest.raises(DefinitionError, match="kind must be a non-empty string"):
        net.add_region("", [x], [y], since=1)
    with pytest.raises(DefinitionError, match="since=5 must index a layer"):
        net.add_region("k", [x], [y], since=5)
    with pytest.raises(DefinitionError, match="since=3 must index a layer \\(the network has 3\\)"):
        net.add_region("k", [x], [y], since=len(net.layers))
    with pytest.raises(DefinitionError, match="input .* is not a Tensor of network 'n'"):
        net.add_region("k", [other], [y], since=1)
    with pytest.raises(DefinitionError, match="output 'x' .* is produced outside"):
        net.add_region("k", [x], [x], since=1)
    with pytest.raises(DefinitionError, match="input 'add_0' .* is produced inside"):
        net.add_region("k", [y], [y], since=1)
    assert net.regions == []
    r = net.add_region("k", [x], [y], since=1)
    assert r.name == "k_0" and r.describe_inputs() == "x: (3,) float32" and net.regions == [r]
