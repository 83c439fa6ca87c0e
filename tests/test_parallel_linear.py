"""Sharding helpers and tensor-parallel linear layers, on 1-4 simulated ranks.

Expected values are plain NumPy float64 on one rank with the full weights (inputs rounded to
the tested dtype first). Tolerances: float32 rtol = atol = 1e-4; float16 rtol = atol = 2e-2;
bfloat16 rtol = atol = 6e-2 (results of matmuls over <= 32 features, rounded to the 16-bit type
at each layer, values O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import PARALLEL_DTYPES, PARALLEL_SETTINGS, PARALLEL_TOL

import trtdsl as td
from trtdsl import parallel as P

SETTINGS, TOL, DTYPES = PARALLEL_SETTINGS, PARALLEL_TOL, PARALLEL_DTYPES
RANKS = st.integers(1, 4)


def rounded(rng: np.random.Generator, shape: tuple, dtype: str, scale: float = 1.0):
    """Random data in ``dtype`` and its exact float64 value."""
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    return a, a.astype(np.float64)


def close(actual, expected, dtype: str) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **TOL[dtype])


# -- sharding helpers ---------------------------------------------------------------------------


@given(n=RANKS, rows=st.integers(1, 4), cols=st.integers(1, 4), seed=st.integers(0, 2**16))
@SETTINGS
def test_shard_helpers_partition_the_array(n, rows, cols, seed):
    w = np.random.default_rng(seed).standard_normal((rows * n, cols * n))
    c = [P.shard_columns(w, r, n) for r in range(n)]
    assert all(s.shape == (rows * n, cols) and s.flags.c_contiguous for s in c)
    np.testing.assert_array_equal(P.unshard(c, axis=1), w)
    np.testing.assert_array_equal(P.unshard([P.shard_rows(w, r, n) for r in range(n)], 0), w)
    seq = [P.shard_sequence(w, r, n, axis=1) for r in range(n)]
    np.testing.assert_array_equal(seq[-1], w[:, (n - 1) * cols :])


@given(n=RANKS, hl=st.integers(1, 2), dh=st.integers(1, 3), seed=st.integers(0, 2**16))
@SETTINGS
def test_shard_heads_keeps_each_parts_heads(n, hl, dh, seed):
    heads, d = n * hl, 5
    w = np.random.default_rng(seed).standard_normal((d, 3 * heads * dh))
    for r in range(n):
        got = P.shard_heads(w, r, n, heads, parts=3)
        for p in range(3):
            lo = p * heads * dh + r * hl * dh
            np.testing.assert_array_equal(
                got[:, p * hl * dh : (p + 1) * hl * dh], w[:, lo : lo + hl * dh]
            )
    wo = np.random.default_rng(seed).standard_normal((heads * dh, d))
    np.testing.assert_array_equal(
        P.shard_heads(wo, n - 1, n, heads, axis=0), P.shard_rows(wo, n - 1, n)
    )


def test_shard_errors_are_clear():
    with pytest.raises(td.DefinitionError, match=r"cannot split axis 1 .* \(10\) evenly over 4"):
        P.shard_columns(np.ones((3, 10)), 0, 4)
    with pytest.raises(td.DefinitionError, match="cannot split axis 0"):
        P.shard_rows(np.ones((5, 4)), 0, 2)
    with pytest.raises(td.DefinitionError, match="cannot split 6 attention heads over 4"):
        P.shard_heads(np.ones((4, 3 * 6 * 2)), 0, 4, 6, parts=3)
    with pytest.raises(td.DefinitionError, match="not 3 part"):
        P.shard_heads(np.ones((4, 10)), 0, 2, 2, parts=3)
    with pytest.raises(td.DefinitionError, match="sequence"):
        P.shard_sequence(np.ones((2, 7, 4)), 1, 2, axis=1)
    with pytest.raises(td.DefinitionError, match="rank must be"):
        P.shard_columns(np.ones((2, 4)), 2, 2)
    with pytest.raises(ValueError):  # DefinitionError is a ValueError
        P.shard_rows(np.ones(4), 0, 2)


# -- column-parallel ------------------------------------------------------------------------------


@given(
    n=RANKS,
    tokens=st.integers(1, 6),
    batch=st.sampled_from([None, 2]),
    d_in=st.integers(1, 16),
    out_per_rank=st.integers(1, 6),
    bias=st.booleans(),
    gather=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_column_parallel_linear(n, tokens, batch, d_in, out_per_rank, bias, gather, dtype, seed):
    rng = np.random.default_rng(seed)
    lead = (tokens,) if batch is None else (batch, tokens)
    d_out = n * out_per_rank
    x, x64 = rounded(rng, lead + (d_in,), dtype)
    w, w64 = rounded(rng, (d_in, d_out), dtype, 1 / np.sqrt(d_in))
    b, b64 = rounded(rng, (d_out,), dtype)
    expected = x64 @ w64 + (b64 if bias else 0.0)

    def rank_fn(world):
        net = td.Network("col", world=world)
        xi = net.input("x", x.shape, dtype)
        y = P.column_parallel_linear(xi, w, b if bias else None, gather_output=gather)
        net.output(y, "y")
        ops = [c.spec.op for c in net.collectives]
        return net.run({"x": x})["y"], ops

    for r, (y, ops) in enumerate(td.InProcessWorld(n).run(rank_fn)):
        if gather:
            close(y, expected, dtype)
            assert ops == ([] if n == 1 else ["all_gather"])
        else:
            close(y, expected[..., r * out_per_rank : (r + 1) * out_per_rank], dtype)
            assert ops == []


@pytest.mark.parametrize("as_tensor", [False, True])
def test_column_parallel_takes_pre_sharded_weights(as_tensor):
    n, rng = 3, np.random.default_rng(1)
    x = rng.standard_normal((4, 5)).astype("float32")
    w = rng.standard_normal((5, 6)).astype("float32")
    b = rng.standard_normal(6).astype("float32")

    def rank_fn(world):
        net = td.Network("col", world=world)
        ws, bs = P.shard_columns(w, world.rank, n), P.shard_columns(b, world.rank, n)
        if as_tensor:
            ws, bs = net.constant(ws), net.constant(bs)
        y = P.column_parallel_linear(net.input("x", (4, 5)), ws, bs, sharded=True)
        net.output(P.gather_features(y), "y")
        return net.run({"x": x})["y"]

    for y in td.InProcessWorld(n).run(rank_fn):
        close(y, x.astype(np.float64) @ w + b, "float32")


# -- row-parallel ---------------------------------------------------------------------------------


@given(
    n=RANKS,
    tokens_per_rank=st.integers(1, 4),
    in_per_rank=st.integers(1, 8),
    d_out=st.integers(1, 12),
    bias=st.booleans(),
    reduce=st.sampled_from(["all_reduce", "reduce_scatter"]),
    parallel_input=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_row_parallel_linear(
    n, tokens_per_rank, in_per_rank, d_out, bias, reduce, parallel_input, dtype, seed
):
    rng = np.random.default_rng(seed)
    tokens, d_in = n * tokens_per_rank, n * in_per_rank
    x, x64 = rounded(rng, (tokens, d_in), dtype)
    w, w64 = rounded(rng, (d_in, d_out), dtype, 1 / np.sqrt(d_in))
    b, b64 = rounded(rng, (d_out,), dtype)
    expected = x64 @ w64 + (b64 if bias else 0.0)

    def rank_fn(world):
        net = td.Network("row", world=world)
        r = world.rank
        feed = P.shard_columns(x, r, n) if parallel_input else x
        xi = net.input("x", feed.shape, dtype)
        y = P.row_parallel_linear(
            xi, w, b if bias else None, reduce=reduce, input_is_parallel=parallel_input
        )
        net.output(y, "y")
        ops = [c.spec.op for c in net.collectives]
        return net.run({"x": feed})["y"], ops

    for r, (y, ops) in enumerate(td.InProcessWorld(n).run(rank_fn)):
        assert ops == ([] if n == 1 else [reduce])
        if reduce == "reduce_scatter":
            close(y, expected[r * tokens_per_rank : (r + 1) * tokens_per_rank], dtype)
        else:
            close(y, expected, dtype)


def test_column_then_row_within_groups():
    """Two tensor-parallel groups of 2 in a world of 4 (e.g. TP x DP): each group computes
    its own input's MLP-like product."""
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((2, 3, 8)).astype("float32")  # one input per group
    w1 = rng.standard_normal((8, 6)).astype("float32")
    w2 = rng.standard_normal((6, 4)).astype("float32")
    groups = [[0, 1], [2, 3]]

    def rank_fn(world):
        net = td.Network("tpdp", world=world)
        x = net.input("x", (3, 8))
        h = P.column_parallel_linear(x, w1, groups=groups).relu()
        net.output(P.row_parallel_linear(h, w2, groups=groups), "y")
        return net.run({"x": xs[world.rank // 2]})["y"]

    for r, y in enumerate(td.InProcessWorld(4).run(rank_fn)):
        x64 = xs[r // 2].astype(np.float64)
        close(y, np.maximum(x64 @ w1, 0) @ w2, "float32")


def test_without_a_world_the_blocks_are_plain_layers():
    net = td.Network("plain")
    x = net.input("x", (2, 4))
    w1, w2 = np.full((4, 6), 0.5), np.full((6, 3), 0.25)
    y = P.row_parallel_linear(P.column_parallel_linear(x, w1, gather_output=True), w2)
    net.output(y, "y")
    assert net.collectives == []
    np.testing.assert_allclose(net.run({"x": np.ones((2, 4), "float32")})["y"], 3.0)


def test_linear_errors():
    net = td.Network("e", world=td.StaticWorld(4, 1))
    x = net.input("x", (6, 8))
    with pytest.raises(td.DefinitionError, match="sharded=True"):
        P.column_parallel_linear(x, net.constant(np.ones((8, 4), "float32")))
    with pytest.raises(td.DefinitionError, match="cannot split axis 1 .* over 4 ranks"):
        P.column_parallel_linear(x, np.ones((8, 6)))
    with pytest.raises(td.DefinitionError, match="reduce must be one of"):
        P.row_parallel_linear(x, np.ones((32, 4)), reduce="all_gather")
    with pytest.raises(td.DefinitionError, match="reduce_scatter splits 6 tokens"):
        P.row_parallel_linear(x, np.ones((32, 4)), reduce="reduce_scatter")
    with pytest.raises(td.DefinitionError, match="inner dimensions differ"):
        P.row_parallel_linear(x, np.ones((8, 4)))  # full weight: 8 rows -> 2 per rank
    with pytest.raises(td.DefinitionError, match="weight must be"):
        P.column_parallel_linear(x, np.ones((8, 4, 1)), sharded=True)
    with pytest.raises(td.DefinitionError, match="not a partition"):
        P.column_parallel_linear(x, np.ones((8, 4)), groups=[[0, 1]])
