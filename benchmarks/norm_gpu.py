"""Benchmark: the fused adaLN norm kernel against the op-by-op CuPy path and torch eager.

Part ``table`` (default): DiT shapes, x ``[B, S, D]`` with shift/scale ``[B, 1, D]`` (B=2, S in
``--seqs``, D in ``--dims``, ``--dtypes``), layer norm + modulation ``norm(x) * (1 + scale) +
shift``:

- fused: ``trtdsl.kernels.modulated_norm`` (one Triton kernel, x read once, y written once);
- CuPy op by op: the op's reference on CuPy (``trtdsl.ops.adaln.modulated_norm_reference``:
  float32 mean, variance, normalize, modulate as separate CuPy kernels), what the cupy backend
  ran before the kernel;
- torch eager: ``F.layer_norm(x) * (1 + scale) + shift`` (a yardstick only: torch is imported
  only in this file).

Times are device microseconds per call: ``--inner`` calls captured in one CUDA graph, replayed
``--reps`` times after ``--warmup`` (median), so Python's launch overhead is not counted; the
"call" columns time plain eager calls (``--inner`` back to back, host included: what a Python
caller without graphs sees). GB/s counts the bytes the fused kernel must move (read x, shift,
scale; write y); "HBM" is that over 4.8 TB/s (H200); "vs" columns are time ratios (device);
"err" is max |fused - float32 formula| / max(1, |formula|).

Part ``sweep``: rows per program and warps of the fused kernel for each shape (the table in
``kernels/configs.py``: ``norm_config``). Part ``profile``: one DiT block (adaLN, attention,
MLP) run layer by layer through the cupy backend's context, GPU time per layer kind, with
``modulate`` as three layers (layer_norm, mul, add) and GELU as the op reference (unfused), and
as the fused op and the activation kernel (fused).

    python3 benchmarks/norm_gpu.py [--parts table,sweep,profile] [--quick] [--out table.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TRTDSL_ACTIVATION_KERNEL", "1")  # the fused column runs the kernel
from timing import cupy_events, median_ms, torch_events  # benchmarks/timing.py

try:
    import trtdsl.kernels as K
    from trtdsl.kernels.configs import NormConfig, norm_config
except ImportError:  # run from a checkout where kernels/ is not installed under trtdsl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import kernels as K
    from kernels.configs import NormConfig, norm_config

HBM_GBS = 4800.0  # H200 HBM3e, GB/s
EPS = 1e-6


def median_us(fn: Callable[[], Any], events: Callable[[], tuple], reps: int, warmup: int,
              inner: int, per: int = 1) -> float:  # fmt: skip
    """Median over ``reps`` of event-timed ``inner`` calls of ``fn``, in microseconds per
    call of the timed work (``fn`` does ``per`` calls: a graph of several)."""
    return median_ms(fn, events, reps, warmup, inner, per) * 1e3


def cupy_graph(fn: Callable[[], Any], calls: int) -> Callable[[], None]:
    """``calls`` calls of ``fn`` captured in one CUDA graph (CuPy's current stream: the replay
    runs where the events are recorded); device time without Python's launch overhead. The
    captured outputs stay referenced by the returned replay function."""
    import cupy as cp

    stream = cp.cuda.get_current_stream()
    side = cp.cuda.Stream(non_blocking=True)
    fn()  # compiled, loaded, pool warm
    stream.synchronize()
    with side:
        try:
            side.begin_capture(cp.cuda.runtime.streamCaptureModeRelaxed)
        except TypeError:  # older CuPy: no mode argument
            side.begin_capture()
        try:
            outs = [fn() for _ in range(calls)]
        finally:
            graph = side.end_capture()

    def replay() -> None:
        graph.launch(stream)

    replay.keep = outs  # type: ignore[attr-defined]
    return replay


def torch_graph(fn: Callable[[], Any], calls: int) -> Callable[[], None]:
    """``calls`` calls of ``fn`` in one ``torch.cuda.CUDAGraph`` (torch's recipe: warm up on a
    side stream, capture, replay on the current stream)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = [fn() for _ in range(calls)]
    replay = graph.replay
    keep = (graph, outs)

    def run() -> None:
        replay()

    run.keep = keep  # type: ignore[attr-defined]
    return run


