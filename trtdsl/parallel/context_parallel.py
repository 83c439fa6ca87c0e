"""Context-parallel (sequence-parallel) attention: the sequence is split over ranks.

Rank ``r`` of ``N`` holds the contiguous tokens ``[r*S/N, (r+1)*S/N)`` of q, k and v, each
``[heads, s_local, head_dim]``; the output is the rank's rows of the full attention,
``[heads, s_local, head_dim]``. Three strategies share one interface,
``Strategy(causal=..., scale=...)(q, k, v) -> out``:

- :class:`AllGatherKVAttention` - one all_gather of K and V, then local attention of the
  rank's queries against the full sequence (per-rank causal mask constant).
- :class:`RingAttention` - N broadcasts (TensorRT has no send/recv): at step ``t`` every rank
  receives rank ``t``'s K/V block and merges its block attention with an online softmax. The
  layers form a ``ring_attention`` region, which the cupy backend runs as a real ring (NCCL
  send/recv overlapped with compute).
- :class:`UlyssesAttention` - all_to_all from sequence-split to head-split, full-sequence
  attention on ``heads/N`` heads, all_to_all back.

``causal=False`` is bidirectional attention (DiT); ``causal=True`` masks future tokens by their
global positions. Without a world, or in a group of one, no collective is added.

>>> import numpy as np, trtdsl as td
>>> def rank_fn(world):
...     net = td.Network("cp", world=world)
...     q = net.input("q", (2, 4, 8))               # 2 heads, 4 of the 8 tokens, head_dim 8
...     net.output(cp_attention(q, q, q, strategy="ring", causal=True), "o")
...     return net.run({"q": np.ones((2, 4, 8), "float32")})["o"].shape
>>> td.InProcessWorld(2).run(rank_fn)
[(2, 4, 8), (2, 4, 8)]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .. import dtypes
from .. import functional as F
from ..backends.ring_schedule import query_pieces, ring_steps
from ..tensor import Tensor
from ._common import coords, fail, sub
from .attention import default_scale, scaled_dot_product_attention
from .sharding import check_layout, sequence_segments


class ContextParallelAttention:
    """Base class: validates ``q, k, v`` (``[heads, s_local, head_dim]``, one float dtype,
    static shapes) and runs plain attention when the group has one rank.

    ``groups``: None (all ranks) or a partition of the world; the sequence is split over the
    rank's group in group order."""

    name: ClassVar[str] = "base"

    def __init__(
        self,
        *,
        causal: bool = False,
        scale: float | None = None,
        groups: Any = None,
        q_chunk: int | None = None,
        layout: str = "contiguous",
        name: str | None = None,
    ) -> None:
        check_layout(layout)
        self.layout = layout
        self.causal = bool(causal)
        self.scale = scale
        self.groups = groups
        if q_chunk is not None and (not isinstance(q_chunk, int) or q_chunk < 1):
            raise fail(f"{self.name} attention: q_chunk must be an int >= 1, got {q_chunk!r}")
        self.q_chunk = q_chunk
        self.layer_name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(causal={self.causal}, scale={self.scale})"

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        for label, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, Tensor):
                raise fail(f"{self.name} attention: {label} must be a Tensor")
            if t.ndim != 3 or not t.type.is_static:
                raise fail(
                    f"{self.name} attention: {label} must be a static [heads, s_local, "
                    f"head_dim], got {t.shape}"
                )
        if not (q.shape == k.shape == v.shape):
            raise fail(
                f"{self.name} attention: q {q.shape}, k {k.shape}, v {v.shape} must have one shape"
            )
        if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_float:
            raise fail(
                f"{self.name} attention: q, k, v need one float dtype, got "
                f"{q.dtype}, {k.dtype}, {v.dtype}"
            )
        idx, n = coords(q.network, self.groups)
        if self.layout == "zigzag" and q.shape[1] % 2:
            raise fail(
                f"{self.name} attention: the zigzag layout holds two chunks per rank, but "
                f"s_local = {q.shape[1]} is odd"
            )
        scale = default_scale(q.shape[2]) if self.scale is None else float(self.scale)
        if n == 1:
            return scaled_dot_product_attention(
                q,
                k,
                v,
                causal=self.causal,
                scale=scale,
                q_chunk=self.q_chunk,
                name=self.layer_name,
            )
        return self._forward(q, k, v, idx, n, scale)

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, idx: int, n: int, scale: float) -> Tensor:
        raise NotImplementedError

    def _n(self, suffix: str) -> str | None:
        return sub(self.layer_name, suffix)

    def segments(self, idx: int, n: int, s: int) -> list[tuple[int, int]]:
        """``(start, length)`` of the global token ranges of rank ``idx``'s ``s`` tokens."""
        return sequence_segments(idx, n, n * s, self.layout)

    def _chunk_order(self, n: int) -> list[int]:
        """For each global chunk (of 2N, zigzag), its index in rank-major (rank, half) order."""
        return [2 * g if g < n else 2 * (2 * n - 1 - g) + 1 for g in range(2 * n)]

    def to_global(self, x: Tensor, n: int, rows: int, s: int, dh: int, tag: str) -> Tensor:
        """``[n, rows, s, dh]`` (rank-major blocks) -> ``[rows, n*s, dh]`` in token order."""
        x = F.transpose(x, (1, 0, 2, 3), name=self._n(f"{tag}_sequence_order"))
        if self.layout == "zigzag":
            c = s // 2
            x = F.reshape(x, (rows, 2 * n, c, dh), name=self._n(f"{tag}_chunks"))
            x = F.gather(x, self._chunk_order(n), axis=1, name=self._n(f"{tag}_zigzag_order"))
        return F.reshape(x, (rows, n * s, dh), name=self._n(f"{tag}_tokens"))

    def from_global(self, x: Tensor, n: int, rows: int, s: int, dh: int, tag: str) -> Tensor:
        """Inverse of :meth:`to_global`: ``[rows, n*s, dh]`` -> ``[n, rows, s, dh]``."""
        if self.layout == "zigzag":
            c = s // 2
            inverse = np.argsort(self._chunk_order(n))
            x = F.reshape(x, (rows, 2 * n, c, dh), name=self._n(f"{tag}_chunks"))
            x = F.gather(x, inverse, axis=1, name=self._n(f"{tag}_rank_order"))
        x = F.reshape(x, (rows, n, s, dh), name=self._n(f"{tag}_blocks"))
        return F.transpose(x, (1, 0, 2, 3), name=self._n(f"{tag}_by_rank"))

    def local_attention(
        self, q: Tensor, k: Tensor, v: Tensor, idx: int, n: int, scale: float
    ) -> Tensor:
        """The rank's queries (in its layout) against keys/values in global token order."""
        segs = self.segments(idx, n, q.shape[1])
        qs = [q] if len(segs) == 1 else F.split(q, [c for _, c in segs], axis=1)
        outs = [
            scaled_dot_product_attention(
                qc,
                k,
                v,
                causal=self.causal,
                scale=scale,
                q_offset=start,
                q_chunk=self.q_chunk,
                name=self._n(f"attn{i}" if len(segs) > 1 else "attn"),
            )  # fmt: skip
            for i, (qc, (start, _)) in enumerate(zip(qs, segs))
        ]
        return outs[0] if len(outs) == 1 else F.concat(outs, axis=1, name=self._n("attn_out"))


