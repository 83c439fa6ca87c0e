"""Tests written for the mutants of the TensorRT lowering that the other fast tests let survive
(tools/mutate.py; docs/testing-tensorrt.md lists each survivor and what kills it). Each test
pins behaviour a real TensorRT build depends on: names, helper errors, empty dims, ..."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_trt_cases import CASES

import trtdsl as td
from trtdsl import functional as F
from trtdsl.backends.tensorrt import lower_network
from trtdsl.backends.tensorrt.errors import LoweringError
from trtdsl.backends.tensorrt.lowering import LoweringContext
from trtdsl.ops.base import OpDef
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.trt_emulator import run_network

TRT = make_fake_tensorrt()


def emulate(net: td.Network, feeds: dict) -> dict:
    _, network, ctx = lower_network(net, TRT)
    out = run_network(network, feeds)
    del ctx
    return out


def layer_names(network: Any) -> list[str]:
    return [network.get_layer(i).name for i in range(network.num_layers)]


# --- lower_network / LoweringContext bookkeeping --------------------------------------------
def test_the_network_definition_carries_the_dsl_name_cut_to_128() -> None:
    for name in ("short", "n" * 200):
        net = td.Network(name)
        net.output(net.input("x", (2,)).relu(), "y")
        _, network, ctx = lower_network(net, TRT)
        assert network.name == name[:128]
        assert ctx.net is net


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_tensorrt_layer_name_is_unique(case: Any) -> None:
    """Auxiliary layers of one DSL layer are numbered (``scalar0``, ``scalar1``): the build
    errors map TensorRT layer names back to DSL layers, so a repeated name would be ambiguous."""
    net, _ = case.make(np.random.default_rng(0))
    _, network, ctx = lower_network(net, TRT)
    names = layer_names(network)
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_two_scalars_of_one_layer_get_two_names() -> None:
    net = td.Network("n")
    x = net.input("x", (2,))
    _, network, ctx = lower_network(net, TRT)
    layer = net.layers[0]
    ctx.layer = layer
    t = ctx.tensors[id(x)]
    ctx.scalar(1.0, "float32", 1)
    ctx.scalar(2.0, "float32", 1)
    ctx.expand_rank(t, 1, 2)
    ctx.expand_rank(t, 1, 3)
    names = layer_names(network)[-4:]
    assert names == ["x/scalar0", "x/scalar1", "x/expand0", "x/expand1"], names


def test_helpers_name_after_the_layer_being_lowered_or_refuse_outside_one() -> None:
    net = td.Network("n")
    x = net.input("x", (2, 3))
    _, network, _ = lower_network(net, TRT)
    ctx = LoweringContext(TRT, network, net)
    relu = network.add_activation(network.get_input(0), TRT.ActivationType.RELU)
    for call in (
        lambda: ctx.name(relu, None),
        lambda: ctx.out(relu, None),
        lambda: ctx.constant(np.ones(2, np.float32), None),
        lambda: ctx.scalar(1.0, "float32", 2),
    ):
        with pytest.raises(LoweringError, match="outside of a layer's lowering"):
            call()
    ctx.layer = x.layer if hasattr(x, "layer") else net.layers[0]
    assert ctx.name(relu, None, "act") is relu
    assert relu.name == "x/act"
    assert ctx.layer_of["x/act"] is ctx.layer
    assert relu.metadata.startswith("trtdsl:x@")


def test_a_missing_tensorrt_layer_names_the_dsl_layer_and_the_helper() -> None:
    net = td.Network("n")
    net.input("x", (2, 3))
    _, network, ctx = lower_network(net, TRT)
    layer = net.layers[0]
    with pytest.raises(LoweringError) as info:
        ctx.name(None, layer, "cast")
    msg = str(info.value)
    assert "layer 'x'" in msg and "TensorRT returned no layer (cast)" in msg, msg
    with pytest.raises(LoweringError) as info:
        ctx.name(None, layer)
    assert "TensorRT returned no layer;" in str(info.value)


# --- expand_rank with empty dims ---------------------------------------------------------------
def test_broadcasting_an_empty_dim_keeps_it_empty() -> None:
    """expand_rank's reshape dims are sizes: a 0 must stay an empty dim, not copy input dims
    (``zero_is_placeholder = False``)."""
    net = td.Network("empty")
    a = net.input("a", (2, 0))
    b = net.input("b", (0,))
    net.output(a + b, "y")
    assert net.outputs["y"].shape == (2, 0)
    # Network.run refuses empty feeds; the lowered network itself must still be right
    feeds = {"a": np.ones((2, 0), np.float32), "b": np.ones((0,), np.float32)}
    got = emulate(net, feeds)["y"]
    assert got.shape == (2, 0) and got.dtype == np.float32


def test_helpers_fail_before_adding_layers_and_hand_tensorrt_plain_ints() -> None:
    """Outside a layer's lowering a helper refuses before it adds anything; inside one, dims,
    starts and strides reach TensorRT as tuples of Python ints (pybind11's Dims conversion is
    not promised to take NumPy integers)."""
    net = td.Network("n")
    x = net.input("x", (2, 3))
    _, network, ctx = lower_network(net, TRT)
    t = ctx.tensors[id(x)]
    count = network.num_layers
    for call in (
        lambda: ctx.constant(np.ones(2, np.float32), None),
        lambda: ctx.reshape(t, (3, 2), None),
        lambda: ctx.slice(t, (0, 0), (1, 1), (1, 1), None),
    ):
        with pytest.raises(LoweringError, match="outside of a layer's lowering"):
            call()
        assert network.num_layers == count
    ctx.layer = net.layers[0]
    i64 = np.int64
    r = ctx.reshape(t, [i64(3), i64(2)], None, "r")
    sh = network.get_layer(network.num_layers - 1)
    assert sh.reshape_dims == (3, 2) and {type(d) for d in sh.reshape_dims} == {int}
    assert ctx.shape_of(r) == (3, 2)
    s = ctx.slice(t, [i64(0), i64(1)], (1, 2), [i64(1), i64(1)], None, "s")
    sl = network.get_layer(network.num_layers - 1)
    assert sl.start == (0, 1) and {type(d) for d in sl.start} == {int}
    assert sl.stride == (1, 1) and {type(d) for d in sl.stride} == {int}
    assert ctx.shape_of(s) == (1, 2)


class _Identity(OpDef):
    """Custom ops: ``generator`` lowers to a generator (lower_layer takes any iterable);
    ``passthrough`` returns its input ITensor itself (as a no-op lowering may)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def infer(self, layer: Any) -> list:
        return [layer.input_types[0]]

    def reference(self, layer: Any, inputs: list, ctx: Any) -> list:
        return [inputs[0]]

    def lower(self, layer: Any, inputs: list, b: Any) -> Any:
        if self.name == "passthrough":
            return inputs
        if self.name == "nothing":
            return []
        if self.name == "none":
            return [None]
        return (b.out(b.network.add_identity(t), layer) for t in inputs)