def native_bf16() -> bool:
    import cupy as cp
    import ml_dtypes

    try:
        cp.asarray(np.zeros(2, ml_dtypes.bfloat16))
        return True
    except Exception:
        return False


class Problem:
    """x [B, S, D], shift/scale [B, 1, D] on the GPU; bf16 as CuPy's own dtype or, where CuPy
    has none, as uint16 bits read through ``as_dtype``."""

    def __init__(self, b: int, s: int, d: int, dtype: str, native: bool, kind: str = "layer"):
        import cupy as cp
        import ml_dtypes

        self.cp, self.dtype, self.kind, self.d = cp, dtype, kind, d
        self.bits = dtype == "bfloat16" and not native  # uint16 storage
        self.bf16 = np.dtype(ml_dtypes.bfloat16)
        self.x = self.rand((b, s, d), 2.0, 0.5)
        self.shift, self.scale = self.rand((b, 1, d), 1.0, 0.0), self.rand((b, 1, d), 0.5, 0.0)
        self.as_dtype = "bfloat16" if self.bits else None
        self.nbytes = 2 * self.x.nbytes + self.shift.nbytes + self.scale.nbytes

    def rand(self, shape: tuple, scale: float, offset: float) -> Any:
        cp = self.cp
        f = cp.random.standard_normal(shape, dtype=cp.float32) * scale + offset
        if self.dtype != "bfloat16":
            return f.astype(self.dtype)
        u = f.view(cp.uint32)
        u16 = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(cp.uint16)  # round to nearest even
        return u16 if self.bits else u16.view(self.bf16)

    def f32(self, a: Any) -> Any:
        cp = self.cp
        if self.dtype == "bfloat16":
            u = a if self.bits else a.view(cp.uint16)
            return (u.astype(cp.uint32) << 16).view(cp.float32)
        return a.astype(cp.float32)

    def fused(self, config: NormConfig | None = None) -> Callable[[], Any]:
        def run() -> Any:
            return K.modulated_norm(self.x, self.shift, self.scale, kind=self.kind, eps=EPS,
                                    as_dtype=self.as_dtype, config=config)  # fmt: skip

        return run

    def cupy_ops(self) -> Callable[[], Any] | None:
        """The op reference on CuPy (None where CuPy cannot hold bf16)."""
        from trtdsl.ops.adaln import modulated_norm_reference

        if self.bits:
            return None
        cp = self.cp

        def run() -> Any:
            y = modulated_norm_reference(cp, self.x, self.shift, self.scale, kind=self.kind,
                                         eps=EPS)  # fmt: skip
            return y.astype(self.x.dtype)

        return run

    def torch_eager(self) -> Callable[[], Any]:
        import torch
        import torch.nn.functional as F

        def tt(a: Any) -> Any:
            t = torch.from_dlpack(a if not self.bits else a.view(self.cp.int16))
            return t.view(torch.bfloat16) if self.bits else t

        x, sh, sc = tt(self.x), tt(self.shift), tt(self.scale)

        def run() -> Any:
            with torch.no_grad():
                if self.kind == "layer":
                    return F.layer_norm(x, (self.d,), eps=EPS) * (1 + sc) + sh
                return F.rms_norm(x, (self.d,), eps=EPS) * (1 + sc) + sh

        return run

    def err(self, y: Any) -> float:
        from trtdsl.ops.adaln import modulated_norm_reference

        cp = self.cp
        ref = modulated_norm_reference(cp, self.f32(self.x), self.f32(self.shift),
                                       self.f32(self.scale), kind=self.kind, eps=EPS)  # fmt: skip
        return float(cp.max(cp.abs(self.f32(y) - ref) / cp.maximum(1.0, cp.abs(ref))))


