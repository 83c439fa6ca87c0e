#!/usr/bin/env python3
"""Check trtdsl.backends.nccl (nccl4py adapter) on GPUs: every collective vs NumPy, bandwidth.

Run one process a GPU, from the repository root::

    export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
    mpirun -np 2 -x NCCL_NVLS_ENABLE -x PYTHONUNBUFFERED -x PYTHONPATH=$PWD \\
        python3 gpu/check_nccl.py

Each rank regenerates every rank's inputs from a seed, so each checks its own output against
a pure-NumPy reference. Outputs are poisoned (NaN / 0xDEADBEEF) before each call. The last line
is ``NCCL CHECK: N passed, M failed`` (a case passes when it passes on every rank); the exit
status is 1 on any failure.

``--sim`` runs the same cases on the CPU with an MPI stand-in for NCCL (no CuPy, no GPU), to
check this script itself: ``mpiexec -np 3 python gpu/check_nccl.py --sim``; ``--sim-inject``
makes the stand-in wrong on purpose, and the check must then fail.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
from mpi4py import MPI

from trtdsl.backends import nccl

SEED = 20251123
DTYPES: dict[str, Any] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int32": np.dtype(np.int32),
}
OPS = ("sum", "prod", "max", "min", "avg")
COUNTS = (1, 1237, (1 << 20) + 7)  # elements per rank block: tiny, odd, > 1M (protocol changes)
INT_POISON = np.int32(-559038737)  # 0xDEADBEEF
EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
CASE_TIMEOUT_S = 90  # a hung collective dumps tracebacks and exits instead of eating the lease


# --- pure NumPy reference -----------------------------------------------------------------
def make_input(case: int, rank: int, n: int, dtype: str, op: str) -> np.ndarray:
    """Rank ``rank``'s input of ``n`` elements for case ``case``; any rank can regenerate it."""
    rng = np.random.default_rng([SEED, case, rank])
    if dtype == "int32":
        lo, hi = (-3, 4) if op == "prod" else (-1000, 1000)
        return rng.integers(lo, hi, n, dtype=np.int32)
    if op == "prod":
        x = rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n)
    else:
        x = rng.standard_normal(n) * 4.0
    return x.astype(np.float32).astype(DTYPES[dtype])


def reduce_ref(inputs: list[np.ndarray], op: str, dtype: str) -> np.ndarray:
    """The exact reduction (float64 for floats; int32 arithmetic, wrapping, for ints)."""
    if dtype == "int32":
        stack = np.stack(inputs).astype(np.int64)
        out = {
            "sum": lambda: stack.sum(0),
            "prod": lambda: stack.prod(0),
            "max": lambda: stack.max(0),
            "min": lambda: stack.min(0),
            "avg": lambda: np.trunc(stack.sum(0) / len(inputs)),  # C division truncates
        }[op]()
        return out.astype(np.int64).astype(np.int32)
    stack = np.stack([x.astype(np.float64) for x in inputs])
    return {
        "sum": lambda: stack.sum(0),
        "prod": lambda: stack.prod(0),
        "max": lambda: stack.max(0),
        "min": lambda: stack.min(0),
        "avg": lambda: stack.mean(0),
    }[op]()


def compare(got: np.ndarray, want: np.ndarray, dtype: str, op: str | None, nranks: int) -> str:
    """'' when ``got`` matches ``want`` within the dtype's rounding, else what is wrong."""
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    if dtype == "int32":
        unwritten = int(np.count_nonzero(got == INT_POISON))
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        tol = 1 if op == "avg" else 0
        bad = diff > tol
    else:
        g = got.astype(np.float64)
        unwritten = int(np.count_nonzero(np.isnan(g)))
        w = want.astype(np.float64)
        eps = EPS[dtype]
        if op in (None, "max", "min"):
            # data movement and max/min are exact once the reference is rounded to dtype
            bad = g != w.astype(DTYPES[dtype]).astype(np.float64)
        else:
            scale = np.max(np.abs(w)) if w.size else 0.0
            atol = 2 * nranks * eps * max(scale, 1.0)
            bad = ~(np.abs(g - w) <= atol + 2 * nranks * eps * np.abs(w))
    nbad = int(np.count_nonzero(bad))
    if nbad == 0:
        return ""
    i = int(np.flatnonzero(bad)[0])
    return (
        f"{nbad}/{got.size} elements wrong ({unwritten} never written); "
        f"first at {i}: got {got.flat[i]!r}, want {want.flat[i]!r}"
    )


