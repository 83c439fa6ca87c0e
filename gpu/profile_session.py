#!/usr/bin/env python3
# ruff: noqa: B023 - each closure is used within the loop iteration that makes it
"""Where a session's per-call time goes: ``mpirun -np 2 python3 gpu/profile_session.py``.

For a one-all_reduce network at 1 KiB and 1 MiB (fp32): the host cost of enqueueing one call
(mean over 2000 back-to-back calls, then one sync) and the latency (median of call + sync) for
nccl4py's ``Communicator.allreduce``, our prepared call (int pointers), ``session.run`` (device
outputs; eager; with and without the NCCL watchdog), and a CUDA-graph session; then
cProfile's top functions of ``session.run``.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import numpy as np

import trtdsl as td
from trtdsl.backends import nccl
from trtdsl.backends.cupy import NcclWorld
from trtdsl.backends.nccl.adapter import unique_id_from_bytes


def main() -> int:
    import cupy as cp

    world = NcclWorld()
    mpi, n, rank = world.comm, world.size, world.rank
    core = nccl.load().core
    uid = bytes(core.get_unique_id()) if rank == 0 else None
    direct = core.Communicator.init(n, rank, unique_id_from_bytes(mpi.bcast(uid, root=0)))
    ours = nccl.Communicator.wrap(direct, rank, n)
    stream = cp.cuda.get_current_stream()
    rows = []
    for nbytes in (1 << 10, 1 << 20):
        elems = nbytes // 4
        x, out = cp.ones(elems, cp.float32), cp.empty(elems, cp.float32)
        net = td.Network("ar", world=world)
        net.output(net.input("x", (elems,)).all_reduce(), "y")
        sess = net.compile(backend="cupy", return_device=True)
        bare = net.compile(backend="cupy", return_device=True, nccl_timeout=None)
        gnet = td.Network("ar_graph", world=world)
        gnet.output(gnet.input("x", (elems,)).all_reduce(), "y")
        graph = gnet.compile(backend="cupy", return_device=True, cuda_graph=True)
        gstream = graph._stream
        prepared = ours.prepare("all_reduce", np.float32, "sum")
        calls = {
            "nccl4py": lambda: direct.allreduce(x, out, core.SUM, stream=stream.ptr),
            "prepared": lambda: prepared(x.data.ptr, out.data.ptr, elems, stream.ptr),
            "session": lambda: sess.run({"x": x}),
            "no watchdog": lambda: bare.run({"x": x}),
            "session out=": lambda: sess.run({"x": x}, out={"y": out}),
            "graph session": lambda: graph.run({"x": x}),
        }
        for name, fn in calls.items():
            for _ in range(20):
                fn()
            stream.synchronize()
            gstream.synchronize()
            mpi.Barrier()
            t0 = time.perf_counter()
            for _ in range(2000):
                fn()
            t_enq = (time.perf_counter() - t0) / 2000 * 1e6
            stream.synchronize()
            gstream.synchronize()
            mpi.Barrier()
            lat = []
            for _ in range(300):
                t0 = time.perf_counter()
                fn()
                stream.synchronize()
                lat.append(time.perf_counter() - t0)
            t_lat = float(np.median(lat)) * 1e6
            t_enq = mpi.allreduce(t_enq, op=__import__("mpi4py").MPI.MAX)
            t_lat = mpi.allreduce(t_lat, op=__import__("mpi4py").MPI.MAX)
            rows.append((nbytes, name, t_enq, t_lat))
        if nbytes == 1 << 10:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(2000):
                sess.run({"x": x})
            prof.disable()
            stream.synchronize()
            if rank == 0:
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
                print(buf.getvalue())
        sess.close()
        bare.close()
        graph.close()
    if rank == 0:
        print(f"{n} ranks; us per call (slowest rank)")
        print(f"{'bytes':>8} {'path':>14} {'enqueue':>9} {'latency':>9}")
        for nbytes, name, a, b in rows:
            print(f"{nbytes:>8} {name:>14} {a:>9.1f} {b:>9.1f}")
    direct.destroy()
    world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
