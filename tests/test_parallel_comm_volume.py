"""Communication volume: the closed-form formulas per block and strategy equal the volume
measured from each rank's built network (walking its collective layers)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trtdsl as td
from trtdsl import parallel as P
from trtdsl.ops.collective import COLLECTIVE_OPS

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = st.sampled_from(["float32", "float16"])


def measured(n, build):
    """measure_comm_volume of the network ``build(net)`` defines, on every rank of ``n``."""
    out = []
    for rank in range(n):
        net = td.Network("block", world=td.StaticWorld(n, rank))
        build(net)
        out.append(P.measure_comm_volume(net).total)
    return out


@given(
    n=st.integers(1, 4),
    tokens_per_rank=st.integers(1, 4),
    d_model=st.integers(1, 16),
    hidden_per_rank=st.integers(1, 4),
    reduce=st.sampled_from(["all_reduce", "reduce_scatter"]),
    dtype=DTYPES,
)
@SETTINGS
def test_tp_linear_and_mlp(n, tokens_per_rank, d_model, hidden_per_rank, reduce, dtype):
    tokens, hidden = n * tokens_per_rank, n * hidden_per_rank
    w_up, w_down = np.ones((d_model, hidden)), np.ones((hidden, d_model))

    def column(net):
        x = net.input("x", (tokens, d_model), dtype)
        P.column_parallel_linear(x, w_up, gather_output=True)

    def row(net):
        P.row_parallel_linear(net.input("x", (tokens, hidden // n), dtype), w_down, reduce=reduce)

    def mlp(net):
        x = net.input("x", (tokens, d_model), dtype)
        P.tensor_parallel_mlp(x, w_up, w_down, w_gate=w_up, reduce=reduce)

    kw = {"tokens": tokens, "ranks": n, "dtype": dtype}
    expect_col = P.column_parallel_linear_volume(out_features=hidden, gather_output=True, **kw)
    expect_row = P.row_parallel_linear_volume(out_features=d_model, reduce=reduce, **kw)
    expect_mlp = P.tp_mlp_volume(d_model=d_model, reduce=reduce, **kw)
    assert measured(n, column) == [expect_col] * n
    assert measured(n, row) == [expect_row] * n
    assert measured(n, mlp) == [expect_mlp] * n
    assert expect_mlp.collectives == (n > 1)


@given(
    n=st.integers(1, 4),
    heads_per_rank=st.integers(1, 2),
    head_dim=st.integers(2, 16),
    seq=st.integers(4, 32),
    batch=st.sampled_from([None, 3]),
    causal=st.booleans(),
    dtype=DTYPES,
)
@SETTINGS
def test_tp_attention(n, heads_per_rank, head_dim, seq, batch, causal, dtype):
    heads = n * heads_per_rank
    d_model = heads * head_dim
    lead = (seq,) if batch is None else (batch, seq)

    def attn(net):
        x = net.input("x", lead + (d_model,), dtype)
        w_qkv, w_out = np.ones((d_model, 3 * d_model)), np.ones((d_model, d_model))
        P.tensor_parallel_attention(x, w_qkv, w_out, num_heads=heads, causal=causal)

    tokens = seq * (batch or 1)
    expect = P.tp_attention_volume(tokens=tokens, d_model=d_model, ranks=n, dtype=dtype)
    assert measured(n, attn) == [expect] * n


@st.composite
def cp_case(draw):
    n = draw(st.integers(1, 4))
    strategy = draw(st.sampled_from(["allgather_kv", "ring", "ulysses"]))
    heads = n * draw(st.integers(1, 8 // n)) if strategy == "ulysses" else draw(st.integers(1, 8))
    seq = n * draw(st.integers(-(-4 // n), 32 // n))
    return strategy, n, heads, seq, draw(st.integers(2, 16))


@given(case=cp_case(), causal=st.booleans(), dtype=DTYPES)
@SETTINGS
def test_cp_attention(case, causal, dtype):
    strategy, n, heads, seq, head_dim = case

    def cp(net):
        q = net.input("q", (heads, seq // n, head_dim), dtype)
        P.cp_attention(q, q, q, strategy=strategy, causal=causal)

    expect = P.cp_attention_volume(
        strategy, seq_len=seq, heads=heads, head_dim=head_dim, ranks=n, dtype=dtype, causal=causal
    )
    assert measured(n, cp) == [expect] * n


def test_ring_receives_like_allgather_and_ulysses_less():
    kw = {"seq_len": 4096, "heads": 32, "head_dim": 128, "ranks": 8, "dtype": "float16"}
    ring, ag, uly = (P.cp_attention_volume(s, **kw) for s in ("ring", "allgather_kv", "ulysses"))
    assert ring.received == ag.received == 7 * 2 * 32 * 512 * 128 * 2
    assert uly.received == Fraction(7, 8) * 4 * 32 * 512 * 128 * 2
    assert (ring.collectives, ag.collectives, uly.collectives) == (8, 1, 4)


@pytest.mark.parametrize("op", COLLECTIVE_OPS)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_accounting_conserves_bytes(op, n):
    """Summed over a group, bytes sent equal bytes received, for every op and root."""
    for root in range(n) if op in ("broadcast", "reduce", "gather", "scatter") else [None]:
        vols = [P.collective_volume(op, 24 * n, n, i, root) for i in range(n)]
        assert sum(s for s, _ in vols) == sum(r for _, r in vols)
        if n == 1:
            assert vols == [(0, 0)]


def test_accounting_examples():
    assert P.collective_volume("all_gather", 100, 4, 2) == (300, 300)  # (n-1)/n of the output
    assert P.collective_volume("all_reduce", 100, 4, 0) == (150, 150)
    assert P.collective_volume("broadcast", 100, 4, 1, root=1) == (100, 0)  # root
    assert P.collective_volume("broadcast", 100, 4, 0, root=1) == (0, 100)  # end of the chain
    assert P.collective_volume("scatter", 100, 4, 3, root=0) == (0, 25)
    assert P.collective_volume("gather", 100, 4, 0, root=0) == (0, 300)


def test_report_table_and_measured_rows():
    rows = P.volume_report(seq_lens=[1024, 2048], heads=6, head_dim=64, ranks=4)
    assert {r["block"] for r in rows} == {"tp_mlp", "tp_attention", "cp_allgather_kv", "cp_ring"}
    text = P.format_volume_report(rows)
    assert "cp_ring" in text and "2048" in text
    net = td.Network("ring", world=td.StaticWorld(2, 0))
    q = net.input("q", (2, 4, 8))
    P.RingAttention(causal=True, name="ring")(q, q, q)
    report = P.measure_comm_volume(net)
    assert [c.layer for c in report.layers] == ["ring.broadcast_kv_0", "ring.broadcast_kv_1"]
    assert [(c.sent, c.received) for c in report.layers] == [(512.0, 0.0), (0.0, 512.0)]
    assert "total: 2 collectives" in str(report)


def test_measure_needs_static_shapes():
    net = td.Network("dyn", world=td.StaticWorld(2, 0))
    net.input("x", (None, 4)).all_reduce()
    with pytest.raises(td.DefinitionError, match="dynamic shape"):
        P.measure_comm_volume(net)