@dataclass
class Spec:
    """One collective call: sizes, and what each rank's output must be."""

    send_elems: int
    recv_elems: int
    expected: np.ndarray | None  # None: this rank's recv is not an output
    op: str | None


def spec_for(coll: str, inputs: list[np.ndarray], c: int, rank: int, root: int, op, dt) -> Spec:
    """Reference semantics of the eight collectives (NCCL's, TensorRT's axis-0 view)."""
    n = len(inputs)
    blk = slice(rank * c, (rank + 1) * c)
    if coll == "all_reduce":
        return Spec(c, c, reduce_ref(inputs, op, dt), op)
    if coll == "broadcast":
        return Spec(c, c, inputs[root], None)
    if coll == "reduce":
        return Spec(c, c, reduce_ref(inputs, op, dt) if rank == root else None, op)
    if coll == "all_gather":
        return Spec(c, n * c, np.concatenate(inputs), None)
    if coll == "reduce_scatter":
        return Spec(n * c, c, reduce_ref(inputs, op, dt)[blk], op)
    if coll == "all_to_all":
        return Spec(n * c, n * c, np.concatenate([x[blk] for x in inputs]), None)
    if coll == "gather":
        return Spec(c, n * c, np.concatenate(inputs) if rank == root else None, None)
    if coll == "scatter":
        return Spec(n * c, c, inputs[root][blk], None)
    raise ValueError(coll)


@dataclass(frozen=True)
class Case:
    index: int
    coll: str
    dtype: str
    count: int  # elements per rank block
    op: str | None = None
    root: int = -1
    impl: str = ""  # "native" / "p2p" for all_to_all, gather, scatter
    null_recv: bool = False  # reduce: non-roots pass recv = NULL
    in_place: bool = False

    @property
    def name(self) -> str:
        parts = [self.coll, self.dtype, f"n={self.count}"]
        parts += [self.op] if self.op else []
        parts += [f"root={self.root}"] if self.root >= 0 else []
        parts += [self.impl] if self.impl else []
        parts += ["recv=NULL off-root"] if self.null_recv else []
        parts += ["in-place"] if self.in_place else []
        return " ".join(parts)


def all_cases(nranks: int, impls: tuple[str, ...]) -> list[Case]:
    out: list[Case] = []

    def add(**kw: Any) -> None:
        out.append(Case(index=len(out), **kw))

    for dt in DTYPES:
        for c in COUNTS:
            for op in OPS:
                add(coll="all_reduce", dtype=dt, count=c, op=op)
                add(coll="reduce_scatter", dtype=dt, count=c, op=op)
                for root in range(nranks):
                    add(coll="reduce", dtype=dt, count=c, op=op, root=root, null_recv=c == 1237)
            add(coll="all_gather", dtype=dt, count=c)
            for root in range(nranks):
                add(coll="broadcast", dtype=dt, count=c, root=root)
            for impl in impls:
                add(coll="all_to_all", dtype=dt, count=c, impl=impl)
                for root in range(nranks):
                    add(coll="gather", dtype=dt, count=c, root=root, impl=impl)
                    add(coll="scatter", dtype=dt, count=c, root=root, impl=impl)
        add(coll="all_reduce", dtype=dt, count=1237, op="sum", in_place=True)
    return out


# --- device memory: CuPy on GPUs, NumPy in --sim -------------------------------------------
class CupyMem:
    """Raw byte buffers on the current CUDA device, all work on one non-blocking stream."""

    def __init__(self) -> None:
        import cupy

        self.cp = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.stream_ptr = self.stream.ptr

    def upload(self, host: np.ndarray) -> Any:
        with self.stream:
            return self.cp.asarray(np.ascontiguousarray(host).view(np.uint8))

    def poisoned(self, n: int, dtype: str) -> Any:
        with self.stream:
            if dtype == "int32":
                return self.cp.full(n, int(INT_POISON), self.cp.int32).view(self.cp.uint8)
            return self.cp.full(n * DTYPES[dtype].itemsize, 0xFF, self.cp.uint8)  # NaN

    def download(self, buf: Any, dtype: str) -> np.ndarray:
        self.stream.synchronize()
        return self.cp.asnumpy(buf).view(DTYPES[dtype])

    def ptr(self, buf: Any) -> int:
        return int(buf.data.ptr)

    def sync(self) -> None:
        self.stream.synchronize()

    def reset(self) -> None:
        pass


