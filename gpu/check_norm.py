"""GPU check: the fused adaLN norm kernel (``trtdsl.kernels.modulated_norm``) and the DSL op
``modulated_norm`` on the cupy backend against float64 NumPy.

Run on one CUDA GPU (sm_90): ``python3 gpu/check_norm.py [--quick] [--seed N]``.

1. The kernel: fp16/bf16/fp32 x layer/RMS x D in 64, 1000, 1152, 3000, 3072, 4097, 8192,
   16384 (powers of two or not, multiples of 16 or not) x shift/scale forms ([B, 1, D], [1, D],
   [D], [S, D], [B, S, D], and DiT's non-contiguous slices of [B, 1, 6D]) x weight/bias; fresh
   random inputs, outputs poisoned with NaN first (a NaN block of y's size freed just before the
   call). Error: max |y - ref| / max(1, |ref|).
2. The DSL op on the cupy backend (the kernel, and the op reference for a broadcast the kernel
   does not read), eagerly and replayed from a CUDA graph (``cuda_graph=True``), the graph
   replayed again on new inputs.

Prints one line per case and ``NORM CHECK: N passed, M failed``; exits non-zero on a failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from check_support import GpuCheck as Ctx  # gpu/check_support.py (this folder)
from check_support import check_args

try:
    import trtdsl.kernels as K
    import trtdsl.kernels.reference as R
except ImportError:  # run from a checkout where kernels/ is not installed under trtdsl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import kernels as K
    from kernels import reference as R

TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}  # max |err| / max(1, |ref|)
DS = (64, 1000, 1152, 3000, 3072, 4097, 8192, 16384)
FORMS = ("b1d", "1d", "d", "sd", "bsd", "slice")


def err_of(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref)))) if ref.size else 0.0


def kernel_case(ctx: Ctx, rng: np.random.Generator, dtype: str, kind: str, d: int, form: str,
                wb: int) -> None:  # fmt: skip
    b, s = 2, 37
    x = rng.standard_normal((b, s, d)) * 2 + 0.5
    if form == "slice":  # DiT: shift/scale are slices of one [B, 1, 6D] modulation tensor
        mod = ctx.to_gpu(rng.standard_normal((b, 1, 6 * d)), dtype)
        sh, sc = mod[..., 2 * d : 3 * d], mod[..., 4 * d : 5 * d]
    else:
        shape = {"b1d": (b, 1, d), "1d": (1, d), "d": (d,), "sd": (s, d), "bsd": (b, s, d)}[form]
        sh, sc = (ctx.to_gpu(rng.standard_normal(shape), dtype) for _ in range(2))
    gx = ctx.to_gpu(x, dtype)
    w = ctx.to_gpu(rng.random(d) + 0.5, dtype) if wb & 1 else None
    bias = ctx.to_gpu(rng.standard_normal(d), dtype) if wb & 2 else None
    eps = float(rng.choice([1e-6, 1e-5, 1e-3]))
    hx, hsh, hsc = (ctx.to_host(a, dtype) for a in (gx, sh, sc))
    hw = None if w is None else ctx.to_host(w, dtype)
    hb = None if bias is None else ctx.to_host(bias, dtype)
    ref = R.modulated_norm(hx, hsh, hsc, hw, hb, kind, eps)
    ptr = ctx.poison(gx.nbytes)
    y = K.modulated_norm(gx, sh, sc, kind=kind, eps=eps, weight=w, bias=bias,
                         as_dtype=ctx.as_dtype(dtype))  # fmt: skip
    ctx.cp.cuda.get_current_stream().synchronize()
    ctx.poison_tries += 1
    ctx.poison_hits += int(y.data.ptr) == ptr
    got = ctx.to_host(y, dtype)
    e = err_of(got, ref)
    ok = got.shape == ref.shape and bool(np.isfinite(got).all()) and e <= TOL[dtype]
    ctx.record(ok, f"kernel {dtype} {kind} D={d} shift/scale {form} weight={w is not None} "
               f"bias={bias is not None} eps={eps:g}: err {e:.1e}")  # fmt: skip


def op_feeds(ctx: Ctx, rng: np.random.Generator, dtype: str, kind: str, x_shape: tuple,
             sh_shape: tuple, w: np.ndarray) -> tuple[dict, np.ndarray]:  # fmt: skip
    """Fresh feeds of the op's network and the float64 reference of its output."""
    f = {
        "x": (rng.standard_normal(x_shape) * 2).astype(ctx.np_dtype(dtype)),
        "shift": rng.standard_normal(sh_shape).astype(ctx.np_dtype(dtype)),
        "scale": rng.standard_normal(sh_shape).astype(ctx.np_dtype(dtype)),
    }
    h = {k: v.astype(np.float64) for k, v in f.items()}
    w64 = w.astype(ctx.np_dtype(dtype)).astype(np.float64)  # the op lifts w to x's dtype
    return f, R.modulated_norm(h["x"], h["shift"], h["scale"], w64, None, kind, 1e-6)


