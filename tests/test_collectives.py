"""The collective op: shape rule, definition-time validation (each error names the layer, the
input shapes and the user's file:line), run-time checks, poisoning of undefined outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

import trtdsl as td
from trtdsl import functional as F
from trtdsl.ops.collective import COLLECTIVE, normalize_groups, simulate

HERE = __file__.rsplit("/", 1)[-1]


def net_of(size=4, rank=0):
    return td.Network("n", world=td.StaticWorld(size, rank))


def assert_definition_error(fn, *phrases):
    """``fn`` raises DefinitionError naming a layer, the input shapes, this file:line and each
    phrase."""
    with pytest.raises(td.DefinitionError) as info:
        fn()
    msg = str(info.value)
    assert re.search(r"layer '\w+'", msg), msg
    assert f"{HERE}:" in msg, msg
    assert "[inputs: x: " in msg, msg
    for p in phrases:
        assert p in msg, msg
    return msg


# -- shape rule ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op, kwargs, shape",
    [
        ("all_reduce", {"reduce": "sum"}, (8, 3)),
        ("broadcast", {"root": 2}, (8, 3)),
        ("reduce", {"reduce": "max", "root": 1}, (8, 3)),
        ("all_gather", {}, (32, 3)),
        ("reduce_scatter", {"reduce": "avg"}, (2, 3)),
        ("all_to_all", {}, (8, 3)),
        ("gather", {"root": 3}, (32, 3)),
        ("scatter", {"root": 0}, (2, 3)),
    ],
)
def test_shape_rule(op, kwargs, shape):
    net = net_of(4)
    y = net.input("x", (8, 3)).collective(op, **kwargs)
    assert y.type.shape == shape and y.type.dtype == td.float32


def test_shape_rule_uses_the_group_size():
    net = net_of(4, rank=3)
    x = net.input("x", (6, 2))
    assert x.all_gather(groups=[[0, 1, 2], [3]]).type.shape == (6, 2)
    assert x.all_gather(groups=[[0, 1], [3, 2]]).type.shape == (12, 2)
    assert x.reduce_scatter("sum", groups=[[0], [1], [2], [3]]).type.shape == (6, 2)


def test_dynamic_axis_0():
    net = net_of(2)
    x = net.input("x", (None, 4))
    assert x.all_gather().type.shape == (None, 4)
    assert x.scatter().type.shape == (None, 4)


def test_helpers_and_functional_agree():
    net = net_of(2)
    x = net.input("x", (4,))
    for a, b in [
        (x.all_reduce("min"), F.all_reduce(x, "min")),
        (x.broadcast(1), F.broadcast(x, 1)),
        (x.reduce_to("prod", 1), F.reduce_to(x, "prod", 1)),
        (x.all_gather(), F.all_gather(x)),
        (x.reduce_scatter("max"), F.reduce_scatter(x, "max")),
        (x.all_to_all(), F.all_to_all(x)),
        (x.gather_to(1), F.gather_to(x, 1)),
        (x.scatter(1), F.scatter(x, 1)),
    ]:
        assert COLLECTIVE.fingerprint(a.producer) == COLLECTIVE.fingerprint(b.producer)


def test_gather_is_still_the_indexing_op():
    net = net_of(2)
    x = net.input("x", (4, 3))
    idx = net.constant(np.array([0, 2], "int32"))
    assert x.gather(idx, axis=0).type.shape == (2, 3)
    assert x.gather_to(0).producer.op is COLLECTIVE


def test_describe_and_summary():
    net = net_of(4)
    x = net.input("x", (8,))
    net.output(x.reduce_to("sum", root=1, groups=[[0, 1], [2, 3]]), "y")
    assert net.layers[-1].op.describe(net.layers[-1]) == "reduce(sum, root=1, group=[0, 1])"
    assert "reduce(sum, root=1" in net.summary(print_it=False)


def test_reduce_op_names_are_case_insensitive():
    net = net_of(2)
    x = net.input("x", (4,))
    assert x.collective("all_reduce", reduce="SUM").producer.spec.reduce == "sum"
    assert x.collective("all_gather", reduce="none").producer.spec.reduce is None


# -- validation ----------------------------------------------------------------------------
def test_reduce_given_for_a_non_reducing_op():
    x = net_of().input("x", (8, 3))
    assert_definition_error(lambda: x.collective("all_gather", reduce="sum"), "does not reduce")


@pytest.mark.parametrize("op", ["all_reduce", "reduce", "reduce_scatter"])
def test_reduce_missing_for_a_reducing_op(op):
    x = net_of().input("x", (8, 3))
    assert_definition_error(lambda: x.collective(op), f"{op} needs a reduce op")


def test_unknown_reduce_and_unknown_op():
    x = net_of().input("x", (8, 3))
    assert_definition_error(lambda: x.all_reduce("mean"), "unknown reduce op 'mean'")
    assert_definition_error(lambda: x.collective("allreduce"), "unknown collective")


@pytest.mark.parametrize("root", [4, -1, 7])
def test_root_outside_the_group(root):
    x = net_of(4).input("x", (8, 3))
    assert_definition_error(lambda: x.broadcast(root), f"root {root} is outside the group")


def test_root_is_an_index_into_the_group():
    x = net_of(4, rank=2).input("x", (8, 3))
    x.broadcast(1, groups=[[0, 1], [2, 3]])
    assert_definition_error(
        lambda: x.broadcast(2, groups=[[0, 1], [2, 3]]), "outside the group [2, 3]"
    )
    assert_definition_error(lambda: x.scatter(True), "outside the group")


def test_root_given_to_an_op_without_root():
    x = net_of().input("x", (8, 3))
    assert_definition_error(lambda: x.collective("all_gather", root=1), "has no root")
    assert x.collective("all_gather", root=-1).type.shape == (32, 3)


@pytest.mark.parametrize(
    "groups, phrase",
    [
        ([[0, 1], [1, 2, 3]], "ranks [1] appear more than once"),
        ([[0, 1], [2]], "ranks [3] are in no group"),
        ([[0, 1], [2, 3, 4]], "outside the world of 4 ranks"),
        ([0, 1], "ranks [2, 3] are in no group"),
        ([[0, 1], []], "must not be empty"),
        ([[0, 1], "23"], "list of int ranks"),
        ("0123", "groups must be None"),
        ([[True, False], [2, 3]], "list of int ranks"),
    ],
)
def test_groups_not_a_partition(groups, phrase):
    x = net_of(4).input("x", (8, 3))
    assert_definition_error(lambda: x.all_reduce("sum", groups=groups), phrase)


def test_normalize_groups():
    assert normalize_groups(None, 3) == ((0, 1, 2),)
    assert normalize_groups([], 2) == ((0, 1),)
    assert normalize_groups([2, 0, 1], 3) == ((2, 0, 1),)
    assert normalize_groups([[3, 1], (0, 2)], 4) == ((3, 1), (0, 2))
    assert normalize_groups([np.int64(1), np.int32(0)], 2) == ((1, 0),)


@pytest.mark.parametrize("op", ["reduce_scatter", "all_to_all", "scatter"])
def test_split_not_divisible(op):
    x = net_of(4).input("x", (6, 3))
    kw = {"reduce": "sum"} if op == "reduce_scatter" else {}
    assert_definition_error(
        lambda: x.collective(op, **kw), "axis 0 of size 6 into 4 chunks", "not divisible by 4"
    )


def test_split_checks_the_rank_s_own_group():
    x = net_of(4, rank=3).input("x", (6, 3))
    assert x.scatter(groups=[[0, 1, 2], [3]]).type.shape == (6, 3)
    x0 = net_of(4, rank=0).input("x", (6, 3))
    assert x0.scatter(groups=[[0, 1, 2], [3]]).type.shape == (2, 3)
    x1 = net_of(4, rank=1).input("x", (6, 3))
    assert x1.scatter(groups=[[0, 1], [2, 3]]).type.shape == (3, 3)
    assert_definition_error(lambda: x1.scatter(groups=[[0, 1, 2, 3]]), "not divisible by 4")


def test_world_size_unknown():
    x = td.Network("no world").input("x", (8, 3))
    assert_definition_error(lambda: x.all_reduce("sum"), "world size unknown", "world=")


def test_bool_is_not_a_collective_dtype():
    x = net_of().input("x", (8, 3), "bool")
    assert_definition_error(lambda: x.all_gather(), "got bool")


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_avg_needs_floats(dtype):
    x = net_of().input("x", (8, 3), dtype)
    assert_definition_error(lambda: x.all_reduce("avg"), "'avg' needs a float input")
    x.all_reduce("sum")


@pytest.mark.parametrize("op", ["all_reduce", "reduce", "reduce_scatter"])
@pytest.mark.parametrize("how", ["sum", "prod", "max", "min", "avg"])
def test_int8_is_quantized_reducing_collectives_refuse_it(op, how):
    """Reducing int8 codes is arithmetic on TensorRT's quantized type (docs/dsl.md, Dtypes)."""
    x = net_of().input("x", (8, 3), "int8")
    assert_definition_error(
        lambda: F.collective(x, op, reduce=how),
        f"layer '{op}_0'",
        "int8 is TensorRT's quantized type",
        f"{op} (reduce '{how}') on it is not supported",
        "dequantize it first",
        "[inputs: x: (8, 3) int8]",
    )


