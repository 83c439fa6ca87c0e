"""GPU check: every DSL collective on the cupy backend (NCCL) against a NumPy reference.

Run with one process per GPU: ``mpirun -np 2 python3 gpu/check_dsl_collectives.py``.
Each rank regenerates every rank's input from a shared seed, so the reference needs no
communication. Every case runs once through ``net.run`` and three times (new data each time)
through a compiled session, whose later calls take the unchecked fast path; undefined outputs
(reduce/gather off the root) must be poisoned in both.
Prints ``DSL COLLECTIVES: N passed, M failed``; exits non-zero on failure.
"""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np

import trtdsl as td
from trtdsl.backends.cupy import NcclWorld

DTYPES = ("float32", "float16", "int32", "int64")
REDUCES = ("sum", "prod", "max", "min", "avg")


def inputs(seed: int, size: int, shape: tuple, dtype: str) -> list[np.ndarray]:
    out = []
    for r in range(size):
        rng = np.random.default_rng([seed, r])
        if dtype.startswith("int"):
            a = rng.integers(-9, 10, size=shape)
            a[a == 0] = 3
        else:
            a = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1, 1], size=shape)
        out.append(a.astype(dtype))
    return out


def expected(
    op: str,
    reduce: str | None,
    root: int,
    group: list[int],
    xs: list[np.ndarray],
    me: int,
    dtype: str,
) -> np.ndarray | None:
    """What group member ``me`` must hold (None where TensorRT leaves it undefined)."""
    g = [xs[r].astype(np.float64) for r in group]
    n, i = len(group), group.index(me)
    if reduce is not None:
        stack = np.stack(g)
        red = {
            "sum": stack.sum(0),
            "prod": stack.prod(0),
            "max": stack.max(0),
            "min": stack.min(0),
            "avg": stack.mean(0),
        }[reduce]
    if op == "all_reduce":
        return red
    if op == "reduce":
        return red if i == root else None
    if op == "broadcast":
        return g[root]
    if op in ("all_gather", "gather"):
        return np.concatenate(g) if (op == "all_gather" or i == root) else None
    c = g[0].shape[0] // n
    if op == "reduce_scatter":
        return red[i * c : (i + 1) * c]
    if op == "scatter":
        return g[root][i * c : (i + 1) * c]
    if op == "all_to_all":
        return np.concatenate([x[i * c : (i + 1) * c] for x in g])
    raise ValueError(op)


def agrees(got: np.ndarray, want: np.ndarray | None, dtype: str) -> bool:
    """``got`` equals ``want``; an undefined output (``want`` None) must be poisoned."""
    if want is None:  # NaN for floats, the type's minimum for ints
        if dtype.startswith("int"):
            return bool((got == np.iinfo(dtype).min).all())
        return bool(np.isnan(got.astype(np.float64)).all())
    if dtype == "float16":
        return np.allclose(got.astype(np.float64), want, rtol=5e-3, atol=5e-3)
    if dtype == "float32":
        return np.allclose(got, want, rtol=1e-5, atol=1e-5)
    return np.array_equal(got.astype(np.float64), want.astype(dtype).astype(np.float64))


def main() -> int:
    world = NcclWorld()
    size, rank = world.size, world.rank
    groupings = [None, [list(reversed(range(size)))]]
    if size >= 2:
        groupings.append([[r] for r in range(size)])  # groups of one: the identity path
    passed = failed = 0
    t0 = time.time()
    case = 0
    for op, dtype, groups in itertools.product(td.COLLECTIVE_OPS, DTYPES, groupings):
        reduces = REDUCES if op in ("all_reduce", "reduce", "reduce_scatter") else (None,)
        for reduce in reduces:
            if reduce == "avg" and dtype.startswith("int"):
                continue
            partition = [list(range(size))] if groups is None else groups
            group = next(g for g in partition if rank in g)
            roots = (
                range(len(group)) if op in ("broadcast", "reduce", "gather", "scatter") else [None]
            )
            for root in roots:
                case += 1
                shape = (4 * size, 3, 5)
                xs = inputs(case, size, shape, dtype)
                net = td.Network(f"case{case}", world=world)
                x = net.input("x", shape, dtype)
                net.output(x.collective(op, reduce=reduce, root=root, groups=groups), "y")
                got = net.run({"x": xs[rank]}, backend="cupy")["y"]
                ok = agrees(got, expected(op, reduce, root or 0, group, xs, rank, dtype), dtype)
                # a compiled session: calls 2 and 3 take the fast path (no checks, bound NCCL
                # calls, one reused poisoned buffer off the root); new data every call
                with net.compile(backend="cupy", return_device=case % 2 == 0) as sess:
                    for k in range(3):
                        xk = inputs(case * 7 + k + 1, size, shape, dtype)
                        out = sess.run({"x": xk[rank]})["y"]
                        out = out.get() if hasattr(out, "get") else out
                        want = expected(op, reduce, root or 0, group, xk, rank, dtype)
                        ok = ok and agrees(out, want, dtype)
                oks = world.comm.allgather(bool(ok))
                if all(oks):
                    passed += 1
                else:
                    failed += 1
                    if rank == 0:
                        print(
                            f"FAIL {op} {reduce} root={root} {dtype} groups={groups}: ranks "
                            f"{[r for r, o in enumerate(oks) if not o]}",
                            flush=True,
                        )
    # a mismatch must fail on every rank, not hang
    net = td.Network("mismatch", world=world)
    x = net.input("x", (2 * size, 4), "float32")
    net.output(x.all_reduce("sum") if rank == 0 else x.all_gather(), "y")
    try:
        net.run({"x": np.ones((2 * size, 4), np.float32)}, backend="cupy")
        failed += 1
        print(f"rank {rank}: mismatch was NOT detected", flush=True)
    except td.CollectiveMismatchError as e:
        passed += 1
        if rank == 0:
            print(f"mismatch detected as expected: {str(e).splitlines()[0]}", flush=True)
    world.close()
    if rank == 0:
        print(f"{case} collective cases in {time.time() - t0:.1f} s on {size} GPUs")
        print(f"DSL COLLECTIVES: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
