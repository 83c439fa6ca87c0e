"""Tensor-parallel MLP and self-attention on 1-4 simulated ranks against plain NumPy float64
computed on one rank with the full weights.

Tolerances: float32 rtol = atol = 1e-4; float16 rtol = atol = 2e-2; bfloat16 rtol = atol = 6e-2
(every layer rounds to the 16-bit type; values are O(1): weights scaled by 1/sqrt(fan-in)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import PARALLEL_DTYPES, PARALLEL_SETTINGS, PARALLEL_TOL

import trtdsl as td
from trtdsl import parallel as P

SETTINGS, TOL, DTYPES = PARALLEL_SETTINGS, PARALLEL_TOL, PARALLEL_DTYPES

_erf = np.vectorize(math.erf)
ACT = {
    "relu": lambda z: np.maximum(z, 0.0),
    "gelu": lambda z: 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0))),
    "silu": lambda z: z / (1.0 + np.exp(-z)),
}


def rounded(rng, shape, dtype, scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    return a, a.astype(np.float64)


def close(actual, expected, dtype):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **TOL[dtype])


def ref_attention(q, k, v, causal, scale):
    """softmax(q k^T * scale) v over [..., seq, head_dim], float64, max subtracted."""
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.tril(np.ones((sq, sk), bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def ref_mha(x, w_qkv, b_qkv, w_out, b_out, heads, causal):
    """Full multi-head attention on one rank; x [..., s, d], w_qkv [d, 3*H*Dh] = [q|k|v]."""
    qkv = x @ w_qkv + b_qkv
    dh = w_qkv.shape[1] // (3 * heads)

    def split(t):  # [..., s, H*Dh] -> [..., H, s, Dh]
        return np.swapaxes(t.reshape(t.shape[:-1] + (heads, dh)), -2, -3)

    q, k, v = (split(t) for t in np.split(qkv, 3, axis=-1))
    o = ref_attention(q, k, v, causal, 1 / math.sqrt(dh))
    o = np.swapaxes(o, -2, -3).reshape(x.shape[:-1] + (heads * dh,))
    return o @ w_out + b_out


# -- MLP ------------------------------------------------------------------------------------------


@given(
    n=st.integers(1, 4),
    tokens=st.integers(1, 8),
    d_model=st.integers(1, 12),
    hidden_per_rank=st.integers(1, 6),
    gated=st.booleans(),
    activation=st.sampled_from(sorted(ACT)),
    bias=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_tensor_parallel_mlp(
    n, tokens, d_model, hidden_per_rank, gated, activation, bias, dtype, seed
):
    rng = np.random.default_rng(seed)
    hidden = n * hidden_per_rank
    x, x64 = rounded(rng, (tokens, d_model), dtype)
    w_up, w_up64 = rounded(rng, (d_model, hidden), dtype, 1 / math.sqrt(d_model))
    w_gate, w_gate64 = rounded(rng, (d_model, hidden), dtype, 1 / math.sqrt(d_model))
    w_down, w_down64 = rounded(rng, (hidden, d_model), dtype, 1 / math.sqrt(hidden))
    (b_up, b_up64), (b_gate, b_gate64), (b_down, b_down64) = (
        rounded(rng, (k,), dtype, 0.5) if bias else (None, 0.0) for k in (hidden, hidden, d_model)
    )
    act = ACT[activation]
    if gated:
        h = act(x64 @ w_gate64 + b_gate64) * (x64 @ w_up64 + b_up64)
    else:
        h = act(x64 @ w_up64 + b_up64)
    expected = h @ w_down64 + b_down64

    def rank_fn(world):
        net = td.Network("mlp", world=world)
        xi = net.input("x", x.shape, dtype)
        y = P.tensor_parallel_mlp(
            xi,
            w_up,
            w_down,
            w_gate=w_gate if gated else None,
            b_up=b_up,
            b_gate=b_gate if gated else None,
            b_down=b_down,
            activation=activation,
        )
        net.output(y, "y")
        ops = [c.spec.op for c in net.collectives]
        return net.run({"x": x})["y"], ops

    for y, ops in td.InProcessWorld(n).run(rank_fn):
        assert ops == ([] if n == 1 else ["all_reduce"])  # exactly one all_reduce per block
        close(y, expected, dtype)


def test_mlp_reduce_scatter_and_pre_sharded_weights():
    n, rng = 2, np.random.default_rng(3)
    x = rng.standard_normal((4, 6)).astype("float32")
    w_up = rng.standard_normal((6, 8)).astype("float32")
    w_down = rng.standard_normal((8, 6)).astype("float32")
    expected = np.maximum(x.astype(np.float64) @ w_up, 0) @ w_down

    def rank_fn(world):
        net = td.Network("mlp", world=world)
        r = world.rank
        y = P.tensor_parallel_mlp(
            net.input("x", (4, 6)),
            P.shard_columns(w_up, r, n),
            P.shard_rows(w_down, r, n),
            activation=lambda t: t.relu(),
            sharded=True,
            reduce="reduce_scatter",
        )
        net.output(y, "y")
        return net.run({"x": x})["y"]

    for r, y in enumerate(td.InProcessWorld(n).run(rank_fn)):
        close(y, expected[2 * r : 2 * r + 2], "float32")


# -- attention ------------------------------------------------------------------------------------


@given(
    n=st.integers(1, 4),
    heads_per_rank=st.integers(1, 2),
    head_dim=st.integers(2, 8),
    seq=st.integers(4, 16),
    batch=st.sampled_from([None, 2]),
    d_model=st.integers(2, 12),
    causal=st.booleans(),
    bias=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_tensor_parallel_attention(
    n, heads_per_rank, head_dim, seq, batch, d_model, causal, bias, dtype, seed
):
    rng = np.random.default_rng(seed)
    heads = n * heads_per_rank
    width = heads * head_dim
    lead = (seq,) if batch is None else (batch, seq)
    x, x64 = rounded(rng, lead + (d_model,), dtype)
    w_qkv, w_qkv64 = rounded(rng, (d_model, 3 * width), dtype, 1 / math.sqrt(d_model))
    w_out, w_out64 = rounded(rng, (width, d_model), dtype, 1 / math.sqrt(width))
    (b_qkv, b_qkv64), (b_out, b_out64) = (
        rounded(rng, (k,), dtype, 0.5) if bias else (None, 0.0) for k in (3 * width, d_model)
    )
    expected = ref_mha(x64, w_qkv64, b_qkv64, w_out64, b_out64, heads, causal)

    def rank_fn(world):
        net = td.Network("attn", world=world)
        xi = net.input("x", x.shape, dtype)
        y = P.tensor_parallel_attention(
            xi, w_qkv, w_out, num_heads=heads, b_qkv=b_qkv, b_out=b_out, causal=causal
        )
        net.output(y, "y")
        ops = [c.spec.op for c in net.collectives]
        return net.run({"x": x})["y"], ops

    for y, ops in td.InProcessWorld(n).run(rank_fn):
        assert ops == ([] if n == 1 else ["all_reduce"])  # exactly one all_reduce per block
        close(y, expected, dtype)


def test_attention_pre_sharded_and_separate_qkv_weights():
    n, heads, dh, d, s = 2, 4, 3, 5, 6
    rng = np.random.default_rng(11)
    x = rng.standard_normal((s, d)).astype("float32")
    wq, wk, wv = (rng.standard_normal((d, heads * dh)).astype("float32") for _ in range(3))
    w_out = rng.standard_normal((heads * dh, d)).astype("float32")
    w_qkv = np.concatenate([wq, wk, wv], axis=1)
    expected = ref_mha(x.astype(np.float64), w_qkv, 0.0, w_out, 0.0, heads, True)

    def rank_fn(world):
        r = world.rank
        out = []
        for sharded in (False, True):
            net = td.Network("attn", world=world)
            if sharded:
                args = (P.shard_heads(w_qkv, r, n, heads, parts=3), P.shard_rows(w_out, r, n))
            else:
                args = ((wq, wk, wv), w_out)
            y = P.tensor_parallel_attention(
                net.input("x", (s, d)), *args, num_heads=heads, causal=True, sharded=sharded
            )
            net.output(y, "y")
            out.append(net.run({"x": x})["y"])
        return out

    for ys in td.InProcessWorld(n).run(rank_fn):
        for y in ys:
            close(y, expected, "float32")


def test_errors():
    net = td.Network("e", world=td.StaticWorld(4, 0))
    x = net.input("x", (8, 6))
    with pytest.raises(td.DefinitionError, match="6 heads do not split over 4 ranks"):
        P.tensor_parallel_attention(x, np.ones((6, 36)), np.ones((12, 6)), num_heads=6)
    with pytest.raises(td.DefinitionError, match="unknown activation 'tanh'"):
        P.tensor_parallel_mlp(x, np.ones((6, 8)), np.ones((8, 6)), activation="tanh")
    with pytest.raises(td.DefinitionError, match="b_gate given without w_gate"):
        P.tensor_parallel_mlp(x, np.ones((6, 8)), np.ones((8, 6)), b_gate=np.ones(8))
    with pytest.raises(td.DefinitionError, match="x must be"):
        P.tensor_parallel_attention(
            net.input("v", (6,)), np.ones((6, 24)), np.ones((8, 6)), num_heads=4
        )
