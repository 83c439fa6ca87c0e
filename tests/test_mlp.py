"""A 2-layer MLP end to end (x @ W1 + b1 -> gelu -> @ W2 + b2 -> layer_norm -> softmax) on the
NumPy backend against a float64 NumPy implementation written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import FAST, erf64, f64, np_dtype, random_array, seeds

import trtdsl as td
from trtdsl import functional as F

#: Every layer rounds to the dtype; layer_norm divides by the std of a row, which magnifies the
#: rounding of its input, so the logits get looser bounds than the probabilities.
TOL = {
    "float32": {"logits": (2e-5, 2e-5), "probs": (2e-5, 1e-6)},
    "float16": {"logits": (2e-2, 3e-2), "probs": (2e-2, 5e-3)},
    "bfloat16": {"logits": (1e-1, 2e-1), "probs": (1e-1, 3e-2)},
}


def mlp64(x, w1, b1, w2, b2, gamma, beta, eps=1e-5, approximate="none"):
    """The MLP in float64, one formula per line."""
    h = x @ w1 + b1
    if approximate == "tanh":
        h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    else:
        h = 0.5 * h * (1 + erf64(h / math.sqrt(2)))
    z = h @ w2 + b2
    mu = z.mean(axis=-1, keepdims=True)
    var = ((z - mu) ** 2).mean(axis=-1, keepdims=True)
    logits = (z - mu) / np.sqrt(var + eps) * gamma + beta
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return logits, e / e.sum(axis=-1, keepdims=True), z


def weights(rng, d_in, d_hidden, d_out, dtype):
    """Weights rounded to ``dtype`` (so the float64 model sees exactly the network's values)."""
    s1, s2 = 1 / math.sqrt(d_in), 1 / math.sqrt(d_hidden)
    return {
        "w1": random_array(rng, (d_in, d_hidden), dtype, -s1, s1),
        "b1": random_array(rng, (d_hidden,), dtype, -0.5, 0.5),
        "w2": random_array(rng, (d_hidden, d_out), dtype, -s2, s2),
        "b2": random_array(rng, (d_out,), dtype, -0.5, 0.5),
        "gamma": random_array(rng, (d_out,), dtype, 0.5, 1.5),
        "beta": random_array(rng, (d_out,), dtype, -0.5, 0.5),
    }


def build(w, d_in, dtype, approximate="none"):
    net = td.Network("mlp")
    x = net.input("x", (None, d_in), dtype)
    h = (x @ net.constant(w["w1"], name="W1") + net.constant(w["b1"], name="b1")).gelu(
        approximate=approximate
    )
    z = h @ w["w2"] + w["b2"]  # arrays of the network's dtype become constants as they are
    logits = z.layer_norm(w["gamma"], w["beta"], name="ln")
    net.output(z, "z")
    net.output(logits, "logits")
    net.output(logits.softmax(axis=-1, name="probs"), "probs")
    return net


def check(out, expected, dtype, batch, d_out, w=None):
    """Against the float64 model; in 16-bit types each layer after ``z`` is held to the float64
    formula applied to the network's own input of that layer (a layer norm over 2 near-equal
    values, then a softmax, would amplify the rounding of earlier layers beyond any fixed
    tolerance)."""
    logits64, probs64 = expected
    if dtype != "float32" and w is not None and "z" in out:
        z = f64(out["z"])
        mu = z.mean(axis=-1, keepdims=True)
        var = ((z - mu) ** 2).mean(axis=-1, keepdims=True)
        logits64 = (z - mu) / np.sqrt(var + 1e-5) * f64(w["gamma"]) + f64(w["beta"])
        own = f64(out["logits"])
        e = np.exp(own - own.max(axis=-1, keepdims=True))
        probs64 = e / e.sum(axis=-1, keepdims=True)
    for key, ref in (("logits", logits64), ("probs", probs64)):
        got = out[key]
        assert got.dtype == np_dtype(dtype) and got.shape == (batch, d_out)
        rtol, atol = TOL[dtype][key]
        np.testing.assert_allclose(f64(got), ref, rtol=rtol, atol=atol, err_msg=key)
    np.testing.assert_allclose(f64(out["probs"]).sum(axis=-1), 1.0, atol=TOL[dtype]["probs"][1] * 4)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@FAST
@given(
    dims=st.tuples(st.integers(1, 16), st.integers(1, 32), st.integers(2, 10)),
    batches=st.lists(st.integers(1, 8), min_size=1, max_size=3),
    seed=seeds,
)
def test_mlp_matches_float64(dtype, dims, batches, seed):
    d_in, d_hidden, d_out = dims
    rng = np.random.default_rng(seed)
    w = weights(rng, d_in, d_hidden, d_out, dtype)
    net = build(w, d_in, dtype)
    assert net.outputs["probs"].shape == (None, d_out)
    w64 = {k: f64(v) for k, v in w.items()}
    for batch in batches:  # one network, several batch sizes (dynamic dim)
        x = random_array(rng, (batch, d_in), dtype, -2, 2)
        out = net.run({"x": x}, backend="numpy")
        want = mlp64(f64(x), **w64)
        np.testing.assert_allclose(
            f64(out["z"]), want[2], **dict(zip(("rtol", "atol"), TOL[dtype]["logits"]))
        )
        check(out, want[:2], dtype, batch, d_out, w)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mlp_with_tanh_gelu_and_functional_api(dtype):
    rng = np.random.default_rng(7)
    d_in, d_hidden, d_out, batch = 12, 24, 6, 5
    w = weights(rng, d_in, d_hidden, d_out, dtype)
    net = td.Network("mlp_f")
    x = net.input("x", (None, d_in), dtype)
    # float64 arrays are lifted to the input's dtype: pass the exact (already rounded) values
    h = F.gelu(F.add(F.matmul(x, f64(w["w1"])), f64(w["b1"])), approximate="tanh")
    z = F.add(F.matmul(h, f64(w["w2"])), f64(w["b2"]))
    logits = F.layer_norm(z, f64(w["gamma"]), f64(w["beta"]), axes=-1)
    net.output(logits, "logits")
    net.output(F.softmax(logits), "probs")
    xv = random_array(rng, (batch, d_in), dtype, -2, 2)
    out = net.run({"x": xv})
    expected = mlp64(f64(xv), **{k: f64(v) for k, v in w.items()}, approximate="tanh")[:2]
    check(out, expected, dtype, batch, d_out)
    # the erf gelu differs from the tanh one by more than the tolerance at this size
    erf_logits, _, _ = mlp64(f64(xv), **{k: f64(v) for k, v in w.items()})
    if dtype == "float32":
        assert np.max(np.abs(erf_logits - expected[0])) > 5e-5


def test_mlp_layer_count_and_parameters():
    rng = np.random.default_rng(0)
    w = weights(rng, 4, 8, 3, "float32")
    net = build(w, 4, "float32")
    # input, W1, b1, matmul, add, gelu, W2, matmul, b2, add, gamma, beta, ln, softmax
    assert len(net.layers) == 14
    n_params = sum(v.size for v in w.values())
    assert net.summary(print_it=False).splitlines()[-1] == f"parameters: {n_params * 4} bytes"


def attention64(x, wqkv, wo, heads, mask):
    """Multi-head self-attention in float64 with explicit loops over batch and heads."""
    b, s, d = x.shape
    dh = d // heads
    qkv = x @ wqkv
    out = np.zeros((b, s, d))
    for n in range(b):
        for h in range(heads):
            q = qkv[n, :, h * dh : (h + 1) * dh]
            k = qkv[n, :, d + h * dh : d + (h + 1) * dh]
            v = qkv[n, :, 2 * d + h * dh : 2 * d + (h + 1) * dh]
            scores = q @ k.T / math.sqrt(dh)
            scores = np.where(mask, scores, -1e4)
            p = np.exp(scores - scores.max(axis=-1, keepdims=True))
            out[n, :, h * dh : (h + 1) * dh] = (p / p.sum(axis=-1, keepdims=True)) @ v
    return out @ wo


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_causal_self_attention_block(dtype, heads):
    """reshape (0, 0, H, -1), transposes, batched matmul with transpose_b, a where-mask,
    softmax and the way back, on a dynamic batch."""
    rng = np.random.default_rng(heads)
    s, d = 5, 8
    wqkv = random_array(rng, (d, 3 * d), dtype, -0.5, 0.5)
    wo = random_array(rng, (d, d), dtype, -0.5, 0.5)
    mask = np.tril(np.ones((s, s), dtype=bool))
    net = td.Network("attn")
    x = net.input("x", (None, s, d), dtype)
    q, k, v = (x @ wqkv).split(3, axis=-1)

    def heads_first(t):  # (b, s, d) -> (b, H, s, d/H)
        return t.reshape((0, 0, heads, -1)).transpose((0, 2, 1, 3))

    q, k, v = heads_first(q), heads_first(k), heads_first(v)
    assert q.shape == (None, heads, s, d // heads)
    scores = F.matmul(q, k, transpose_b=True) * (1 / math.sqrt(d // heads))
    probs = td.where(mask, scores, -1e4).softmax(axis=-1)
    ctx = (probs @ v).transpose((0, 2, 1, 3)).reshape((0, 0, -1))
    assert ctx.shape == (None, s, d)
    net.output(ctx @ wo, "y")
    for b in (1, 3):
        xv = random_array(rng, (b, s, d), dtype, -1, 1)
        got = net.run({"x": xv})["y"]
        expected = attention64(f64(xv), f64(wqkv), f64(wo), heads, mask)
        tol = {"float32": (1e-4, 1e-5), "float16": (2e-2, 1e-2)}[dtype]
        assert got.dtype == np_dtype(dtype) and got.shape == (b, s, d)
        np.testing.assert_allclose(f64(got), expected, rtol=tol[0], atol=tol[1])