def device_us(fn: Callable[[], Any], args: argparse.Namespace, lib: str = "cupy") -> float:
    """Device microseconds per call: ``args.inner`` calls replayed from one CUDA graph."""
    graph = (cupy_graph if lib == "cupy" else torch_graph)(fn, args.inner)
    events = cupy_events if lib == "cupy" else torch_events
    return median_us(graph, events, args.reps, args.warmup, 1, per=args.inner)


def run_table(args: argparse.Namespace) -> str:
    native = native_bf16()
    head = ("| B | S | D | dtype | fused us | fused GB/s | HBM | fused call us | CuPy op-by-op "
            "us | torch us | torch call us | fused vs CuPy | fused vs torch | err |")  # fmt: skip
    rows = [head, "| " + " | ".join(["---:"] * 14) + " |"]
    nan = float("nan")
    for s in args.seqs:
        for d in args.dims:
            for dtype in args.dtypes:
                p = Problem(args.batch, s, d, dtype, native, args.kind)
                t = {"fused": device_us(p.fused(), args)}
                t["fused call"] = median_us(p.fused(), cupy_events, args.reps, args.warmup,
                                            args.inner)  # fmt: skip
                err = p.err(p.fused()())
                ops = p.cupy_ops()
                t["cupy"] = nan if ops is None else device_us(ops, args)
                try:
                    t["torch"] = device_us(p.torch_eager(), args, "torch")
                    t["torch call"] = median_us(p.torch_eager(), torch_events, args.reps,
                                                args.warmup, args.inner)  # fmt: skip
                except Exception as e:  # torch missing or refusing: the yardstick is optional
                    print(f"  torch: {type(e).__name__}: {e}", flush=True)
                    t["torch"] = t["torch call"] = nan
                gbs = p.nbytes / (t["fused"] * 1e-6) / 1e9
                line = (
                    f"| {args.batch} | {s} | {d} | {dtype} | {t['fused']:.1f} | {gbs:.0f} | "
                    f"{gbs / HBM_GBS:.0%} | {t['fused call']:.1f} | {t['cupy']:.1f} | "
                    f"{t['torch']:.1f} | {t['torch call']:.1f} | {t['cupy'] / t['fused']:.2f}x | "
                    f"{t['torch'] / t['fused']:.2f}x | {err:.1e} |"
                )
                print(line, flush=True)
                rows.append(line)
                del p
    return "\n".join(rows)


def sweep_configs(block: int) -> list[NormConfig]:
    """Rows per program x warps around the table's choice (tiles of 2k-16k elements)."""
    out = []
    for rows in (1, 2, 4, 8, 16):
        for warps in (2, 4, 8, 16):
            tile = rows * block
            if 2048 <= tile <= 16384 and tile // (32 * warps) >= 4:
                out.append(NormConfig(block, rows, warps))
    return out


def run_sweep(args: argparse.Namespace) -> str:
    native = native_bf16()
    rows = ["| S | D | dtype | rows | warps | us | GB/s | |", "| ---: | ---: | --- | ---: | ---: "
            "| ---: | ---: | --- |"]  # fmt: skip
    for s in args.seqs:
        for d in args.dims:
            for dtype in args.dtypes:
                p = Problem(args.batch, s, d, dtype, native, args.kind)
                table = norm_config(d)
                res = []
                for cfg in sweep_configs(table.block_d):
                    try:
                        us = device_us(p.fused(cfg), args)
                    except Exception as e:
                        print(f"  {cfg} failed: {type(e).__name__}: {e}", flush=True)
                        us = float("inf")
                    res.append((us, cfg))
                best = min(res, key=lambda r: r[0])[1]
                for us, c in res:
                    mark = ("best " if c == best else "") + ("table" if c == table else "")
                    gbs = p.nbytes / (us * 1e-6) / 1e9
                    line = (f"| {s} | {d} | {dtype} | {c.rows} | {c.num_warps} | {us:.1f} | "
                            f"{gbs:.0f} | {mark} |")  # fmt: skip
                    print(line, flush=True)
                    rows.append(line)
                del p
    return "\n".join(rows)


