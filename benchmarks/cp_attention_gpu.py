"""Benchmark: context-parallel attention strategies vs one-GPU attention on real GPUs.

Run with one process per GPU (cupy backend, collectives through NCCL)::

    mpirun -np 2 python3 benchmarks/cp_attention_gpu.py [--seqs 8192,16384,32768,65536]

For each total sequence length S the full q, k, v ([heads, S, head_dim], float16, same seed on
every rank) are drawn; "1 GPU" runs plain attention over the whole sequence on each GPU on its
own; each strategy runs the DSL block with the sequence split over the ranks. Every strategy's
output is compared with the 1-GPU rows of its rank. Times are the median of ``--repeat`` runs
(after a warm-up) of the slowest rank, synchronized, inputs already on the GPU. The scores are
held ``q_chunk`` query rows at a time (see --score-gib). Prints a Markdown table.
``--cpu`` runs tiny sizes on the numpy backend to check this script without a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import trtdsl as td
from trtdsl import parallel as P


def q_chunk_for(heads: int, s_kv: int, score_gib: float) -> int:
    """Largest power of two of query rows whose float32 scores fit in ``score_gib``."""
    rows = int(score_gib * 2**30 / (heads * s_kv * 4))
    c = 1
    while c * 2 <= rows:
        c *= 2
    return max(c, 16)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seqs", default="8192,16384,32768,65536")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--score-gib", type=float, default=4.0, help="scores held per chunk (GiB)")
    ap.add_argument(
        "--causal-up-to",
        type=int,
        default=32768,
        help="also run causal attention for S up to this length",
    )
    ap.add_argument("--out", default=None, help="also write the table to this file")
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args()

    if args.cpu:
        world = td.MPIWorld()
        backend, xp = "numpy", np

        def sync() -> None:
            pass
    else:
        import cupy as cp

        from trtdsl.backends.cupy import NcclWorld

        world = NcclWorld()
        backend, xp = "cupy", cp

        def sync() -> None:
            cp.cuda.get_current_stream().synchronize()

    n, rank = world.size, world.rank
    h, dh, dt = args.heads, args.head_dim, args.dtype
    run_opts = {} if args.cpu else {"return_device": True}

    def timed(net: td.Network, feeds: dict) -> tuple[float, object]:
        out = None
        times = []
        for i in range(args.repeat + 1):
            world.comm.Barrier()
            sync()
            t0 = time.perf_counter()
            out = net.run(feeds, backend=backend, **run_opts)["o"]
            sync()
            dt_ = time.perf_counter() - t0
            if i:
                times.append(max(world.comm.allgather(dt_)))
        return statistics.median(times), out

    rows = []
    for seq in (int(s) for s in args.seqs.split(",")):
        if seq % n:
            raise SystemExit(f"sequence {seq} does not split over {n} ranks")
        sl = seq // n
        rng = np.random.default_rng(seq)
        full = [xp.asarray(rng.standard_normal((h, seq, dh)).astype(dt)) for _ in range(3)]
        local = {nm: a[:, rank * sl : (rank + 1) * sl].copy() for nm, a in zip("qkv", full)}
        for causal in (False, True):
            if causal and seq > args.causal_up_to:
                continue
            flops = 4.0 * seq * seq * h * dh * (0.5 if causal else 1.0)
            # one GPU: the whole sequence, no world
            net = td.Network("attn_1gpu")
            ins = [net.input(nm, (h, seq, dh), dt) for nm in "qkv"]
            c1 = q_chunk_for(h, seq, args.score_gib)
            net.output(P.scaled_dot_product_attention(*ins, causal=causal, q_chunk=c1), "o")
            t1, ref = timed(net, dict(zip("qkv", full)))
            ref_rows = ref[:, rank * sl : (rank + 1) * sl].astype(xp.float32)
            del ref
            rows.append(
                dict(
                    seq=seq,
                    causal=causal,
                    strategy="1 GPU",
                    ranks=1,
                    ms=t1 * 1e3,
                    tflops=flops / t1 / 1e12,
                    speedup=1.0,
                    err=0.0,
                    recv_mb=0.0,
                    q_chunk=c1,
                )
            )
            for strategy in ("allgather_kv", "ring", "ulysses"):
                if strategy == "ulysses" and h % n:
                    continue
                s_kv = sl if strategy == "ring" else seq
                heads = h // n if strategy == "ulysses" else h
                c = q_chunk_for(heads, s_kv, args.score_gib)
                net = td.Network(f"cp_{strategy}", world=world)
                ins = [net.input(nm, (h, sl, dh), dt) for nm in "qkv"]
                out = P.cp_attention(*ins, strategy=strategy, causal=causal, q_chunk=c)
                net.output(out, "o")
                vol = P.measure_comm_volume(net).total
                t, got = timed(net, local)
                scale = float(xp.abs(ref_rows).max())
                err = float(xp.abs(got.astype(xp.float32) - ref_rows).max()) / scale
                err = max(world.comm.allgather(err))
                rows.append(
                    dict(
                        seq=seq,
                        causal=causal,
                        strategy=strategy,
                        ranks=n,
                        ms=t * 1e3,
                        tflops=flops / t / 1e12,
                        speedup=t1 / t,
                        err=err,
                        recv_mb=vol.received / 2**20,
                        q_chunk=c,
                    )
                )
            del ref_rows
            if rank == 0:
                print(f"done S={seq} causal={causal}", flush=True)
    if rank == 0:
        head = (
            f"CP attention, {h} heads x {dh} head_dim, {dt}, {n} ranks, backend {backend}; "
            f"median of {args.repeat} (slowest rank)"
        )
        lines = [
            head,
            "",
            "| S | mask | strategy | ranks | time (ms) | TFLOP/s | vs 1 GPU | max rel err "
            "| recv/rank (MiB) | q_chunk |",
            "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            lines.append(
                f"| {r['seq']} | {'causal' if r['causal'] else 'full'} | {r['strategy']} | "
                f"{r['ranks']} | {r['ms']:.1f} | {r['tflops']:.1f} | {r['speedup']:.2f}x | "
                f"{r['err']:.1e} | {r['recv_mb']:.0f} | {r['q_chunk']} |"
            )
        table = "\n".join(lines)
        print(table, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(table + "\n")
    bad = [r for r in rows if r["err"] > 2e-2]
    if hasattr(world, "close"):
        world.close()
    if rank == 0 and bad:
        print(f"{len(bad)} results differ from 1-GPU attention by more than 2e-2", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