class AllGatherKVAttention(ContextParallelAttention):
    """All-gather K and V (one collective: K and V packed), then attention of the rank's
    queries against the whole sequence; with ``causal`` a per-rank mask constant (query
    ``r*s+i`` sees keys ``<= r*s+i``). Holds the full K/V: ``2*H*S*Dh`` elements per rank.

    >>> out = AllGatherKVAttention(causal=True)(q, k, v)                 # doctest: +SKIP
    """

    name: ClassVar[str] = "allgather_kv"

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, idx: int, n: int, scale: float) -> Tensor:
        h, s, dh = q.shape
        kv = F.concat([k, v], axis=0, name=self._n("pack_kv"))  # [2H, s, Dh]
        g = kv.all_gather(groups=self.groups, name=self._n("all_gather_kv"))  # [N*2H, s, Dh]
        g = F.reshape(g, (n, 2 * h, s, dh), name=self._n("blocks"))
        g = self.to_global(g, n, 2 * h, s, dh, "kv")  # [2H, S, Dh]
        k_all, v_all = F.split(g, 2, axis=0, name=self._n("unpack_kv"))
        return self.local_attention(q, k_all, v_all, idx, n, scale)


class RingAttention(ContextParallelAttention):
    """Ring attention from broadcasts, with an online-softmax (log-sum-exp) merge.

    TensorRT has no send/recv, so the ring's N-1 neighbour exchanges become N broadcasts: at
    step ``t`` rank ``t`` broadcasts its (packed) K/V block and every rank attends to it. A rank
    holds one received K/V block at a time, never the full K/V. Each block is one fused
    attention layer that also returns the float32 log-sum-exp of its rows; blocks merge with
    ``lse' = logaddexp(lse, lse_b)``, ``out' = out*exp(lse-lse') + out_b*exp(lse_b-lse')``
    (float32 for 16-bit inputs). With ``causal``, blocks after the rank's own are not computed
    (the rank still takes part in their broadcast; a zero-weighted one-element slice of each
    skipped block is added to the output so that no engine builder prunes that broadcast), and
    the diagonal block is causal with the chunk's global offsets.

    Per-rank volume equals a ring's: over the N broadcasts (NCCL pipelines a broadcast along
    the ring) every rank receives N-1 blocks and sends N-1 blocks. Unlike a ring, the steps
    are serialized collectives (each broadcast is a pipeline of N-1 hops), and a causal rank
    also receives blocks it does not use.

    The layers are recorded as one region (``kind="ring_attention"``, see
    :meth:`~trtdsl.Network.add_region`): the numpy backend and a TensorRT engine run the
    broadcasts above, while the cupy backend runs a real ring in their place (NCCL send/recv
    of the block to the next rank on a communication stream, overlapped with the attention of
    the current block; ``trtdsl.backends.cupy.ring``).

    >>> out = RingAttention(causal=True)(q, k, v)                        # doctest: +SKIP
    """

    name: ClassVar[str] = "ring"

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, idx: int, n: int, scale: float) -> Tensor:
        net: Any = q.network  # a Network (layers, add_region)
        since = len(net.layers)
        s = q.shape[1]
        segments = [self.segments(j, n, s) for j in range(n)]
        out = self._broadcast_ring(q, k, v, idx, n, scale, segments)
        params = {
            "causal": self.causal,
            "scale": scale,
            "index": idx,
            "size": n,
            "layout": self.layout,
            "segments": segments,
            "groups": self.groups,
            "q_chunk": self.q_chunk,
        }
        net.add_region(
            "ring_attention", (q, k, v), (out,), since=since, params=params, name=self.layer_name
        )
        return out

    def _broadcast_ring(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        idx: int,
        n: int,
        scale: float,
        segments: list[list[tuple[int, int]]],
    ) -> Tensor:
        """The graph: step ``t`` broadcasts rank ``t``'s packed K/V block, the rank's query
        pieces (q_chunk rows) attend to its visible segments and merge."""
        dt = q.dtype
        acc_dt = dtypes.float32 if dt.itemsize < 4 else dt
        kv = F.concat([k, v], axis=0, name=self._n("pack_kv"))  # [2H, s, Dh]
        pieces = query_pieces(segments[idx], self.q_chunk)
        qs = (
            [q]
            if len(pieces) == 1
            else F.split(q, [p.length for p in pieces], axis=1, name=self._n("q_chunks"))
        )
        state: list[tuple[Tensor, Tensor] | None] = [None] * len(pieces)
        unused: list[Tensor] = []
        for step in ring_steps(pieces, segments, range(n), self.causal):
            t = step.source
            blk = kv.broadcast(root=t, groups=self.groups, name=self._n(f"broadcast_kv_{t}"))
            if t == idx:
                blk = kv  # the broadcast's output on its root is the root's own block
            if not step.work:
                unused.append(blk[0:1, 0:1, 0:1])
                continue
            ksegs = segments[t]
            kt, vt = F.split(blk, 2, axis=0, name=self._n(f"unpack_kv_{t}"))
            if len(ksegs) > 1:
                kparts = F.split(kt, [c for _, c in ksegs], axis=1, name=self._n(f"k_parts_{t}"))
                vparts = F.split(vt, [c for _, c in ksegs], axis=1, name=self._n(f"v_parts_{t}"))
            else:
                kparts, vparts = [kt], [vt]
            for w in step.work:
                ci, kj = w.piece, w.k_seg
                tag = (
                    f"{t}"
                    + (f"_q{ci}" if len(pieces) > 1 else "")
                    + (f"_k{kj}" if len(ksegs) > 1 else "")
                )
                offsets = (pieces[ci].start, w.k_start) if w.masked else None
                state[ci] = self._merge(
                    state[ci], qs[ci], kparts[kj], vparts[kj], scale, offsets, acc_dt, tag
                )
        if any(st is None for st in state):  # pragma: no cover - every piece sees its diagonal
            raise fail(f"ring attention: a query piece of {pieces} sees no key")
        outs = [st[0] for st in state if st is not None]
        out = outs[0] if len(outs) == 1 else F.concat(outs, axis=1, name=self._n("q_chunks_out"))
        if unused:  # keep every broadcast in the graph: + 0 * (one element of each block)
            keep = unused[0] if len(unused) == 1 else F.concat(unused, axis=0)
            keep = F.reduce_sum(keep, axis=0, keepdims=True)  # [1, 1, 1]
            if acc_dt != dt:
                keep = F.cast(keep, acc_dt)
            out = F.add(out, F.mul(keep, 0.0), name=self._n("keep_broadcasts"))
        if acc_dt != dt:
            out = F.cast(out, dt, name=self._n("cast_out"))
        return out

    def _merge(
        self,
        st: tuple[Tensor, Tensor] | None,
        q: Tensor,
        kt: Tensor,
        vt: Tensor,
        scale: float,
        offsets: tuple[int, int] | None,
        acc_dt: Any,
        tag: str,
    ) -> tuple[Tensor, Tensor]:
        """Attend ``q`` to one K/V block (fused, with its log-sum-exp) and merge into the
        running ``(out, lse)``: ``lse' = logaddexp(lse, lse_b)``,
        ``out' = out * exp(lse - lse') + out_b * exp(lse_b - lse')`` (float32)."""
        causal = offsets is not None
        q_off, k_off = offsets if causal else (0, 0)
        o_b, lse_b = F.attention(
            q, kt, vt, causal=causal, q_offset=q_off, k_offset=k_off, scale=scale,
            return_lse=True, name=self._n(f"block_attention_{tag}"),
        )  # fmt: skip
        lse_b = F.expand_dims(lse_b, -1, name=self._n(f"block_lse_{tag}"))  # [H, s_q, 1]
        if acc_dt != q.dtype:
            o_b = F.cast(o_b, acc_dt, name=self._n(f"out_f32_{tag}"))
        if st is None:
            return o_b, lse_b
        o, lse = st
        m = F.maximum(lse, lse_b, name=self._n(f"max_{tag}"))
        a = F.exp(F.sub(lse, m), name=self._n(f"rescale_old_{tag}"))
        b = F.exp(F.sub(lse_b, m), name=self._n(f"rescale_new_{tag}"))
        total = F.add(a, b, name=self._n(f"weight_sum_{tag}"))
        lse = F.add(m, F.log(total), name=self._n(f"merge_lse_{tag}"))
        o = F.div(F.add(F.mul(o, a), F.mul(o_b, b)), total, name=self._n(f"merge_out_{tag}"))
        return o, lse