def test_a_lowering_may_return_any_iterable() -> None:
    net = td.Network("gen")
    x = net.input("x", (2,))
    (y,) = net.add_layer(_Identity("generator"), (x,), {}, name="ident")
    net.output(y, "y")
    feeds = {"x": np.array([1.5, -2.0], np.float32)}
    np.testing.assert_array_equal(emulate(net, feeds)["y"], feeds["x"])


def test_one_itensor_as_two_outputs_gets_an_identity_for_the_second() -> None:
    net = td.Network("twice")
    y = net.input("x", (2, 3)).relu(name="r")
    (z,) = net.add_layer(_Identity("passthrough"), (y,), {}, name="same")
    net.output(y, "a")
    net.output(z, "b")
    feeds = {"x": np.array([[-1, 2, -3], [4, -5, 6]], np.float32)}
    got = emulate(net, feeds)
    assert set(got) == {"a", "b"}
    np.testing.assert_array_equal(got["a"], np.maximum(feeds["x"], 0))
    np.testing.assert_array_equal(got["b"], got["a"])


def test_explain_finds_a_layer_named_at_the_start_of_a_message() -> None:
    net = td.Network("n")
    net.output(net.input("x", (2, 3)).relu(name="act"), "y")
    _, _, ctx = lower_network(net, TRT)
    assert "trtdsl layer 'act'" in ctx.explain("act: could not find an implementation")
    assert "trtdsl layer 'act'" in ctx.explain("act")
    assert "trtdsl layer" not in ctx.explain("action: failed")


