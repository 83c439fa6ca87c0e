"""GPU check: the activation kernel (``trtdsl.kernels.activation``) and the DSL's activation op
on the cupy backend against float64 NumPy (``kernels/reference.py``).

Run on one CUDA GPU (sm_90): ``python3 gpu/check_activation.py [--quick] [--seed N]``.

1. The kernel: relu, sigmoid, gelu_erf, gelu_tanh, silu x fp16/bf16/fp32 x sizes 1, 15, 16,
   4097 (not a multiple of 16: the unaligned variant), 1000003, [3, 7, 601] and DiT's MLP
   activation [2, 4096, 4608]; random inputs with inf, NaN, huge and +-90 among them; outputs
   allocated over a freed NaN block. Pass: |y - ref| <= atol + rtol |ref| where ref is finite,
   the same inf/NaN elsewhere. Also ``out=``, in place, a non-contiguous x, a side stream, and
   the kernel's time on [2, 4096, 4608] fp16 (the one-pass goal: ~40 us on an H200).
2. The op (``x.gelu(approximate="tanh")`` etc.) on the cupy backend, eagerly and replayed from a
   CUDA graph (``cuda_graph=True``, three calls on new inputs), counting kernel calls: the
   kernel for contiguous inputs, the reference for a non-contiguous CuPy feed.

Prints one line per case and ``ACTIVATION CHECK: N passed, M failed``; exits non-zero on a
failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from check_support import GpuCheck as Ctx  # gpu/check_support.py (this folder)
from check_support import check_args

os.environ["TRTDSL_ACTIVATION_KERNEL"] = "1"  # the op checks below run the kernel

try:
    import trtdsl.kernels as K
    import trtdsl.kernels.activations as KA
    import trtdsl.kernels.reference as R
except ImportError:  # run from a checkout where kernels/ is not installed under trtdsl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import kernels as K
    import kernels.activations as KA
    from kernels import reference as R

KINDS = ("relu", "sigmoid", "gelu_erf", "gelu_tanh", "silu")
DTYPES = ("float16", "bfloat16", "float32")
#: |got - ref| <= ATOL + RTOL |ref| (float32 math, one rounding to the output dtype)
TOL = {"float32": (1e-6, 1e-5), "float16": (1e-5, 1.5e-3), "bfloat16": (1e-5, 1e-2)}
SHAPES = ((1,), (15,), (16,), (4097,), (3, 7, 601), (1000003,), (2, 4096, 4608))
BIG = {"float16": 60000.0, "bfloat16": 1e30, "float32": 1e30}


def close(got: np.ndarray, ref: np.ndarray, dtype: str) -> tuple[bool, float]:
    """(within tolerance, worst |err| / (atol + rtol |ref|)); inf/NaN must match exactly."""
    atol, rtol = TOL[dtype]
    fin = np.isfinite(ref)
    err = np.abs(got[fin] - ref[fin]) / (atol + rtol * np.abs(ref[fin]))
    worst = float(err.max()) if err.size else 0.0
    special = np.array_equal(got[~fin], ref[~fin], equal_nan=True)
    return got.shape == ref.shape and special and worst <= 1.0, worst


def inputs(rng: np.random.Generator, shape: tuple, dtype: str, ctx: Ctx) -> np.ndarray:
    """Random x (std 4) of ``dtype`` whose first elements are edge values."""
    x = (rng.standard_normal(shape, dtype=np.float32) * 4).astype(ctx.np_dtype(dtype))
    flat = x.reshape(-1)
    edge = [0.0, -0.0, np.inf, -np.inf, np.nan, BIG[dtype], -BIG[dtype], -90.0, 90.0, 1e-3]
    k = min(flat.size, len(edge))
    flat[:k] = np.array(edge[:k]).astype(x.dtype)
    return x


def kernel_cases(ctx: Ctx, rng: np.random.Generator, shapes: tuple) -> None:
    for dtype in DTYPES:
        for shape in shapes:
            x = inputs(rng, shape, dtype, ctx)
            gx = ctx.to_gpu(x, dtype)
            hx = x.astype(np.float64)
            for kind in KINDS:
                try:
                    ctx.poison(gx.nbytes)
                    y = K.activation(gx, kind, as_dtype=ctx.as_dtype(dtype))
                    got = ctx.to_host(y, dtype)
                    ok, worst = close(got, R.activation(hx, kind), dtype)
                    ctx.record(ok and y.dtype == gx.dtype,
                               f"kernel {kind} {dtype} {shape}: err/tol {worst:.2f}")  # fmt: skip
                except Exception as e:
                    ctx.record(False, f"kernel {kind} {dtype} {shape}: {type(e).__name__}: {e}")
            del gx


def extra_cases(ctx: Ctx, rng: np.random.Generator) -> None:
    """out=, in place, a non-contiguous x, a side stream, bad arguments."""
    cp = ctx.cp
    x = inputs(rng, (64, 129), "float16", ctx)
    gx = cp.asarray(x)
    ref = R.activation(x.astype(np.float64), "silu")
    out = cp.empty_like(gx)
    y = K.activation(gx, "silu", out=out)
    ok, worst = close(cp.asnumpy(out).astype(np.float64), ref, "float16")
    ctx.record(ok and y is out, f"out= written and returned: err/tol {worst:.2f}")
    gt = cp.asarray(np.ascontiguousarray(x.T)).T  # non-contiguous view of x's values
    y = K.activation(gt, "silu")
    ok, worst = close(cp.asnumpy(y).astype(np.float64), ref, "float16")
    ctx.record(ok, f"non-contiguous x (copied first): err/tol {worst:.2f}")
    g2 = gx.copy()
    y = K.activation(g2, "silu", out=g2)
    ok, worst = close(cp.asnumpy(g2).astype(np.float64), ref, "float16")
    ctx.record(ok and y is g2, f"in place (out=x): err/tol {worst:.2f}")
    side = cp.cuda.Stream(non_blocking=True)
    with side:
        big = cp.asarray(inputs(rng, (4096, 1024), "float32", ctx))
    y = K.activation(big, "gelu_tanh", stream=side)
    side.synchronize()
    ref = R.activation(cp.asnumpy(big).astype(np.float64), "gelu_tanh")
    ok, worst = close(cp.asnumpy(y).astype(np.float64), ref, "float32")
    ctx.record(ok, f"launched on a side stream: err/tol {worst:.2f}")
    try:
        K.activation(gx, "gelu")
        ctx.record(False, "an unknown kind was accepted")
    except ValueError as e:
        ctx.record("'gelu'" in str(e), f"unknown kind refused: {e}")


def kernel_time(ctx: Ctx) -> None:
    """Median us of the kernel on DiT's [2, 4096, 4608] fp16 (informational)."""
    cp = ctx.cp
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 4096, 4608), np.float32)).astype(
        cp.float16
    )
    y = cp.empty_like(x)
    for _ in range(3):
        K.activation(x, "gelu_tanh", out=y)
    times = []
    for _ in range(10):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(10):
            K.activation(x, "gelu_tanh", out=y)
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) * 1e3 / 10)
    us = float(np.median(times))
    gbs = 2 * x.nbytes / (us * 1e-6) / 1e9
    print(f"TIME kernel gelu_tanh fp16 [2, 4096, 4608]: {us:.1f} us per call, {gbs:.0f} GB/s "
          "(incl. launch)", flush=True)  # fmt: skip


