"""Benchmark: the compute side of one Ring-attention call on one GPU (no communication).

A rank of an N-way ring holds ``s = S/N`` queries and attends to N key blocks of ``s`` keys in
turn, folding each block's result into a float32 running (o, lse). On one H200 this times, for
the rank's work (8 heads x 128, bf16, full mask):

- ``one call``: the rank's queries against all ``S`` keys in one ``flash_attention`` launch
  (the kernel it picks: the warp-specialized one on an H200; what AllGather-KV computes; the
  floor for the block loop);
- ``blocks + merge``: per block ``flash_attention`` writes a bf16 o and the lse and the merge
  kernel folds the bf16 o into the float32 state;
- ``blocks, in-kernel``: ``flash_attention_into`` (the kernel's epilogue folds each block into
  the float32 state: no bf16 partial, no merge kernel; Ring's path);
- with ``--cudnn``: the same rank work through the cuDNN engine (one call; blocks + the merge
  kernel taking its bf16 o directly).

One table: ms per rank call, TFLOP/s, the ratio to the same engine's one call, and the
ceiling of the ring's speedup over one-GPU cuDNN with no communication cost: N x cuDNN's time
for the rank's work (one GPU does all N ranks' work) over the row's time.

    python3 benchmarks/ring_blocks_gpu.py [--seqs 32768,65536] [--ranks 2,4] [--cudnn]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cupy_events, median_ms  # noqa: E402  (benchmarks/timing.py)

try:
    import trtdsl.kernels as K
except ImportError:  # a checkout where kernels/ is not installed under trtdsl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import kernels as K


def rank_work(cp, h: int, s: int, n: int, d: int, scale: float, cudnn: bool) -> dict:
    """name -> a function doing one rank's work of an n-way ring (s queries, n blocks of s)."""
    import ml_dtypes
    import numpy as np

    bf16 = np.dtype(ml_dtypes.bfloat16)  # CuPy 14 holds bfloat16 arrays natively
    rng = cp.random.default_rng(0)
    q = rng.standard_normal((h, s, d), dtype=cp.float32).astype(bf16)
    kv = rng.standard_normal((2, h, n * s, d), dtype=cp.float32).astype(bf16)
    k, v = kv[0], kv[1]
    blocks = [(k[:, i * s : (i + 1) * s], v[:, i * s : (i + 1) * s]) for i in range(n)]
    o_acc = cp.empty((h, s, d), cp.float32)
    lse_acc = cp.empty((h, s), cp.float32)
    A = K.attention

    def blocks_then_merge(attend):
        """Each block through ``attend(kb, vb) -> (o, lse)``, folded by the merge kernel (the
        16-bit o merged as it is into the float32 state)."""

        def run():
            for i, (kb, vb) in enumerate(blocks):
                o, lse = attend(kb, vb)
                if i == 0:
                    o_acc[...] = o
                    lse_acc[...] = lse
                else:
                    A.merge_attention(o_acc, lse_acc, o, lse)

        return run

    def in_kernel():
        for i, (kb, vb) in enumerate(blocks):
            A.flash_attention_into(q, kb, vb, o_acc, lse_acc, scale=scale, first=i == 0)

    ours = lambda kb, vb: A.flash_attention(q, kb, vb, scale=scale, return_lse=True)  # noqa: E731
    work = {
        "one call": lambda: A.flash_attention(q, k, v, scale=scale),
        "blocks + merge": blocks_then_merge(ours),
        "blocks, in-kernel": in_kernel,
    }
    if cudnn:
        from trtdsl.backends.cupy import cudnn_attention as CA

        theirs = lambda kb, vb: CA.attention(q, kb, vb, scale=scale, return_lse=True)  # noqa: E731
        work["cuDNN one call"] = lambda: CA.attention(q, k, v, scale=scale)
        work["cuDNN blocks + merge"] = blocks_then_merge(theirs)
    return work


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seqs", default="32768,65536")
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--cudnn", action="store_true", help="also the cuDNN engine's rows")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import cupy as cp

    h, d = args.heads, args.head_dim
    dev = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    rows = [
        f"Ring compute per rank on one {dev} ({h} heads x {d}, bf16, full mask; median of "
        f"{args.reps}; ratio = the engine's one call / the row):",
        "",
        "| S | ranks | rank work | ms | TFLOP/s | vs one call | ceiling vs 1-GPU cuDNN |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for S in (int(x) for x in args.seqs.split(",")):
        for n in (int(x) for x in args.ranks.split(",")):
            s = S // n
            work = rank_work(cp, h, s, n, d, d**-0.5, args.cudnn)
            flops = 4.0 * s * S * h * d
            times = {name: median_ms(fn, cupy_events, args.reps, 2) for name, fn in work.items()}
            ref = times.get("cuDNN one call")
            for name, t in times.items():
                base = times["cuDNN one call" if name.startswith("cuDNN") else "one call"]
                ceiling = f"{n * ref / t:.2f}x" if ref else "-"
                rows.append(
                    f"| {S} | {n} | {name} | {t:.3f} | {flops / t / 1e9:.0f} | {base / t:.2f} "
                    f"| {ceiling} |"
                )
            del work
            cp.get_default_memory_pool().free_all_blocks()
    table = "\n".join(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
