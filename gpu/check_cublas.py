"""GPU check: CapturableGemm (cuBLAS through ctypes, for CUDA graphs) against CuPy's matmul,
eagerly and replayed from a captured graph; shapes with batch broadcasting and vectors.

Run on one GPU: ``python3 gpu/check_cublas.py``; prints ``CUBLAS: N passed, M failed``.
"""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np

from trtdsl.backends.cupy.cublas import CapturableGemm

SHAPES = [
    ((5, 7), (7, 3)),
    ((2, 5, 7), (7, 3)),
    ((5, 7), (4, 7, 3)),
    ((2, 1, 5, 7), (1, 3, 7, 4)),
    ((7,), (7, 3)),
    ((5, 7), (7,)),
    ((3, 64, 128), (3, 128, 96)),
    ((0, 5, 7), (7, 3)),
]


def main() -> int:
    rng = np.random.default_rng()
    stream = cp.cuda.Stream(non_blocking=True)
    gemm = CapturableGemm(cp, stream)
    passed = failed = 0
    for dtype in ("float32", "float16", "bfloat16"):
        for sa, sb in SHAPES:
            a = cp.asarray(rng.standard_normal(sa).astype(np.float32)).astype(dtype)
            b = cp.asarray(rng.standard_normal(sb).astype(np.float32)).astype(dtype)
            want = cp.matmul(a.astype(cp.float32), b.astype(cp.float32))
            with stream:
                eager = gemm.matmul(a, b)
                stream.synchronize()
                stream.begin_capture(cp.cuda.runtime.streamCaptureModeRelaxed)
                captured = gemm.matmul(a, b)
                graph = stream.end_capture()
                captured[...] = cp.nan  # not yet computed: the replay must write it
                graph.launch(stream)
                stream.synchronize()
            tol = 1e-5 if dtype == "float32" else 2e-2
            scale = max(float(cp.abs(want).max()) if want.size else 1.0, 1.0)
            ok = eager.shape == want.shape == captured.shape
            for got in (eager, captured):
                ok = ok and bool(cp.all(cp.abs(got.astype(cp.float32) - want) <= tol * scale))
            print(f"{'PASS' if ok else 'FAIL'} {dtype} {sa} @ {sb} -> {want.shape}")
            passed += ok
            failed += not ok
    gemm.close()
    print(f"CUBLAS: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
