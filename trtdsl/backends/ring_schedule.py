"""Ring attention's schedule, as pure data: which query piece meets which key segment at each
step (with its causal offsets, pairs with no visible key left out), and the stream program of
one call of a real ring (double-buffered K/V, NCCL send/recv on a communication stream, CUDA
events ordering it with the compute stream).

Shared by the broadcast graph (``trtdsl.parallel.RingAttention``: step ``t`` uses rank ``t``'s
block) and the ring executor (``trtdsl.backends.ring_exec``: rank ``i`` holds rank
``(i - t) mod N``'s block at step ``t``). Layouts: a rank's tokens are ``segments`` of global
``(start, length)``, in local order (one for "contiguous", two for "zigzag").

>>> segs = [[(0, 2), (6, 2)], [(2, 2), (4, 2)]]      # zigzag, 2 ranks, 8 tokens
>>> steps = ring_steps(query_pieces(segs[0]), segs, ring_sources(0, 2), causal=True)
>>> [(s.source, [(w.piece, w.k_seg, w.masked) for w in s.work]) for s in steps]
[(0, [(0, 0, True), (1, 0, False), (1, 1, True)]), (1, [(1, 0, False), (1, 1, False)])]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Segment = tuple[int, int]  # (global start, length)


@dataclass(frozen=True)
class Piece:
    """Query rows ``[local, local + length)`` of the rank's q, global positions from ``start``."""

    start: int
    length: int
    local: int


@dataclass(frozen=True)
class Work:
    """Attention of query piece ``piece`` to key segment ``k_seg`` of the step's block (rows
    ``[k_local, k_local + k_len)`` of it, global positions from ``k_start``); ``masked``: some
    key lies after some query (causal mask with the global offsets), else all keys visible."""

    piece: int
    k_seg: int
    k_start: int
    k_len: int
    k_local: int
    masked: bool


@dataclass(frozen=True)
class Step:
    """Step ``t`` uses the K/V block of group index ``source``; ``work`` may be empty."""

    t: int
    source: int
    work: tuple[Work, ...]


def query_pieces(segments: Sequence[Segment], q_chunk: int | None = None) -> list[Piece]:
    """The rank's segments cut into pieces of at most ``q_chunk`` rows (None: whole segments).

    >>> query_pieces([(8, 5)], 2)
    [Piece(start=8, length=2, local=0), Piece(start=10, length=2, local=2), Piece(start=12, \
length=1, local=4)]
    """
    pieces: list[Piece] = []
    local = 0
    for start, length in segments:
        step = length if q_chunk is None else max(1, min(int(q_chunk), length))
        for o in range(0, length, step):
            pieces.append(Piece(start + o, min(step, length - o), local + o))
        local += length
    return pieces


def ring_sources(index: int, size: int) -> list[int]:
    """Whose block group member ``index`` holds at each step of a ring that passes blocks to
    the next member: its own first, then its predecessor's, ...

    >>> ring_sources(1, 4)
    [1, 0, 3, 2]
    """
    return [(index - t) % size for t in range(size)]


def ring_steps(
    pieces: Sequence[Piece],
    block_segments: Sequence[Sequence[Segment]],
    sources: Sequence[int],
    causal: bool,
) -> list[Step]:
    """One :class:`Step` per entry of ``sources`` (group indices; ``block_segments[j]`` are
    member ``j``'s segments). With ``causal`` a (piece, segment) pair whose first key comes
    after the piece's last query is left out, and a pair is ``masked`` when its last key comes
    after its first query."""
    steps = []
    for t, src in enumerate(sources):
        work = []
        local = 0
        for kj, (k0, kl) in enumerate(block_segments[src]):
            for ci, p in enumerate(pieces):
                if causal and k0 > p.start + p.length - 1:
                    continue  # no key visible to any query of the piece
                masked = causal and k0 + kl - 1 > p.start
                work.append(Work(ci, kj, k0, kl, local, masked))
            local += kl
        work.sort(key=lambda w: (w.piece, w.k_seg))
        steps.append(Step(t, src, tuple(work)))
    return steps


# -- the stream program of one ring call --------------------------------------------------------
COMPUTE, COMM = "compute", "comm"


@dataclass(frozen=True)
class Pack:
    """compute: ``buffers[buf] = concat(k, v)`` (the rank's own block)."""

    buf: int
    stream: str = COMPUTE


@dataclass(frozen=True)
class Record:
    """Record event ``event`` on ``stream`` (after the work issued there so far)."""

    stream: str
    event: str


@dataclass(frozen=True)
class Wait:
    """``stream`` waits for the latest record of ``event`` issued before this op."""

    stream: str
    event: str


@dataclass(frozen=True)
class SendRecv:
    """comm, one NCCL group: send ``buffers[send]`` to the next member, receive the previous
    member's block into ``buffers[recv]``."""

    send: int
    recv: int
    stream: str = COMM


@dataclass(frozen=True)
class Attend:
    """compute: the step's work on the block in ``buffers[buf]``, merged into the running
    (out, lse) of each query piece."""

    buf: int
    step: Step
    stream: str = COMPUTE


@dataclass(frozen=True)
class Finish:
    """compute: the output from the running state (cast to the input dtype)."""

    stream: str = COMPUTE


Op = Pack | Record | Wait | SendRecv | Attend | Finish


def ring_plan(steps: Sequence[Step], compute: bool = True, comm: bool = True) -> list[Op]:
    """The ops of one call, in issue order. Buffers 0 and 1 alternate: at step ``t`` compute
    reads ``t % 2`` while comm sends it and receives the next block into the other one, which
    comm overwrites only after compute's previous step has stopped reading it (event
    ``free<b>``); compute starts step ``t + 1`` after the receive (event ``recv<b>``).
    ``compute=False`` / ``comm=False`` leave out the attention / the exchanges (for timing
    one without the other).

    >>> [type(o).__name__ for o in ring_plan(ring_steps([Piece(0, 1, 0)], [[(0, 1)]] * 2,
    ...                                                  [0, 1], False))][:6]
    ['Pack', 'Record', 'Wait', 'SendRecv', 'Record', 'Attend']
    """
    n = len(steps)
    ops: list[Op] = [Pack(0), Record(COMPUTE, "start"), Wait(COMM, "start")]
    for t, step in enumerate(steps):
        cur, nxt = t % 2, (t + 1) % 2
        exchange = comm and t < n - 1
        if exchange:
            if t > 0:
                ops.append(Wait(COMM, f"free{nxt}"))
            ops += [SendRecv(cur, nxt), Record(COMM, f"recv{nxt}")]
        if compute and step.work:
            ops.append(Attend(cur, step))
        if exchange:
            ops += [Record(COMPUTE, f"free{cur}"), Wait(COMPUTE, f"recv{nxt}")]
    ops += [Record(COMM, "done"), Wait(COMPUTE, "done"), Finish()]
    return ops


def plan_events(plan: Sequence[Op]) -> list[str]:
    """The event names a plan records, in first-use order."""
    names: list[str] = []
    for op in plan:
        if isinstance(op, Record) and op.event not in names:
            names.append(op.event)
    return names


__all__ = [
    "Piece",
    "Work",
    "Step",
    "query_pieces",
    "ring_sources",
    "ring_steps",
    "Pack",
    "Record",
    "Wait",
    "SendRecv",
    "Attend",
    "Finish",
    "Op",
    "ring_plan",
    "plan_events",
]
