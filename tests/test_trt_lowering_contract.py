"""Contract tests of the TensorRT backend, runnable without TensorRT.

Every op (every kind and variant) is lowered through the manifest-checked fake ``tensorrt``
module built from the real 11.4 bindings' API, so any call, argument, enum member or property
that TensorRT 11.4 does not have fails here; the recorded calls are then checked. Build
options, optimization profiles, the engine cache key and the "TensorRT is missing" errors are
tested too.
"""

from __future__ import annotations

import importlib.util
import io
import re

import numpy as np
import pytest
from test_trt_cases import CASES, COLLECTIVE_CASES, DTYPES, Case, CollectiveCase, resolve_groups

import trtdsl as td
from trtdsl.backends.tensorrt import build as trt_build
from trtdsl.backends.tensorrt import enums, lowering
from trtdsl.backends.tensorrt.errors import LoweringError, TensorRTUnavailableError
from trtdsl.backends.tensorrt.lowering import LoweringContext, lower_network
from trtdsl.backends.tensorrt.manifest import load_manifest
from trtdsl.ops import ACTIVATIONS, ALL_OPS, BINARY_OPS, REDUCE_KINDS, UNARY_OPS
from trtdsl.ops.base import OpDef
from trtdsl.ops.collective import COLLECTIVE_OPS, REDUCE_OPS, REDUCING
from trtdsl.testing.fake_tensorrt import (
    ContractError,
    FakeTensorRTLimitation,
    make_fake_tensorrt,
)

TRT_IMPORTABLE = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture()
def trt():
    return make_fake_tensorrt(load_manifest())


def created(network, method: str) -> list:
    """Objects the fake network's ``method`` returned, in order."""
    return [obj for name, obj in network.created if name == method]


def bound(obj) -> dict:
    """The arguments (by name) of the call that created a fake object."""
    return obj.origin[2]


def lower_case(case: Case, trt, seed: int = 0):
    net, feeds = case.make(np.random.default_rng(seed))
    builder, network, ctx = lower_network(net, trt)
    return net, feeds, network, ctx


# --- every op and variant --------------------------------------------------------------------
def check_io(net, network) -> None:
    assert [t.name for t in network.inputs] == list(net.inputs)
    assert [t.name for t in network.outputs] == list(net.outputs)
    for t, (name, dsl) in zip(network.inputs, net.inputs.items()):
        args = bound(t)
        assert args["name"] == name
        assert args["dtype"].name == enums.DATA_TYPES[dsl.dtype.name]
        assert tuple(args["shape"]) == tuple(-1 if d is None else d for d in dsl.shape)
    for t in network.outputs:
        assert t.is_network_output
    marked = [c for c in network.calls if c[0] == "mark_output"]
    assert len(marked) == len(net.outputs)


def check_elementwise(net, network, kind: str) -> None:
    (ew,) = created(network, "add_elementwise")
    assert bound(ew)["op"].name == enums.ELEMENTWISE[kind]
    (sh,) = created(network, "add_shuffle")  # b of shape (3,) expanded to (1, 3)
    assert tuple(sh.reshape_dims) == (1, 3)
    assert bound(ew)["input2"] is sh.get_output(0)


def check_unary(net, network, kind: str) -> None:
    if kind == "tanh":  # TensorRT's tanh is an activation
        assert not created(network, "add_unary")
        (act,) = created(network, "add_activation")
        assert bound(act)["type"].name == "TANH"
    else:
        (un,) = created(network, "add_unary")
        assert bound(un)["op"].name == enums.UNARY[kind]


