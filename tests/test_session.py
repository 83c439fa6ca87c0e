"""Sessions (Network.compile): run many times, agreement once per signature, options."""

from __future__ import annotations

import numpy as np
import pytest

import trtdsl as td
from trtdsl.errors import CollectiveMismatchError, ExecutionError


def _net(world=None, shape=(None, 4)):
    net = td.Network("s", world=world)
    x = net.input("x", shape)
    net.output((x * 2.0).relu(), "y")
    return net


def test_session_runs_many_times_and_matches_run():
    net = _net()
    x = np.arange(-4, 4, dtype="float32").reshape(2, 4)
    with net.compile() as s:
        for _ in range(3):
            np.testing.assert_array_equal(s.run({"x": x})["y"], net.run({"x": x})["y"])
        y = s.run({"x": np.ones((5, 4), "float32")})["y"]  # a second signature
        assert y.shape == (5, 4) and s.calls == 4
    assert s.closed
    with pytest.raises(ExecutionError, match="closed"):
        s.run({"x": x})


def test_out_arrays_are_filled_and_checked():
    net = _net()
    s = net.compile()
    out = {"y": np.empty((2, 4), "float32")}
    res = s.run({"x": np.ones((2, 4), "float32")}, out=out)
    assert res["y"] is out["y"] and (out["y"] == 2).all()
    with pytest.raises(ExecutionError, match=r"out\['y'\] is \(3, 4\)"):
        s.run({"x": np.ones((2, 4), "float32")}, out={"y": np.empty((3, 4), "float32")})


def test_known_signature_skips_feed_validation_but_new_ones_are_checked():
    s = _net().compile()
    s.run({"x": np.ones((2, 4), "float32")})
    with pytest.raises(ExecutionError, match="got dtype float64"):
        s.run({"x": np.ones((2, 4))})
    with pytest.raises(ExecutionError, match="unknown input"):
        s.run({"x": np.ones((2, 4), "float32"), "z": 1})
    with pytest.raises(ExecutionError, match="missing input"):
        s.run({})


def test_outputs_never_alias_feeds():
    net = td.Network("id")
    x = net.input("x", (3,))
    net.output(x, "y")
    feed = np.ones(3, "float32")
    s = net.compile()
    for _ in range(2):
        y = s.run({"x": feed})["y"]
        assert y is not feed and not np.shares_memory(y, feed)


def test_options_are_validated():
    net = _net()
    with pytest.raises(TypeError, match="only the option 'check'"):
        net.compile(cuda_graph=True)
    with pytest.raises(ValueError, match="check must be one of"):
        net.compile(check="never")
    with pytest.raises(ExecutionError, match="unknown backend"):
        net.compile(backend="tpu")


def test_cuda_graph_needs_static_shapes_checked_without_a_gpu():
    with pytest.raises(ExecutionError, match="cuda_graph=True needs static input shapes.*'x'"):
        _net().compile(backend="cupy", cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph must be True or False"):
        _net(shape=(2, 4)).compile(backend="cupy", cuda_graph=1)
    with pytest.raises(ValueError, match="excludes check='always'"):
        _net(shape=(2, 4)).compile(backend="cupy", cuda_graph=True, check="always")
    with pytest.raises(TypeError, match="unknown \\['bogus'\\]"):
        _net().compile(backend="cupy", bogus=1)


def _ar_net(world, length=None):
    net = td.Network("ar", world=world)
    x = net.input("x", (None,) if length is None else (length,))
    net.output(x.all_reduce("sum"), "y")
    return net


def test_multi_rank_session_agrees_once_and_runs_collectives():
    def per_rank(world):
        with _ar_net(world).compile() as s:
            outs = [s.run({"x": np.full(3, world.rank + k, "float32")})["y"] for k in range(3)]
        return [o.tolist() for o in outs]

    got = td.InProcessWorld(3).run(per_rank)
    assert got[0] == [[3.0] * 3, [6.0] * 3, [9.0] * 3] and got[1] == got[0]


def test_mismatched_ranks_fail_at_compile_with_the_usual_report():
    def per_rank(world):
        net = td.Network("m", world=world)
        x = net.input("x", (4,))
        y = x.all_reduce("sum") if world.rank == 0 else x.all_reduce("max")
        net.output(y, "y")
        with pytest.raises(CollectiveMismatchError, match="ranks disagree on collective #0"):
            net.compile()
        return True

    assert td.InProcessWorld(2).run(per_rank) == [True, True]


def test_runtime_shape_mismatch_reported_on_first_signature():
    def per_rank(world):
        s = _ar_net(world).compile()
        with pytest.raises(CollectiveMismatchError, match="ranks disagree at run time"):
            s.run({"x": np.ones(2 + world.rank, "float32")})
        return True

    assert td.InProcessWorld(2).run(per_rank) == [True, True]


def test_tensorrt_session_needs_tensorrt_or_profiles():
    net = _net()
    with pytest.raises(Exception, match="profiles|TensorRT"):
        net.compile(backend="tensorrt")
