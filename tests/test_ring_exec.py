"""The Ring-attention executor (trtdsl/backends/ring_exec.py) on the CPU: NumPy arrays, no-op
events and a threaded send/recv (every rank's block goes through ``world.exchange`` of an
InProcessWorld; a rank takes the one its predecessor in the group sent it, checking it was
addressed to it), against softmax attention over the whole sequence in float64.

The executor is the one the cupy backend runs (with CuPy, CUDA events, NCCL and the Triton
kernels plugged in instead), so this checks the ring's indexing, buffers, merges, groups and
layouts before a GPU does; and the region plumbing: ``Program(net, fusions=...)`` running the
``ring_attention`` region of ``cp_attention(strategy="ring")`` as one step.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trtdsl as td
from trtdsl import parallel as P
from trtdsl.backends.interpreter import Program, RunContext
from trtdsl.backends.ring_exec import (
    ReferenceBlockOps,
    RingFusion,
    RingRunner,
    SyncStreams,
    region_schedule,
)
from trtdsl.errors import CollectiveMismatchError, ExecutionError, TrtDslError

SETTINGS = settings(max_examples=40, deadline=None, database=None)
TOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 6e-2}


def ref_attention(q, k, v, causal, scale):
    """[H, S, Dh] float64, max subtracted; causal: key j visible to query i iff j <= i."""
    s = np.einsum("hqd,hkd->hqk", q, k) * scale
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.einsum("hqk,hkd->hqd", p / p.sum(axis=-1, keepdims=True), v)


class ExchangeTransport:
    """Send/recv between threads of an InProcessWorld: one exchange per ring step."""

    def __init__(self, world, spec) -> None:
        self.world, self.spec = world, spec
        self.calls = 0

    def sendrecv(self, send, recv, to, source):
        group = self.spec.group
        me = group.index(self.world.rank)
        got = self.world.exchange((group, me, to, send.copy()), "ring sendrecv", key="ring")
        g, sender, dest, block = got[group[source]]
        assert g == group and sender == source and dest == me, (g, sender, dest, me)
        assert recv is not send
        recv[...] = block
        self.calls += 1


class NumpyDevice:
    def __init__(self) -> None:
        self.transports: list[ExchangeTransport] = []

    def array_module(self, ctx):
        return np

    def streams(self, events):
        return SyncStreams()

    def transport(self, world, spec):
        t = ExchangeTransport(world, spec)
        self.transports.append(t)
        return t

    def block_ops(self, ctx):
        return ReferenceBlockOps(np, np.matmul)


def build(world, shape, dtype, causal, layout, groups=None, scale=None, name=None):
    net = td.Network("ring", world=world)
    ins = [net.input(nm, shape, dtype) for nm in "qkv"]
    out = P.cp_attention(
        *ins, strategy="ring", causal=causal, layout=layout, groups=groups, scale=scale, name=name
    )
    net.output(out, "o")
    return net


def run_fused(n, q, k, v, causal, layout, dtype, groups=None, scale=None):
    """Every rank builds the ring network and runs its program with the fusion; returns
    (fused output, unfused numpy-backend output, program) per rank."""
    gsize = n if groups is None else len(groups[0])

    def rank_fn(world):
        idx = world.rank % gsize if groups is not None else world.rank
        h, s_all, dh = q.shape
        net = build(world, (h, s_all // gsize, dh), dtype, causal, layout, groups, scale)
        feeds = {
            nm: P.shard_sequence(a, idx, gsize, axis=1, layout=layout)
            for nm, a in zip("qkv", (q, k, v))
        }
        program = Program(net, fusions={"ring_attention": RingFusion(NumpyDevice)})
        fused = program.execute(RunContext(net, feeds, world))["o"]
        again = program.execute(RunContext(net, feeds, world), check=False)["o"]  # reused buffers
        np.testing.assert_array_equal(fused, again)
        return fused, net.run(feeds)["o"], program

    return td.InProcessWorld(n).run(rank_fn)


@given(
    n=st.integers(2, 4),
    heads=st.integers(1, 3),
    chunks=st.integers(1, 3),
    head_dim=st.sampled_from([2, 4, 8]),
    causal=st.booleans(),
    zigzag=st.booleans(),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_fused_ring_matches_full_attention(n, heads, chunks, head_dim, causal, zigzag, dtype, seed):
    layout = "zigzag" if zigzag else "contiguous"
    seq = n * chunks * (2 if zigzag else 1)
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((heads, seq, head_dim)).astype(dtype) for _ in range(3))
    want = ref_attention(*(a.astype(np.float64) for a in (q, k, v)), causal, head_dim**-0.5)
    results = run_fused(n, q, k, v, causal, layout, dtype)
    fused = P.unshard([r[0] for r in results], axis=1, layout=layout)
    graph = P.unshard([r[1] for r in results], axis=1, layout=layout)
    assert fused.dtype == np.dtype(dtype) and fused.shape == q.shape
    tol = TOL[dtype]
    np.testing.assert_allclose(fused.astype(np.float64), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(fused.astype(np.float64), graph.astype(np.float64), rtol=tol,
                               atol=tol)  # fmt: skip
    for _, _, program in results:  # one fused step, no broadcast left
        assert [lay.op.name for lay, *_ in program.steps].count("fused_ring_attention") == 1
        assert not any(lay.op.is_collective for lay, *_ in program.steps)
        assert program.notes == []


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
def test_within_groups(causal, layout):
    """Two rings of 2 in a world of 4 (groups [[0, 1], [2, 3]]) on different sequences."""
    rng = np.random.default_rng(3)
    heads, seq, dh = 2, 8, 4
    seqs = [[rng.standard_normal((heads, seq, dh)).astype("float32") for _ in range(3)]
            for _ in range(2)]  # fmt: skip
    groups = [[0, 1], [2, 3]]

    def rank_fn(world):
        g, idx = world.rank // 2, world.rank % 2
        net = build(world, (heads, seq // 2, dh), "float32", causal, layout, groups, scale=0.7)
        feeds = {
            nm: P.shard_sequence(a, idx, 2, axis=1, layout=layout) for nm, a in zip("qkv", seqs[g])
        }
        program = Program(net, fusions={"ring_attention": RingFusion(NumpyDevice)})
        return program.execute(RunContext(net, feeds, world))["o"]

    outs = td.InProcessWorld(4).run(rank_fn)
    for g in range(2):
        want = ref_attention(*seqs[g], causal, 0.7)
        got = P.unshard(outs[2 * g : 2 * g + 2], axis=1, layout=layout)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_large_scores_merge_without_overflow():
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 16, 8)).astype("float32") * 10 for _ in range(3))
    want = ref_attention(q, k, v, True, 1.5)
    res = run_fused(4, q, k, v, True, "zigzag", "float32", scale=1.5)
    out = P.unshard([r[0] for r in res], axis=1, layout="zigzag")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3)


def test_runner_sends_n_minus_1_blocks_and_modes():
    """N-1 exchanges per call; "compute" sends nothing, "comm" computes nothing."""
    devices = {}

    def rank_fn(world):
        net = build(world, (1, 4, 4), "float32", True, "contiguous")
        dev = devices[world.rank] = NumpyDevice()
        runner = RingRunner(net.regions[0], dev)
        x = np.ones((1, 4, 4), "float32")
        ctx = RunContext(net, {}, world)
        out = runner.run(x, x, x, ctx, check=True)
        runner.run(x, x, x, ctx, mode="compute")
        runner.run(x, x, x, ctx, mode="comm")
        with pytest.raises(ValueError, match="mode"):
            runner.run(x, x, x, ctx, mode="both")
        return out, [t.calls for t in dev.transports]

    res = td.InProcessWorld(3).run(rank_fn)
    for out, calls in res:
        np.testing.assert_allclose(out, 1.0)
        assert calls == [2, 0, 2]


class RecordingOps(ReferenceBlockOps):
    """The reference ops, recording each ``attend_into`` (the state's identity, shape, dtype,
    the query rows' offset and ``first``); ``attend``/``merge`` are only reached through it."""

    def __init__(self) -> None:
        super().__init__(np, np.matmul)
        self.calls: list[tuple] = []

    def attend_into(self, acc_o, acc_lse, q, k, v, *, first, **kw):
        entry = (id(acc_o), id(acc_lse), acc_o.shape, acc_lse.shape, acc_o.dtype, acc_lse.dtype)
        self.calls.append(entry + (q.shape, kw["q_offset"], first))
        super().attend_into(acc_o, acc_lse, q, k, v, first=first, **kw)


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
def test_runner_accumulates_each_piece_into_one_float32_state_per_call(layout):
    """``attend_into`` with ``first`` once per query piece and call, then into the same float32
    (o, lse) for the piece's other blocks; the result still right."""
    n, heads, seq, dh = 3, 2, 12, 4
    rng = np.random.default_rng(9)
    q, k, v = (rng.standard_normal((heads, seq, dh)).astype("float16") for _ in range(3))

    def rank_fn(world):
        net = build(world, (heads, seq // n, dh), "float16", True, layout)
        ops = RecordingOps()
        dev = NumpyDevice()
        dev.block_ops = lambda ctx: ops
        runner = RingRunner(net.regions[0], dev)
        feeds = [P.shard_sequence(a, world.rank, n, axis=1, layout=layout) for a in (q, k, v)]
        ctx = RunContext(net, {}, world)
        per_call = []
        for _ in range(2):
            ops.calls.clear()
            out = runner.run(*feeds, ctx, check=True)
            per_call.append(list(ops.calls))
        work = sum(len(step.work) for step in runner.steps)
        return out, per_call, len(runner.pieces), work

    results = td.InProcessWorld(n).run(rank_fn)
    want = ref_attention(*(a.astype(np.float64) for a in (q, k, v)), True, dh**-0.5)
    got = P.unshard([r[0] for r in results], axis=1, layout=layout)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-2, atol=1e-2)
    for _, per_call, pieces, work in results:
        for calls in per_call:
            assert len(calls) == work and sum(c[-1] for c in calls) == pieces
            written: dict[tuple, tuple] = {}  # state -> (q rows' shape, offset) of its piece
            for o_id, l_id, o_shape, l_shape, o_dt, l_dt, q_shape, q_off, first in calls:
                key = (o_id, l_id)
                if first:  # written once, by the piece's first block
                    assert key not in written
                    written[key] = (q_shape, q_off)
                else:  # merged into after that, by blocks of the same piece
                    assert written.get(key) == (q_shape, q_off)
                assert o_shape == q_shape and l_shape == q_shape[:-1]
                assert o_dt == l_dt == np.float32
            assert len(written) == pieces


def test_region_records_the_schedule_inputs():
    def rank_fn(world):
        net = build(world, (2, 4, 8), "float16", True, "zigzag", name="attn")
        (region,) = net.regions
        assert region.kind == "ring_attention" and region.name == "attn"
        assert [t.name for t in region.inputs] == ["q", "k", "v"]
        assert region.outputs == (net.outputs["o"],)
        assert region.layers[0].name == "attn.pack_kv" and region.layers[-1].name == "attn.cast_out"
        p = region.params
        assert (p["index"], p["size"], p["causal"], p["layout"]) == (world.rank, 2, True, "zigzag")
        assert p["segments"] == [P.sequence_segments(j, 2, 8, "zigzag") for j in range(2)]
        index, size, steps = region_schedule(region)
        assert (index, size, [s.source for s in steps]) == (
            world.rank,
            2,
            [world.rank, 1 - world.rank],
        )
        return True

    assert td.InProcessWorld(2).run(rank_fn) == [True, True]


def test_no_region_without_a_ring():
    """No world, or a group of one: plain attention, no region to fuse."""
    net = td.Network("one")
    x = net.input("x", (1, 4, 8))
    net.output(P.cp_attention(x, x, x, strategy="ring"), "o")
    assert net.regions == []

    def rank_fn(world):
        return build(world, (1, 4, 8), "float32", True, "contiguous", groups=[[0], [1]]).regions

    assert td.InProcessWorld(2).run(rank_fn) == [[], []]


# -- errors --------------------------------------------------------------------------------------
def test_ranks_that_disagree_on_the_block_fail_instead_of_hanging():
    def rank_fn(world):
        heads = 2 if world.rank == 0 else 3
        net = build(world, (heads, 4, 4), "float32", False, "contiguous")
        x = np.ones((heads, 4, 4), "float32")
        program = Program(net, fusions={"ring_attention": RingFusion(NumpyDevice)})
        return program.execute(RunContext(net, {"q": x, "k": x, "v": x}, world))

    with pytest.raises(CollectiveMismatchError, match="disagree"):
        td.InProcessWorld(2).run(rank_fn)


def test_a_rank_that_runs_the_broadcasts_instead_is_reported():
    def rank_fn(world):
        net = build(world, (1, 4, 4), "float32", False, "contiguous")
        x = np.ones((1, 4, 4), "float32")
        fusions = {"ring_attention": RingFusion(NumpyDevice)} if world.rank == 0 else {}
        return Program(net, fusions=fusions).execute(RunContext(net, dict(q=x, k=x, v=x), world))

    with pytest.raises(TrtDslError, match="every rank must run it alike"):
        td.InProcessWorld(2).run(rank_fn)


def test_runner_refuses_other_regions_and_other_ranks():
    net = td.Network("n", world=td.StaticWorld(2, 0))
    x = net.input("x", (1, 4, 4))
    region = net.add_region("double", [x], [x + x], since=1)
    with pytest.raises(ExecutionError, match="not ring_attention"):
        RingRunner(region, NumpyDevice())
    net = build(td.StaticWorld(2, 0), (1, 4, 4), "float32", False, "contiguous")
    runner = RingRunner(net.regions[0], NumpyDevice())
    x = np.ones((1, 4, 4), "float32")
    with pytest.raises(ExecutionError, match="built for group index 0"):
        runner.run(x, x, x, RunContext(net, {}, td.StaticWorld(2, 1)))
    fake = td.Network("f", world=td.StaticWorld(2, 0))
    y = fake.input("y", (2,))
    bare = fake.add_region("ring_attention", [y], [y * 2.0], since=1, params=net.regions[0].params)
    with pytest.raises(ExecutionError, match="no collective"):
        RingRunner(bare, NumpyDevice())
