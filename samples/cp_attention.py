"""Context-parallel attention: the sequence is split over the ranks, checked against full
attention over the whole sequence in NumPy.

    python samples/cp_attention.py --strategy ring --causal --world-size 4
    python samples/cp_attention.py --strategy ulysses --q-chunk 4 --world-size 2
    mpiexec -n 2 python samples/cp_attention.py --strategy allgather_kv
    mpirun -np 2 python samples/cp_attention.py --strategy ulysses --backend cupy   # GPUs

Rank r of N holds tokens ``[r*S/N, (r+1)*S/N)`` of q, k and v (``[heads, S/N, head_dim]``)
and computes its rows of the attention over all S tokens. Strategies (docs/parallelism.md):
``allgather_kv`` (one all_gather of K/V), ``ring`` (N broadcasts of K/V blocks, online
softmax) and ``ulysses`` (all_to_all to a head split and back; heads % N == 0).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _launch import add_common_args, finish, launch

import trtdsl as td
from trtdsl import parallel as P


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool) -> np.ndarray:
    """Plain softmax attention over ``[heads, seq, head_dim]`` in float64."""
    s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    if causal:  # query i sees keys j <= i
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--strategy", default="ring", choices=sorted(P.STRATEGIES))
    p.add_argument("--causal", action="store_true", help="mask future tokens (default: DiT-style)")
    p.add_argument("--q-chunk", type=int, default=None, help="queries per chunk (long sequences)")
    p.add_argument("--seq", type=int, default=48, help="full sequence length S")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=8)
    add_common_args(p)
    args = p.parse_args()

    rng = np.random.default_rng(args.seed)
    shape = (args.heads, args.seq, args.head_dim)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    want = attention(*(a.astype(np.float64) for a in (q, k, v)), causal=args.causal)

    def per_rank(world: td.World) -> tuple[int, bool, str]:
        r, n = world.rank, world.size
        s_local = args.seq // n  # shard_sequence below checks that S splits evenly
        local = (args.heads, s_local, args.head_dim)

        net = td.Network(f"cp_attention_{args.strategy}", world=world)
        qi, ki, vi = (net.input(name, local) for name in ("q", "k", "v"))
        out = P.cp_attention(
            qi, ki, vi, strategy=args.strategy, causal=args.causal, q_chunk=args.q_chunk
        )
        net.output(out, "out")

        # This rank's tokens of q, k, v; its rows of the full attention are the expected output.
        feeds = {name: P.shard_sequence(a, r, n, axis=1) for name, a in zip("qkv", (q, k, v))}
        got = net.run(feeds, backend=args.backend)["out"]
        mine = P.shard_sequence(want, r, n, axis=1)
        err = float(np.max(np.abs(got - mine)))
        ok = bool(np.allclose(got, mine, rtol=1e-4, atol=1e-4))

        vol = P.measure_comm_volume(net).total
        formula = P.cp_attention_volume(
            args.strategy,
            seq_len=args.seq,
            heads=args.heads,
            head_dim=args.head_dim,
            ranks=n,
            dtype="float32",
        )
        ok = ok and vol == formula  # measured from the graph == closed form
        return (
            r,
            ok,
            f"rank {r}: tokens {r * s_local}..{(r + 1) * s_local - 1}, max |error| {err:.1e}; "
            f"comm: {vol.collectives} collective(s), sent {vol.sent:.0f} B, received "
            f"{vol.received:.0f} B {'OK' if ok else 'FAIL'}",
        )

    results = launch(args, per_rank)
    mask = "causal" if args.causal else "full"
    chunk = f", q_chunk {args.q_chunk}" if args.q_chunk else ""
    return finish(results, f"{args.strategy} attention ({mask}{chunk})", args.backend)


if __name__ == "__main__":
    sys.exit(main())
