"""Contract tests: the TensorRT 11.4 manifest and the manifest-checked fake ``tensorrt`` module."""

from __future__ import annotations

import pytest

from trtdsl.backends.tensorrt.manifest import load_manifest
from trtdsl.testing.fake_tensorrt import (
    ContractError,
    EnumMemberError,
    FakeTensorRTLimitation,
    make_fake_tensorrt,
)

COLLECTIVES = {
    "ALL_REDUCE",
    "BROADCAST",
    "REDUCE",
    "ALL_GATHER",
    "REDUCE_SCATTER",
    "ALL_TO_ALL",
    "GATHER",
    "SCATTER",
}


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


@pytest.fixture()
def trt():
    return make_fake_tensorrt()


@pytest.fixture()
def net(trt):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


# --- the manifest itself ---------------------------------------------------------------------


def test_header_names_the_wheel(manifest):
    header = manifest.header
    assert header["version"] == "11.4.0.106"
    assert header["wheel"] == "tensorrt_cu13_bindings-11.4.0.106"
    assert header["module_version"] == "11.4.0.106"
    assert header["extracted"]


def test_add_dist_collective_signature(manifest):
    overloads = manifest.method("INetworkDefinition", "add_dist_collective")
    assert len(overloads) == 1
    ov = overloads[0]
    assert ov.arg_names == ["input", "dist_collective_op", "reduce_op", "root", "groups"]
    types = {a.name: a.type for a in ov.args}
    assert types["input"] == "ITensor"
    assert types["dist_collective_op"] == "CollectiveOperation"
    # The bindings take reduce_op/root/groups as plain ``object`` (checked at run time).
    assert types["reduce_op"] == types["root"] == types["groups"] == "object"
    assert all(a.required for a in ov.args)
    assert ov.returns == "IDistCollectiveLayer"
    # ``group_size`` is documented but is not a Python argument.
    assert "group_size" in ov.arg_docs and "group_size" not in ov.arg_names


def test_collective_and_reduce_enums(manifest):
    assert manifest.enum_members("CollectiveOperation") == COLLECTIVES
    assert manifest.enum_members("ReduceOperation") == {"SUM", "PROD", "MAX", "MIN", "AVG", "NONE"}
    assert manifest.enum_values("CollectiveOperation")["ALL_REDUCE"] == 0


def test_num_ranks_and_communicator(manifest):
    assert "num_ranks" in manifest.property_names("ILayer")
    assert manifest.property_info("ILayer", "num_ranks").readonly is False
    # Inherited by the collective layer; IAttention (not an ILayer) has its own.
    assert "num_ranks" in manifest.property_names("IDistCollectiveLayer")
    assert "num_ranks" in manifest.property_names("IAttention")
    assert manifest.is_subclass("IDistCollectiveLayer", "ILayer")
    assert not manifest.is_subclass("IAttention", "ILayer")
    (ov,) = manifest.method("IExecutionContext", "set_communicator")
    assert ov.arg_names == ["communicator"]
    assert ov.returns == "bool"


def test_attention_and_normalization_v2(manifest):
    (att,) = manifest.method("INetworkDefinition", "add_attention_v2")
    assert att.arg_names == ["query", "key", "value", "norm_op", "causal_kind"]
    assert att.returns == "IAttention"
    (norm,) = manifest.method("INetworkDefinition", "add_normalization_v2")
    assert norm.arg_names == ["input", "scale", "bias", "axesMask"]


def test_lookups_can_fail(manifest):
    assert not manifest.has_class("INoSuchLayer")
    assert manifest.has_class("INetworkDefinition")
    assert manifest.method("INetworkDefinition", "add_send") == []
    assert "precision" not in manifest.property_names("ILayer")  # gone in strongly typed TRT 11
    with pytest.raises(KeyError):
        manifest.enum_members("NoSuchEnum")


# --- the fake module ---------------------------------------------------------------------------