def check_activation(net, network, kind: str) -> None:
    acts = created(network, "add_activation")
    if kind == "silu":  # x * sigmoid(x)
        assert [bound(a)["type"].name for a in acts] == ["SIGMOID"]
        (ew,) = created(network, "add_elementwise")
        assert bound(ew)["op"].name == "PROD"
    else:
        assert [bound(a)["type"].name for a in acts] == [enums.ACTIVATION[kind]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_case_lowers_within_the_contract(case: Case, trt) -> None:
    net, _, network, _ = lower_case(case, trt)
    check_io(net, network)
    name = case.name
    for prefix, checker, kinds in (
        ("elementwise_", check_elementwise, BINARY_OPS),
        ("unary_", check_unary, UNARY_OPS),
        ("activation_", check_activation, ACTIVATIONS),
    ):
        kind = name[len(prefix) :].removesuffix("_int32")
        if name.startswith(prefix) and kind in kinds:
            checker(net, network, kind)
    # every TensorRT layer is named after its DSL layer
    dsl_names = {layer.name for layer in net.layers}
    for layer in network.layers:
        assert layer.name.split("/")[0] in dsl_names | {"output"}, layer.name


def test_matmul_operations(trt) -> None:
    results = {}
    for case in CASES:
        if case.name.startswith("matmul"):
            _, _, network, _ = lower_case(case, trt)
            (mm,) = created(network, "add_matrix_multiply")
            results[case.name] = (bound(mm)["op0"].name, bound(mm)["op1"].name, network)
    assert results["matmul"][:2] == ("NONE", "NONE")
    assert results["matmul_transpose_a"][:2] == ("TRANSPOSE", "NONE")
    assert results["matmul_transpose_b"][:2] == ("NONE", "TRANSPOSE")
    assert results["matmul_transpose_ab"][:2] == ("TRANSPOSE", "TRANSPOSE")
    # batch broadcast: the rank-3 weight gets a leading 1 (rank 4 like the input)
    shuffles = created(results["matmul_batch_broadcast"][2], "add_shuffle")
    assert [tuple(s.reshape_dims) for s in shuffles] == [(1, 5, 4, 6)]
    # a 1-D operand becomes a row/column and the result is reshaped back
    vec_a = [tuple(s.reshape_dims) for s in created(results["matmul_vector_a"][2], "add_shuffle")]
    assert vec_a[0] == (1, -1) and vec_a[-1] == (2, 5)
    vec_b = [tuple(s.reshape_dims) for s in created(results["matmul_vector_b"][2], "add_shuffle")]
    assert vec_b[0] == (-1, 1) and vec_b[-1] == (2, 3)
    both = [tuple(s.reshape_dims) for s in created(results["matmul_vector_both"][2], "add_shuffle")]
    assert both == [(1, -1), (-1, 1), ()]


def test_matmul_vector_with_dynamic_columns_reshapes_with_minus_one(trt) -> None:
    case = next(c for c in CASES if c.name == "matmul_vector_a_dynamic_n")
    _, _, network, _ = lower_case(case, trt)
    final = created(network, "add_shuffle")[-1]
    assert tuple(final.reshape_dims) == (-1,)  # not 0, which would copy the row dim (1)


def test_reduce_and_softmax(trt) -> None:
    for kind in REDUCE_KINDS:
        for keep, mask in ((False, 0b100), (True, 0b101)):
            name = f"reduce_{kind}" + ("_keepdims" if keep else "")
            _, _, network, _ = lower_case(next(c for c in CASES if c.name == name), trt)
            (red,) = created(network, "add_reduce")
            args = bound(red)
            assert args["op"].name == enums.REDUCE[kind]
            assert args["axes"] == mask and args["keep_dims"] is keep
    assert enums.REDUCE["mean"] == "AVG"
    _, _, network, _ = lower_case(next(c for c in CASES if c.name == "softmax"), trt)
    assert [s.axes for s in created(network, "add_softmax")] == [1 << 2, 1 << 0]


def test_normalizations(trt) -> None:
    _, _, network, _ = lower_case(next(c for c in CASES if c.name == "layer_norm"), trt)
    norms = created(network, "add_normalization_v2")
    assert [bound(n)["axesMask"] for n in norms] == [0b100, 0b110]
    assert all(n.epsilon == pytest.approx(1e-5) for n in norms)
    # scale/bias of rank 1 and 2 are expanded to the input's rank 3
    assert [tuple(s.reshape_dims) for s in created(network, "add_shuffle")] == [
        (1, 1, 8),
        (1, 1, 8),
        (1, 3, 8),
        (1, 3, 8),
    ]
    _, _, network, _ = lower_case(next(c for c in CASES if c.name == "rms_norm"), trt)
    assert not created(network, "add_normalization_v2")  # TensorRT has no RMS mode
    (red,) = created(network, "add_reduce")
    assert bound(red)["op"].name == "AVG" and bound(red)["keep_dims"] is True
    assert [bound(u)["op"].name for u in created(network, "add_unary")] == ["SQRT", "RECIP"]
    eps = [c for c in created(network, "add_constant") if "scalar" in c.name]
    assert len(eps) == 1 and tuple(bound(eps[0])["shape"]) == (1, 1)


def test_data_movement_ops(trt) -> None:
    def lowered(name):
        return lower_case(next(c for c in CASES if c.name == name), trt)[2]

    network = lowered("reshape")
    sh = created(network, "add_shuffle")
    assert [tuple(s.reshape_dims) for s in sh] == [(0, -1), (4, 6), (-1,)]
    assert all(s.zero_is_placeholder for s in sh)
    network = lowered("transpose")
    perms = [s.first_transpose for s in created(network, "add_shuffle")]
    assert all(isinstance(p, trt.Permutation) for p in perms)
    assert [bound(p)["arg0"] for p in perms] == [[2, 0, 1], [2, 1, 0]]
    network = lowered("concat")
    (cat,) = created(network, "add_concatenation")
    assert cat.axis == 1 and len(bound(cat)["inputs"]) == 3
    network = lowered("slice")
    (sl,) = created(network, "add_slice")
    assert (tuple(bound(sl)["start"]), tuple(bound(sl)["shape"]), tuple(bound(sl)["stride"])) == (
        (1, 0),
        (2, 3),
        (2, 3),
    )
    network = lowered("gather")
    assert [bound(g)["axis"] for g in created(network, "add_gather")] == [0, 1]
    network = lowered("select")
    (sel,) = created(network, "add_select")
    assert bound(sel)["else_input"] is not None
    network = lowered("split")
    assert [tuple(bound(s)["start"]) for s in created(network, "add_slice")] == [
        (0, 0),
        (2, 0),
        (4, 0),
        (0, 0),
        (0, 1),
    ]


@pytest.mark.parametrize("name", ["slice_dynamic", "split_dynamic"])
def test_dynamic_slice_sizes_come_from_the_shape(name: str, trt) -> None:
    _, _, network, _ = lower_case(next(c for c in CASES if c.name == name), trt)
    slices = [s for s in created(network, "add_slice") if s.name.count("/") <= 1]
    assert slices
    for sl in slices:
        set_inputs = [c for c in sl.calls if c[0] == "set_input"]
        assert [c[1][0] for c in set_inputs] == [2], sl.name
        assert sl.get_input(2) is not None
    assert created(network, "add_shape")


def test_dynamic_inputs_use_minus_one_and_runtime_shapes(trt) -> None:
    net, _, network, _ = lower_case(next(c for c in CASES if c.name == "dynamic_inputs"), trt)
    assert [tuple(bound(t)["shape"]) for t in network.inputs] == [(-1, -1, 4), (-1, -1)]
    expands = {s.name: s for s in created(network, "add_shuffle") if "/expand" in s.name}
    # b (?, ?) -> (1, ?, ?): two dynamic dims, so the shape is computed at run time
    (mul,) = [s for n, s in expands.items() if n.startswith("mul_0/")]
    assert [c[1][0] for c in mul.calls if c[0] == "set_input"] == [1]
    # the scalar 1.0 (shape ()) -> (1, 1, 1): static
    (one,) = [s for n, s in expands.items() if n.startswith("add_0/")]
    assert tuple(one.reshape_dims) == (1, 1, 1)
    assert not [c for c in one.calls if c[0] == "set_input"]


def test_casts_and_constants_cover_every_dtype(trt) -> None:
    for dt in DTYPES:
        case = next(c for c in CASES if c.name == f"cast_float32_to_{dt}")
        _, _, network, _ = lower_case(case, trt)
        (cast,) = created(network, "add_cast")
        assert bound(cast)["to_type"].name == enums.DATA_TYPES[dt]
    _, _, network, ctx = lower_case(next(c for c in CASES if c.name == "constant"), trt)
    consts = {c.name: c for c in created(network, "add_constant")}
    for dt in DTYPES:
        w = bound(consts[f"c_{dt}"])["weights"]
        assert w.origin[2]["type"].name == enums.DATA_TYPES[dt]
        assert w.origin[2]["count"] == 6
    # the arrays TensorRT reads at build time are kept alive by the context
    assert sum(isinstance(k, np.ndarray) for k in ctx._keep) >= len(DTYPES) + 1


def test_input_used_as_output_goes_through_an_identity(trt) -> None:
    net, _, network, _ = lower_case(next(c for c in CASES if c.name == "identity"), trt)
    idents = created(network, "add_identity")
    assert [i.name for i in idents] == ["identity_0", "output/x_out"]
    assert network.outputs[1] is idents[1].get_output(0)
    assert network.outputs[1].name == "x_out"


def test_every_op_has_a_lowering_and_every_variant_is_exercised(trt, monkeypatch) -> None:
    seen: list = []
    original = LoweringContext.lower_layer

    def spy(self, layer):
        out = original(self, layer)
        seen.append(layer)
        return out

    monkeypatch.setattr(LoweringContext, "lower_layer", spy)
    for case in CASES:
        lower_case(case, trt)
    for cc in COLLECTIVE_CASES:
        lower_network(cc.make(td.StaticWorld(4, rank=1)), trt)
    lower_network(COLLECTIVE_CASES[0].make(td.StaticWorld(1)), trt)

    for op in ALL_OPS:
        assert type(op).lower is not OpDef.lower, f"op '{op.name}' has no lower()"
    ops = {layer.op.name for layer in seen}
    missing = sorted(op.name for op in ALL_OPS if op.name not in ops)
    assert not missing, f"ops never lowered by the contract cases: {missing}"

    def kinds(op_name: str, attr: str = "kind") -> set:
        return {layer.attrs[attr] for layer in seen if layer.op.name == op_name}

    assert set(BINARY_OPS) <= kinds("elementwise")
    assert set(UNARY_OPS) <= kinds("unary")
    assert set(ACTIVATIONS) <= kinds("activation")
    assert set(REDUCE_KINDS) <= kinds("reduce")
    assert {"layer", "rms"} <= kinds("normalization")
    assert {d.name for d in map(td.as_dtype, DTYPES)} <= {d.name for d in kinds("cast", "dtype")}
    pairs = {(layer.spec.op, layer.spec.reduce) for layer in seen if layer.op.name == "collective"}
    want = {(op, r) for op in COLLECTIVE_OPS for r in (REDUCE_OPS if op in REDUCING else (None,))}
    assert want <= pairs, sorted(want - pairs)
    matmuls = {
        (layer.input_types[0].rank, layer.input_types[1].rank, layer.attrs["transpose_a"])
        for layer in seen
        if layer.op.name == "matmul"
    }
    assert {(1, 3, False), (3, 1, False), (1, 1, False), (2, 2, True), (4, 3, False)} <= matmuls


# --- collectives -----------------------------------------------------------------------------
WORLD = td.StaticWorld(size=4, rank=1)


@pytest.mark.parametrize("cc", COLLECTIVE_CASES, ids=lambda c: c.name)
def test_collective_lowering(cc: CollectiveCase, trt) -> None:
    net = cc.make(WORLD)
    _, network, _ = lower_network(net, trt)
    groups = resolve_groups(cc.groups, WORLD.size)
    partition = [list(range(4))] if groups is None else groups
    group = next(g for g in partition if WORLD.rank in g)
    colls = created(network, "add_dist_collective")
    if len(group) == 1:  # a one-rank collective is an identity (TensorRT reportedly crashes)
        assert not colls and len(created(network, "add_identity")) == 1
        return
    (layer,) = colls
    args = bound(layer)
    assert args["dist_collective_op"].name == enums.COLLECTIVE[cc.op]
    assert args["reduce_op"].name == ("NONE" if cc.reduce is None else enums.REDUCE[cc.reduce])
    root = cc.root if cc.op in ("broadcast", "reduce", "gather", "scatter") else None
    assert args["root"] == (-1 if root is None else group[root])  # global rank
    assert args["groups"] == group and isinstance(args["groups"], list)  # explicit, never None
    # num_ranks (the group size) is the first thing set, before naming and get_output
    assert layer.sets[0] == ("num_ranks", len(group))
    assert layer.sets[1] == ("name", net.collectives[0].name)
    assert network.outputs[0].name == "y"


def test_collective_root_is_the_global_rank(trt) -> None:
    net = td.Network("root", world=td.StaticWorld(4, rank=1))
    x = net.input("x", (8, 2))
    net.output(x.broadcast(root=0, groups=[[3, 1], [0, 2]]), "a")
    net.output(x.scatter(root=1, groups=[[2, 0], [1, 3]]), "b")
    _, network, _ = lower_network(net, trt)
    roots = [bound(c)["root"] for c in created(network, "add_dist_collective")]
    assert roots == [3, 3]
    assert lowering.ROOT_IS_GLOBAL_RANK


def test_all_eight_collectives_with_num_ranks_four(trt) -> None:
    net = td.Network("eight", world=WORLD)
    x = net.input("x", (8, 3))
    outs = [
        x.all_reduce("sum"),
        x.broadcast(0),
        x.reduce_to("max", root=2),
        x.all_gather(),
        x.reduce_scatter("avg"),
        x.all_to_all(),
        x.gather_to(3),
        x.scatter(1),
    ]
    for i, t in enumerate(outs):
        net.output(t, f"y{i}")
    _, network, _ = lower_network(net, trt)
    colls = created(network, "add_dist_collective")
    assert [bound(c)["dist_collective_op"].name for c in colls] == [
        "ALL_REDUCE",
        "BROADCAST",
        "REDUCE",
        "ALL_GATHER",
        "REDUCE_SCATTER",
        "ALL_TO_ALL",
        "GATHER",
        "SCATTER",
    ]
    assert [bound(c)["reduce_op"].name for c in colls] == [
        "SUM",
        "NONE",
        "MAX",
        "NONE",
        "AVG",
        "NONE",
        "NONE",
        "NONE",
    ]
    assert [bound(c)["root"] for c in colls] == [-1, 0, 2, -1, -1, -1, 3, 1]
    assert all(bound(c)["groups"] == [0, 1, 2, 3] for c in colls)
    assert all(c.num_ranks == 4 and c.sets[0] == ("num_ranks", 4) for c in colls)
    assert [t.name for t in network.outputs] == [f"y{i}" for i in range(8)]


def test_world_size_one_collectives_are_skipped(trt) -> None:
    net = td.Network("single", world=td.StaticWorld(1))
    x = net.input("x", (4, 3))
    net.output(x.all_reduce("sum").all_gather().scatter(0), "y")
    _, network, _ = lower_network(net, trt)
    assert not created(network, "add_dist_collective")
    assert len(created(network, "add_identity")) == 3
    assert all(not layer.sets or layer.sets[0][0] != "num_ranks" for layer in network.layers)


# --- lowering errors ---------------------------------------------------------------------------
def test_network_is_strongly_typed(trt) -> None:
    net = td.Network("n")
    net.output(net.input("x", (2,)).exp(), "y")
    builder, network, _ = lower_network(net, trt)
    (call,) = [c for c in builder.calls if c[0] == "create_network"]
    flag = int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert call[1] == (1 << flag,)
    assert lowering.network_flags(object()) == 0


def test_a_contract_violation_surfaces_with_the_layer(trt) -> None:
    class Broken(OpDef):
        name = "broken"

        def infer(self, layer):
            return [layer.input_types[0]]

        def lower(self, layer, inputs, b):
            return [b.out(b.network.add_element_wise(inputs[0], inputs[0]), layer)]

    net = td.Network("n")
    (y,) = net.add_layer(Broken(), [net.input("x", (2,))], name="oops")
    net.output(y, "y")
    with pytest.raises(LoweringError, match="layer 'oops'") as info:
        lower_network(net, trt)
    assert isinstance(info.value.__cause__, ContractError)
    assert "add_elementwise" in str(info.value)  # the fake suggests the real name


def test_enum_errors_are_clear() -> None:
    with pytest.raises(LoweringError, match="known keys"):
        enums.member_name("ElementWiseOperation", "modulo")
    with pytest.raises(LoweringError, match="mapped enums"):
        enums.member_name("PaddingMode", "same")

    class Old:
        __version__ = "10.0"

        class CollectiveOperation:
            pass

    with pytest.raises(LoweringError, match=r"TensorRT 10.0 has no CollectiveOperation.ALL_REDUCE"):
        enums.resolve(Old, "CollectiveOperation", "all_reduce")
    with pytest.raises(LoweringError, match="no enum ReduceOperation"):
        enums.resolve(Old, "ReduceOperation", "sum")


def test_enum_tables_match_the_manifest() -> None:
    manifest = load_manifest()
    for enum_name, table in enums.TABLES.items():
        members = manifest.enum_members(enum_name)
        assert set(table.values()) <= members, (enum_name, set(table.values()) - members)
    for dsl, member in enums.DATA_TYPES.items():
        assert enums.dtype_from_trt(type("M", (), {"name": member})()) == dsl


def test_output_name_equal_to_an_input_name_is_refused(trt) -> None:
    net = td.Network("n")
    x = net.input("x", (2,))
    net.output(x, "x")  # the DSL allows an input as its own output; TensorRT cannot
    with pytest.raises(LoweringError, match="unique I/O tensor names"):
        lower_network(net, trt)


# --- build options, profiles, cache key --------------------------------------------------------
def _net(weight: float = 1.0, rank: int | None = None, size: int = 2, eps: float = 1e-5):
    world = None if rank is None else td.StaticWorld(size, rank)
    net = td.Network("m", world=world)
    x = net.input("x", (None, 4))
    w = net.constant(np.full((4, 4), weight, np.float32))
    y = (x @ w).layer_norm(np.ones(4, np.float32), np.zeros(4, np.float32), eps=eps)
    net.output(y, "y")
    return net


PROFILE = {"x": [(1, 8), 4]}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"workspace": 0}, ValueError, "workspace"),
        ({"workspace": -5}, ValueError, "workspace"),
        ({"workspace": "1GiB"}, ValueError, "workspace"),
        ({"workspace": True}, ValueError, "workspace"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"timing_cache": 3}, ValueError, "timing_cache"),
        ({"cache_dir": ""}, ValueError, "cache_dir"),
        ({"profiles": None}, ValueError, r"dynamic dims .*'x'.*profiles="),
        ({"profiles": {"x": [(1, 8)]}}, ValueError, "1 entries for an input of rank 2"),
        ({"profiles": {"x": [(8, 1), 4]}}, ValueError, "min <= opt <= max"),
        ({"profiles": {"x": [(1, 8), 5]}}, ValueError, "static"),
        ({"profiles": {"x": [None, 4]}}, ValueError, "dim 0 is dynamic"),
        ({"profiles": {"x": [(1, 8), 4], "z": [1]}}, ValueError, "unknown input"),
        ({"profiles": {"x": "big"}}, ValueError, "per-dim ranges"),
        ({"profiles": {"x": {"min": (1, 4), "max": (8, 4)}}}, ValueError, "all of min"),
        ({"profiles": {"x": {"min": (1, 4), "opt": (2,), "max": (8, 4)}}}, ValueError, "rank"),
        ({"profiles": {"x": {5: (1, 2)}}}, ValueError, "keys must be axes"),
        ({"profiles": [{}]}, ValueError, "no range for dynamic input"),
        ({"profiles": 7}, ValueError, "mapping"),
    ],
)
def test_build_option_validation(kwargs, error, match) -> None:
    kwargs = {"profiles": PROFILE, **kwargs}
    with pytest.raises(error, match=match):
        trt_build.validate_options(_net(), **kwargs)