def test_a_builder_that_makes_no_network_is_a_lowering_error() -> None:
    class NoNetwork:
        def create_network(self, flags: int) -> None:
            return None

    net = td.Network("n")
    net.output(net.input("x", (2,)).relu(), "y")
    with pytest.raises(LoweringError, match="could not create a network definition"):
        lower_network(net, TRT, builder=NoNetwork())


@pytest.mark.parametrize("kind", ["nothing", "none"])
def test_a_lowering_with_too_few_or_none_outputs_is_a_lowering_error(kind: str) -> None:
    net = td.Network("bad")
    (y,) = net.add_layer(_Identity(kind), (net.input("x", (2,)),), {}, name="odd")
    net.output(y, "y")
    with pytest.raises(LoweringError, match=f"layer 'odd': op '{kind}' lowered to"):
        lower_network(net, TRT)


def test_expand_rank_refuses_to_shrink() -> None:
    net = td.Network("n")
    x = net.input("x", (2, 3))
    _, _, ctx = lower_network(net, TRT)
    ctx.layer = net.layers[0]
    t = ctx.tensors[id(x)]
    assert ctx.expand_rank(t, 2, 2) is t
    with pytest.raises(LoweringError, match="cannot expand rank 3 to 2"):
        ctx.expand_rank(t, 3, 2)


def test_expand_rank_and_dims_of_a_tensor_whose_shape_the_lowering_does_not_know() -> None:
    """A tensor made inside an op's lowering has no recorded shape: expand_rank then builds
    the target dims at run time (shape layer, gathers, concatenation); all-static dims are
    one int64 constant."""
    net = td.Network("n")
    x = net.input("x", (2, 3))
    _, network, ctx = lower_network(net, TRT)
    ctx.layer = net.layers[0]
    t = network.add_identity(ctx.tensors[id(x)]).get_output(0)
    assert ctx.shape_of(t) is None
    e = ctx.expand_rank(t, 2, 4)
    assert ctx.shape_of(e) == (1, 1, None, None)
    d = ctx._dims_tensor(t, (4, 5))
    assert ctx.shape_of(d) == (2,)
    for name, tensor in (("e", e), ("d", d)):
        tensor.name = name
        network.mark_output(tensor)
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    out = run_network(network, feeds)
    np.testing.assert_array_equal(out["e"], feeds["x"].reshape(1, 1, 2, 3))
    np.testing.assert_array_equal(out["d"], np.array([4, 5], np.int64))


def test_a_lowering_error_raised_by_an_op_passes_through_unwrapped() -> None:
    class Refuses(_Identity):
        def lower(self, layer: Any, inputs: list, b: Any) -> Any:
            raise LoweringError("refused on purpose")

    net = td.Network("n")
    (y,) = net.add_layer(Refuses("refuses"), (net.input("x", (2,)),), {}, name="r")
    net.output(y, "y")
    with pytest.raises(LoweringError) as info:
        lower_network(net, TRT)
    assert str(info.value) == "refused on purpose"


def test_explain_matches_whole_names_and_lists_longest_first() -> None:
    net = td.Network("n")
    x = net.input("x", (2, 3))
    net.output(x.relu(name="act").sigmoid(name="act_long"), "y")
    _, _, ctx = lower_network(net, TRT)
    assert "trtdsl layer 'act'" in ctx.explain("b act failed")
    for text in ("react: bad", "x_act: bad", "act_x: bad", "a/act: bad", "actx"):
        assert "-> trtdsl layer 'act'" not in ctx.explain(text), text
    both = ctx.explain("act and act_long")
    assert both.index("'act_long'") < both.index("'act'")


def test_unrooted_collectives_pass_root_minus_one() -> None:
    from trtdsl.ops.collective import CollectiveSpec

    ctx = LoweringContext(TRT, None)
    group = (0, 1, 2, 3)
    assert ctx.collective_root(CollectiveSpec("all_reduce", "sum", None, group, (group,))) == -1
    assert ctx.collective_root(CollectiveSpec("broadcast", None, 2, (3, 1, 0), ((3, 1, 0),))) == 0


def test_remembered_shapes_of_expand_rank_and_reshape() -> None:
    net = td.Network("n")
    x = net.input("x", (2, 3))
    _, _, ctx = lower_network(net, TRT)
    ctx.layer = net.layers[0]
    t = ctx.tensors[id(x)]
    assert ctx.shape_of(ctx.expand_rank(t, 2, 4)) == (1, 1, 2, 3)
    assert ctx.shape_of(ctx.reshape(t, (0, -1), None, "r0")) == (2, None)
    assert ctx.shape_of(ctx.reshape(t, (0, 0, 1), None, "r1")) == (2, 3, 1)
    assert ctx.shape_of(ctx.reshape(t, (3, 0, 0), None, "r2")) == (3, 3, None)


