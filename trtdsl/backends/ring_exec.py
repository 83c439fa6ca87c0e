"""The Ring-attention executor, generic over the device: it runs the stream program of
:func:`~trtdsl.backends.ring_schedule.ring_plan` with an array module, streams and events, a
send/recv transport and block kernels supplied by a :class:`RingDevice`.

The cupy backend's device (``trtdsl.backends.cupy.ring``) is CuPy + CUDA events + NCCL
send/recv + the Triton kernels; the tests run the same executor with NumPy, no-op events and a
threaded exchange, against a float64 reference.

Layouts: q, k, v ``[H, s, Dh]`` (this rank's tokens, in its layout); the K/V block that travels
is ``[2H, s, Dh]`` (k rows then v rows); the running state per query piece is float32
``o [H, rows, Dh]`` and ``lse [H, rows]``, allocated once per call and piece and filled by
``BlockOps.attend_into`` (the first block writes it, the others merge into it).

>>> import numpy as np
>>> ops = ReferenceBlockOps(np, np.matmul)
>>> q = np.zeros((1, 2, 4), "float32")
>>> o, lse = ops.attend(q, q, q + 1, scale=1.0, causal=True, q_offset=0, k_offset=1)
>>> o[0, :, 0].tolist(), lse[0].tolist()                  # row 0 sees no key
([0.0, 1.0], [-inf, 0.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import CollectiveMismatchError, ExecutionError
from ..ir import Region
from ..worlds import agree_on_collective
from .ring_schedule import (
    Attend,
    Finish,
    Op,
    Pack,
    Record,
    SendRecv,
    Step,
    Wait,
    query_pieces,
    ring_plan,
    ring_sources,
    ring_steps,
)


class Streams(Protocol):
    """The compute stream (the caller's current one) and the communication stream."""

    def record(self, stream: str, event: str) -> None: ...

    def wait(self, stream: str, event: str) -> None: ...


class Transport(Protocol):
    """Neighbour exchange on the communication stream (one NCCL group: send and receive)."""

    def sendrecv(self, send: Any, recv: Any, to: int, source: int) -> None: ...


class BlockOps(Protocol):
    """Attention of a query piece to a key segment, and the online-softmax merge; the runner
    calls ``attend_into`` (:func:`attend_then_merge` composes it from the other two)."""

    def attend(
        self, q: Any, k: Any, v: Any, *, scale: float, causal: bool, q_offset: int, k_offset: int
    ) -> tuple[Any, Any]:
        """``(o [H, rows, Dh] any float dtype, lse [H, rows] float32)``; rows that see no key:
        o = 0, lse = -inf."""
        ...

    def merge(self, acc_o: Any, acc_lse: Any, o: Any, lse: Any) -> None:
        """In place: ``acc_lse = logaddexp(acc_lse, lse)``, ``acc_o`` rescaled to match."""
        ...

    def attend_into(
        self, acc_o: Any, acc_lse: Any, q: Any, k: Any, v: Any, *, scale: float, causal: bool,
        q_offset: int, k_offset: int, first: bool,
    ) -> None:  # fmt: skip
        """The attention of q to this segment into the float32 running state ``acc_o
        [H, rows, Dh]``, ``acc_lse [H, rows]``: written (``first``) or merged into."""
        ...


class RingDevice(Protocol):
    """What the executor needs of a device; ``streams`` is called once per runner."""

    def streams(self, events: Sequence[str]) -> Streams: ...

    def transport(self, world: Any, spec: Any) -> Transport: ...

    def block_ops(self, ctx: Any) -> BlockOps: ...

    def array_module(self, ctx: Any) -> Any: ...


class SyncStreams:
    """One stream in program order (NumPy): events are no-ops."""

    def record(self, stream: str, event: str) -> None:
        pass

    def wait(self, stream: str, event: str) -> None:
        pass


def attend_then_merge(
    ops: BlockOps, acc_o: Any, acc_lse: Any, q: Any, k: Any, v: Any, *, scale: float,
    causal: bool, q_offset: int, k_offset: int, first: bool,
) -> None:  # fmt: skip
    """``BlockOps.attend_into`` from ``ops.attend`` and ``ops.merge``: the block's (o, lse)
    copied into the running state (``first``, cast to float32) or merged into it."""
    o, lse = ops.attend(q, k, v, scale=scale, causal=causal, q_offset=q_offset, k_offset=k_offset)
    if first:
        acc_o[...] = o
        acc_lse[...] = lse
    else:
        ops.merge(acc_o, acc_lse, o, lse)


class ReferenceBlockOps:
    """Float32 attention and merge from array ops (NumPy, or CuPy where the kernels do not
    apply: float32 inputs, other head dims). ``matmul`` is the context's (capturable on CUDA
    graph sessions)."""

    def __init__(self, xp: Any, matmul: Callable[[Any, Any], Any]) -> None:
        self.xp, self.matmul = xp, matmul

    def attend(
        self, q: Any, k: Any, v: Any, *, scale: float, causal: bool, q_offset: int, k_offset: int
    ) -> tuple[Any, Any]:
        xp, f32 = self.xp, self.xp.float32
        s = self.matmul(q.astype(f32), xp.swapaxes(k.astype(f32), -1, -2)) * f32(scale)
        if causal:
            rows = q_offset + xp.arange(q.shape[-2])
            allowed = (k_offset + xp.arange(k.shape[-2]))[None, :] <= rows[:, None]
            s = xp.where(allowed, s, f32(-np.inf))
        mx = xp.max(s, axis=-1, keepdims=True)
        mx = xp.where(xp.isfinite(mx), mx, f32(0))
        p = xp.exp(s - mx)
        total = xp.sum(p, axis=-1, keepdims=True)
        empty = total == 0
        safe = xp.where(empty, f32(1), total)
        o = self.matmul(p / safe, v.astype(f32))
        lse = xp.where(empty, f32(-np.inf), mx + xp.log(safe))[..., 0]
        return o, lse.astype(f32)

    def merge(self, acc_o: Any, acc_lse: Any, o: Any, lse: Any) -> None:
        xp, f32 = self.xp, self.xp.float32
        m = xp.maximum(acc_lse, lse)
        m = xp.where(xp.isfinite(m), m, f32(0))
        w1, w2 = xp.exp(acc_lse - m), xp.exp(lse - m)
        total = w1 + w2
        empty = total == 0
        safe = xp.where(empty, f32(1), total)
        acc_o[...] = acc_o * (w1 / safe)[..., None] + o.astype(f32) * (w2 / safe)[..., None]
        acc_lse[...] = xp.where(empty, f32(-np.inf), m + xp.log(safe))

    def attend_into(
        self, acc_o: Any, acc_lse: Any, q: Any, k: Any, v: Any, *, scale: float, causal: bool,
        q_offset: int, k_offset: int, first: bool,
    ) -> None:  # fmt: skip
        attend_then_merge(
            self, acc_o, acc_lse, q, k, v, scale=scale, causal=causal, q_offset=q_offset,
            k_offset=k_offset, first=first,
        )  # fmt: skip


def region_schedule(region: Region) -> tuple[int, int, list[Step]]:
    """(group index, group size, the ring's steps) of a ``ring_attention`` region: whole
    segments as query pieces (the kernels never hold a block's scores; the float32 fallback
    is chunked by the op reference's own bound)."""
    p = region.params
    index, size, segments = int(p["index"]), int(p["size"]), p["segments"]
    pieces = query_pieces(segments[index])
    steps = ring_steps(pieces, segments, ring_sources(index, size), bool(p["causal"]))
    return index, size, steps


#: The events of a ring call (see :func:`~trtdsl.backends.ring_schedule.ring_plan`).
EVENTS = ("start", "free0", "free1", "recv0", "recv1", "done")


class RingRunner:
    """Runs one ``ring_attention`` region on one rank: made once per session and region; holds
    the streams, the events and the double buffers of each input signature.

    ``run(q, k, v, ctx, check)``: ``check`` (a new signature) first agrees with the group on
    the block's shape and dtype, so that a mismatch fails instead of hanging in NCCL.
    """

    def __init__(self, region: Region, device: RingDevice) -> None:
        if region.kind != "ring_attention":
            raise ExecutionError(f"region '{region.name}' is a {region.kind}, not ring_attention")
        self.region, self.device = region, device
        self.index, self.size, self.steps = region_schedule(region)
        self.pieces = query_pieces(region.params["segments"][self.index])
        self.scale, self.causal = float(region.params["scale"]), bool(region.params["causal"])
        collectives = [lay for lay in region.layers if lay.op.is_collective]
        if not collectives:
            raise ExecutionError(f"region '{region.name}' has no collective to take groups from")
        self.anchor = collectives[0]  # its spec names the group partition (for the NCCL comm)
        self.plans = {
            mode: ring_plan(self.steps, compute=mode != "comm", comm=mode != "compute")
            for mode in ("ring", "compute", "comm")
        }
        self._streams: Streams | None = None
        self._buffers: dict[tuple, list[Any]] = {}

    def run(self, q: Any, k: Any, v: Any, ctx: Any, check: bool = False, mode: str = "ring") -> Any:
        """The rank's rows of attention over the group's whole sequence, ``[H, s, Dh]`` in q's
        dtype. ``mode`` "compute" / "comm" runs one half only (timing; wrong values)."""
        if mode not in self.plans:
            raise ValueError(f"mode must be one of {sorted(self.plans)}, got {mode!r}")
        xp = self.device.array_module(ctx)
        h, s, dh = k.shape
        block = (2 * h, s, dh)
        world = ctx.world
        spec = self.anchor.spec
        me = spec.group.index(world.rank) if world is not None else -1
        if me != self.index:
            raise ExecutionError(
                f"region '{self.region.name}' (defined at {self.region.where}): built for group "
                f"index {self.index} of {list(spec.group)}, but this rank's world gives {me}"
            )
        if check:
            self._agree(world, block)
        if self._streams is None:
            self._streams = self.device.streams(EVENTS)
        transport = self.device.transport(world, spec)
        key = (block, str(k.dtype))
        if key not in self._buffers:
            self._buffers[key] = [xp.empty(block, k.dtype), xp.empty(block, k.dtype)]
        ops = self.device.block_ops(ctx)
        return self._execute(self.plans[mode], q, k, v, self._buffers[key], xp, transport, ops)

    def _agree(self, world: Any, block: tuple) -> None:
        """Every rank of the world agrees (as for a collective: same exchange) on the block's
        shape and dtype, and that its region runs fused too."""
        mine = ("fused", self.region.kind)
        payloads = agree_on_collective(world, self.anchor, block, payload=mine)
        group = list(self.anchor.spec.group)
        others = [payloads[r] for r in group]
        if not all(isinstance(p, tuple) and p == mine for p in others):
            raise CollectiveMismatchError(
                f"rank {world.rank}: region '{self.region.name}' (defined at "
                f"{self.region.where}) runs as a fused ring here, but not on every rank of its "
                f"group {group}: every rank must run it alike (the same backend)"
            )

    def _execute(
        self,
        plan: Sequence[Op],
        q: Any,
        k: Any,
        v: Any,
        bufs: list[Any],
        xp: Any,
        transport: Transport,
        ops: BlockOps,
    ) -> Any:
        streams = self._streams
        assert streams is not None
        h = k.shape[0]
        n, me = self.size, self.index
        acc: list[tuple[Any, Any] | None] = [None] * len(self.pieces)
        out = None
        for op in plan:
            if isinstance(op, Pack):
                bufs[op.buf][:h] = k
                bufs[op.buf][h:] = v
            elif isinstance(op, Record):
                streams.record(op.stream, op.event)
            elif isinstance(op, Wait):
                streams.wait(op.stream, op.event)
            elif isinstance(op, SendRecv):
                transport.sendrecv(bufs[op.send], bufs[op.recv], (me + 1) % n, (me - 1) % n)
            elif isinstance(op, Attend):
                self._attend(op, q, bufs[op.buf], h, acc, xp, ops)
            elif isinstance(op, Finish):
                out = xp.empty(q.shape, q.dtype)
                for p, st in zip(self.pieces, acc):
                    rows = out[:, p.local : p.local + p.length]
                    if st is None:  # no visible key at all (never with a diagonal block)
                        rows[...] = 0
                    else:
                        rows[...] = st[0]  # cast to q's dtype
            else:  # pragma: no cover - the plan has no other ops
                raise ExecutionError(f"unknown ring op {op!r}")
        return out

    def _attend(
        self,
        op: Attend,
        q: Any,
        blk: Any,
        h: int,
        acc: list[tuple[Any, Any] | None],
        xp: Any,
        ops: BlockOps,
    ) -> None:
        for w in op.step.work:
            p = self.pieces[w.piece]
            qp = q[:, p.local : p.local + p.length]
            kb = blk[:h, w.k_local : w.k_local + w.k_len]
            vb = blk[h:, w.k_local : w.k_local + w.k_len]
            st = acc[w.piece]
            first = st is None
            if st is None:  # the piece's running state, written by its first block
                st = acc[w.piece] = (
                    xp.empty(qp.shape, xp.float32),
                    xp.empty(qp.shape[:-1], xp.float32),
                )
            ops.attend_into(
                st[0], st[1], qp, kb, vb, scale=self.scale, causal=w.masked, q_offset=p.start,
                k_offset=w.k_start, first=first,
            )  # fmt: skip


class RingFusion:
    """The ``ring_attention`` fusion of one session (a :data:`~trtdsl.backends.interpreter.
    Fusion`): one :class:`RingRunner` per region, on a device from ``make_device()``."""

    def __init__(self, make_device: Callable[[], RingDevice]) -> None:
        self.make_device = make_device
        self.runners: dict[Region, RingRunner] = {}

    def __call__(self, region: Region, inputs: list[Any], ctx: Any, check: bool) -> list[Any]:
        runner = self.runners.get(region)
        if runner is None:
            runner = self.runners[region] = RingRunner(region, self.make_device())
        q, k, v = inputs
        return [runner.run(q, k, v, ctx, check)]


__all__ = [
    "EVENTS",
    "RingFusion",
    "Streams",
    "Transport",
    "BlockOps",
    "RingDevice",
    "SyncStreams",
    "ReferenceBlockOps",
    "attend_then_merge",
    "RingRunner",
    "region_schedule",
]