@pytest.mark.parametrize("op", ["broadcast", "all_gather", "all_to_all", "gather", "scatter"])
def test_int8_moves_through_data_movement_collectives(op):
    world = td.InProcessWorld(4)

    def per_rank(w):
        net = td.Network("int8_move", world=w)
        net.output(F.collective(net.input("x", (8, 3), "int8"), op), "y")
        xs = np.arange(24, dtype=np.int8).reshape(8, 3) * np.int8(w.rank + 1) - np.int8(60)
        return net.run({"x": xs})["y"]

    outs = world.run(per_rank)
    assert all(o.dtype == np.int8 for o in outs)
    if op == "broadcast":
        assert all(np.array_equal(o, outs[0]) for o in outs)


def test_scalar_input():
    x = net_of().input("x", ())
    assert_definition_error(lambda: x.all_reduce("sum"), "rank >= 1")


def test_failed_definition_leaves_no_layer():
    net = net_of()
    x = net.input("x", (6,))
    with pytest.raises(td.DefinitionError):
        x.scatter(name="s")
    assert [lay.name for lay in net.layers] == ["x"]
    x.all_gather(name="s")  # the name is free again


# -- run time ------------------------------------------------------------------------------
def test_dynamic_split_checked_at_run_time_on_every_rank():
    def per_rank(world):
        net = td.Network("n", world=world)
        net.output(net.input("x", (None, 2)).reduce_scatter("sum"), "y")
        try:
            net.run({"x": np.ones((3, 2), "float32")})
        except td.ExecutionError as e:
            return str(e)

    msgs = td.InProcessWorld(2).run(per_rank)
    assert all("not divisible" in m and "axis 0 is 3" in m for m in msgs), msgs


