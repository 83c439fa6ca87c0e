"""Benchmark: context-parallel attention on N GPUs against one-GPU cuDNN attention.

One process per GPU (cupy backend, collectives through NCCL)::

    mpirun -np 2 python3 benchmarks/cp_attention_gpu.py [--seqs 8192,16384,32768,65536]
    mpirun -np 2 python3 benchmarks/cp_attention_gpu.py --quick   # a few shapes, bf16
    mpirun -np 2 python3 benchmarks/cp_attention_gpu.py --engine cudnn  # cuDNN per block
    mpirun -np 2 python3 benchmarks/cp_attention_gpu.py --engine triton,cudnn  # both, one table

For each total sequence length S, dtype and mask, every rank draws the same full q, k, v
(``[heads, S, head_dim]``). Rows of the table:

- ``cuDNN 1 GPU``: torch's SDPA with the cuDNN backend over the whole sequence on one GPU (each
  rank runs it on its own GPU; the yardstick, torch is imported only here);
- ``ours 1 GPU``: the DSL attention op over the whole sequence, no world, with the single-GPU
  attention of each ``--engine`` (``triton``: the kernel of ``kernels/``; ``cudnn``: cuDNN's
  fused SDPA through the frontend; set as ``TRTDSL_ATTENTION_ENGINE`` while its sessions are
  made and run), one group of rows per engine;
- each strategy (allgather_kv, ring, ulysses) with the sequence split over the N ranks, in the
  ``--layouts`` given (``zigzag`` balances causal work: rank r holds chunks r and 2N-1-r).
  The ring row is the real ring: the cupy session runs RingAttention's ``ring_attention``
  region as NCCL send/recv of K/V blocks on a comm stream overlapped with the block attention
  (a row marked "(broadcasts)" means the session ran the broadcast graph instead).

Each network is compiled once (a session); on GPUs its runs replay one CUDA graph per rank
(``--no-graph``: eager, layer by layer from Python). Times: median of ``--repeat`` runs after a
warm-up, of the slowest rank, synchronized, inputs already on the GPU. "vs cuDNN" is the cuDNN
1-GPU time over the row's time (> 1: faster). Every CP output is compared with the cuDNN output
of the rank's rows. ``--cpu`` runs tiny sizes on the numpy backend to check this script without
a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import trtdsl as td
from trtdsl import parallel as P

ENGINE_ENV = "TRTDSL_ATTENTION_ENGINE"
ENGINES = ("triton", "cudnn")


def engine_list(text: str) -> list[str]:
    """``--engine``'s comma-separated engines, each one of :data:`ENGINES`.

    >>> engine_list("triton,cudnn")
    ['triton', 'cudnn']
    """
    engines = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        raise argparse.ArgumentTypeError(f"engines must be among {', '.join(ENGINES)}: {text!r}")
    return engines


def flops(seq: int, heads: int, d: int, causal: bool) -> float:
    return 4.0 * seq * seq * heads * d * (0.5 if causal else 1.0)


class Bench:
    """The world, the array module and a timer that reports the slowest rank."""

    def __init__(self, cpu: bool, repeat: int, graph: bool) -> None:
        self.cpu, self.repeat, self.graph = cpu, repeat, graph and not cpu
        self.sessions: list[Any] = []
        if cpu:
            self.world: Any = td.MPIWorld()
            self.xp, self.backend, self.opts = np, "numpy", {}
        else:
            import cupy as cp

            from trtdsl.backends.cupy import NcclWorld

            self.world = NcclWorld()
            self.xp, self.backend, self.opts = cp, "cupy", {"return_device": True}

    def sync(self) -> None:
        if not self.cpu:
            self.xp.cuda.Device().synchronize()  # sessions may run on streams of their own

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        out, times = None, []
        for i in range(self.repeat + 1):
            self.world.comm.Barrier()
            self.sync()
            t0 = time.perf_counter()
            out = fn()
            self.sync()
            if i:
                times.append(max(self.world.comm.allgather(time.perf_counter() - t0)))
        return statistics.median(times), out

    def run_net(self, net: td.Network, feeds: dict) -> Callable[[], Any]:
        """A compiled session's run (made once; with ``--graph`` the whole rank's network,
        NCCL calls and kernels included, replays as one CUDA graph)."""
        opts = dict(self.opts, cuda_graph=True) if self.graph else self.opts
        session = net.compile(backend=self.backend, **opts)
        self.sessions.append(session)
        return lambda: session.run(feeds)["o"]

    def fused(self) -> bool:
        """Whether the last session runs a fused region (the real ring)."""
        steps = self.sessions[-1].program.steps
        return any(layer.op.name.startswith("fused_") for layer, *_ in steps)

    def close(self) -> None:
        for s in self.sessions:
            s.close()
        self.sessions.clear()


def cudnn_attention(full: list[Any], causal: bool, scale: float) -> Callable[[], Any]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.from_dlpack(a)[None] for a in full)

    def run() -> Any:
        with torch.no_grad(), sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)[0]

    return run


def relative_error(xp: Any, got: Any, want: Any) -> float:
    g, w = got.astype(xp.float32), want.astype(xp.float32)
    return float(xp.linalg.norm(g - w) / xp.linalg.norm(w))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seqs", default="8192,16384,32768,65536")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--masks", default="full,causal")
    ap.add_argument("--strategies", default="allgather_kv,ring,ulysses")
    ap.add_argument("--layouts", default="contiguous,zigzag")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the table to this file")
    ap.add_argument("--no-graph", action="store_true", help="run eagerly, not as CUDA graphs")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument(
        "--engine", default="triton", type=engine_list,
        help="single-GPU attention inside our rows, comma-separated: triton, cudnn "
        "(sets TRTDSL_ATTENTION_ENGINE for each engine's rows)",
    )  # fmt: skip
    ap.add_argument(
        "--quick", action="store_true", help="a short run: S 16384 and 32768, bfloat16, repeat 3"
    )
    args = ap.parse_args()
    if args.quick:
        args.seqs, args.dtypes, args.repeat = "16384,32768", "bfloat16", min(args.repeat, 3)
    b = Bench(args.cpu, args.repeat, graph=not args.no_graph)
    xp, n, rank = b.xp, b.world.size, b.world.rank
    h, dh = args.heads, args.head_dim
    scale = 1.0 / float(np.sqrt(dh))
    rows: list[dict[str, Any]] = []

    def add(seq: int, dtype: str, causal: bool, what: str, layout: str, t: float, **kw: Any):
        tflops = flops(seq, h, dh, causal) / t / 1e12
        kw.setdefault("engine", os.environ.get(ENGINE_ENV, "-"))
        rows.append(dict(seq=seq, dtype=dtype, causal=causal, what=what, layout=layout,
                         ms=t * 1e3, tflops=tflops, **kw))  # fmt: skip

    def ours(seq: int, dtype: str, causal: bool, full: list[Any], ref: Any, t_ref: float) -> None:
        """The rows of one engine: our attention on one GPU, then each strategy and layout."""
        net = td.Network("attn_1gpu")
        ins = [net.input(nm, (h, seq, dh), dtype) for nm in "qkv"]
        net.output(P.scaled_dot_product_attention(*ins, causal=causal), "o")
        t1, got = b.time(b.run_net(net, dict(zip("qkv", full))))
        add(seq, dtype, causal, "ours 1 GPU", "-", t1, speedup=t_ref / t1,
            err=relative_error(xp, got, ref))  # fmt: skip
        del got
        for layout in args.layouts.split(","):
            if layout == "zigzag" and not causal:
                continue  # the same work per rank either way
            local = {
                nm: P.shard_sequence(a, rank, n, axis=1, layout=layout)
                for nm, a in zip("qkv", full)
            }
            want = P.shard_sequence(ref, rank, n, axis=1, layout=layout)
            for strategy in args.strategies.split(","):
                if strategy == "ulysses" and h % n:
                    continue
                net = td.Network(f"cp_{strategy}", world=b.world)
                ins = [net.input(nm, (h, seq // n, dh), dtype) for nm in "qkv"]
                out = P.cp_attention(*ins, strategy=strategy, causal=causal, layout=layout)
                net.output(out, "o")
                t, got = b.time(b.run_net(net, local))
                err = max(b.world.comm.allgather(relative_error(xp, got, want)))
                what = f"{strategy} x{n}"
                if strategy == "ring" and not args.cpu and not b.fused():
                    what += " (broadcasts)"
                add(seq, dtype, causal, what, layout, t, speedup=t_ref / t, err=err)
                del got
        b.close()

    for seq in (int(s) for s in args.seqs.split(",")):
        for dtype in args.dtypes.split(","):
            rng = np.random.default_rng(seq)
            npdt = td.as_dtype(dtype).numpy
            full = [
                xp.asarray(rng.standard_normal((h, seq, dh), np.float32).astype(npdt))
                for _ in range(3)
            ]
            for causal in (m == "causal" for m in args.masks.split(",")):
                if args.cpu:
                    net = td.Network("ref")
                    ins = [net.input(nm, (h, seq, dh), dtype) for nm in "qkv"]
                    net.output(P.scaled_dot_product_attention(*ins, causal=causal), "o")
                    t_ref, ref = b.time(b.run_net(net, dict(zip("qkv", full))))
                    b.close()
                else:
                    t_ref, ref = b.time(cudnn_attention(full, causal, scale))
                    ref = xp.from_dlpack(ref)
                what, by = ("numpy 1 rank", "-") if args.cpu else ("cuDNN 1 GPU", "torch")
                add(seq, dtype, causal, what, "-", t_ref, speedup=1.0, err=0.0, engine=by)
                for engine in args.engine:
                    os.environ[ENGINE_ENV] = engine  # read by the cupy backend per call
                    ours(seq, dtype, causal, full, ref, t_ref)
                del ref
                if rank == 0:
                    print(f"done S={seq} {dtype} causal={causal}", flush=True)

    status = 0
    if rank == 0:
        lines = [
            f"CP attention, {h} heads x {dh} head_dim, {n} ranks, backend {b.backend}"
            f"{' (CUDA graphs)' if b.graph else ''}; median of {args.repeat} (slowest rank); "
            "engine = the single-GPU attention inside the row; "
            "vs cuDNN = cuDNN 1-GPU time / time",
            "",
            "| S | dtype | mask | what | layout | engine | ms | TFLOP/s | vs cuDNN | rel err |",
            "| ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            lines.append(
                f"| {r['seq']} | {r['dtype']} | {'causal' if r['causal'] else 'full'} | "
                f"{r['what']} | {r['layout']} | {r['engine']} | {r['ms']:.2f} | "
                f"{r['tflops']:.0f} | {r['speedup']:.2f}x | {r['err']:.1e} |"
            )
        table = "\n".join(lines)
        print(table, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(table + "\n")
        bad = [r for r in rows if r["err"] > 2e-2]
        if bad:
            print(f"{len(bad)} results differ from the reference by more than 2e-2", flush=True)
            status = 1
    if hasattr(b.world, "close"):
        b.world.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
