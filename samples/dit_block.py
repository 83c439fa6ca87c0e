"""A DiT / FLUX-style transformer block with tensor and context parallelism together, checked
against a plain float64 NumPy implementation of the same block on one rank.

    python samples/dit_block.py --world-size 4                   # 4 simulated ranks, all CP
    python samples/dit_block.py --world-size 4 --tp 2 --cp 2 --strategy ulysses
    mpiexec -n 4 python samples/dit_block.py --tp 2              # one process a rank
    mpirun -np 2 python samples/dit_block.py --backend cupy      # one GPU a rank

The block (DiT's adaLN-Zero block without the zero init; FLUX modulates its blocks alike)::

    shift1, scale1, gate1, shift2, scale2, gate2 = split(silu(c) @ W_ada + b_ada, 6)
    x = x + gate1 * Attention(LayerNorm(x) * (1 + scale1) + shift1)
    x = x + gate2 * MLP(LayerNorm(x) * (1 + scale2) + shift2)

The W = tp * cp ranks form a grid: rank = cp_index * tp + tp_index. Ranks with the same
cp_index form a **tp-group**: they hold the same tokens and split the weights (attention heads,
MLP hidden units), so the attention out-projection and the MLP down projection each end in an
all_reduce within the tp-group. Ranks with the same tp_index form a **cp-group**: they hold the
same heads and split the sequence, and context-parallel attention exchanges K/V (or Q/K/V)
within the cp-group. Both are ``groups=`` partitions of the world, e.g. for tp=2, cp=2:
tp-groups [[0, 1], [2, 3]] and cp-groups [[0, 2], [1, 3]].
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _launch import add_common_args, finish, launch, world_size

import trtdsl as td
from trtdsl import functional as F
from trtdsl import parallel as P

EPS = 1e-6


def make_weights(rng: np.random.Generator, d: int, d_cond: int, hidden: int) -> dict:
    """The full weights of the block, ``[in, out]`` (``y = x @ w``), float32."""

    def w(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale / np.sqrt(shape[0])).astype(np.float32)

    return {
        "w_ada": w(d_cond, 6 * d, scale=0.5),  # conditioning -> shift/scale/gate x 2
        "b_ada": w(6 * d, scale=0.1),
        "w_q": w(d, d),  # heads are contiguous column blocks: [H * head_dim]
        "w_k": w(d, d),
        "w_v": w(d, d),
        "w_o": w(d, d),
        "b_o": w(d, scale=0.1),
        "w_up": w(d, hidden),
        "b_up": w(hidden, scale=0.1),
        "w_down": w(hidden, d),
        "b_down": w(d, scale=0.1),
    }


# -- the reference: the same block in float64 NumPy, on one rank, over the whole sequence --
def reference(x: np.ndarray, c: np.ndarray, wt: dict, heads: int) -> np.ndarray:
    wt = {k: v.astype(np.float64) for k, v in wt.items()}
    x, c = x.astype(np.float64), c.astype(np.float64)

    def layer_norm(h):
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mu) / np.sqrt(var + EPS)

    def gelu(h):  # tanh approximation
        return 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))

    def split_heads(h):  # [S, H*Dh] -> [H, S, Dh]
        return h.reshape(h.shape[0], heads, -1).transpose(1, 0, 2)

    mod = (c / (1 + np.exp(-c))) @ wt["w_ada"] + wt["b_ada"]
    shift1, scale1, gate1, shift2, scale2, gate2 = np.split(mod, 6, axis=-1)

    h = layer_norm(x) * (1 + scale1) + shift1
    q, k, v = (split_heads(h @ wt[n]) for n in ("w_q", "w_k", "w_v"))
    s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    o = (p / p.sum(-1, keepdims=True)) @ v  # [H, S, Dh]
    o = o.transpose(1, 0, 2).reshape(x.shape[0], -1)
    x = x + gate1 * (o @ wt["w_o"] + wt["b_o"])

    h = layer_norm(x) * (1 + scale2) + shift2
    m = gelu(h @ wt["w_up"] + wt["b_up"]) @ wt["w_down"] + wt["b_down"]
    return x + gate2 * m


# -- the parallel block: what each rank builds ---------------------------------------------
def dit_block(
    x: td.Tensor,
    c: td.Tensor,
    wt: dict,
    *,
    heads: int,
    tp_groups: list,
    cp_groups: list,
    strategy: str,
) -> td.Tensor:
    """``x``: this rank's tokens ``[S/cp, D]``; ``c``: the conditioning ``[1, D_cond]``."""
    d = x.shape[-1]
    tp = len(tp_groups[0])
    local_heads, head_dim = heads // tp, d // heads
    ones, zeros = np.ones(d, np.float32), np.zeros(d, np.float32)

    # adaLN modulation from the conditioning vector (tiny: computed whole on every rank)
    mod = F.matmul(c.silu(), wt["w_ada"], name="ada.matmul") + wt["b_ada"]  # [1, 6D]
    shift1, scale1, gate1, shift2, scale2, gate2 = mod.split(6, axis=-1, name="ada.split")

    def modulated_norm(t: td.Tensor, shift: td.Tensor, scale: td.Tensor, name: str) -> td.Tensor:
        return t.layer_norm(ones, zeros, eps=EPS, name=name) * (scale + 1.0) + shift

    # self-attention: heads split over the tp-group, sequence split over the cp-group
    h = modulated_norm(x, shift1, scale1, "norm1")
    qkv = []
    for n in ("q", "k", "v"):  # column-parallel: this rank's heads (full weights sliced here)
        t = P.column_parallel_linear(h, wt[f"w_{n}"], groups=tp_groups, name=f"attn.{n}")
        t = t.reshape((0, local_heads, head_dim)).transpose((1, 0, 2))  # [H/tp, S/cp, Dh]
        qkv.append(t)
    o = P.cp_attention(*qkv, strategy=strategy, groups=cp_groups, name="attn.cp")
    o = o.transpose((1, 0, 2)).reshape((0, local_heads * head_dim))  # [S/cp, D/tp]
    a = P.row_parallel_linear(o, wt["w_o"], wt["b_o"], groups=tp_groups, name="attn.out")
    x = x + gate1 * a  # the out-projection ended in an all_reduce over the tp-group

    # MLP: hidden units split over the tp-group (one all_reduce)
    h = modulated_norm(x, shift2, scale2, "norm2")
    m = P.tensor_parallel_mlp(
        h,
        wt["w_up"],
        wt["w_down"],
        b_up=wt["b_up"],
        b_down=wt["b_down"],
        activation="gelu_tanh",
        groups=tp_groups,
        name="mlp",
    )
    return x + gate2 * m


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel ranks (default W/cp)")
    p.add_argument("--cp", type=int, default=None, help="context-parallel ranks (default W/tp)")
    p.add_argument("--strategy", default="allgather_kv", choices=sorted(P.STRATEGIES))
    p.add_argument("--seq", type=int, default=24, help="tokens (split over the cp-group)")
    p.add_argument("--heads", type=int, default=12, help="heads (split over the tp-group)")
    p.add_argument("--head-dim", type=int, default=8)
    p.add_argument("--d-cond", type=int, default=16, help="width of the conditioning vector")
    p.add_argument("--summary", action="store_true", help="print rank 0's layer table")
    add_common_args(p)
    args = p.parse_args()

    # W = tp * cp; with neither flag, every rank does context parallelism (tp = 1).
    w = world_size(args)
    tp = args.tp or (w // args.cp if args.cp else 1)
    cp = args.cp or w // tp
    if tp * cp != w:
        p.error(f"--tp {tp} x --cp {cp} must equal the world size {w}")
    tp_groups = [[ci * tp + ti for ti in range(tp)] for ci in range(cp)]
    cp_groups = [[ci * tp + ti for ci in range(cp)] for ti in range(tp)]

    rng = np.random.default_rng(args.seed)
    d = args.heads * args.head_dim
    wt = make_weights(rng, d, args.d_cond, 4 * d)
    x = rng.standard_normal((args.seq, d)).astype(np.float32)
    c = rng.standard_normal((1, args.d_cond)).astype(np.float32)
    want = reference(x, c, wt, args.heads)

    def per_rank(world: td.World) -> tuple[int, bool, str]:
        ci, ti = divmod(world.rank, tp)  # position in the grid
        s = args.seq // cp

        net = td.Network("dit_block", world=world)
        xin, cin = net.input("x", (s, d)), net.input("c", (1, args.d_cond))
        y = dit_block(
            xin,
            cin,
            wt,
            heads=args.heads,
            tp_groups=tp_groups,
            cp_groups=cp_groups,
            strategy=args.strategy,
        )
        net.output(y, "y")
        report = P.measure_comm_volume(net)
        if world.rank == 0:
            if args.summary:
                net.summary()
            print(report)  # every collective, its group size n and its bytes

        feeds = {"x": P.shard_sequence(x, ci, cp), "c": c}  # this cp-group member's tokens
        got = net.run(feeds, backend=args.backend)["y"]
        mine = P.shard_sequence(want, ci, cp)
        err = float(np.max(np.abs(got - mine)))
        ok = bool(np.allclose(got, mine, rtol=1e-4, atol=1e-4))

        # Expected volume: two all_reduces of [S/cp, D] in the tp-group (attention out, MLP
        # down) and the CP strategy's exchanges for this rank's heads in the cp-group.
        t = P.tp_mlp_volume(tokens=s, d_model=d, ranks=tp, dtype="float32")
        a = P.cp_attention_volume(
            args.strategy,
            seq_len=args.seq,
            heads=args.heads // tp,
            head_dim=args.head_dim,
            ranks=cp,
            dtype="float32",
        )
        vol = report.total
        ok = ok and vol == t + t + a
        return (
            world.rank,
            ok,
            f"rank {world.rank} (tp {ti}/{tp}, cp {ci}/{cp}): y {got.shape}, max |error| "
            f"{err:.1e}; comm: {vol.collectives} collective(s), sent {vol.sent:.0f} B, "
            f"received {vol.received:.0f} B {'OK' if ok else 'FAIL'}",
        )

    results = launch(args, per_rank)
    what = f"DiT block (tp={tp}, cp={cp}, {args.strategy})"
    return finish(results, what, args.backend)


if __name__ == "__main__":
    sys.exit(main())
