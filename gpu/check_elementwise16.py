"""GPU check: 16-bit elementwise arithmetic on the cupy backend is float32-then-round.

The elementwise op computes some fp16/bf16 kinds on the 16-bit arrays directly
(``SAME_IN_16BIT`` in trtdsl/ops/elementwise.py); this checks, bit for bit (NaN where NaN),
that CuPy's own 16-bit loops give the float32 result rounded once for those kinds ("raw"), and
that a DSL network on the cupy backend does for every kind, with broadcasting, wide exponents,
inf/NaN/-0. The GPU flushes float32 subnormal results to zero (bf16 products reach them), so
the reference does too. (bf16 arithmetic keeps the upcast: CuPy's raw bf16 multiply differs.)

Run on one GPU: ``python3 gpu/check_elementwise16.py``; prints PASS/FAIL lines and
``ELEMENTWISE16: N passed, M failed``; exits non-zero on a failure.
"""

from __future__ import annotations

import sys

import cupy as cp
import ml_dtypes
import numpy as np

import trtdsl as td
from trtdsl import functional as F
from trtdsl.ops.elementwise import SAME_IN_16BIT

OPS = {
    "add": (np.add, lambda p, q: p + q),
    "sub": (np.subtract, lambda p, q: p - q),
    "mul": (np.multiply, lambda p, q: p * q),
    "min": (np.minimum, F.minimum),
    "max": (np.maximum, F.maximum),
}


def ftz(x32: np.ndarray) -> np.ndarray:
    """Float32 subnormals flushed to (signed) zero, as CuPy's GPU float32 arithmetic does: only
    bf16 products reach them (fp16's range lies well inside float32's normal range)."""
    return np.where(np.abs(x32) < np.finfo(np.float32).tiny, x32 * np.float32(0), x32)


def same(got: np.ndarray, want: np.ndarray) -> bool:
    g, w = got.astype(np.float64), want.astype(np.float64)
    num = ~np.isnan(w)
    return bool(
        np.array_equal(np.isnan(g), np.isnan(w))
        and np.array_equal(g[num], w[num])
        and np.array_equal(np.signbit(g[num]), np.signbit(w[num]))
    )


def main() -> int:
    passed = failed = 0
    rng = np.random.default_rng(3)
    for name, npdt, span in (("float16", np.dtype(np.float16), 14),
                             ("bfloat16", np.dtype(ml_dtypes.bfloat16), 100)):  # fmt: skip
        a32 = rng.standard_normal((4, 300, 65)) * np.exp2(rng.uniform(-span, span, (4, 300, 65)))
        b32 = rng.standard_normal((4, 1, 65)) * np.exp2(rng.uniform(-span, span, (4, 1, 65)))
        a32[0, 0, :3], b32[1, 0, :3] = [np.inf, -np.inf, np.nan], [np.nan, np.inf, -0.0]
        with np.errstate(all="ignore"):
            a, b = a32.astype(npdt), b32.astype(npdt)
        for kind, (op, dsl) in OPS.items():
            with np.errstate(all="ignore"):
                want = ftz(op(a.astype(np.float32), b.astype(np.float32))).astype(npdt)
            try:
                direct = kind in SAME_IN_16BIT[name]
                raw = cp.asnumpy(op(cp.asarray(a), cp.asarray(b))) if direct else want
                net = td.Network(f"ew16_{kind}")
                x, y = net.input("a", a.shape, name), net.input("b", b.shape, name)
                net.output(dsl(x, y), "out")
                on_gpu = net.run({"a": cp.asarray(a), "b": cp.asarray(b)}, backend="cupy")["out"]
                on_gpu = cp.asnumpy(on_gpu)
                ok = same(raw, want) and same(on_gpu, want) and on_gpu.dtype == npdt
                why = (f"raw {same(raw, want) if direct else '-'} dsl {same(on_gpu, want)} "
                       f"dtype {on_gpu.dtype}")  # fmt: skip
            except Exception as e:  # a missing CuPy loop is a failure too
                ok, why = False, f"{type(e).__name__}: {e}"
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'PASS' if ok else 'FAIL'} {name} {kind} {a.shape} x {b.shape}: {why}")
    print(f"ELEMENTWISE16: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
