"""Benchmark: our Triton flash-attention forward against torch SDPA (cuDNN and flash backends).

Part ``single`` (one GPU): batch 1, ``--heads`` heads, head_dim in ``--head-dims``, sequence
lengths ``--seqs`` (Sq = Sk), full and causal, fp16 and bf16. Each time is the median of
``--reps`` runs timed with CUDA events after ``--warmup`` runs; TFLOP/s counts 4*B*H*Sq*Sk*D
for full attention and half of it for causal. "vs cuDNN" is our TFLOP/s over cuDNN's; "err" is
||ours - cuDNN|| / ||cuDNN||. torch is only the yardstick: it is imported inside this file's
functions, never by the kernels.

``--sweep`` instead times candidate tile configs of our kernel (for the table in
``kernels/configs.py``). ``--quick`` is a short run (16k only, bf16, head_dim 128).

    python3 benchmarks/attention_gpu.py [--quick] [--sweep] [--out table.md]

A second part (context-parallel strategies on 2 and 4 GPUs) is to be added as another entry of
``PARTS``; ``main`` runs the parts named by ``--parts``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import trtdsl.kernels as K
    from trtdsl.kernels.attention import attention_forward
    from trtdsl.kernels.configs import AttentionConfig, attention_config
except ImportError:  # run from a checkout where kernels/ is not installed under trtdsl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import kernels as K
    from kernels.attention import attention_forward
    from kernels.configs import AttentionConfig, attention_config

SWEEP: dict[int, list[AttentionConfig]] = {  # candidates left after the first sweep
    64: [
        AttentionConfig(128, 64, 8, 3),
        AttentionConfig(128, 64, 8, 4),
        AttentionConfig(128, 128, 8, 3),
        AttentionConfig(64, 64, 4, 3),
        AttentionConfig(64, 64, 4, 4),
        AttentionConfig(64, 128, 4, 3),
    ],
    128: [
        AttentionConfig(128, 128, 8, 3),
        AttentionConfig(128, 128, 8, 2),
        AttentionConfig(128, 64, 8, 3),
        AttentionConfig(128, 64, 8, 4),
        AttentionConfig(64, 64, 4, 3),
    ],
}


def flops(s_q: int, s_k: int, heads: int, d: int, causal: bool, batch: int = 1) -> float:
    f = 4.0 * batch * heads * s_q * s_k * d
    return f / 2 if causal else f


def median_ms(fn: Callable[[], Any], events: Callable[[], tuple[Any, Any, Callable]], reps: int,
              warmup: int) -> float:  # fmt: skip
    """Median of ``reps`` event-timed calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end, elapsed = events()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(elapsed(start, end))
    return statistics.median(times)


def cupy_events() -> tuple[Any, Any, Callable]:
    import cupy as cp

    return cp.cuda.Event(), cp.cuda.Event(), cp.cuda.get_elapsed_time


def torch_events() -> tuple[Any, Any, Callable]:
    import torch

    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    return a, b, lambda x, y: x.elapsed_time(y)


class Problem:
    """One shape: torch tensors [1, H, S, D] and their CuPy int16 views for our kernel."""

    def __init__(self, s: int, heads: int, d: int, dtype: str, seed: int = 0) -> None:
        import cupy as cp
        import torch

        tdt = getattr(torch, dtype)
        g = torch.Generator(device="cuda").manual_seed(seed)
        self.q, self.k, self.v = (
            torch.randn((1, heads, s, d), device="cuda", dtype=tdt, generator=g) for _ in range(3)
        )
        torch.cuda.synchronize()
        # our kernel reads the same memory through CuPy (int16 storage + as_dtype: no need
        # for CuPy's own bfloat16 support)
        self.cq, self.ck, self.cv = (
            cp.from_dlpack(x.view(torch.int16)).reshape(heads, s, d)
            for x in (self.q, self.k, self.v)
        )
        self.o = cp.empty_like(self.cq)
        self.dtype, self.scale, self.s, self.heads, self.d = dtype, d**-0.5, s, heads, d

    def ours(self, causal: bool, config: AttentionConfig | None = None) -> Callable[[], None]:
        def run() -> None:
            attention_forward(
                self.cq, self.ck, self.cv, self.o, None, scale=self.scale, causal=causal,
                dtype=self.dtype, config=config,
            )  # fmt: skip

        return run

    def sdpa(self, causal: bool, backend: str) -> Callable[[], Any]:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        be = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
        out: dict[str, Any] = {}

        def run() -> None:
            with sdpa_kernel([be]):
                out["o"] = F.scaled_dot_product_attention(
                    self.q, self.k, self.v, is_causal=causal, scale=self.scale
                )

        run.out = out  # type: ignore[attr-defined]
        with torch.no_grad():
            run()
        return run

    def err_vs(self, ref: Any) -> float:
        """||ours - ref|| / ||ref|| (ours as in self.o after a run)."""
        import torch

        ours = torch.from_dlpack(self.o).view(ref.dtype).reshape(ref.shape).float()
        r = ref.float()
        return float((ours - r).norm() / r.norm())