def test_a_slice_of_all_dynamic_sizes_takes_them_at_run_time() -> None:
    net = td.Network("n")
    x = net.input("x", (None, None))
    _, network, ctx = lower_network(net, TRT)
    ctx.layer = net.layers[0]
    s = ctx.slice(ctx.tensors[id(x)], (0, 0), (None, None), (1, 1), None, "all")
    s.name = "s"
    network.mark_output(s)
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.testing.assert_array_equal(run_network(network, feeds)["s"], feeds["x"])


def test_only_inputs_and_repeated_tensors_get_an_output_identity() -> None:
    net = td.Network("n")
    x = net.input("x", (2, 3))
    net.output(x.relu(name="r"), "y")
    net.output(x, "x_again")
    _, network, _ = lower_network(net, TRT)
    names = layer_names(network)
    assert "output/x_again" in names and "output/y" not in names, names


# --- enums ---------------------------------------------------------------------------------
def test_dtype_names_both_ways() -> None:
    from trtdsl.backends.tensorrt import enums

    assert enums.dtype_name(td.bfloat16) == "BF16"
    assert enums.dtype_name("int32") == "INT32"
    assert enums.dtype_from_trt(TRT.DataType.HALF) == "float16"
    assert enums.dtype_from_trt("tensorrt.DataType.HALF") == "float16"  # str() fallback
    assert enums.dtype_from_trt("INT64") == "int64"
    with pytest.raises(LoweringError, match=r"tensorrt.DataType.FP4 has no trtdsl dtype"):
        enums.dtype_from_trt(TRT.DataType.FP4)


# --- ops' lower methods --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a_shape", "b_shape", "feeds"),
    [
        ((None, 4), (4,), {"a": (3, 4), "b": (4,)}),  # matrix @ vector, dynamic rows
        ((4,), (4, None), {"a": (4,), "b": (4, 5)}),  # vector @ matrix, dynamic columns
        ((2, None, 4), (4,), {"a": (2, 3, 4), "b": (4,)}),
        ((4,), (2, 4, None), {"a": (4,), "b": (2, 4, 5)}),  # vector @ batched matrices
    ],
)
def test_matmul_with_a_vector_and_dynamic_dims(a_shape: tuple, b_shape: tuple, feeds: dict) -> None:
    net = td.Network("mv")
    a, b = net.input("a", a_shape), net.input("b", b_shape)
    net.output(a @ b, "y")
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in feeds.items()}
    got, want = emulate(net, arrays)["y"], net.run(arrays)["y"]
    assert got.shape == want.shape == np.matmul(arrays["a"], arrays["b"]).shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_float32_rms_norm_has_no_casts() -> None:
    """Only 16-bit inputs are computed in float32 (x and scale cast in, the result out)."""
    for dtype, casts in (("float32", 0), ("float16", 2), ("bfloat16", 2)):
        net = td.Network("rms")
        x = net.input("x", (2, 8), dtype)
        net.output(x.rms_norm(np.ones(8, td.as_dtype(dtype).numpy), name="n"), "y")
        _, network, _ = lower_network(net, TRT)
        names = layer_names(network)
        assert sum(n.endswith("_float32") for n in names) == casts, (dtype, names)
        assert ("n/scaled" in names) == (casts > 0), names


def test_plugin_helper_refuses_outside_a_layer_and_unknown_names() -> None:
    from trtdsl.backends.tensorrt import plugins

    net = td.Network("n")
    x = net.input("x", (2, 3))
    _, _, ctx = lower_network(net, TRT)
    t = ctx.tensors[id(x)]
    with pytest.raises(LoweringError, match="outside of a layer's lowering"):
        ctx.plugin(plugins.FLASH_ATTENTION_LSE, [t, t, t])
    ctx.layer = net.layers[0]
    with pytest.raises(LoweringError, match="no trtdsl plugin named 'nope'"):
        ctx.plugin("nope", [t])