class SimMem:
    """Host buffers standing in for device ones (``--sim``); pointers are their addresses."""

    stream_ptr = 0

    def __init__(self) -> None:
        self.by_ptr: dict[int, np.ndarray] = {}

    def _keep(self, a: np.ndarray) -> np.ndarray:
        self.by_ptr[a.ctypes.data] = a
        return a

    def upload(self, host: np.ndarray) -> np.ndarray:
        return self._keep(np.ascontiguousarray(host).view(np.uint8).copy())

    def poisoned(self, n: int, dtype: str) -> np.ndarray:
        if dtype == "int32":
            return self._keep(np.full(n, INT_POISON, np.int32).view(np.uint8))
        return self._keep(np.full(n * DTYPES[dtype].itemsize, 0xFF, np.uint8))

    def download(self, buf: np.ndarray, dtype: str) -> np.ndarray:
        return buf.copy().view(DTYPES[dtype])

    def ptr(self, buf: np.ndarray) -> int:
        return buf.ctypes.data

    def sync(self) -> None:
        pass

    def reset(self) -> None:
        self.by_ptr.clear()


class SimComm:
    """NCCL semantics over mpi4py on host buffers (``--sim``): checks this script, not NCCL."""

    def __init__(self, mpi: Any, mem: SimMem, inject: bool) -> None:
        self.mpi, self.mem, self.inject = mpi, mem, inject
        self.rank, self.size, self.calls = mpi.Get_rank(), mpi.Get_size(), 0

    def _arr(self, ptr: int | None, dtype: Any) -> np.ndarray | None:
        return None if ptr is None else self.mem.by_ptr[ptr].view(np.dtype(dtype))

    def _all(self, ptr: int | None, n: int, dtype: Any) -> list[np.ndarray]:
        mine = self._arr(ptr, dtype)
        return self.mpi.allgather(None if mine is None else mine[:n].copy())

    def _red(self, xs: list[np.ndarray], op: str, dtype: Any) -> np.ndarray:
        return reduce_ref(xs, op, np.dtype(dtype).name).astype(dtype)

    def _out(self, ptr: int | None, data: np.ndarray, dtype: Any) -> None:
        self.calls += 1
        out = self._arr(ptr, dtype)
        out[: data.size] = data
        if self.inject and self.calls % 7 == 3:
            out[data.size // 2] = out[0] + 1 if out.dtype.kind == "i" else np.nan  # bug on purpose

    def all_reduce(self, s, r, c, dt, op, stream=0):
        self._out(r, self._red(self._all(s, c, dt), op, dt), dt)

    def broadcast(self, s, r, c, dt, root, stream=0):
        self._out(r, self._all(s, c, dt)[root], dt)

    def reduce(self, s, r, c, dt, op, root, stream=0):
        res = self._red(self._all(s, c, dt), op, dt)
        if self.rank == root:
            self._out(r, res, dt)

    def all_gather(self, s, r, c, dt, stream=0):
        self._out(r, np.concatenate(self._all(s, c, dt)), dt)

    def reduce_scatter(self, s, r, c, dt, op, stream=0):
        res = self._red(self._all(s, c * self.size, dt), op, dt)
        self._out(r, res[self.rank * c : (self.rank + 1) * c], dt)

    def all_to_all(self, s, r, c, dt, stream=0, *, native=None):
        xs = self._all(s, c * self.size, dt)
        blk = slice(self.rank * c, (self.rank + 1) * c)
        self._out(r, np.concatenate([x[blk] for x in xs]), dt)

    def gather(self, s, r, c, dt, root, stream=0, *, native=None):
        xs = self._all(s, c, dt)
        if self.rank == root:
            self._out(r, np.concatenate(xs), dt)

    def scatter(self, s, r, c, dt, root, stream=0, *, native=None):
        src = self._all(s, c * self.size, dt)[root]
        self._out(r, src[self.rank * c : (self.rank + 1) * c], dt)


# --- running the cases -------------------------------------------------------------------
@dataclass
class Results:
    rank: int
    cases: list[tuple[str, bool, str]] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)

    def record(self, name: str, problem: str) -> None:
        self.cases.append((name, not problem, problem))

    def check(self, name: str, cond: bool, problem: str = "") -> None:
        self.record(name, "" if cond else (problem or "condition false"))