def run_single_gpu(args: argparse.Namespace) -> str:
    """Part one: ours vs SDPA cuDNN / flash on one GPU; returns a Markdown table."""
    import cupy as cp
    import torch

    rows = [
        "| D | S | mask | dtype | ours ms | ours TFLOP/s | cuDNN ms | cuDNN TFLOP/s | flash ms "
        "| flash TFLOP/s | vs cuDNN | err |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in args.head_dims:
        for s in args.seqs:
            for causal in (False, True):
                for dtype in args.dtypes:
                    p = Problem(s, args.heads, d, dtype)
                    f = flops(s, s, args.heads, d, causal)
                    ms = {"ours": median_ms(p.ours(causal), cupy_events, args.reps, args.warmup)}
                    err = float("nan")
                    for be in ("cudnn", "flash"):
                        try:
                            with torch.no_grad():
                                fn = p.sdpa(causal, be)
                                ms[be] = median_ms(fn, torch_events, args.reps, args.warmup)
                            if be == "cudnn":
                                p.ours(causal)()
                                cp.cuda.Device().synchronize()
                                err = p.err_vs(fn.out["o"])
                        except Exception as e:  # a backend may refuse a shape or dtype
                            print(f"  {be} failed for D={d} S={s}: {type(e).__name__}: {e}")
                            ms[be] = float("nan")
                    tf = {k: f / (v * 1e-3) / 1e12 for k, v in ms.items()}
                    mask = "causal" if causal else "full"
                    line = (
                        f"| {d} | {s} | {mask} | {dtype} | {ms['ours']:.2f} | {tf['ours']:.0f} | "
                        f"{ms['cudnn']:.2f} | {tf['cudnn']:.0f} | {ms['flash']:.2f} | "
                        f"{tf['flash']:.0f} | {tf['ours'] / tf['cudnn']:.2f} | {err:.1e} |"
                    )
                    print(line, flush=True)
                    rows.append(line)
                    del p
                    torch.cuda.empty_cache()
    return "\n".join(rows)


def run_sweep(args: argparse.Namespace) -> str:
    """Time candidate tile configs of our kernel; returns a Markdown table (best marked)."""
    rows = [
        "| D | S | mask | dtype | BLOCK_M | BLOCK_N | warps | stages | ms | TFLOP/s | |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for d in args.head_dims:
        for s in args.seqs:
            for dtype in args.dtypes:
                p = Problem(s, args.heads, d, dtype)
                for causal in (False, True):
                    f = flops(s, s, args.heads, d, causal)
                    res = []
                    for cfg in SWEEP[d]:
                        try:
                            t = median_ms(p.ours(causal, cfg), cupy_events, args.reps, args.warmup)
                        except Exception as e:
                            print(f"  {cfg} failed: {type(e).__name__}: {e}")
                            t = float("inf")
                        res.append((t, cfg))
                    best = min(res, key=lambda r: r[0])[1]
                    table = attention_config(d, dtype, causal)
                    for t, c in res:
                        mark = ("best " if c == best else "") + ("table" if c == table else "")
                        line = (
                            f"| {d} | {s} | {'causal' if causal else 'full'} | {dtype} | "
                            f"{c.block_m} | {c.block_n} | {c.num_warps} | {c.num_stages} | "
                            f"{t:.2f} | {f / (t * 1e-3) / 1e12:.0f} | {mark} |"
                        )
                        print(line, flush=True)
                        rows.append(line)
                del p
    return "\n".join(rows)


PARTS: dict[str, Callable[[argparse.Namespace], str]] = {
    "single": run_single_gpu,
    # "cp": run_context_parallel,  # part two: CP strategies on 2 and 4 GPUs (to be added)
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--parts", default="single", help=f"comma list of {sorted(PARTS)}")
    ap.add_argument("--seqs", default="8192,16384,32768,65536")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dims", default="128,64")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="16k, bf16, head_dim 128, 5 reps")
    ap.add_argument("--sweep", action="store_true", help="time candidate tile configs instead")
    ap.add_argument("--out", default=None, help="also write the table(s) to this file")
    args = ap.parse_args()
    args.seqs = [int(x) for x in args.seqs.split(",")]
    args.head_dims = [int(x) for x in args.head_dims.split(",")]
    args.dtypes = args.dtypes.split(",")
    if args.quick:
        args.seqs, args.head_dims, args.dtypes, args.reps = [16384], [128], ["bfloat16"], 5
    import cupy as cp

    dev = cp.cuda.runtime.getDeviceProperties(0)
    print(f"device: {dev['name'].decode()}, kernels from {K.__file__}", flush=True)
    tables = [run_sweep(args)] if args.sweep else [PARTS[p](args) for p in args.parts.split(",")]
    text = "\n\n".join(tables)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
