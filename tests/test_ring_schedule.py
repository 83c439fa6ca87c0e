"""Ring attention's schedule and stream program (trtdsl/backends/ring_schedule.py), pure logic.

- The steps against a brute-force causal mask: over all steps, every (query row, key) pair a
  query may see is computed exactly once, a pair is left out only when no key of it is
  visible, and ``masked`` is set exactly when the pair holds an invisible key. Token positions
  come from ``shard_sequence`` of ``arange(S)``, not from the schedule.
- The stream program against a happens-before (vector clock) model of two streams and events:
  no two accesses of one buffer from different streams (one a write) are unordered, over two
  consecutive calls; every step attends the block it should hold (buffer contents simulated
  through the ring); events are waited only after being recorded in the same call (what a
  CUDA graph capture needs); everything on the comm stream is joined before the output.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trtdsl import parallel as P
from trtdsl.backends.ring_schedule import (
    Attend,
    Finish,
    Pack,
    Piece,
    Record,
    SendRecv,
    Wait,
    plan_events,
    query_pieces,
    ring_plan,
    ring_sources,
    ring_steps,
)

SETTINGS = settings(max_examples=150, deadline=None, database=None)


def positions(rank: int, n: int, s: int, layout: str) -> np.ndarray:
    """Global positions of a rank's local rows (independent of the schedule)."""
    return P.shard_sequence(np.arange(n * s), rank, n, axis=0, layout=layout)


@st.composite
def layouts(draw):
    n = draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["contiguous", "zigzag"]))
    unit = 2 if layout == "zigzag" else 1
    s = unit * draw(st.integers(1, 6))
    q_chunk = draw(st.one_of(st.none(), st.integers(1, s + 1)))
    return n, s, layout, q_chunk


@given(case=layouts(), causal=st.booleans(), ring=st.booleans(), data=st.data())
@SETTINGS
def test_steps_cover_every_visible_pair_once(case, causal, ring, data):
    n, s, layout, q_chunk = case
    me = data.draw(st.integers(0, n - 1))
    segments = [P.sequence_segments(j, n, n * s, layout) for j in range(n)]
    pieces = query_pieces(segments[me], q_chunk)
    # the pieces tile the local rows, in order, with the rows' global positions
    pos_q = positions(me, n, s, layout)
    assert sum(p.length for p in pieces) == s
    for a, b in zip(pieces, pieces[1:]):
        assert b.local == a.local + a.length
    for p in pieces:
        assert list(pos_q[p.local : p.local + p.length]) == list(range(p.start, p.start + p.length))
        assert q_chunk is None or p.length <= q_chunk
    sources = ring_sources(me, n) if ring else list(range(n))
    assert sorted(sources) == list(range(n)) and sources[0] == (me if ring else 0)
    steps = ring_steps(pieces, segments, sources, causal)
    covered = np.zeros((s, n * s), int)
    visible = np.arange(n * s)[None, :] <= pos_q[:, None] if causal else np.ones((s, n * s), bool)
    for t, step in enumerate(steps):
        assert step.t == t and step.source == sources[t]
        pos_k = positions(step.source, n, s, layout)
        for w in step.work:
            p = pieces[w.piece]
            cols = pos_k[w.k_local : w.k_local + w.k_len]
            assert list(cols) == list(range(w.k_start, w.k_start + w.k_len))
            assert (w.k_start, w.k_len) == segments[step.source][w.k_seg]
            rect = visible[p.local : p.local + p.length][:, cols]
            assert rect.any(), "a pair with no visible key was computed"
            assert w.masked == (not rect.all()), "masked must say: some key is not visible"
            covered[p.local : p.local + p.length, cols] += 1
        assert [(w.piece, w.k_seg) for w in step.work] == sorted(
            (w.piece, w.k_seg) for w in step.work
        )
    assert (covered[visible] == 1).all(), "a visible pair computed other than once"
    assert (covered[~visible] <= 1).all()
    # the causal work of zigzag is the same on every rank (what the layout is for)
    if causal and layout == "zigzag" and q_chunk is None:
        assert len({work_area(r, segments) for r in range(n)}) == 1


def work_area(rank: int, segments) -> int:
    """Query rows x keys of the blocks a rank computes (causal)."""
    pcs = query_pieces(segments[rank])
    steps = ring_steps(pcs, segments, ring_sources(rank, len(segments)), True)
    return sum(pcs[w.piece].length * w.k_len for step in steps for w in step.work)


