"""Weights from safetensors files and dicts (whole and sharded at load time, reading only the
rank's slice), their errors, and TensorRT refit against the manifest-checked fake."""

from __future__ import annotations

import numpy as np
import pytest

import trtdsl as td
from trtdsl.backends.tensorrt import lower_network
from trtdsl.backends.tensorrt.build import configure, validate_options
from trtdsl.backends.tensorrt.errors import BuildError
from trtdsl.backends.tensorrt.refit import refit_engine
from trtdsl.testing.fake_tensorrt import make_fake_engine, make_fake_tensorrt
from trtdsl.weights import Weights, WeightsError, load_weights, save_weights

pytest.importorskip("safetensors")

RNG = np.random.default_rng(3)
ARRAYS = {
    "blocks.0.w_q": RNG.standard_normal((8, 12)).astype(np.float32),
    "blocks.0.b": RNG.standard_normal(12).astype(np.float32),
    "embed": RNG.standard_normal((5, 8)).astype(np.float16),
}


@pytest.fixture(params=["file", "dict"])
def weights(request, tmp_path) -> Weights:
    if request.param == "dict":
        return load_weights(ARRAYS)
    return load_weights(save_weights(tmp_path / "w.safetensors", ARRAYS))


def test_whole_and_sharded_weights(weights):
    assert sorted(weights.keys()) == sorted(ARRAYS)
    assert weights.shape("blocks.0.w_q") == (8, 12)
    np.testing.assert_array_equal(weights.get("embed"), ARRAYS["embed"])
    for r in range(3):
        got = weights.get("blocks.0.w_q", shard_axis=1, rank=r, size=3)
        np.testing.assert_array_equal(got, ARRAYS["blocks.0.w_q"][:, 4 * r : 4 * r + 4])
    got = weights.get("blocks.0.w_q", shard_axis=0, rank=1, size=2)
    np.testing.assert_array_equal(got, ARRAYS["blocks.0.w_q"][4:])


def test_constants_take_the_rank_shard_and_the_weight_name(weights):
    def rank_fn(world):
        net = td.Network("w", world=world)
        x = net.input("x", (2, 8))
        w = weights.constant(net, "blocks.0.w_q", shape=(8, 12), shard_axis=-1)
        net.output(x @ w, "y")
        assert w.name == "blocks.0.w_q"
        return net.run({"x": np.ones((2, 8), np.float32)})["y"]

    outs = td.InProcessWorld(2).run(rank_fn)
    want = np.ones((2, 8)) @ ARRAYS["blocks.0.w_q"]
    np.testing.assert_allclose(np.concatenate(outs, axis=1), want, rtol=1e-5)


def test_file_reads_only_the_slice(tmp_path, monkeypatch):
    path = save_weights(tmp_path / "w.safetensors", ARRAYS)
    seen = []
    import safetensors

    real = safetensors.safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.f = real(*a, **k)

        def __enter__(self):
            self.inner = self.f.__enter__()
            return self

        def __exit__(self, *a):
            return self.f.__exit__(*a)

        def keys(self):
            return self.inner.keys()

        def get_slice(self, name):
            seen.append(name)
            return self.inner.get_slice(name)

        def get_tensor(self, name):  # would read the whole tensor
            raise AssertionError("get_tensor called")

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    w = Weights(path)
    w.get("blocks.0.w_q", shard_axis=1, rank=0, size=4)
    assert "blocks.0.w_q" in seen


def test_errors_name_the_tensor_and_shapes(weights, tmp_path):
    with pytest.raises(
        WeightsError, match=r"'blocks.0.w_k' is missing.*did you mean 'blocks.0.w_q'"
    ):
        weights.get("blocks.0.w_k")
    with pytest.raises(
        WeightsError, match=r"'embed' has shape \(5, 8\), the network expects \(8, 5\)"
    ):
        weights.get("embed", shape=(8, 5))
    with pytest.raises(WeightsError, match=r"'embed'.*axis 0 \(5\) does not split evenly over 2"):
        weights.get("embed", shard_axis=0, rank=0, size=2)
    with pytest.raises(WeightsError, match="does not exist"):
        Weights(tmp_path / "nope.safetensors")
    assert issubclass(WeightsError, td.DefinitionError)


def test_refit_option_sets_the_refit_flag():
    trt = make_fake_tensorrt()
    net = td.Network("r")
    net.output(net.input("x", (2,)) * 2.0, "y")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config, _ = configure(trt, builder, validate_options(net, refit=True))
    assert ("set_flag", (trt.BuilderFlag.REFIT,), {}) in config.calls
    config, _ = configure(trt, builder, validate_options(net))
    assert all(c[1] != (trt.BuilderFlag.REFIT,) for c in config.calls)
    with pytest.raises(TypeError, match="refit must be True or False"):
        validate_options(net, refit="yes")
    assert validate_options(net, refit=True).key_fields()["refit"] is True


def _lowered(weights):
    trt = make_fake_tensorrt()
    net = td.Network("r")
    x = net.input("x", (2, 8))
    y = x @ weights.constant(net, "blocks.0.w_q") + weights.constant(net, "blocks.0.b")
    net.output(y, "y")
    _, network, ctx = lower_network(net, trt)
    return trt, net, make_fake_engine(trt, network), ctx


def test_refit_engine_sets_every_named_weight(weights):
    trt, net, engine, _ = _lowered(weights)
    assert set(engine.refittable) == {"blocks.0.w_q", "blocks.0.b"}
    new = {k: v * 2 for k, v in weights.shards(net).items()}
    assert refit_engine(engine, new, trt=trt) is engine


def test_refit_errors_name_the_weight(weights):
    trt, net, engine, _ = _lowered(weights)
    good = weights.shards(net)
    with pytest.raises(BuildError, match="'blocks.0.w_k'.*not a refittable weight"):
        refit_engine(engine, {**good, "blocks.0.w_k": good["blocks.0.w_q"]}, trt=trt)
    bad = {**good, "blocks.0.b": good["blocks.0.b"].astype(np.float16)}
    with pytest.raises(BuildError, match=r"'blocks.0.b'.*float16.*differ"):
        refit_engine(engine, bad, trt=trt)
    with pytest.raises(BuildError, match=r"missing: \['blocks.0.b'\]"):
        refit_engine(engine, {"blocks.0.w_q": good["blocks.0.w_q"]}, trt=trt)