class UlyssesAttention(ContextParallelAttention):
    """DeepSpeed-Ulysses: all_to_alls turn the sequence split into a head split (one each for
    q, k and v: ``[H, s, Dh]`` is already grouped by destination, so nothing is packed), each
    rank attends over the full sequence with ``heads/N`` heads, and one more all_to_all turns
    the result back. ``heads % N != 0`` is a DefinitionError.

    >>> out = UlyssesAttention()(q, k, v)                                # doctest: +SKIP
    """

    name: ClassVar[str] = "ulysses"

    def _heads_to_rank(self, t: Tensor, lab: str, n: int, hl: int) -> Tensor:
        """``[H, s, Dh]`` (this rank's tokens, all heads) -> ``[H/N, S, Dh]`` (this rank's
        heads, every token, in token order) through one all_to_all."""
        _, s, dh = t.shape
        recv = t.all_to_all(groups=self.groups, name=self._n(f"all_to_all_{lab}"))
        recv = F.reshape(recv, (n, hl, s, dh), name=self._n(f"{lab}_by_source"))
        return self.to_global(recv, n, hl, s, dh, lab)

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, idx: int, n: int, scale: float) -> Tensor:
        h, s, dh = q.shape
        if h % n:
            raise fail(
                f"ulysses attention: {h} heads do not split over {n} ranks ({h} % {n} = {h % n});"
                " use the ring or allgather_kv strategy"
            )
        hl = h // n
        # [H, s, Dh] is already destination-major (heads j*H/N.. go to rank j): one all_to_all
        # per tensor, no packing copy; each arrives source-major [N, H/N, s, Dh]
        qf, kf, vf = (self._heads_to_rank(t, lab, n, hl) for t, lab in zip((q, k, v), "qkv"))
        of = scaled_dot_product_attention(
            qf,
            kf,
            vf,
            causal=self.causal,
            scale=scale,
            q_chunk=self.q_chunk,
            name=self._n("attn"),
        )  # fmt: skip  [H/N, S, Dh]
        of = self.from_global(of, n, hl, s, dh, "out")  # [N, H/N, s, Dh]
        of = F.reshape(of, (h, s, dh), name=self._n("flat_out"))
        return of.all_to_all(groups=self.groups, name=self._n("all_to_all_out"))