# -- one DiT block, layer by layer ---------------------------------------------------------------
def dit_block(td: Any, b: int, s: int, d: int, heads: int, dtype: str, fused: bool) -> Any:
    """x [B, S, D], c [B, 1, D] -> x [B, S, D]: adaLN-modulated attention and MLP."""
    from trtdsl import functional as F

    rng = np.random.default_rng(0)
    npdt = td.as_dtype(dtype).numpy
    dh = d // heads
    net = td.Network(f"dit_block_{'fused' if fused else 'unfused'}")
    x = net.input("x", (b, s, d), dtype)
    c = net.input("c", (b, 1, d), dtype)

    def w(i: int, o: int) -> Any:
        return net.constant((rng.standard_normal((i, o)) / np.sqrt(i)).astype(npdt))

    def modulate(t: Any, shift: Any, scale: Any, tag: str) -> Any:
        if fused:
            return t.modulated_norm(shift, scale, eps=EPS, name=f"mod.{tag}")
        ones, zeros = np.ones(d, npdt), np.zeros(d, npdt)
        h = t.layer_norm(ones, zeros, eps=EPS, name=f"mod.{tag}.layer_norm")
        h = F.mul(h, F.add(scale, 1.0, name=f"mod.{tag}.one_plus"), name=f"mod.{tag}.mul")
        return F.add(h, shift, name=f"mod.{tag}.add")

    sh1, sc1, g1, sh2, sc2, g2 = F.matmul(c, w(d, 6 * d)).split(6, axis=-1)
    h = modulate(x, sh1, sc1, "attn")
    q, k, v = (
        F.matmul(h, w(d, d)).reshape((b, s, heads, dh)).transpose((0, 2, 1, 3)) for _ in range(3)
    )
    o = F.attention(q, k, v).transpose((0, 2, 1, 3)).reshape((b, s, d))
    x = x + g1 * F.matmul(o, w(d, d))
    h = modulate(x, sh2, sc2, "mlp")
    m = F.matmul(F.matmul(h, w(d, 4 * d)).gelu(approximate="tanh"), w(4 * d, d))
    net.output(x + g2 * m, "y")
    return net


def profile_once(net: Any, feeds: dict, act_kernel: bool = True) -> tuple[dict, dict]:
    """GPU microseconds per layer kind and per ``mod.*`` layer group, one eager pass.
    ``act_kernel=False``: activations run the op reference (CuPy's kernel chain)."""
    import cupy as cp

    from trtdsl.backends.cupy.backend import CupyContext

    ctx = CupyContext(net, feeds, None)
    if not act_kernel:
        ctx.fused_activation = lambda layer, inputs: None  # type: ignore[method-assign]
    values: dict[int, Any] = {}
    marks = []
    for layer in net.layers:
        args = [values[id(t)] for t in layer.inputs]
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        outs = layer.op.reference(layer, args, ctx)
        end.record()
        marks.append((layer, start, end))
        for t, val in zip(layer.outputs, outs):
            values[id(t)] = val
    cp.cuda.get_current_stream().synchronize()
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_group: dict[str, float] = defaultdict(float)
    for layer, start, end in marks:
        us = cp.cuda.get_elapsed_time(start, end) * 1e3
        kind = layer.op.name + (f":{layer.attrs['kind']}" if "kind" in layer.attrs else "")
        by_kind[kind][0] += us
        by_kind[kind][1] += 1
        group = "modulate (norm + shift/scale)" if layer.name.startswith("mod.") else "other"
        by_group[group] += us
    return dict(by_kind), dict(by_group)


