#!/usr/bin/env python3
"""GPU check of cupy sessions: eager session == one-shot run, cuda_graph=True == eager, and the
graph is faster for a small network. ``mpirun -np N python3 gpu/check_sessions.py``."""

from __future__ import annotations

import sys
import time

import cupy as cp
import numpy as np

import trtdsl as td
from trtdsl.backends.cupy import NcclWorld


def main() -> int:
    world = NcclWorld()
    net = td.Network("small", world=world)
    x = net.input("x", (256, 256))
    w = np.random.default_rng(world.rank).standard_normal((256, 256)).astype("float32") * 0.05
    h = (x @ w).gelu().all_reduce("sum")
    net.output((h * 0.5).relu().all_gather(), "y")
    feeds = {"x": np.random.default_rng(7).standard_normal((256, 256)).astype("float32")}
    ref = net.run(feeds, backend="cupy")["y"]
    ok = True
    with net.compile(backend="cupy") as eager, net.compile(backend="cupy", cuda_graph=True) as g:
        for _ in range(3):
            a, b = eager.run(feeds)["y"], g.run(feeds)["y"]
            ok &= np.allclose(a, ref, rtol=1e-5, atol=1e-5) and np.allclose(b, ref, 1e-5, 1e-5)
        xd = cp.asarray(feeds["x"])
        times = {}
        for name, s in (("eager", eager), ("graph", g)):
            for _ in range(5):
                s.run({"x": xd})
            world.comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(50):
                s.run({"x": xd})
            times[name] = (time.perf_counter() - t0) / 50 * 1e6
    faster = times["graph"] < times["eager"]
    verdict = world.comm.allreduce(int(ok and faster), op=__import__("mpi4py").MPI.MIN)
    if world.rank == 0:
        print(f"session == run, cuda_graph == eager: {'PASS' if ok else 'FAIL'}")
        print(f"eager {times['eager']:.1f} us, graph {times['graph']:.1f} us per run: "
              f"{'PASS' if faster else 'FAIL'} (graph faster)")  # fmt: skip
    world.close()
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
