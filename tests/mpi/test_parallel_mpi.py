"""The parallel blocks under ``mpiexec -n N`` (one rank per process, ``MPIWorld()``), checked
against plain NumPy float64 on the full weights / full sequence, as the in-process tests do.

Run: ``mpiexec -n 2 python -m pytest -q -p no:cacheprovider tests/mpi`` (also ``-n 3``,
``-n 4``; as root add ``--oversubscribe`` and OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). Every rank draws from rank 0's seed (no database; see
tests/mpi/conftest.py), so every rank draws the same examples, and each example runs inside
:func:`trtdsl.testing.mpi.together`: a failure on any rank (including one while others wait
in a collective) fails every rank alike.

Tolerances: float32 rtol = atol = 1e-4; float16 rtol = atol = 2e-2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

import trtdsl as td
from trtdsl import parallel as P
from trtdsl.testing import mpi

N = mpi.size()
RANK = mpi.rank()

pytestmark = pytest.mark.mpi

SETTINGS = settings(max_examples=examples(12), print_blob=False)
TOL = {"float32": {"rtol": 1e-4, "atol": 1e-4}, "float16": {"rtol": 2e-2, "atol": 2e-2}}
DTYPES = st.sampled_from(["float32", "float16"])


def world() -> td.MPIWorld:
    return td.MPIWorld(timeout=60.0)


def close(actual, expected, dtype) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **TOL[dtype])


def rounded(rng, shape, dtype, scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    return a, a.astype(np.float64)


def ref_attention(q, k, v, causal, scale):
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


# -- tensor parallel -------------------------------------------------------------------------------


@given(
    tokens_per_rank=st.integers(1, 3),
    d_in=st.integers(1, 8),
    per_rank=st.integers(1, 4),
    reduce=st.sampled_from(["all_reduce", "reduce_scatter"]),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_column_then_row_parallel(tokens_per_rank, d_in, per_rank, reduce, dtype, seed):
    rng = np.random.default_rng(seed)
    tokens, hidden = N * tokens_per_rank, N * per_rank
    x, x64 = rounded(rng, (tokens, d_in), dtype)
    w1, w1_64 = rounded(rng, (d_in, hidden), dtype, 1 / math.sqrt(d_in))
    w2, w2_64 = rounded(rng, (hidden, d_in), dtype, 1 / math.sqrt(hidden))
    b, b64 = rounded(rng, (d_in,), dtype)
    h64 = x64 @ w1_64
    expected = h64 @ w2_64 + b64
    if reduce == "reduce_scatter":
        expected = P.shard_sequence(expected, RANK, N)

    with mpi.together("column_then_row_parallel"):
        net = td.Network("tp", world=world())
        xi = net.input("x", x.shape, dtype)
        h = P.column_parallel_linear(xi, w1)
        net.output(P.gather_features(h), "h")
        net.output(P.row_parallel_linear(h, w2, b, reduce=reduce), "y")
        out = net.run({"x": x})
        close(out["h"], h64, dtype)
        close(out["y"], expected, dtype)


@given(
    tokens=st.integers(1, 6),
    d_model=st.integers(1, 8),
    per_rank=st.integers(1, 4),
    gated=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_tensor_parallel_mlp(tokens, d_model, per_rank, gated, dtype, seed):
    rng = np.random.default_rng(seed)
    hidden = N * per_rank
    x, x64 = rounded(rng, (tokens, d_model), dtype)
    w_up, up64 = rounded(rng, (d_model, hidden), dtype, 1 / math.sqrt(d_model))
    w_gate, gate64 = rounded(rng, (d_model, hidden), dtype, 1 / math.sqrt(d_model))
    w_down, down64 = rounded(rng, (hidden, d_model), dtype, 1 / math.sqrt(hidden))
    if gated:
        z = x64 @ gate64
        h = z / (1 + np.exp(-z)) * (x64 @ up64)
    else:
        h = np.maximum(x64 @ up64, 0)
    expected = h @ down64

    with mpi.together("tensor_parallel_mlp"):
        net = td.Network("mlp", world=world())
        y = P.tensor_parallel_mlp(
            net.input("x", x.shape, dtype),
            w_up,
            w_down,
            w_gate=w_gate if gated else None,
            activation="silu" if gated else "relu",
        )
        net.output(y, "y")
        out = net.run({"x": x})["y"]
        assert [c.spec.op for c in net.collectives] == ["all_reduce"] * (N > 1)
        close(out, expected, dtype)


@given(
    heads_per_rank=st.integers(1, 2),
    head_dim=st.integers(2, 8),
    seq=st.integers(4, 12),
    d_model=st.integers(2, 8),
    causal=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_tensor_parallel_attention(heads_per_rank, head_dim, seq, d_model, causal, dtype, seed):
    rng = np.random.default_rng(seed)
    heads = N * heads_per_rank
    width = heads * head_dim
    x, x64 = rounded(rng, (seq, d_model), dtype)
    w_qkv, wqkv64 = rounded(rng, (d_model, 3 * width), dtype, 1 / math.sqrt(d_model))
    w_out, wout64 = rounded(rng, (width, d_model), dtype, 1 / math.sqrt(width))
    q, k, v = (
        t.reshape(seq, heads, head_dim).transpose(1, 0, 2) for t in np.split(x64 @ wqkv64, 3, 1)
    )
    o = ref_attention(q, k, v, causal, 1 / math.sqrt(head_dim))
    expected = o.transpose(1, 0, 2).reshape(seq, width) @ wout64

    with mpi.together("tensor_parallel_attention"):
        net = td.Network("attn", world=world())
        y = P.tensor_parallel_attention(
            net.input("x", x.shape, dtype), w_qkv, w_out, num_heads=heads, causal=causal
        )
        net.output(y, "y")
        out = net.run({"x": x})["y"]
        assert [c.spec.op for c in net.collectives] == ["all_reduce"] * (N > 1)
        close(out, expected, dtype)


# -- context parallel ------------------------------------------------------------------------------


@given(
    strategy=st.sampled_from(["allgather_kv", "ring", "ulysses"]),
    heads_per_rank=st.integers(1, 2),
    s_local=st.integers(2, 8),
    head_dim=st.integers(2, 16),
    causal=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_cp_attention(strategy, heads_per_rank, s_local, head_dim, causal, dtype, seed):
    rng = np.random.default_rng(seed)
    heads, seq = N * heads_per_rank, N * s_local
    full = [rounded(rng, (heads, seq, head_dim), dtype) for _ in range(3)]
    expected = ref_attention(*(a64 for _, a64 in full), causal, head_dim**-0.5)
    formula = P.cp_attention_volume(
        strategy, seq_len=seq, heads=heads, head_dim=head_dim, ranks=N, dtype=dtype
    )

    with mpi.together("cp_attention"):
        net = td.Network("cp", world=world())
        ins = [net.input(n, (heads, s_local, head_dim), dtype) for n in "qkv"]
        net.output(P.cp_attention(*ins, strategy=strategy, causal=causal), "o")
        feeds = {n: P.shard_sequence(a, RANK, N, axis=1) for n, (a, _) in zip("qkv", full)}
        out = net.run(feeds)["o"]
        close(out, P.shard_sequence(expected, RANK, N, axis=1), dtype)
        assert P.measure_comm_volume(net).total == formula


def test_definition_errors_on_every_rank():
    with mpi.together("definition errors"):
        net = td.Network("e", world=world())
        if N > 1:
            q = net.input("q", (2 * N - 1, 4, 8))  # heads not divisible by N
            with pytest.raises(td.DefinitionError, match="heads do not split"):
                P.UlyssesAttention()(q, q, q)
            with pytest.raises(td.DefinitionError, match="heads do not split"):
                P.tensor_parallel_attention(
                    net.input("x", (4, 8)), np.ones((8, 24)), np.ones((8, 8)), num_heads=2 * N - 1
                )
        q = net.input("q2", (2, 4, 8))
        with pytest.raises(td.DefinitionError, match="unknown context-parallel strategy"):
            P.cp_attention(q, q, q, strategy="ringg")
        with pytest.raises(td.DefinitionError, match="evenly over"):
            P.shard_sequence(np.zeros((2, 2 * N + 1, 4)), RANK, 2 * N, axis=1)