def run_profile(args: argparse.Namespace) -> str:
    import cupy as cp

    import trtdsl as td

    b, s, d, heads, dtype = args.batch, args.profile_seq, args.profile_dim, args.heads, args.pdtype
    rng = np.random.default_rng(1)
    npdt = td.as_dtype(dtype).numpy
    feeds = {
        "x": cp.asarray(rng.standard_normal((b, s, d)).astype(npdt)),
        "c": cp.asarray(rng.standard_normal((b, 1, d)).astype(npdt)),
    }
    res = {}
    for fused in (False, True):
        net = dit_block(td, b, s, d, heads, dtype, fused)
        profile_once(net, feeds, fused)  # warm-up: kernels compiled and loaded, constants uploaded
        runs = [profile_once(net, feeds, fused) for _ in range(args.profile_reps)]
        kinds = {k for r in runs for k in r[0]}
        res[fused] = (
            {
                k: (statistics.median(r[0].get(k, [0.0, 0])[0] for r in runs), runs[0][0][k][1])
                for k in kinds
            },  # fmt: skip
            {g: statistics.median(r[1].get(g, 0.0) for r in runs) for g in runs[0][1]},
        )
    kinds = sorted(set(res[False][0]) | set(res[True][0]), key=lambda k: -res[False][0].get(k,
                   (0, 0))[0])  # fmt: skip
    rows = [
        f"One DiT block, B={b} S={s} D={d} heads={heads} {dtype}, eager layer by layer through "
        f"the cupy backend's context (median of {args.profile_reps}); GPU us per layer kind "
        "between events around each layer (eager: a layer's launch gaps count). Unfused: "
        "modulate as layer_norm, mul, add and the activation as the op reference (CuPy "
        "kernels in float32); fused: the adaLN and activation kernels (16-bit GEMMs in both):",
        "",
        "| layer kind | unfused us | layers | fused us | layers |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for k in kinds:
        u, f = res[False][0].get(k, (0.0, 0)), res[True][0].get(k, (0.0, 0))
        rows.append(f"| {k} | {u[0]:.1f} | {u[1]} | {f[0]:.1f} | {f[1]} |")
    for g in sorted(set(res[False][1]) | set(res[True][1])):
        rows.append(f"| **{g}** | {res[False][1].get(g, 0.0):.1f} | | "
                    f"{res[True][1].get(g, 0.0):.1f} | |")  # fmt: skip
    tot = [sum(v[0] for v in res[f][0].values()) for f in (False, True)]
    rows.append(f"| **block total** | {tot[0]:.1f} | | {tot[1]:.1f} | |")
    text = "\n".join(rows)
    print(text, flush=True)
    return text


PARTS: dict[str, Callable[[argparse.Namespace], str]] = {
    "table": run_table,
    "sweep": run_sweep,
    "profile": run_profile,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--parts", default="table", help=f"comma list of {sorted(PARTS)}")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seqs", default="4096,16384")
    ap.add_argument("--dims", default="1152,3072")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--kind", default="layer", choices=["layer", "rms"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--inner", type=int, default=10, help="calls per timed repetition")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--heads", type=int, default=9, help="profile: heads (D / heads = 128)")
    ap.add_argument("--profile-seq", type=int, default=4096)
    ap.add_argument("--profile-dim", type=int, default=1152)
    ap.add_argument("--profile-reps", type=int, default=3)
    ap.add_argument("--pdtype", default="float16", help="profile dtype (CuPy matmuls)")
    ap.add_argument("--quick", action="store_true", help="S=4096 only, bf16, 5 reps")
    ap.add_argument("--out", default=None, help="also write the table(s) to this file")
    args = ap.parse_args()
    args.seqs = [int(v) for v in args.seqs.split(",")]
    args.dims = [int(v) for v in args.dims.split(",")]
    args.dtypes = args.dtypes.split(",")
    if args.quick:
        args.seqs, args.dtypes, args.reps = [4096], ["bfloat16"], 5
    import cupy as cp

    dev = cp.cuda.runtime.getDeviceProperties(0)
    print(f"device: {dev['name'].decode()}, kernels from {K.__file__}, cupy {cp.__version__}, "
          f"native bf16 {native_bf16()}", flush=True)  # fmt: skip
    tables = []
    for part in args.parts.split(","):
        try:
            tables.append(PARTS[part](args))
        except Exception as e:  # one part failing leaves the others' tables
            print(f"part {part} failed: {type(e).__name__}: {e}", flush=True)
            tables.append(f"part {part} failed: {type(e).__name__}: {e}")
    text = "\n\n".join(tables)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if not any(t.startswith("part ") for t in tables) else 1


if __name__ == "__main__":
    sys.exit(main())