def test_profiles_are_normalized() -> None:
    net = _net()
    norm = trt_build.normalize_profiles
    assert norm(net, {"x": [(1, 8), 4]}) == [{"x": ((1, 4), (8, 4), (8, 4))}]
    assert norm(net, {"x": [(1, 2, 8), None]}) == [{"x": ((1, 4), (2, 4), (8, 4))}]
    assert norm(net, {"x": {0: (1, 8)}}) == [{"x": ((1, 4), (8, 4), (8, 4))}]
    assert norm(net, {"x": {-2: 3}}) == [{"x": ((3, 4), (3, 4), (3, 4))}]
    explicit = {"x": {"min": (1, 4), "opt": (2, 4), "max": (16, 4)}}
    assert norm(net, explicit) == [{"x": ((1, 4), (2, 4), (16, 4))}]
    two = norm(net, [{"x": [(1, 4), 4]}, {"x": [(5, 64), 4]}])
    assert [p["x"][2] for p in two] == [(4, 4), (64, 4)]
    static = td.Network("s")
    static.output(static.input("x", (2, 4)).relu(), "y")
    assert norm(static, None) == []
    assert norm(static, {"x": [2, 4]}) == [{}]  # static inputs need no profile entry


def test_cache_key_is_stable_and_sensitive() -> None:
    opts = trt_build.validate_options(_net(), profiles=PROFILE)

    def key(net=None, options=opts, version="11.4.0.106", device="H100 sm90"):
        return trt_build.cache_key(net if net is not None else _net(), options, version, device)

    base = key()
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert key() == base  # an identical network built again
    different = {
        "weights": key(_net(weight=2.0)),
        "eps": key(_net(eps=1e-6)),
        "rank": key(_net(rank=1)),
        "rank_vs_other_rank": key(_net(rank=0)),
        "world_size": key(_net(rank=1, size=4)),
        "workspace": key(
            options=trt_build.validate_options(_net(), workspace=1 << 30, profiles=PROFILE)
        ),
        "profile": key(options=trt_build.validate_options(_net(), profiles={"x": [(1, 16), 4]})),
        "tensorrt": key(version="11.5.0.1"),
        "device": key(device="H200 sm90"),
    }
    assert base not in different.values()
    assert len(set(different.values())) == len(different)
    # options that do not change the engine leave the key alone
    same = trt_build.validate_options(
        _net(), profiles=PROFILE, progress=False, timing_cache="/tmp/t.cache", cache_dir="/tmp/e"
    )
    assert key(options=same) == base
    # one weight element changes the key too
    net = _net()
    layer = next(la for la in net.layers if la.op.name == "constant")
    value = layer.attrs["value"].copy()
    value[0, 0] = np.nextafter(value[0, 0], np.float32(2))
    layer.attrs["value"] = value
    assert key(net) != base


