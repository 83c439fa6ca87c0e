"""A tensor-parallel MLP on every rank, checked against the same MLP in NumPy on one rank.

    python samples/tp_mlp.py --world-size 4                      # 4 simulated ranks
    python samples/tp_mlp.py --world-size 2 --gated --reduce reduce_scatter
    mpiexec -n 2 python samples/tp_mlp.py                        # one process a rank
    mpirun -np 2 python samples/tp_mlp.py --backend cupy         # one GPU a rank

Megatron-style: every rank holds the same tokens ``x [T, D]`` and a slice of the weights. The
up (and gate) projection is split by output features (column-parallel: rank r computes hidden
units ``r*F/N ... (r+1)*F/N``), the down projection by input features (row-parallel), so the
only communication is one all_reduce of the partial sums (or one reduce_scatter over tokens).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _launch import add_common_args, finish, launch

import trtdsl as td
from trtdsl import parallel as P


def gelu(x: np.ndarray) -> np.ndarray:  # the tanh approximation, as the sample's activation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokens", type=int, default=12)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--hidden", type=int, default=96, help="MLP width (split over the ranks)")
    p.add_argument("--gated", action="store_true", help="SwiGLU: silu(x Wg) * (x Wu)")
    p.add_argument("--reduce", default="all_reduce", choices=("all_reduce", "reduce_scatter"))
    add_common_args(p)
    args = p.parse_args()

    # Full weights and input, the same on every rank (same seed): each rank slices its shard.
    rng = np.random.default_rng(args.seed)
    d, f = args.d_model, args.hidden
    x = rng.standard_normal((args.tokens, d)).astype(np.float32)
    w_up = (rng.standard_normal((d, f)) / np.sqrt(d)).astype(np.float32)
    w_gate = (rng.standard_normal((d, f)) / np.sqrt(d)).astype(np.float32)
    w_down = (rng.standard_normal((f, d)) / np.sqrt(f)).astype(np.float32)
    b_down = rng.standard_normal(d).astype(np.float32)

    # The single-rank reference, in float64.
    x64, up = x.astype(np.float64), x.astype(np.float64) @ w_up
    h = silu(x64 @ w_gate) * up if args.gated else gelu(up)
    want = h @ w_down + b_down

    def per_rank(world: td.World) -> tuple[int, bool, str]:
        net = td.Network("tp_mlp", world=world)
        xin = net.input("x", (args.tokens, d))
        y = P.tensor_parallel_mlp(
            xin,
            w_up,  # full weights: the block takes this rank's columns / rows itself
            w_down,
            w_gate=w_gate if args.gated else None,
            b_down=b_down,
            activation="silu" if args.gated else "gelu_tanh",
            reduce=args.reduce,
            name="mlp",
        )
        net.output(y, "y")
        if world.rank == 0:
            net.summary()
        got = net.run({"x": x}, backend=args.backend)["y"]

        mine = want  # all_reduce: every rank gets every token
        if args.reduce == "reduce_scatter":  # rank r keeps tokens r*T/N ... (r+1)*T/N
            mine = P.shard_sequence(want, world.rank, world.size)
        err = float(np.max(np.abs(got - mine)))
        ok = bool(np.allclose(got, mine, rtol=1e-4, atol=1e-4))
        vol = P.measure_comm_volume(net).total  # bytes this rank sends and receives
        formula = P.tp_mlp_volume(
            tokens=args.tokens, d_model=d, ranks=world.size, dtype="float32", reduce=args.reduce
        )
        ok = ok and vol == formula  # measured from the graph == closed form (docs/parallelism.md)
        return (
            world.rank,
            ok,
            f"rank {world.rank}: y {got.shape}, max |error| {err:.1e}; comm: "
            f"{vol.collectives} collective(s), sent {vol.sent:.0f} B, received "
            f"{vol.received:.0f} B {'OK' if ok else 'FAIL'}",
        )

    results = launch(args, per_rank)
    what = f"tensor-parallel {'SwiGLU ' if args.gated else ''}MLP ({args.reduce})"
    return finish(results, what, args.backend)


if __name__ == "__main__":
    sys.exit(main())