# --- attention: which TensorRT layers a case lowers to ----------------------------------------
_ROUTES = [
    # id, q, k, v (shapes; None dynamic), feeds' shapes, kwargs, IAttention?, causal-mask layer?
    ("rank4", (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), None, {}, True, False),
    ("rank3", (2, 4, 8), (2, 6, 8), (2, 6, 8), None, {}, True, False),
    ("rank3_one_dynamic", (2, None, 8), (2, 6, 8), (2, 6, 8), (2, 3, 8), {}, True, False),
    ("rank3_two_dynamic", (None, None, 8), (None, 6, 8), (None, 6, 8), (2, 3, 8), {}, False,
     False),
    ("rank4_two_dynamic", (None, 2, None, 8), (None, 2, 6, 8), (None, 2, 6, 8), (1, 2, 3, 8),
     {}, True, False),
    ("rank5", (1, 1, 2, 4, 8), (1, 1, 2, 4, 8), (1, 1, 2, 4, 8), None, {}, False, False),
    ("lse", (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), None, {"return_lse": True}, False, False),
    ("v_head_dim", (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 16), None, {}, False, False),
    ("causal_upper_left", (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), None, {"causal": True},
     True, False),
    ("causal_lower_right", (1, 2, 2, 8), (1, 2, 4, 8), (1, 2, 4, 8), None,
     {"causal": True, "q_offset": 3, "k_offset": 1}, True, False),
    ("causal_offsets", (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), None,
     {"causal": True, "q_offset": 1}, True, True),
    ("mask_and_causal", (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), None,
     {"causal": True, "mask": "bool"}, False, True),
]  # fmt: skip


def _concrete(shape: tuple, like: tuple | None) -> tuple:
    """``shape`` with a dynamic dim taken from ``like`` (the q feed's shape) at that index."""
    return tuple(like[i] if d is None else d for i, d in enumerate(shape))


@pytest.mark.parametrize("route", _ROUTES, ids=[r[0] for r in _ROUTES])
def test_attention_lowers_to_iattention_where_it_can(route: tuple) -> None:
    name, qs, ks, vs, q_feed, kwargs, iattention, causal_mask = route
    kwargs = dict(kwargs)
    net = td.Network(f"attn_{name}")
    q, k, v = net.input("q", qs), net.input("k", ks), net.input("v", vs)
    rng = np.random.default_rng(1)
    feeds = {
        "q": rng.standard_normal(q_feed or qs).astype(np.float32),
        "k": rng.standard_normal(_concrete(ks, q_feed)).astype(np.float32),
        "v": rng.standard_normal(_concrete(vs, q_feed)).astype(np.float32),
    }
    if kwargs.pop("mask", None):
        m = net.input("m", qs[:-1] + (ks[-2],), "bool")
        kwargs["mask"] = m
        feeds["m"] = rng.random(qs[:-1] + (ks[-2],)) < 0.7
        feeds["m"][..., 0] = True
    out = F.attention(q, k, v, name="attn", **kwargs)
    if isinstance(out, tuple):
        net.output(out[0], "y")
        net.output(out[1], "lse")
    else:
        net.output(out, "y")
    _, network, _ = lower_network(net, TRT)
    names = layer_names(network)
    assert ("attn/scale_q" in names) == iattention, names
    assert ("attn/scores" in names) == (not iattention), names
    assert ("attn/causal_mask" in names) == causal_mask, names
    got, want = emulate(net, feeds), net.run(feeds)
    for key, w in want.items():
        np.testing.assert_allclose(got[key], w, rtol=2e-5, atol=2e-5, err_msg=key)


def test_causal_attention_whose_queries_see_no_key_is_refused_when_lowered() -> None:
    net = td.Network("blind")
    q, k = net.input("q", (1, 2, 4, 8)), net.input("k", (1, 2, 4, 8))
    net.output(F.attention(q, k, k, causal=True, k_offset=2, name="attn"), "y")
    with pytest.raises(td.TrtDslError, match="see no key"):
        lower_network(net, TRT)


def test_causal_attention_with_offsets_and_dynamic_seq_is_refused_when_lowered() -> None:
    net = td.Network("dyn")
    q, k = net.input("q", (1, 2, None, 8)), net.input("k", (1, 2, 4, 8))
    net.output(F.attention(q, k, k, causal=True, q_offset=1, name="attn"), "y")
    with pytest.raises(td.TrtDslError, match="needs static seq"):
        lower_network(net, TRT)