def run_case(case: Case, comm: Any, mem: Any, rank: int, nranks: int, res: Results) -> None:
    dt, c = case.dtype, case.count
    op = case.op or "sum"
    mem.reset()
    n_in = c * _send_blocks(case, nranks)
    inputs = [make_input(case.index, r, n_in, dt, op) for r in range(nranks)]
    spec = spec_for(case.coll, inputs, c, rank, case.root, case.op, dt)
    ndt = DTYPES[dt]
    send = mem.upload(inputs[rank][: spec.send_elems])
    if case.in_place:
        recv = send
    elif case.null_recv and rank != case.root:
        recv = None
    else:
        recv = mem.poisoned(spec.recv_elems, dt)
    sp, rp = mem.ptr(send), (None if recv is None else mem.ptr(recv))
    st = mem.stream_ptr
    native = None if case.impl != "p2p" else False
    coll = case.coll
    if coll == "all_reduce":
        comm.all_reduce(sp, rp, c, ndt, case.op, st)
    elif coll == "broadcast":
        comm.broadcast(sp, rp, c, ndt, case.root, st)
    elif coll == "reduce":
        comm.reduce(sp, rp, c, ndt, case.op, case.root, st)
    elif coll == "all_gather":
        comm.all_gather(sp, rp, c, ndt, st)
    elif coll == "reduce_scatter":
        comm.reduce_scatter(sp, rp, c, ndt, case.op, st)
    elif coll == "all_to_all":
        comm.all_to_all(sp, rp, c, ndt, st, native=native)
    elif coll == "gather":
        comm.gather(sp, rp, c, ndt, case.root, st, native=native)
    elif coll == "scatter":
        comm.scatter(sp, rp, c, ndt, case.root, st, native=native)
    mem.sync()
    if spec.expected is not None:
        got = mem.download(recv, dt)
        res.record(case.name, compare(got, spec.expected, dt, case.op, nranks))
        if dt == "int32" and case.op == "avg" and nranks > 1:
            exact = np.array_equal(got, spec.expected)
            res.notes.add(f"int32 avg {'equals' if exact else 'differs from'} trunc(sum/n)")
    else:  # documented as unused off-root: say whether NCCL left it alone
        res.record(case.name, "")
        if recv is not None and not case.in_place:
            got = mem.download(recv, dt).view(np.uint8)
            poison = mem.download(mem.poisoned(spec.recv_elems, dt), dt).view(np.uint8)
            touched = not np.array_equal(got, poison)
            what = f"{case.coll} ({case.impl or 'native'})"
            res.notes.add(f"{what}: off-root recv buffer {'WRITTEN' if touched else 'untouched'}")


def _send_blocks(case: Case, nranks: int) -> int:
    return nranks if case.coll in ("reduce_scatter", "all_to_all", "scatter") else 1


# --- GPU-only checks ---------------------------------------------------------------------
def check_capsule_and_identity(comm: nccl.Communicator, rank: int, size: int, dev: int, res):
    api = ctypes.pythonapi
    api.PyCapsule_IsValid.restype = ctypes.c_int
    api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    cap = comm.capsule()
    name = api.PyCapsule_GetName(cap)
    res.check("capsule: PyCapsule_IsValid", api.PyCapsule_IsValid(cap, b"ncclComm_t") == 1)
    res.check("capsule: name is ncclComm_t", name == b"ncclComm_t", repr(name))
    ptr = api.PyCapsule_GetPointer(cap, b"ncclComm_t")
    res.check("capsule: pointer == comm.ptr", ptr == comm.ptr, f"{ptr} != {comm.ptr}")
    res.check("comm.rank/size match MPI", (comm.rank, comm.size) == (rank, size))
    res.check("comm.device (ncclCommCuDevice)", comm.device == dev, f"{comm.device} != {dev}")