def test_cache_key_refuses_unstable_attributes() -> None:
    net = _net()
    net.layers[-1].attrs["_private"] = object()
    with pytest.raises(TypeError, match="stable cache key"):
        trt_build.cache_key(net, trt_build.validate_options(net, profiles=PROFILE))


def test_cache_file_name() -> None:
    from pathlib import Path

    path = trt_build.cache_file(Path("/c"), _net(rank=1), "ab" * 32)
    assert path == Path("/c") / f"m.rank1of2.{'ab' * 32}.engine"


# --- builder configuration through the fake -----------------------------------------------------
def test_builder_config_follows_the_contract(trt, tmp_path) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old timing cache")
    options = trt_build.validate_options(
        _net(), workspace=1 << 28, profiles=[PROFILE, {"x": [(9, 32), 4]}], timing_cache=cache
    )
    builder = trt.Builder(trt.Logger())
    stream = io.StringIO()
    config, keep = trt_build.configure(trt, builder, options, "rank 1", stream)
    calls = {c[0]: c for c in config.calls}
    assert calls["set_memory_pool_limit"][1][0] is trt.MemoryPoolType.WORKSPACE
    assert calls["set_memory_pool_limit"][1][1] == 1 << 28
    profiles = [c[1][0] for c in config.calls if c[0] == "add_optimization_profile"]
    assert len(profiles) == 2
    assert profiles[1].calls == [("set_shape", ("x", (9, 4), (32, 4), (32, 4)), {})]
    assert calls["create_timing_cache"][1] == (b"old timing cache",)
    assert calls["set_timing_cache"][1][1] is False
    monitor = config.progress_monitor
    assert isinstance(monitor, trt.IProgressMonitor)
    monitor.phase_start("Building", None, 2)
    assert monitor.step_complete("Building", 0) is True
    monitor.phase_finish("Building")
    assert "[trtdsl build rank 1] Building (2 steps)" in stream.getvalue()
    assert "Building done in" in stream.getvalue()


