"""Benchmark: our flash-attention forward against torch SDPA (cuDNN and flash backends).

Part ``single`` (one GPU): batch 1, ``--heads`` heads, head_dim in ``--head-dims``, sequence
lengths ``--seqs`` (Sq = Sk), full and causal, fp16 and bf16. "ours" is the kernel
``flash_attention`` picks (the "kernel" column: ws, tma or pointer). Each time is the median of
``--reps`` runs timed with CUDA events after ``--warmup`` runs; TFLOP/s counts 4*B*H*Sq*Sk*D
for full attention and half of it for causal. "vs cuDNN" is our TFLOP/s over cuDNN's; "err" is
||ours - cuDNN|| / ||cuDNN||. torch is only the yardstick: it is imported inside this file's
functions, never by the kernels.

``--sweep`` instead times candidate tile configs of our kernel (for the table in
``kernels/configs.py``). ``--quick`` is a short run (16k only, bf16, head_dim 128).

``--sweep-tma`` times, on the same inputs and round-robin (each round runs every kernel once,
so clock drift hits all alike), cuDNN SDPA, our pointer kernel (its table tile) and every TMA
candidate of ``kernels/tma_configs.py``; one table with TFLOP/s, the ratio to cuDNN and each
kernel's error against cuDNN, then the best TMA tile per (head_dim, mask) by the geometric mean
of its ratio to cuDNN over lengths and dtypes, and the ``_BY_HEAD_DIM`` lines to paste.
Defaults there: 16k/32k/64k tokens, 10 rounds after 2 warm-up rounds. The kernels it needs are
compiled first, in parallel, into ``$TRTDSL_KERNEL_CACHE`` (cache hits are free);
``--compile-only`` does just that and needs no GPU (run it where the cache is prepared).
``--sweep-ws`` does the same for the warp-specialized kernel's tiles (``kernels/ws_configs.py``:
the table's and the candidates), against cuDNN and the TMA kernel's table tile.

    python3 benchmarks/attention_gpu.py [--quick] [--sweep | --sweep-tma | --sweep-ws]

A second part (context-parallel strategies on 2 and 4 GPUs) is to be added as another entry of
``PARTS``; ``main`` runs the parts named by ``--parts``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timing import cupy_events, median_ms, torch_events  # benchmarks/timing.py

try:
    import trtdsl.kernels as K
    from trtdsl.kernels import tma_configs as TC
    from trtdsl.kernels import ws_configs as WC
    from trtdsl.kernels.attention import attention_forward, pick_tiles
    from trtdsl.kernels.compile import compile_kernel
    from trtdsl.kernels.configs import AttentionConfig, KernelSpec, attention_config, attention_spec
except ImportError:  # run from a checkout where kernels/ is not installed under trtdsl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import kernels as K
    from kernels import tma_configs as TC
    from kernels import ws_configs as WC
    from kernels.attention import attention_forward, pick_tiles
    from kernels.compile import compile_kernel
    from kernels.configs import AttentionConfig, KernelSpec, attention_config, attention_spec

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

    def ours(
        self, causal: bool, config: AttentionConfig | None = None, tma: TC.TmaConfig | None = None,
        ws: WC.WsConfig | None = None,
    ) -> Callable[[], None]:  # fmt: skip
        """One kernel: the pointer kernel (``config``: its tile), or the TMA / warp-specialized
        one with tile ``tma`` / ``ws``."""

        def run() -> None:
            attention_forward(
                self.cq, self.ck, self.cv, self.o, None, scale=self.scale, causal=causal,
                dtype=self.dtype, config=config, tma=tma, ws=ws,
            )  # fmt: skip

        return run

    def picked(self, causal: bool) -> tuple[str, Callable[[], None]]:
        """(kind, run) of the kernel ``flash_attention`` picks for this problem."""
        ws, tma = pick_tiles(self.cq, self.ck, self.cv, self.o, self.dtype, causal, 0, 0)
        kind = "ws" if ws else "tma" if tma else "pointer"
        return kind, self.ours(causal, tma=tma, ws=ws)

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
        "| D | S | mask | dtype | kernel | ours ms | ours TFLOP/s | cuDNN ms | cuDNN TFLOP/s "
        "| flash ms | flash TFLOP/s | vs cuDNN | err |",
        "| ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in args.head_dims:
        for s in args.seqs:
            for causal in (False, True):
                for dtype in args.dtypes:
                    p = Problem(s, args.heads, d, dtype)
                    f = flops(s, s, args.heads, d, causal)
                    kind, ours = p.picked(causal)
                    ms = {"ours": median_ms(ours, cupy_events, args.reps, args.warmup)}
                    err = float("nan")
                    for be in ("cudnn", "flash"):
                        try:
                            with torch.no_grad():
                                fn = p.sdpa(causal, be)
                                ms[be] = median_ms(fn, torch_events, args.reps, args.warmup)
                            if be == "cudnn":
                                ours()
                                cp.cuda.Device().synchronize()
                                err = p.err_vs(fn.out["o"])
                        except Exception as e:  # a backend may refuse a shape or dtype
                            print(f"  {be} failed for D={d} S={s}: {type(e).__name__}: {e}")
                            ms[be] = float("nan")
                    tf = {k: f / (v * 1e-3) / 1e12 for k, v in ms.items()}
                    mask = "causal" if causal else "full"
                    line = (
                        f"| {d} | {s} | {mask} | {dtype} | {kind} | {ms['ours']:.2f} | "
                        f"{tf['ours']:.0f} | "
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


def ws_tiles(d: int, causal: bool) -> list[WC.WsConfig]:
    """The warp-specialized tiles ``--sweep-ws`` times: the table's first, then the candidates
    (pingpong ones for full attention only)."""
    table = [WC.WS_CONFIGS[k] for k in WC.WS_CONFIGS if k[0] == d and k[2] == causal][:1]
    tiles = dict.fromkeys(table + list(WC.CANDIDATES.get(d, ())))
    return [t for t in tiles if not (causal and t.pingpong)]


def tma_sweep_specs(args: argparse.Namespace) -> list[KernelSpec]:
    """Every kernel ``--sweep-tma`` (``--sweep-ws``) launches: the pointer kernel's table tiles
    and the TMA candidates (the TMA table tiles and the warp-specialized tiles), for the
    head_dims and dtypes asked, full and causal."""
    specs = []
    for d in args.head_dims:
        for dt in args.dtypes:
            for c in (False, True):
                if args.sweep_ws:
                    tma = TC.tma_config(d, dt, c)
                    specs += [TC.tma_spec(d, dt, c, tma)] if tma else [attention_spec(d, dt, c)]
                    specs += [WC.ws_spec(d, dt, c, cfg) for cfg in ws_tiles(d, c)]
                    continue
                specs.append(attention_spec(d, dt, c))
                specs += [TC.tma_spec(d, dt, c, cfg) for cfg in TC.CANDIDATES.get(d, ())]
    return specs


def precompile(specs: list[KernelSpec], jobs: int) -> None:
    """Compile ``specs`` into the disk cache in ``jobs`` processes (spawned: no CUDA state
    inherited); a failure is printed, not raised (that candidate then fails when timed)."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = [(spec, ex.submit(compile_kernel, spec)) for spec in specs]
        built = 0
        for spec, fut in futures:
            try:
                built += not fut.result().from_cache
            except Exception as e:
                print(f"  compile failed: {spec.fn_name} {spec.constexprs} {spec.options}: {e}")
    dt = time.perf_counter() - t0
    print(
        f"kernels: {len(specs)} needed, {built} compiled ({dt:.1f}s, {jobs} processes)", flush=True
    )