class Counter:
    """Counts the cupy backend's calls of the kernel (wraps ``kernels.activations.activation``,
    which the backend imports at each call)."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = KA.activation

    def __call__(self, *a: Any, **k: Any) -> Any:
        self.calls += 1
        return self.real(*a, **k)


def op_case(ctx: Ctx, rng: np.random.Generator, counter: Counter, kind: str, dtype: str,
            shape: tuple, strided: bool) -> None:  # fmt: skip
    """The DSL op on the cupy backend: eager, then a CUDA-graph session on new data.
    ``strided``: x is fed as a non-contiguous CuPy view (the hook declines: the reference)."""
    import trtdsl as td
    from trtdsl import functional as F

    path = "reference" if strided else "kernel"
    what = f"op {kind} {dtype} {shape}{' strided feed' if strided else ''} ({path})"
    if dtype == "bfloat16" and not ctx.native_bf16:
        print(f"SKIP {what}: this CuPy has no bfloat16 arrays for the cupy backend")
        return
    net = td.Network("act")
    x = net.input("x", shape, dtype)
    calls = {
        "relu": x.relu, "sigmoid": x.sigmoid, "gelu_erf": x.gelu,
        "gelu_tanh": lambda: x.gelu(approximate="tanh"), "silu": lambda: F.silu(x),
    }  # fmt: skip
    net.output(calls[kind](), "y")

    def feeds_ref() -> tuple[dict, np.ndarray]:
        xv = inputs(rng, shape, dtype, ctx)
        feed: Any = xv
        if strided:  # the same values in a transposed buffer, viewed back: not contiguous
            feed = ctx.cp.ascontiguousarray(ctx.cp.asarray(xv).swapaxes(0, -1)).swapaxes(0, -1)
            assert not feed.flags.c_contiguous
        return {"x": feed}, R.activation(xv.astype(np.float64), kind)

    f, ref = feeds_ref()
    before = counter.calls
    got = net.run(f, backend="cupy")["y"].astype(np.float64)
    ok, worst = close(got, ref, dtype)
    used = counter.calls - before
    ctx.record(ok and used == (0 if strided else 1),
               f"{what} eager: err/tol {worst:.2f}, kernel calls {used}")  # fmt: skip
    with net.compile(backend="cupy", cuda_graph=True) as session:
        for i in range(3):  # the 1st call runs eagerly and captures; then replays, new inputs
            f, ref = feeds_ref()
            got = session.run(f)["y"].astype(np.float64)
            ok, worst = close(got, ref, dtype)
            ctx.record(ok, f"{what} cuda_graph call {i + 1}: err/tol {worst:.2f}")


OP_CASES = (  # kind, dtype, shape, strided feed
    ("gelu_tanh", "float16", (2, 256, 4608), False),
    ("gelu_tanh", "bfloat16", (2, 256, 4608), False),
    ("gelu_erf", "float32", (2, 100, 333), False),
    ("silu", "bfloat16", (3, 5, 7), False),
    ("sigmoid", "float16", (2, 64, 48), False),
    ("relu", "float32", (2, 64, 48), False),
    ("gelu_tanh", "float16", (2, 64, 48), True),  # a non-contiguous feed: the reference
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    args, seed, rng = check_args(ap, "no [2, 4096, 4608] or 1000003 sizes")
    print(f"seed {seed}", flush=True)
    ctx = Ctx()
    print(f"cupy {ctx.cp.__version__}, native bfloat16: {ctx.native_bf16}", flush=True)
    t0 = time.time()
    kernel_cases(ctx, rng, SHAPES[:-2] if args.quick else SHAPES)
    for name, fn in (("extra cases", extra_cases), ("timing", lambda c, r: kernel_time(c))):
        try:
            fn(ctx, rng)
        except Exception as e:
            ctx.record(False, f"{name}: {type(e).__name__}: {e}")
    counter = Counter()
    KA.activation = counter
    try:
        for case in OP_CASES:
            try:
                op_case(ctx, rng, counter, *case)
            except Exception as e:  # a crash is a failure; keep checking the rest
                ctx.record(False, f"op {case}: {type(e).__name__}: {e}")
    finally:
        KA.activation = counter.real
    print(f"time {time.time() - t0:.1f}s")
    print(f"ACTIVATION CHECK: {ctx.passed} passed, {ctx.failed} failed", flush=True)
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    sys.exit(main())