def op_case(ctx: Ctx, rng: np.random.Generator, dtype: str, kind: str, x_shape: tuple,
            sh_shape: tuple) -> None:  # fmt: skip
    """The DSL op on the cupy backend: eager, then a CUDA-graph session replayed on new data."""
    import trtdsl as td

    path = "reference" if len(sh_shape) == 4 else "kernel"
    what = f"op {dtype} {kind} x{x_shape} shift/scale {sh_shape} ({path})"
    if dtype == "bfloat16" and not getattr(ctx, "native_bf16", True):
        print(f"SKIP {what}: this CuPy has no bfloat16 arrays for the cupy backend")
        return
    net = td.Network("adaln")
    x = net.input("x", x_shape, dtype)
    sh, sc = net.input("shift", sh_shape, dtype), net.input("scale", sh_shape, dtype)
    w = rng.random(x_shape[-1]) + 0.5
    net.output(x.modulated_norm(sh, sc, kind=kind, eps=1e-6, weight=w), "y")
    f, ref = op_feeds(ctx, rng, dtype, kind, x_shape, sh_shape, w)
    got = net.run(f, backend="cupy")["y"].astype(np.float64)
    e = err_of(got, ref)
    ctx.record(e <= TOL[dtype], f"{what} eager: err {e:.1e}")
    with net.compile(backend="cupy", cuda_graph=True) as session:
        for i in range(3):  # the 1st call runs eagerly and captures; then replays, new inputs
            f, ref = op_feeds(ctx, rng, dtype, kind, x_shape, sh_shape, w)
            got = session.run(f)["y"].astype(np.float64)
            e = err_of(got, ref)
            ctx.record(e <= TOL[dtype], f"{what} cuda_graph call {i + 1}: err {e:.1e}")


OP_CASES = (  # dtype, kind, x shape, shift/scale shape
    ("bfloat16", "layer", (2, 300, 1152), (2, 1, 1152)),
    ("float16", "rms", (2, 300, 3072), (1, 3072)),
    ("float32", "layer", (2, 300, 1000), (2, 1, 1000)),
    ("float16", "layer", (2, 3, 5, 64), (2, 1, 5, 64)),  # full, broadcast, full: the reference
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    args, seed, rng = check_args(ap, "fewer D values and forms")
    print(f"seed {seed}", flush=True)
    ctx = Ctx()
    print(f"cupy {ctx.cp.__version__}, native bfloat16: {ctx.native_bf16}", flush=True)
    t0 = time.time()
    ds = (1000, 1152, 8192) if args.quick else DS
    k = 0
    for dtype in ("float16", "bfloat16", "float32"):
        for kind in ("layer", "rms"):
            for d in ds:
                for form in FORMS[:3] if args.quick else FORMS:
                    try:
                        kernel_case(ctx, rng, dtype, kind, d, form, k % 4)
                    except Exception as e:
                        ctx.record(False, f"kernel {dtype} {kind} D={d} {form}: "
                                   f"{type(e).__name__}: {e}")  # fmt: skip
                    k += 1
    try:  # bad arguments are ValueErrors before any launch
        z = ctx.cp.zeros((2, 3, 8), ctx.cp.float16)
        K.modulated_norm(z, z[:, :2], z)
        ctx.record(False, "a shift that does not broadcast was accepted")
    except ValueError as e:
        ctx.record("(2, 2, 8)" in str(e), f"bad shift refused: {e}")
    for case in OP_CASES:
        try:
            op_case(ctx, rng, *case)
        except Exception as e:  # a crash is a failure; keep checking the rest
            ctx.record(False, f"op {case}: {type(e).__name__}: {e}")
    print(f"poisoned output reused by the kernel's output: {ctx.poison_hits}/{ctx.poison_tries}")
    print(f"time {time.time() - t0:.1f}s")
    print(f"NORM CHECK: {ctx.passed} passed, {ctx.failed} failed", flush=True)
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    sys.exit(main())