def test_query_pieces_and_sources_examples():
    assert query_pieces([(8, 5)], 2) == [Piece(8, 2, 0), Piece(10, 2, 2), Piece(12, 1, 4)]
    assert query_pieces([(0, 2), (6, 2)]) == [Piece(0, 2, 0), Piece(6, 2, 2)]
    assert ring_sources(0, 3) == [0, 2, 1] and ring_sources(2, 3) == [2, 1, 0]


# -- the stream program -------------------------------------------------------------------------
def accesses(op) -> list[tuple[str, int]]:
    """(kind, buffer) of each buffer access an op makes, from its meaning."""
    if isinstance(op, Pack):
        return [("w", op.buf)]
    if isinstance(op, SendRecv):
        return [("r", op.send), ("w", op.recv)]
    if isinstance(op, Attend):
        return [("r", op.buf)]
    return []


def vector_clocks(ops) -> list[dict[str, int]]:
    """Each op's vector clock under: program order per stream, and a Wait makes its stream
    see what the latest earlier Record of the event saw."""
    clock = {"compute": {"compute": 0, "comm": 0}, "comm": {"compute": 0, "comm": 0}}
    recorded: dict[str, dict[str, int]] = {}
    out = []
    for op in ops:
        s = op.stream
        clock[s][s] += 1
        if isinstance(op, Wait):
            seen = recorded[op.event]
            clock[s] = {k: max(clock[s][k], seen[k]) for k in clock[s]}
        if isinstance(op, Record):
            recorded[op.event] = dict(clock[s])
        out.append(dict(clock[s]))
    return out


def happens_before(ops, clocks, a: int, b: int) -> bool:
    return clocks[a][ops[a].stream] <= clocks[b][ops[a].stream]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("mode", ["ring", "compute", "comm"])
def test_plan_orders_every_buffer_access(n, causal, layout, mode):
    s = 4
    segments = [P.sequence_segments(j, n, n * s, layout) for j in range(n)]
    for me in range(n):
        steps = ring_steps(query_pieces(segments[me]), segments, ring_sources(me, n), causal)
        plan = ring_plan(steps, compute=mode != "comm", comm=mode != "compute")
        calls = plan + plan  # two calls in a row: the second reuses the buffers and events
        clocks = vector_clocks(calls)
        # no data race between the streams
        for b in range(len(calls)):
            for a in range(b):
                if calls[a].stream == calls[b].stream:
                    continue
                for ka, ba in accesses(calls[a]):
                    for kb, bb in accesses(calls[b]):
                        if ba == bb and "w" in (ka, kb):
                            assert happens_before(calls, clocks, a, b), (a, calls[a], b, calls[b])
        # every wait follows a record of its event in the same call (capturable)
        for op_i, op in enumerate(plan):
            if isinstance(op, Wait):
                assert any(isinstance(r, Record) and r.event == op.event for r in plan[:op_i]), op
        # the comm stream is joined before the output is made
        fin = max(i for i, op in enumerate(plan) if isinstance(op, Finish))
        assert fin == len(plan) - 1
        for i, op in enumerate(plan):
            if op.stream == "comm":
                assert happens_before(plan, clocks, i, fin)
        # what each buffer holds, through the ring: every step attends its source's block
        held = {0: None, 1: None}
        attended, exchanges = [], 0
        for op in plan:
            if isinstance(op, Pack):
                held[op.buf] = me
            elif isinstance(op, SendRecv):
                assert held[op.send] is not None
                held[op.recv] = (held[op.send] - 1) % n  # what the previous member sends now
                exchanges += 1
            elif isinstance(op, Attend):
                if mode != "compute":
                    assert held[op.buf] == op.step.source
                attended.append(op.step.t)
        assert exchanges == (0 if mode == "compute" else n - 1)
        want = [] if mode == "comm" else [st.t for st in steps if st.work]
        assert attended == want
        assert set(plan_events(plan)) <= {"start", "free0", "free1", "recv0", "recv1", "done"}


def test_vector_clock_model_catches_a_missing_wait():
    """The checker above can fail: without the comm stream's wait for 'free', step 1's receive
    overwrites the buffer that step 0's attention may still read."""
    segments = [[(0, 2)], [(2, 2)], [(4, 2)]]
    steps = ring_steps(query_pieces(segments[0]), segments, ring_sources(0, 3), False)
    plan = [op for op in ring_plan(steps) if not (isinstance(op, Wait) and op.event == "free0")]
    clocks = vector_clocks(plan)
    attend0 = next(i for i, op in enumerate(plan) if isinstance(op, Attend) and op.step.t == 0)
    recv_into_0 = next(i for i, op in enumerate(plan) if isinstance(op, SendRecv) and op.recv == 0)
    assert not happens_before(plan, clocks, attend0, recv_into_0)