def test_dynamic_shapes_that_differ_within_a_group_fail_on_every_rank():
    def per_rank(world):
        net = td.Network("n", world=world)
        net.output(net.input("x", (None,)).all_reduce("sum", groups=[[0, 1], [2, 3]]), "y")
        n = 2 if world.rank != 1 else 3
        try:
            net.run({"x": np.ones(n, "float32")})
        except td.CollectiveMismatchError as e:
            return str(e)

    msgs = td.InProcessWorld(4).run(per_rank)
    assert all(m and "at run time" in m and "rank 1: all_reduce(sum) of (3)" in m for m in msgs)


def test_groups_may_differ_in_shape_between_groups():
    def per_rank(world):
        net = td.Network("n", world=world)
        x = net.input("x", (None,), "int32")
        net.output(x.all_gather(groups=[[0, 1], [2, 3]]), "y")
        n = 1 if world.rank < 2 else 2
        return net.run({"x": np.full(n, world.rank, "int32")})["y"].tolist()

    assert td.InProcessWorld(4).run(per_rank) == [[0, 1], [0, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


@pytest.mark.parametrize(
    "dtype, poison", [("float32", "nan"), ("float16", "nan"), ("int32", "min")]
)
def test_undefined_outputs_are_poisoned(dtype, poison):
    def per_rank(world):
        net = td.Network("n", world=world)
        x = net.input("x", (2,), dtype)
        net.output(x.reduce_to("sum", root=1), "r")
        net.output(x.gather_to(2), "g")
        out = net.run({"x": np.full(2, world.rank + 1, dtype)})
        return out["r"], out["g"]

    res = td.InProcessWorld(3).run(per_rank)
    assert res[1][0].tolist() == [6, 6] and res[2][1].tolist() == [1, 1, 2, 2, 3, 3]
    for r, (red, gat) in enumerate(res):
        for arr, root in ((red, 1), (gat, 2)):
            if r == root:
                continue
            if poison == "nan":
                assert np.isnan(arr.astype(np.float32)).all()
            else:
                assert (arr == np.iinfo(dtype).min).all()


def test_world_of_one_is_the_identity():
    def per_rank(world):
        net = td.Network("n", world=world)
        x = net.input("x", (4,))
        ys = [x.all_reduce("avg"), x.broadcast(), x.reduce_to("prod"), x.all_gather()]
        ys += [x.reduce_scatter("max"), x.all_to_all(), x.gather_to(), x.scatter()]
        for i, y in enumerate(ys):
            net.output(y, f"y{i}")
        return net.run({"x": np.arange(1, 5, dtype="float32")})

    (out,) = td.InProcessWorld(1).run(per_rank)
    assert all(v.tolist() == [1, 2, 3, 4] for v in out.values())


def test_float16_reduces_in_float32():
    spec = net_of(2).input("x", (1,), "float16").all_reduce("sum").producer.spec
    xs = [np.array([2048.0], "float16"), np.array([1.0], "float16")]
    three = [np.array([2048.0], "float16"), np.array([1.0], "float16"), np.array([1.0], "float16")]
    assert simulate(spec, xs)[0].dtype == np.float16
    spec3 = net_of(3).input("x", (1,), "float16").all_reduce("sum").producer.spec
    # 2048 + 1 + 1 in float16 one at a time would stay 2048; in float32 it is 2050
    assert simulate(spec3, three)[0].tolist() == [2050.0]


def test_fingerprint():
    net = net_of(4, rank=1)
    y = net.input("x", (8, 2), "float16").reduce_to("min", 1, groups=[[1, 0], [2, 3]])
    assert COLLECTIVE.fingerprint(y.producer) == (
        "reduce",
        "min",
        1,
        ((1, 0), (2, 3)),
        "float16",
        (8, 2),
    )
    assert [e[0] for e in net.collective_fingerprint()] == [y.producer.name]