STRATEGIES: dict[str, type[ContextParallelAttention]] = {
    cls.name: cls for cls in (AllGatherKVAttention, RingAttention, UlyssesAttention)
}


def get_strategy(strategy: str) -> type[ContextParallelAttention]:
    """The class of a strategy name ("allgather_kv", "ring", "ulysses")."""
    if strategy not in STRATEGIES:
        raise fail(
            f"unknown context-parallel strategy {strategy!r}; expected one of {sorted(STRATEGIES)}"
        )
    return STRATEGIES[strategy]


def cp_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    strategy: str = "ring",
    *,
    causal: bool = False,
    scale: float | None = None,
    groups: Any = None,
    q_chunk: int | None = None,
    layout: str = "contiguous",
    name: str | None = None,
) -> Tensor:
    """Context-parallel attention with the named strategy: "allgather_kv", "ring" or "ulysses".
    ``q_chunk`` bounds the scores held at once to ``q_chunk`` query rows (long sequences).
    ``layout``: how q, k, v are split over the ranks, "contiguous" or "zigzag" (rank r holds
    chunks r and 2N-1-r of 2N: causal work is balanced); see
    :func:`~trtdsl.parallel.shard_sequence`.

    >>> out = cp_attention(q, k, v, strategy="ulysses", causal=True)     # doctest: +SKIP
    """
    cls = get_strategy(strategy)
    return cls(
        causal=causal, scale=scale, groups=groups, q_chunk=q_chunk, layout=layout, name=name
    )(q, k, v)


__all__ = [
    "ContextParallelAttention",
    "AllGatherKVAttention",
    "RingAttention",
    "UlyssesAttention",
    "STRATEGIES",
    "get_strategy",
    "cp_attention",
]
