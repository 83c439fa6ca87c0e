"""GPU check: Ring attention run as a real ring on the cupy backend (the ``ring_attention``
region fused: NCCL send/recv on a comm stream, overlapped with the block attention) against the
AllGather-KV block on the same GPUs and against float64 NumPy attention over the whole sequence.

One process per GPU, from the repository root::

    mpirun -np 2 python3 gpu/check_ring.py      # and -np 4 (adds groups [[0, 1], [2, 3]])

Cases: fp16 and bf16 x head_dim 64 and 128 x full and causal x contiguous and zigzag x (all
ranks, and on 4 ranks two groups of 2) x eager and ``cuda_graph=True``, plus float32 and
head_dim 80 (the float32 fallback of the block attention). Each prints ``ok`` or ``FAIL``;
then ``RING: N passed, M failed`` and the exit status. ``OVERLAP`` then times one large case
on the runner directly: the ring, its compute alone and its communication alone (slowest rank,
median); the ring hides communication when it takes less than compute + communication (this
line is information, it does not change the exit status).

``--cpu`` runs the comparison logic with the numpy backend (the broadcast graph, no fusion, no
timing) under ``mpiexec`` on a machine without GPUs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

import trtdsl as td
from trtdsl import parallel as P

TOL = {"float16": 5e-3, "bfloat16": 3e-2, "float32": 1e-4}  # ||got - ref|| / ||ref||


def reference(q, k, v, causal: bool) -> np.ndarray:
    """float64 softmax attention over [H, S, Dh], max subtracted; causal: key j <= query i."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = np.einsum("hqd,hkd->hqk", q, k) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("hqk,hkd->hqd", p / p.sum(-1, keepdims=True), v)


def _max() -> Any:
    from mpi4py import MPI

    return MPI.MAX