def check_send_recv_ring(comm: Any, mem: Any, rank: int, size: int, res: Results) -> None:
    n = 4099
    inputs = [make_input(9000, r, n, "float32", "sum") for r in range(size)]
    src = mem.upload(inputs[rank])
    dst = mem.poisoned(n, "float32")
    with nccl.group():
        comm.send(mem.ptr(src), n, np.float32, (rank + 1) % size, mem.stream_ptr)
        comm.recv(mem.ptr(dst), n, np.float32, (rank - 1) % size, mem.stream_ptr)
    got = mem.download(dst, "float32")
    want = inputs[(rank - 1) % size]
    res.record("send/recv ring in a group", compare(got, want, "float32", None, size))


def check_errors_and_teardown(comm: nccl.Communicator, mem: Any, size: int, res: Results) -> None:
    """An NCCL-side error becomes NcclError; a second communicator; close twice."""
    with nccl.Communicator.from_mpi() as c2:
        buf = mem.upload(np.ones(16, np.float32))
        try:  # an invalid datatype enum, straight to NCCL (bypassing the Python checks)
            nccl.load().bindings.all_reduce(mem.ptr(buf), mem.ptr(buf), 16, 99, 0, c2._h, 0)
        except Exception as e:
            ok = "nvalid" in str(e)
            res.check("NCCL error -> NcclError with names", ok, str(e))
            res.notes.add(f"NCCL's text for a bad datatype: {e}")
        else:
            res.record("NCCL error -> NcclError with names", "no error raised")
        c2.all_reduce(mem.ptr(buf), mem.ptr(buf), 16, np.float32, "sum", mem.stream_ptr)
        got = mem.download(buf, "float32")
        res.check("second communicator works after an argument error", bool(np.all(got == size)))
    res.check("context manager closed the second communicator", c2.closed)
    comm.close()
    comm.close()
    res.check("close() twice", comm.closed)
    try:
        _ = comm.ptr
        res.record("ptr after close raises", "no error")
    except nccl.NcclError:
        res.record("ptr after close raises", "")


def bandwidth(comm: nccl.Communicator, mem: CupyMem, mpi: Any) -> list[tuple[int, ...]]:
    """all_reduce float32 sum, out of place: (bytes, median µs (slowest rank), algbw, busbw)."""
    cp, size = mem.cp, mpi.Get_size()
    rows = []
    nbytes = 1 << 20
    with mem.stream:
        src = cp.ones((1 << 30) // 4, cp.float32)
        dst = cp.empty_like(src)
    while nbytes <= 1 << 30:
        n = nbytes // 4
        iters = 20 if nbytes <= 1 << 28 else 10
        for _ in range(5):
            comm.all_reduce(src.data.ptr, dst.data.ptr, n, np.float32, "sum", mem.stream_ptr)
        mem.sync()
        mpi.Barrier()
        evs = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(iters)]
        for a, b in evs:
            a.record(mem.stream)
            comm.all_reduce(src.data.ptr, dst.data.ptr, n, np.float32, "sum", mem.stream_ptr)
            b.record(mem.stream)
        mem.sync()
        ms = float(np.median([cp.cuda.get_elapsed_time(a, b) for a, b in evs]))
        ms = mpi.allreduce(ms, op=MPI.MAX)
        algbw = nbytes / (ms * 1e-3) / 1e9
        rows.append((nbytes, ms * 1e3, algbw, algbw * 2 * (size - 1) / size))
        nbytes *= 2
    del src, dst
    return rows


