"""What the GPU kernel checks share (``gpu/check_kernels.py``, ``check_norm.py``,
``check_activation.py``, ``check_cudnn_attention.py``, ``check_accum.py``,
``check_plugin_kernel.py``; imported from the script's folder): their ``--quick``/``--seed``
arguments, CuPy, bf16 on the device (native, or uint16 bits read through the kernels'
``as_dtype`` where CuPy lacks bfloat16), poisoned blocks that show whether a kernel wrote its
whole output, the attention checks' error measures, and the PASS/FAIL tally."""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def check_args(
    ap: argparse.ArgumentParser, quick_help: str
) -> tuple[argparse.Namespace, int, np.random.Generator]:
    """Adds ``--quick`` and ``--seed`` to a check's parser, parses it and returns (args, the
    seed: ``--seed`` or the clock, a Generator from it); the caller prints the seed."""
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    return args, seed, np.random.default_rng(seed)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||`` (``||a||`` where b is all zeros)."""
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a))


def check_lse(got: np.ndarray, ref: np.ndarray, tol: float) -> tuple[bool, float]:
    """(ok, error) of a log-sum-exp against float64: -inf exactly where the reference has it,
    finite elsewhere and within ``tol`` of it relative to max(1, |ref|)."""
    inf_ok = bool(np.array_equal(np.isneginf(got), np.isneginf(ref)))
    fin = np.isfinite(ref)
    err = np.abs(got[fin] - ref[fin]) / np.maximum(1.0, np.abs(ref[fin]))
    e = float(err.max()) if err.size else 0.0
    return inf_ok and bool(np.isfinite(got[fin]).all()) and e <= tol, e


class GpuCheck:
    """CuPy, bf16 handling and the pass/fail tally of one check run."""

    def __init__(self) -> None:
        import cupy
        import ml_dtypes

        self.cp = cupy
        self.bf16 = np.dtype(ml_dtypes.bfloat16)
        try:
            cupy.asarray(np.zeros(2, self.bf16))
            self.native_bf16 = True
        except Exception:
            self.native_bf16 = False
        self.passed = self.failed = self.poison_hits = self.poison_tries = 0

    def np_dtype(self, name: str) -> np.dtype:
        return self.bf16 if name == "bfloat16" else np.dtype(name)

    def to_gpu(self, x: np.ndarray, name: str) -> Any:
        """Host array as dtype ``name`` on the GPU (bf16 as uint16 bits if CuPy lacks it)."""
        x = np.ascontiguousarray(x.astype(self.np_dtype(name)))
        if name == "bfloat16" and not self.native_bf16:
            return self.cp.asarray(x.view(np.uint16))
        return self.cp.asarray(x)

    def to_host(self, x: Any, name: str) -> np.ndarray:
        h = self.cp.asnumpy(x)
        if name == "bfloat16" and h.dtype == np.uint16:
            h = h.view(self.bf16)
        return h.astype(np.float64)

    def as_dtype(self, name: str) -> str | None:
        return "bfloat16" if name == "bfloat16" and not self.native_bf16 else None

    def poison_blocks(self, nbytes: list[int]) -> list[int]:
        """Allocate NaN blocks (all-ones bits) of these sizes together, then free them, so the
        next allocations may reuse them; returns their addresses."""
        blocks = [self.cp.full(n // 2, 0xFFFF, self.cp.uint16) for n in nbytes]
        ptrs = [int(b.data.ptr) for b in blocks]
        del blocks
        return ptrs

    def poison(self, nbytes: int) -> int:
        """One NaN block of ``nbytes``, allocated and freed; returns its address."""
        return self.poison_blocks([nbytes])[0]

    def record(self, ok: bool, line: str) -> None:
        self.passed += ok
        self.failed += not ok
        print(("PASS " if ok else "FAIL ") + line, flush=True)