def test_build_plan_checks_every_call_up_to_the_build(trt) -> None:
    options = trt_build.validate_options(_net(rank=1), profiles=PROFILE, progress=False)
    with pytest.raises(FakeTensorRTLimitation, match="build_serialized_network"):
        trt_build.build_plan(trt, _net(rank=1), options)


def test_progress_printer_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    p = trt_build.ProgressPrinter("", out)
    p.phase_start("Build", None, 3)
    p.phase_start("Tactics", "Build", 2)
    p.step_complete("Tactics", 1)
    p.phase_finish("Tactics")
    p.phase_finish("Build")
    text = out.getvalue()
    assert "\r[trtdsl build]   Tactics: 2/2" in text and "Build done in" in text


# --- without TensorRT ------------------------------------------------------------------------
@pytest.mark.skipif(TRT_IMPORTABLE, reason="tensorrt is importable here")
def test_build_and_run_say_tensorrt_is_unavailable() -> None:
    net = _net()
    with pytest.raises(TensorRTUnavailableError, match="TensorRT 11 is not installed") as info:
        net.build(profiles=PROFILE)
    assert isinstance(info.value, ImportError)
    assert "trt-cu13" in str(info.value) and "tensorrt-cu12" in str(info.value)
    with pytest.raises(TensorRTUnavailableError):
        trt_build.build_engine(net, profiles=PROFILE, cache_dir="/nonexistent/never/written")
    with pytest.raises(TensorRTUnavailableError):
        net.run({"x": np.ones((2, 4), np.float32)}, backend="tensorrt")
    # options are still checked first
    with pytest.raises(ValueError, match="workspace"):
        net.build(workspace=-1, profiles=PROFILE)