# --- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", action="store_true", help="CPU stand-in for NCCL (checks the script)")
    ap.add_argument("--sim-inject", action="store_true", help="--sim, wrong results on purpose")
    ap.add_argument("--no-bandwidth", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="run only the first N cases")
    args = ap.parse_args(argv)

    mpi = MPI.COMM_WORLD
    rank, size = mpi.Get_rank(), mpi.Get_size()
    res = Results(rank)
    say: Callable[[str], None] = (lambda s: print(s, flush=True)) if rank == 0 else (lambda s: None)

    if args.sim:
        mem: Any = SimMem()
        comm: Any = SimComm(mpi, mem, args.sim_inject)
        impls: tuple[str, ...] = ("native", "p2p")
        say(f"SIM mode: {size} ranks, MPI stand-in for NCCL")
    else:
        if os.environ.get("NCCL_NVLS_ENABLE") != "0":
            print(f"rank {rank}: refusing to run: NCCL_NVLS_ENABLE must be 0", flush=True)
            mpi.Abort(2)
        import cupy

        ndev = cupy.cuda.runtime.getDeviceCount()
        dev = rank % ndev
        cupy.cuda.Device(dev).use()
        mem = CupyMem()
        natives = ["ncclAlltoAll", "ncclGather", "ncclScatter"]
        natives = natives if nccl.nccl_version() >= (2, 28, 0) else []
        impls = ("native", "p2p") if len(natives) == 3 else ("p2p",)
        props = cupy.cuda.runtime.getDeviceProperties(dev)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info = mpi.gather(f"rank {rank}: {platform.node()} GPU {dev}/{ndev} {name}", root=0)
        say(f"NCCL {'.'.join(map(str, nccl.nccl_version()))} via nccl4py {nccl.nccl4py_version()}")
        say(f"native ncclAlltoAll/ncclGather/ncclScatter exported: {natives}")
        say(f"CuPy {cupy.__version__}, mpi4py {MPI.Get_library_version().splitlines()[0]}")
        say(f"NCCL_NVLS_ENABLE={os.environ.get('NCCL_NVLS_ENABLE')}, {size} ranks")
        for line in info or []:
            say(line)
        t0 = time.perf_counter()
        comm = nccl.Communicator.from_mpi(mpi)
        say(f"Communicator.from_mpi: {time.perf_counter() - t0:.2f} s")
        check_capsule_and_identity(comm, rank, size, dev, res)

    cases = all_cases(size, impls)
    say(f"{len(cases)} collective cases; counts {COUNTS}; dtypes {list(DTYPES)}")
    t0 = time.perf_counter()
    for case in cases[: args.limit] if args.limit else cases:
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        try:
            run_case(case, comm, mem, rank, size, res)
        except Exception:
            print(f"rank {rank}: {case.name} raised:\n{traceback.format_exc()}", flush=True)
            mpi.Abort(3)
    faulthandler.cancel_dump_traceback_later()
    say(f"cases ran in {time.perf_counter() - t0:.1f} s")

    if not args.sim:
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        check_send_recv_ring(comm, mem, rank, size, res)
        if not args.no_bandwidth:
            rows = bandwidth(comm, mem, mpi)
            say(f"\nall_reduce bandwidth, float32 sum, out of place, {size} ranks (median):")
            say(f"{'size':>10} {'count':>12} {'time us':>10} {'algbw GB/s':>11} {'busbw GB/s':>11}")
            for nbytes, us, alg, bus in rows:
                mib = f"{nbytes >> 20} MiB" if nbytes < 1 << 30 else f"{nbytes >> 30} GiB"
                say(f"{mib:>10} {nbytes // 4:>12} {us:>10.1f} {alg:>11.2f} {bus:>11.2f}")
            say("")
        check_errors_and_teardown(comm, mem, size, res)
        faulthandler.cancel_dump_traceback_later()

    every = mpi.gather((res.cases, res.notes), root=0)
    failed_total = 0
    if rank == 0:
        names = [n for n, _, _ in every[0][0]]
        bad: dict[str, list[str]] = {}
        for r, (cs, _) in enumerate(every):
            if [n for n, _, _ in cs] != names:
                bad.setdefault("case lists differ between ranks", []).append(f"rank {r}")
            for n, ok, msg in cs:
                if not ok:
                    bad.setdefault(n, []).append(f"rank {r}: {msg}")
        notes = sorted(set().union(*(ns for _, ns in every)))
        for n in notes:
            print(f"note: {n}")
        for i, (n, msgs) in enumerate(bad.items()):
            if i < 40:
                print(f"FAIL {n}: {'; '.join(msgs)}")
        failed_total = len(bad)
        print(f"NCCL CHECK: {len(names) - failed_total} passed, {failed_total} failed", flush=True)
    failed_total = mpi.bcast(failed_total, root=0)
    return 1 if failed_total else 0


if __name__ == "__main__":
    sys.exit(main())