def round_robin_ms(fns: list[Callable[[], Any]], reps: int, warmup: int) -> list[float]:
    """Median ms of each of ``fns`` over ``reps`` rounds (each round times every fn once, with
    CUDA events on the current stream) after ``warmup`` untimed rounds; inf for one that
    raises."""
    import cupy as cp

    times: list[list[float]] = [[] for _ in fns]
    dead = [False] * len(fns)
    for r in range(warmup + reps):
        for i, fn in enumerate(fns):
            if dead[i]:
                continue
            start, end = cp.cuda.Event(), cp.cuda.Event()
            try:
                start.record()
                fn()
                end.record()
                end.synchronize()
            except Exception as e:
                print(f"  kernel {i} failed: {type(e).__name__}: {e}", flush=True)
                dead[i] = True
                continue
            if r >= warmup:
                times[i].append(cp.cuda.get_elapsed_time(start, end))
    return [statistics.median(t) if t and not d else float("inf") for t, d in zip(times, dead)]


def tma_code(cfg: TC.TmaConfig) -> str:
    """``TmaConfig(128, 64, 8, 3)`` (extra fields only where set), for pasting."""
    extra = (f", split={cfg.split}" if cfg.split > 1 else "") + (
        f", maxnreg={cfg.maxnreg}" if cfg.maxnreg else ""
    )
    return f"TmaConfig({cfg.block_m}, {cfg.block_n}, {cfg.num_warps}, {cfg.num_stages}{extra})"


