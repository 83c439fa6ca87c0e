"""Run one TensorRT 11 collective layer on every rank and check it against NumPy.

The Python counterpart of TensorRT's ``sample_dist_collective``::

    python samples/dist_collective.py --op all_reduce --world-size 4        # simulated ranks
    mpiexec -n 4 python samples/dist_collective.py --op all_gather           # one process a rank
    mpirun -np 2 python samples/dist_collective.py --op reduce_scatter --backend cupy  # GPUs

Each rank builds its own network (as each TensorRT rank builds its own engine):
``x -> collective(op, reduce, root) -> y``, runs it, and compares ``y`` with the result
computed from every rank's input on rank 0.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _launch import add_common_args, finish, launch

import trtdsl as td

REDUCING = {"all_reduce", "reduce", "reduce_scatter"}
ROOTED = {"broadcast", "reduce", "gather", "scatter"}


def rank_input(seed: int, rank: int, rows: int, cols: int) -> np.ndarray:
    return np.random.default_rng([seed, rank]).standard_normal((rows, cols)).astype(np.float32)


def expected(op: str, reduce: str, root: int, xs: list[np.ndarray], rank: int) -> np.ndarray | None:
    n = len(xs)
    red = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min, "avg": np.mean}[reduce]
    total = red(np.stack(xs), axis=0)
    c = xs[0].shape[0] // n
    return {
        "all_reduce": total,
        "reduce": total if rank == root else None,
        "broadcast": xs[root],
        "all_gather": np.concatenate(xs),
        "gather": np.concatenate(xs) if rank == root else None,
        "reduce_scatter": total[rank * c : (rank + 1) * c],
        "scatter": xs[root][rank * c : (rank + 1) * c],
        "all_to_all": np.concatenate([x[rank * c : (rank + 1) * c] for x in xs]),
    }[op]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--op", default="all_reduce", choices=td.COLLECTIVE_OPS)
    p.add_argument("--reduce", default="sum", choices=td.REDUCE_OPS)
    p.add_argument("--root", type=int, default=0)
    p.add_argument("--rows", type=int, default=8, help="rows per rank (axis 0)")
    p.add_argument("--cols", type=int, default=16)
    add_common_args(p)
    args = p.parse_args()

    def per_rank(world: td.World) -> tuple[int, bool, str]:
        n, r = world.size, world.rank
        rows = (
            args.rows * n if args.op in ("reduce_scatter", "scatter", "all_to_all") else args.rows
        )
        net = td.Network(f"dist_collective_{args.op}", world=world)
        x = net.input("x", (rows, args.cols), "float32")
        y = x.collective(
            args.op,
            reduce=args.reduce if args.op in REDUCING else None,
            root=args.root if args.op in ROOTED else None,
            name=args.op,
        )
        net.output(y, "y")
        if r == 0:
            net.summary()
        xs = [rank_input(args.seed, k, rows, args.cols) for k in range(n)]
        got = net.run({"x": xs[r]}, backend=args.backend)["y"]
        want = expected(args.op, args.reduce, args.root, xs, r)
        if want is None:
            return r, True, f"rank {r}: output {got.shape} (undefined off the root, not checked)"
        ok = bool(np.allclose(got, want, rtol=1e-5, atol=1e-5))
        err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
        return (
            r,
            ok,
            f"rank {r}: output {got.shape}, max |error| {err:.2e} {'OK' if ok else 'FAIL'}",
        )

    results = launch(args, per_rank)
    return finish(results, args.op, args.backend)


if __name__ == "__main__":
    sys.exit(main())
