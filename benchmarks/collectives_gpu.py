#!/usr/bin/env python3
# ruff: noqa: B023, E501 - closures are timed within the loop iteration that makes them
"""Every collective, 1 KiB-1 GiB: nccl4py called directly vs session.run of a one-collective
network vs torch.distributed (yardstick, same process), plus the TP MLP block via session.run.

``mpirun -np N python3 benchmarks/collectives_gpu.py [--short]``. Latency: median over
iterations of the slowest rank (host wall time around the call + stream sync); the session's
overhead is its latency minus nccl4py's. Bus bandwidth as nccl-tests measures it: the mean
period of back-to-back calls (one sync at the end), with nccl-tests' factors: all_reduce 2(n-1)/n; all_gather, reduce_scatter, all_to_all (n-1)/n;
broadcast, reduce, gather, scatter 1 (of the per-rank buffer size nccl-tests reports).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from mpi4py import MPI

import trtdsl as td
from trtdsl.backends import nccl
from trtdsl.backends.cupy import NcclWorld
from trtdsl.backends.nccl.adapter import unique_id_from_bytes

COLLS = ("all_reduce", "broadcast", "reduce", "all_gather", "reduce_scatter", "all_to_all",
         "gather", "scatter")  # fmt: skip
BUS = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
       "reduce_scatter": lambda n: (n - 1) / n, "all_to_all": lambda n: (n - 1) / n}  # fmt: skip


def timeit(fn, sync, iters, mpi) -> tuple[float, float]:
    """(latency, period) in us, the slowest rank's: latency = median of call + sync; period =
    time per call of back-to-back calls with one sync at the end (what nccl-tests times), the
    median of 5 such runs."""
    for _ in range(3):
        fn()
    sync()
    mpi.Barrier()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    inner = max(iters // 5, 10)
    periods = []
    for _ in range(5):  # the median of 5 back-to-back runs (one slow host stall spoils a mean)
        mpi.Barrier()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        periods.append((time.perf_counter() - t0) / inner)
    period = float(np.median(periods))
    lat = mpi.allreduce(float(np.median(ts)), op=MPI.MAX)
    per = mpi.allreduce(period, op=MPI.MAX)
    return lat * 1e6, per * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true", help="1 KiB, 1 MiB, 64 MiB; few iterations")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    import cupy as cp

    world = NcclWorld()
    mpi, n, rank = world.comm, world.size, world.rank
    sizes = [1 << 10, 1 << 20, 1 << 26] if args.short else [1 << k for k in range(10, 31, 2)]
    comm = nccl.load().core  # nccl4py itself, for the direct baseline
    uid = bytes(comm.get_unique_id()) if rank == 0 else None  # plain bytes over MPI
    direct = comm.Communicator.init(n, rank, unique_id_from_bytes(mpi.bcast(uid, root=0)))
    dist = None
    if not args.no_torch:
        import torch
        import torch.distributed as dist

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        torch.cuda.set_device(world.device)
        dist.init_process_group("nccl", rank=rank, world_size=n)
    stream = cp.cuda.get_current_stream()
    rows = []
    for coll in COLLS:
        for nbytes in sizes:
            elems = max(nbytes // 4 // n * n, n)
            iters = (
                5
                if args.short
                else (200 if nbytes <= 1 << 20 else 100 if nbytes <= 1 << 26 else 20)
            )
            x = cp.ones(elems, cp.float32)
            net = td.Network(coll, world=world)
            t = net.input("x", (elems,))
            kw = {"root": 0} if coll in ("broadcast", "reduce", "gather", "scatter") else {}
            method = {"reduce": "reduce_to", "gather": "gather_to"}.get(coll, coll)
            y = getattr(t, method)(**kw)
            net.output(y, "y")
            sess = net.compile(backend="cupy", return_device=True)
            t_sess = timeit(lambda: sess.run({"x": x}), stream.synchronize, iters, mpi)
            out = cp.empty(y.type.shape, cp.float32)
            d = {
                "all_reduce": lambda: direct.allreduce(x, out, comm.SUM, stream=stream.ptr),
                "broadcast": lambda: direct.broadcast(x, out, 0, stream=stream.ptr),
                "reduce": lambda: direct.reduce(x, out, comm.SUM, 0, stream=stream.ptr),
                "all_gather": lambda: direct.allgather(x, out, stream=stream.ptr),
                "reduce_scatter": lambda: direct.reduce_scatter(
                    x, out, comm.SUM, stream=stream.ptr
                ),
                "all_to_all": lambda: direct.alltoall(x, out, stream=stream.ptr),
                "gather": lambda: direct.gather(x, out, 0, stream=stream.ptr),
                "scatter": lambda: direct.scatter(x, out, 0, stream=stream.ptr),
            }[coll]
            try:
                t_dir = timeit(d, stream.synchronize, iters, mpi)
            except Exception as e:  # an nccl4py signature we guessed wrong: say so, go on
                if rank == 0:
                    print(f"direct {coll}: {type(e).__name__}: {e}")
                t_dir = (float("nan"), float("nan"))
            t_torch = (float("nan"), float("nan"))
            if dist is not None:
                tx = torch.ones(elems, device="cuda")
                to = torch.empty(out.size, device="cuda")
                root_list = [torch.empty_like(tx) for _ in range(n)] if rank == 0 else None
                chunks = list(tx.chunk(n)) if rank == 0 else None
                tf = {
                    "all_reduce": lambda: dist.all_reduce(tx),
                    "broadcast": lambda: dist.broadcast(tx, 0),
                    "reduce": lambda: dist.reduce(tx, 0),
                    "all_gather": lambda: dist.all_gather_into_tensor(to, tx),
                    "reduce_scatter": lambda: dist.reduce_scatter_tensor(to, tx),
                    "all_to_all": lambda: dist.all_to_all_single(to, tx),
                    "gather": lambda: dist.gather(tx, gather_list=root_list, dst=0),
                    "scatter": lambda: dist.scatter(to, scatter_list=chunks, src=0),
                }[coll]
                t_torch = timeit(tf, torch.cuda.synchronize, iters, mpi)
            size = elems * 4
            f = BUS.get(coll, lambda n: 1.0)(n)
            rows.append((coll, size, t_dir, t_sess, t_torch, f))
            sess.close()
    if rank == 0:
        print(
            f"\n{n} ranks; latency us (median of call + sync, slowest rank); busbw GB/s from "
            "back-to-back calls (mean period, slowest rank)"
        )
        print(f"{'collective':>14} {'bytes':>11} {'nccl4py':>9} {'session':>9} {'overhead':>9} "
              f"{'torch':>9} {'bus n4p':>8} {'bus sess':>8} {'bus torch':>9} {'sess/torch':>10}")  # fmt: skip
        worst_over, worst_ratio = -1e9, 1e9
        for coll, size, a, b, c, f in rows:
            bw = [size / (t[1] * 1e-6) / 1e9 * f for t in (a, b, c)]
            print(f"{coll:>14} {size:>11} {a[0]:>9.1f} {b[0]:>9.1f} {b[0] - a[0]:>9.1f} {c[0]:>9.1f} "
                  f"{bw[0]:>8.2f} {bw[1]:>8.2f} {bw[2]:>9.2f} {bw[1] / bw[2]:>10.3f}")  # fmt: skip
            if size <= 1 << 20:
                worst_over = max(worst_over, b[0] - a[0])
            if size >= 4 << 20 and bw[2] == bw[2]:
                worst_ratio = min(worst_ratio, bw[1] / bw[2])
        print(
            f"targets: session overhead <= 15 us at 1 KiB-1 MiB: worst {worst_over:.1f} us; "
            f"busbw >= 0.97 of torch from 4 MiB: worst {worst_ratio:.3f}"
        )
    # the TP MLP block end to end through a session
    from trtdsl.parallel import tensor_parallel_mlp

    try:
        net = td.Network("tp_mlp", world=world)
        h = net.input("x", (64, 1024))
        rng = np.random.default_rng(0)
        w_up = (rng.standard_normal((1024, 4096)) * 0.02).astype("float32")
        w_down = (rng.standard_normal((4096, 1024)) * 0.02).astype("float32")
        net.output(tensor_parallel_mlp(h, w_up, w_down, activation="gelu"), "y")
        xm = cp.ones((64, 1024), cp.float32)
        for graph in (False, True):
            with net.compile(backend="cupy", return_device=True, cuda_graph=graph) as sess:
                tm = timeit(lambda: sess.run({"x": xm}), stream.synchronize, 50, mpi)[0]
            if rank == 0:
                how = "cuda_graph=True" if graph else "eager"
                print(f"tensor_parallel_mlp (64x1024 -> 4096 hidden, fp32) session.run, {how}: "
                      f"{tm:.1f} us")  # fmt: skip
    except Exception as e:
        if rank == 0:
            print(f"tensor_parallel_mlp: {type(e).__name__}: {e}")
    direct.destroy()
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()
    world.close()
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except Exception:  # say what broke before the abort hook ends the job
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        raise
