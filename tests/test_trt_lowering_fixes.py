"""Review fixes of the TensorRT lowering (issue 12), each pinned by a test that failed before:
TF32 off by default, build errors naming the DSL layer and file:line, the sub-group rule shared
by lowering and emulator, bool/bf16 constants' Weights bytes."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import trtdsl as td
from trtdsl.backends.tensorrt import build as trt_build
from trtdsl.backends.tensorrt import lower_network
from trtdsl.backends.tensorrt import lowering as trt_lowering
from trtdsl.backends.tensorrt.errors import BuildError
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.trt_emulator import run_network
from trtdsl.testing.trt_emulator.evaluator import run_ranks

TRT = make_fake_tensorrt()


def _relu_net() -> td.Network:
    net = td.Network("n")
    net.output(net.input("x", (2, 3)).relu(name="act"), "y")  # the line the errors must name
    return net


# --- TF32 --------------------------------------------------------------------------------
def _flag_calls(tf32: bool | None) -> list:
    net = _relu_net()
    kwargs = {} if tf32 is None else {"tf32": tf32}
    options = trt_build.validate_options(net, progress=False, **kwargs)
    builder = TRT.Builder(TRT.Logger(TRT.Logger.WARNING))
    config, _ = trt_build.configure(TRT, builder, options)
    return [(name, args) for name, args, _ in config.calls if name.endswith("_flag")]


def test_tf32_is_cleared_by_default_and_set_on_request() -> None:
    tf32 = TRT.BuilderFlag.TF32  # the manifest's member: a wrong name fails here
    assert _flag_calls(None) == [("clear_flag", (tf32,))]
    assert _flag_calls(False) == [("clear_flag", (tf32,))]
    assert _flag_calls(True) == [("set_flag", (tf32,))]


def test_tf32_is_validated_and_in_the_cache_key() -> None:
    net = _relu_net()
    with pytest.raises(TypeError, match="tf32"):
        trt_build.validate_options(net, tf32="yes")
    off, on = (trt_build.validate_options(net, tf32=v) for v in (False, True))
    assert trt_build.cache_key(net, off) == trt_build.cache_key(net)
    assert trt_build.cache_key(net, on) != trt_build.cache_key(net, off)


# --- build errors mapped to the DSL layer --------------------------------------------------
def test_layers_carry_the_dsl_layer_and_file_line_as_metadata() -> None:
    net = _relu_net()
    _, network, _ = lower_network(net, TRT)
    layer = net.layers[-1]
    assert "test_trt_lowering_fixes.py:" in str(layer.where)
    named = [lay for lay in network.layers if lay.name == "act"]
    assert named and named[0].metadata == f"trtdsl:act@{layer.where}"


def test_a_build_error_naming_a_layer_names_the_dsl_layer_and_line() -> None:
    net = _relu_net()
    line = "[optimizer.cpp::build::42] Error Code 4: Internal Error (act: no implementation)"
    trt = make_fake_tensorrt(build_errors=[line, "an error naming no layer"])
    with pytest.raises(BuildError) as info:
        trt_build.build_plan(trt, net, trt_build.validate_options(net, progress=False))
    text = str(info.value)
    assert line in text and "an error naming no layer" in text
    where = str(net.layers[-1].where)
    assert f"trtdsl layer 'act' (activation), defined at {where}" in text or (
        "trtdsl layer 'act'" in text and where in text
    )
    assert text.count("-> trtdsl layer") == 1  # the second line names no layer


def test_auxiliary_layer_names_map_to_their_dsl_layer() -> None:
    ctx = trt_lowering.LoweringContext(TRT, None)
    net = _relu_net()
    layer = net.layers[-1]
    ctx.layer_of = {"act": layer, "act/expand0": layer, "act2": net.layers[0]}
    assert "trtdsl layer 'act'" in ctx.explain("Error (act/expand0: bad)")
    assert "trtdsl layer" not in ctx.explain("Error (action: bad)")
    assert ctx.explain("Error (act2)").count("-> trtdsl layer") == 1


# --- sub-groups -------------------------------------------------------------------------
def _gather_net(rank: int) -> td.Network:
    net = td.Network("g", world=td.StaticWorld(size=4, rank=rank))
    x = net.input("x", (2, 3))
    net.output(x.gather_to(root=1, groups=[[0, 2], [1, 3]], name="g"), "y")
    return net


def test_subgroup_rule_is_stated_once_and_followed_by_the_lowering() -> None:
    assert trt_lowering.ROOT_IS_GLOBAL_RANK and trt_lowering.NUM_RANKS_IS_GROUP_SIZE
    for rank, group in ((0, [0, 2]), (3, [1, 3])):
        _, network, _ = lower_network(_gather_net(rank), TRT)
        (lay,) = [lay for lay in network.layers if lay.name == "g"]
        _, args, _ = next(c for c in network.calls if c[0] == "add_dist_collective")
        assert list(args[4]) == group
        assert args[3] == group[1]  # root: index 1 of the group -> its global rank
        assert lay.num_ranks == 2  # the group size, not the world size (4)


def test_emulator_runs_subgroups_by_the_same_rule() -> None:
    feeds = [{"x": np.full((2, 3), r, np.float32)} for r in range(4)]
    nets, ctxs = [], []
    for r in range(4):
        _, network, ctx = lower_network(_gather_net(r), TRT)
        nets.append(network)
        ctxs.append(ctx)
    out = run_ranks(nets, feeds)
    np.testing.assert_array_equal(out[2]["y"], np.repeat([0.0, 2.0], 2)[:, None] * np.ones(3))
    np.testing.assert_array_equal(out[3]["y"], np.repeat([1.0, 3.0], 2)[:, None] * np.ones(3))
    assert np.isnan(out[0]["y"]).all()  # not a root: left unwritten, poisoned


def test_emulator_refuses_num_ranks_equal_to_the_world_size_for_a_subgroup() -> None:
    _, network, ctx = lower_network(_gather_net(0), TRT)
    (lay,) = [lay for lay in network.layers if lay.name == "g"]
    lay._props["num_ranks"] = 4  # what a "num_ranks = world size" reading would pass
    with pytest.raises(Exception, match="num_ranks is 4, expected 2"):
        run_ranks(
            [network] + [lower_network(_gather_net(r), TRT)[1] for r in (1, 2, 3)],
            [{"x": np.zeros((2, 3), np.float32)}] * 4,
        )
    del ctx


# --- bool and bf16 constants ------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bool", "bfloat16", "float16", "int8"])
def test_constant_weights_hold_the_arrays_bytes(dtype: str) -> None:
    dt = td.as_dtype(dtype)
    values = np.array([[1, 0, 1], [0, 1, 1]]) if dtype == "bool" else np.arange(6) - 2.5
    arr = np.asarray(values).astype(dt.numpy).reshape(2, 3)
    net = td.Network("c")
    net.output(net.constant(arr, name="k"), "y")
    _, network, ctx = lower_network(net, TRT)
    _, (shape, weights), _ = next(c for c in network.calls if c[0] == "add_constant")
    bound = weights.origin[2]
    assert tuple(shape) == (2, 3)
    member = {"bool": "BOOL", "bfloat16": "BF16", "float16": "HALF", "int8": "INT8"}[dtype]
    assert bound["type"] == getattr(TRT.DataType, member)
    assert int(bound["count"]) == 6
    raw = ctypes.string_at(int(bound["ptr"]), arr.nbytes)
    assert raw == np.ascontiguousarray(arr).tobytes()
    got = run_network(network, {})["y"]
    assert got.dtype == arr.dtype and np.array_equal(got.view(np.uint8), arr.view(np.uint8))
    del ctx