def rel(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


class Checker:
    def __init__(self, cpu: bool) -> None:
        self.cpu = cpu
        if cpu:
            self.world: Any = td.MPIWorld()
            self.backend = "numpy"
        else:
            from trtdsl.backends.cupy import NcclWorld

            self.world = NcclWorld()
            self.backend = "cupy"
        self.rank, self.n = self.world.rank, self.world.size
        self.passed = self.failed = 0
        self.broken = False  # an exception: NCCL may be out of step, stop after this case

    def session(self, strategy: str, shape, dtype, causal, layout, groups, graph) -> Any:
        net = td.Network(f"cp_{strategy}", world=self.world)
        ins = [net.input(nm, shape, dtype) for nm in "qkv"]
        out = P.cp_attention(*ins, strategy=strategy, causal=causal, layout=layout, groups=groups)
        net.output(out, "o")
        opts = {} if self.cpu else {"cuda_graph": graph}
        return net, net.compile(backend=self.backend, **opts)

    def case(self, dtype, d, causal, layout, groups, graph, heads=4, s_local=256) -> None:
        world, rank = self.world, self.rank
        gsize = self.n if groups is None else len(groups[0])
        gi = rank % gsize if groups is not None else rank
        gid = rank // gsize if groups is not None else 0
        seq = s_local * gsize
        npdt = td.as_dtype(dtype).numpy
        rng = np.random.default_rng(1000 + 17 * gid + d + 2 * causal)  # same draws in a group
        full = [rng.standard_normal((heads, seq, d)).astype(npdt) for _ in range(3)]
        want = P.shard_sequence(reference(*full, causal), gi, gsize, axis=1, layout=layout)
        feeds = {
            nm: P.shard_sequence(a, gi, gsize, axis=1, layout=layout) for nm, a in zip("qkv", full)
        }
        shape = (heads, s_local, d)
        label = (
            f"{dtype:<8} d={d:<3} {'causal' if causal else 'full':<6} {layout:<10} "
            f"{'groups' if groups else 'all':<6} {'graph' if graph else 'eager'}"
        )
        problem = ""
        errs = (np.nan, np.nan)
        try:
            net, ring = self.session("ring", shape, dtype, causal, layout, groups, graph)
            fused = sum(lay.op.name == "fused_ring_attention" for lay, *_ in ring.program.steps)
            if not self.cpu and (fused != 1 or ring.program.notes):
                problem = f"not fused: {fused} fused steps, notes {ring.program.notes}"
            _, ag = self.session("allgather_kv", shape, dtype, causal, layout, groups, False)
            got_ag = np.asarray(ag.run(feeds)["o"], np.float64)
            for _ in range(3):  # eager; the first graph call runs eagerly, then replays
                got = ring.run(feeds)["o"]
            ring.close()
            ag.close()
            got64 = np.asarray(got, np.float64)
            errs = (rel(got64, want), float(np.linalg.norm(got64 - got_ag) / np.linalg.norm(want)))
            if got.dtype != npdt or got.shape != shape:
                problem = f"output {got.shape} {got.dtype}, expected {shape} {npdt}"
        except Exception as e:  # noqa: BLE001 - reported as a failed case, on every rank
            problem = f"{type(e).__name__}: {e}"
            self.broken = True
        ok = not problem and max(errs) < TOL[dtype]
        oks = world.comm.allgather((ok, errs, problem))
        self.broken = world.comm.allreduce(int(self.broken), op=_max()) > 0
        if all(o for o, _, _ in oks):
            self.passed += 1
        else:
            self.failed += 1
        if rank == 0:
            worst_ref = max(e[0] for _, e, _ in oks)
            worst_ag = max(e[1] for _, e, _ in oks)
            why = next((p for _, _, p in oks if p), "")
            print(
                f"{'ok  ' if all(o for o, _, _ in oks) else 'FAIL'} {label} rel err vs f64 "
                f"{worst_ref:.1e}, vs allgather_kv {worst_ag:.1e}{'  ' + why if why else ''}",
                flush=True,
            )

    def overlap(self, heads=8, s_local=8192, d=128, dtype="bfloat16", repeat=10) -> None:
        """Time the ring, its compute alone and its exchanges alone (runner modes)."""
        import cupy as cp

        from trtdsl.backends.cupy.ring import CupyDevice
        from trtdsl.backends.ring_exec import RingRunner

        world = self.world
        net = td.Network("ring_timing", world=world)
        ins = [net.input(nm, (heads, s_local, d), dtype) for nm in "qkv"]
        net.output(P.cp_attention(*ins, strategy="ring"), "o")
        runner = RingRunner(net.regions[0], CupyDevice())
        ctx = SimpleNamespace(world=world, matmul=cp.matmul, use_kernels=True)
        rng = np.random.default_rng(world.rank)
        npdt = td.as_dtype(dtype).numpy
        q, k, v = (cp.asarray(rng.standard_normal((heads, s_local, d)).astype(npdt)) for _ in "qkv")
        runner.run(q, k, v, ctx, check=True)  # agreement, kernels, NCCL connections
        times = {}
        for mode in ("ring", "compute", "comm", "ring"):
            runner.run(q, k, v, ctx, mode=mode)
            samples = []
            for _ in range(repeat):
                world.comm.Barrier()
                cp.cuda.Device().synchronize()
                t0 = time.perf_counter()
                runner.run(q, k, v, ctx, mode=mode)
                cp.cuda.Device().synchronize()
                samples.append(max(world.comm.allgather(time.perf_counter() - t0)))
            times[mode] = statistics.median(samples) * 1e3
        both = times["compute"] + times["comm"]
        hidden = (both - times["ring"]) / max(min(times["compute"], times["comm"]), 1e-9)
        verdict = "PASS" if times["ring"] < 0.95 * both else "WARN"
        if world.rank == 0:
            print(
                f"OVERLAP {verdict}: {heads} heads x {s_local} tokens/rank x {d}, {dtype}, "
                f"{self.n} ranks: ring {times['ring']:.2f} ms; compute alone "
                f"{times['compute']:.2f} ms + communication alone {times['comm']:.2f} ms = "
                f"{both:.2f} ms; {100 * min(max(hidden, 0.0), 1.0):.0f}% of the shorter one hidden",
                flush=True,
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="numpy backend, no fusion (script check)")
    ap.add_argument("--quick", action="store_true", help="fewer cases (one dtype, eager+graph)")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    c = Checker(args.cpu)
    group_sets = [None] + ([[[0, 1], [2, 3]]] if c.n == 4 else [])
    dtypes = ["bfloat16"] if args.quick else ["float16", "bfloat16"]
    graphs = [False] if args.cpu else [False, True]
    s_local = 16 if args.cpu else 256
    for dtype in dtypes:
        for d in (64, 128):
            for causal in (False, True):
                for layout in ("contiguous", "zigzag"):
                    for groups in group_sets:
                        for graph in graphs:
                            if not c.broken:
                                c.case(dtype, d, causal, layout, groups, graph, s_local=s_local)
    for dtype, d in (("float32", 64), ("float16", 80)):  # the float32 fallback of the blocks
        for graph in graphs:
            if not c.broken:
                c.case(dtype, d, True, "zigzag", None, graph, s_local=s_local)
    if c.rank == 0:
        stopped = " (stopped after an exception)" if c.broken else ""
        print(f"RING: {c.passed} passed, {c.failed} failed{stopped}", flush=True)
    if not args.cpu and not args.no_timing and not c.broken:
        try:
            c.overlap()
        except Exception as e:  # noqa: BLE001 - timing is information
            print(f"OVERLAP rank {c.rank}: not measured: {type(e).__name__}: {e}", flush=True)
    if not args.cpu:
        c.world.close()
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