def test_runtime_imports_without_cuda_or_tensorrt() -> None:
    import trtdsl.backends.tensorrt.runtime as runtime

    assert hasattr(runtime, "Engine")
    if importlib.util.find_spec("cuda") is None:
        from trtdsl.backends.tensorrt.errors import CudaError

        with pytest.raises(CudaError, match="cuda-python"):
            runtime.device_count()


# --- run() and Engine up to what the fake can do -----------------------------------------------
@pytest.fixture()
def fake_tensorrt_installed(trt, monkeypatch):
    """Make ``import_tensorrt`` return the fake (it cannot build or run engines)."""
    from trtdsl.backends.tensorrt import backend

    monkeypatch.setattr(trt_build, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(backend, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_build, "_MEMORY_CACHE", type(trt_build._MEMORY_CACHE)())
    return trt


def test_run_checks_feeds_then_builds_with_profiles_from_the_feeds(fake_tensorrt_installed):
    from trtdsl.errors import ExecutionError

    net = _net()
    with pytest.raises(ExecutionError, match="missing input"):
        net.run({}, backend="tensorrt")
    with pytest.raises(FakeTensorRTLimitation, match="build_serialized_network"):
        net.run({"x": np.ones((3, 4), np.float32)}, backend="tensorrt", progress=False)


def test_multi_rank_collectives_need_mpi(fake_tensorrt_installed):
    from trtdsl.backends.tensorrt import needs_communicator
    from trtdsl.errors import ExecutionError

    net = COLLECTIVE_CASES[0].make(td.StaticWorld(4, rank=1))
    assert needs_communicator(net)
    feeds = {"x": np.ones((16, 3), np.float32)}
    with pytest.raises(ExecutionError, match="one process per rank"):
        net.run(feeds, backend="tensorrt")
    single = COLLECTIVE_CASES[0].make(td.StaticWorld(1))
    assert not needs_communicator(single)


def test_engine_uses_the_runtime_api_of_the_manifest(trt):
    from trtdsl.backends.tensorrt.runtime import Engine

    with pytest.raises(FakeTensorRTLimitation, match="deserialize_cuda_engine"):
        Engine(b"not a real plan", trt=trt)