def ws_code(cfg: WC.WsConfig) -> str:
    """``WsConfig(64, 128, 2, pingpong=True)`` (fields off their defaults only), for pasting."""
    extra = ("" if cfg.overlap else ", overlap=False") + (", pingpong=True" if cfg.pingpong else "")
    return f"WsConfig({cfg.block_m}, {cfg.block_n}, {cfg.num_stages}{extra})"


def summarize_tma(
    ratios: dict[tuple[int, bool, str], list[float]], bad: set, kind: str = "tma"
) -> str:
    """Best tile of ``kind`` ("tma" or "ws") per (head_dim, mask) by the geometric mean of its
    TFLOP/s over cuDNN's, against the baseline kernel ("pointer"; the TMA table tile for
    "ws")."""

    def geo(xs: list[float]) -> float:
        return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs and min(xs) > 0 else 0.0

    rows = [
        f"| D | mask | baseline vs cuDNN | best {kind} tile | {kind} vs cuDNN (min-max) "
        f"| {kind} / baseline | second {kind} tile | its vs cuDNN |",
        "| ---: | --- | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    cls = "WsConfig" if kind == "ws" else "TmaConfig"
    paste = [f"_BY_HEAD_DIM: dict[tuple[int, bool], {cls}] = {{"]
    for d, causal in sorted({(d, c) for d, c, _ in ratios}):
        ptr = geo(ratios.get((d, causal, "pointer"), []))
        ranked = sorted(
            ((geo(v), k) for (dd, c, k), v in ratios.items()
             if dd == d and c == causal and k != "pointer" and (d, causal, k) not in bad),
            reverse=True,
        )  # fmt: skip
        if not ranked:
            continue
        (g1, best), second = ranked[0], (ranked[1] if len(ranked) > 1 else (0.0, "-"))
        lo, hi = min(ratios[(d, causal, best)]), max(ratios[(d, causal, best)])
        mask = "causal" if causal else "full"
        rows.append(
            f"| {d} | {mask} | {ptr:.2f} | {best} | {g1:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{g1 / ptr if ptr else float('nan'):.2f} | {second[1]} | {second[0]:.2f} |"
        )
        if kind == "ws":
            cfg_ws = next(c for c in ws_tiles(d, causal) if c.label == best)
            paste.append(f"    ({d}, {causal}): {ws_code(cfg_ws)},")
        else:
            cfg = next(c for c in TC.CANDIDATES[d] if c.label == best)
            paste.append(f"    ({d}, {causal}): {tma_code(cfg)},")
    paste.append("}")
    return "\n".join(rows) + "\n\n```python\n" + "\n".join(paste) + "\n```"


def time_tma_candidates(
    p: Problem, causal: bool, args: argparse.Namespace, kind: str = "tma"
) -> list[tuple]:
    """(kind, tile, ms, err vs cuDNN) for cuDNN, the baseline kernel and each candidate of
    ``kind`` on problem ``p``, timed round-robin. "tma": the pointer kernel's table tile, then
    the TMA candidates; "ws": the TMA table tile (as "pointer" where there is none, named
    "pointer" in both: the baseline), then the warp-specialized tiles."""
    import torch

    cfg = attention_config(p.d, p.dtype, causal)
    tma = TC.tma_config(p.d, p.dtype, causal) if kind == "ws" else None
    runs: list[tuple[str, str, Callable[[], Any]]] = []
    with torch.no_grad():
        runs.append(("cuDNN", "-", p.sdpa(causal, "cudnn")))
        ref = runs[0][2].out["o"]  # type: ignore[attr-defined]
        tile = f"{cfg.block_m}x{cfg.block_n} w{cfg.num_warps} s{cfg.num_stages}"
        tile = f"TMA {tma.label}" if tma else tile
        runs.append(("pointer", tile, p.ours(causal, tma=tma)))
        if kind == "ws":
            runs += [("ws", c.label, p.ours(causal, ws=c)) for c in ws_tiles(p.d, causal)]
        else:
            runs += [("tma", c.label, p.ours(causal, tma=c)) for c in TC.CANDIDATES.get(p.d, ())]
        ms = round_robin_ms([r[2] for r in runs], args.reps, args.warmup)
    errs = [0.0]
    for _, _, fn in runs[1:]:
        try:
            fn()
            torch.cuda.synchronize()
            errs.append(p.err_vs(ref))
        except Exception:
            errs.append(float("nan"))
    return [(kind, tile, t, e) for (kind, tile, _), t, e in zip(runs, ms, errs)]


def run_sweep_tma(args: argparse.Namespace) -> str:
    return run_tile_sweep(args, "tma")


def run_sweep_ws(args: argparse.Namespace) -> str:
    return run_tile_sweep(args, "ws")


def run_tile_sweep(args: argparse.Namespace, sweep: str) -> str:
    """cuDNN, the baseline kernel and each candidate of ``sweep`` ("tma" or "ws") on the same
    inputs, timed round-robin; returns the Markdown table, then the per-(head_dim, mask)
    summary. A kernel whose error against cuDNN exceeds 2e-2 is marked WRONG and never
    picked."""
    import torch

    rows = [
        "| D | S | mask | dtype | kernel | tile | ms | TFLOP/s | vs cuDNN | err | |",
        "| ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    ratios: dict[tuple[int, bool, str], list[float]] = {}
    bad: set[tuple[int, bool, str]] = set()
    for d in args.head_dims:
        for s in args.seqs:
            for dtype in args.dtypes:
                p = Problem(s, args.heads, d, dtype)
                for causal in (False, True):
                    res = time_tma_candidates(p, causal, args, sweep)
                    f = flops(s, s, args.heads, d, causal)
                    cudnn_ms = res[0][2]
                    ok = [t for kind, _, t, e in res if kind == sweep and e < 2e-2]
                    for kind, tile, t, e in res:
                        vs = cudnn_ms / t
                        key = (d, causal, "pointer" if kind == "pointer" else tile)
                        if kind != "cuDNN":
                            ratios.setdefault(key, []).append(vs)
                        if kind == sweep and not e < 2e-2:
                            bad.add(key)
                        mark = f"best {sweep}" if kind == sweep and ok and t == min(ok) else ""
                        mark = "WRONG" if not e < 2e-2 else mark
                        line = (
                            f"| {d} | {s} | {'causal' if causal else 'full'} | {dtype} | {kind} "
                            f"| {tile} | {t:.2f} | {f / (t * 1e-3) / 1e12:.0f} | {vs:.2f} | "
                            f"{e:.1e} | {mark} |"
                        )
                        print(line, flush=True)
                        rows.append(line)
                del p
                torch.cuda.empty_cache()
    return "\n".join(rows) + "\n\n" + summarize_tma(ratios, bad, sweep)


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
    ap.add_argument(
        "--sweep-tma",
        action="store_true",
        help="time the TMA candidates against the pointer kernel and cuDNN",
    )
    ap.add_argument(
        "--sweep-ws",
        action="store_true",
        help="time the warp-specialized tiles against the TMA kernel and cuDNN",
    )
    ap.add_argument(
        "--compile-only",
        action="store_true",
        help="with --sweep-tma or --sweep-ws: only compile its kernels into the cache (no GPU)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=min(16, os.cpu_count() or 1),
        help="processes compiling kernels before --sweep-tma",
    )
    ap.add_argument("--out", default=None, help="also write the table(s) to this file")
    args = ap.parse_args()
    sweeping = args.sweep_tma or args.sweep_ws
    if sweeping:  # its own defaults: the lengths of the issue, fewer rounds
        args.seqs = args.seqs if "--seqs" in sys.argv else "16384,32768,65536"
        args.reps = args.reps if "--reps" in sys.argv else 10
        args.warmup = args.warmup if "--warmup" in sys.argv else 2
    args.seqs = [int(x) for x in args.seqs.split(",")]
    args.head_dims = [int(x) for x in args.head_dims.split(",")]
    args.dtypes = args.dtypes.split(",")
    if args.quick:
        args.seqs, args.head_dims, args.dtypes, args.reps = [16384], [128], ["bfloat16"], 5
    if sweeping:
        precompile(tma_sweep_specs(args), args.jobs)
        if args.compile_only:
            return 0
    import cupy as cp

    dev = cp.cuda.runtime.getDeviceProperties(0)
    print(f"device: {dev['name'].decode()}, kernels from {K.__file__}", flush=True)
    if args.sweep_ws:
        tables = [run_sweep_ws(args)]
    elif args.sweep_tma:
        tables = [run_sweep_tma(args)]
    elif args.sweep:
        tables = [run_sweep(args)]
    else:
        tables = [PARTS[p](args) for p in args.parts.split(",")]
    text = "\n\n".join(tables)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