def test_fake_accepts_correct_dist_collective(trt, net):
    x = net.add_input("x", trt.float16, (8, 16))
    layer = net.add_dist_collective(
        x, trt.CollectiveOperation.ALL_REDUCE, trt.ReduceOperation.SUM, -1, [0, 1]
    )
    assert isinstance(layer, trt.IDistCollectiveLayer)
    assert isinstance(layer, trt.ILayer)
    layer.num_ranks = 2
    assert layer.num_ranks == 2
    out = layer.get_output(0)
    out.name = "y"
    assert layer.get_output(0) is out and out.name == "y"
    assert isinstance(out, trt.ITensor)
    net.mark_output(out)
    assert net.outputs == [out]
    assert net.layers == [layer]
    method, args, kwargs = net.calls[-2]
    assert method == "add_dist_collective"
    assert args[1] is trt.CollectiveOperation.ALL_REDUCE and args[4] == [0, 1]
    assert kwargs == {}


def test_fake_return_types_follow_manifest(trt, net):
    x = net.add_input("x", trt.float32, (2, 4, 8, 16))
    e = net.add_elementwise(x, x, trt.ElementWiseOperation.SUM)
    assert type(e).__name__ == "IElementWiseLayer"
    assert e.op is trt.ElementWiseOperation.SUM  # filled from the argument of the same name
    att = net.add_attention_v2(
        x, x, x, trt.AttentionNormalizationOp.SOFTMAX, trt.CausalMaskKind.LOWER_RIGHT
    )
    assert type(att).__name__ == "IAttention"
    att.num_ranks = 2
    assert type(net.add_cast(x, to_type=trt.DataType.BF16)).__name__ == "ICastLayer"


def test_fake_rejects_unknown_method(trt, net):
    x = net.add_input("x", trt.float32, (4,))
    with pytest.raises(ContractError, match="add_elementwise"):
        net.add_element_wise(x, x, trt.ElementWiseOperation.SUM)


def test_fake_rejects_wrong_keyword(trt, net):
    x = net.add_input("x", trt.float32, (4,))
    with pytest.raises(ContractError, match="unexpected keyword argument 'group_size'"):
        net.add_dist_collective(
            x,
            trt.CollectiveOperation.ALL_GATHER,
            trt.ReduceOperation.NONE,
            -1,
            groups=[0, 1],
            group_size=2,
        )
    with pytest.raises(ContractError, match="missing required"):
        net.add_dist_collective(x, trt.CollectiveOperation.ALL_GATHER, trt.ReduceOperation.NONE)


def test_fake_rejects_wrong_enum(trt, net):
    with pytest.raises(EnumMemberError, match="ALL_REDUCE") as info:
        trt.CollectiveOperation.ALLREDUCE  # noqa: B018
    assert isinstance(info.value, ContractError) and isinstance(info.value, AttributeError)
    x = net.add_input("x", trt.float32, (4,))
    with pytest.raises(ContractError, match="CollectiveOperation"):
        net.add_dist_collective(x, trt.ReduceOperation.SUM, trt.ReduceOperation.SUM, -1, None)
    with pytest.raises(ContractError, match="ElementWiseOperation"):
        net.add_elementwise(x, x, 0)


def test_fake_rejects_bad_properties(trt, net):
    x = net.add_input("x", trt.float32, (4,))
    layer = net.add_identity(x)
    with pytest.raises(ContractError, match="read-only"):
        layer.num_inputs = 3
    with pytest.raises(ContractError, match="num_ranks"):
        layer.num_rank = 2
    with pytest.raises(ContractError, match="expects an int"):
        layer.num_ranks = "2"


def test_fake_rejects_layer_for_tensor_and_refuses_engines(trt, net):
    x = net.add_input("x", trt.float32, (4,))
    layer = net.add_unary(x, trt.UnaryOperation.EXP)
    with pytest.raises(ContractError, match="expects tensorrt.ITensor"):
        net.add_softmax(layer)
    with pytest.raises(ContractError, match="no Python constructor"):
        trt.ITensor()
    builder = trt.Builder(trt.Logger())
    with pytest.raises(FakeTensorRTLimitation):
        builder.build_serialized_network(net, builder.create_builder_config())
