"""GPU check: the DSL attention op on the cupy backend (the Triton kernel of ``kernels/`` for
fp16/bf16 without a mask; the op reference otherwise) against a float64 NumPy formula.

Run on one GPU: ``python3 gpu/check_attention_op.py``. Fresh random inputs per case; prints one
line per case and ``ATTENTION OP: N passed, M failed``; exits non-zero on a failure.
"""

from __future__ import annotations

import itertools
import math
import sys
import time

import numpy as np

import trtdsl as td
from trtdsl import functional as F

TOL = {"float16": 4e-3, "bfloat16": 3e-2, "float32": 1e-4}  # ||err|| / ||ref||


def formula(q, k, v, scale, causal, q_off, k_off, mask):
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = np.einsum("...id,...jd->...ij", q, k) * scale
    allowed = np.ones(s.shape[-2:], bool)
    if causal:
        allowed &= (k_off + np.arange(s.shape[-1]))[None] <= (q_off + np.arange(s.shape[-2]))[
            :, None
        ]
    if mask is not None:
        allowed &= mask
    s = np.where(allowed, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    tot = p.sum(-1, keepdims=True)
    o = np.einsum("...ij,...jd->...id", p / np.where(tot == 0, 1, tot), v)
    with np.errstate(divide="ignore"):
        lse = np.where(tot == 0, -np.inf, m + np.log(np.where(tot == 0, 1, tot)))[..., 0]
    return o, lse


def main() -> int:
    import cupy as cp

    rng = np.random.default_rng(int(time.time()))
    passed = failed = 0
    cases = itertools.product(
        ["float16", "bfloat16", "float32"],
        [64, 128],
        [(False, 0, 0), (True, 0, 0), (True, 384, 0), (True, 128, 256), (True, 0, 512)],
        [False, True],  # lse
        [None, "bool"],
    )
    for dtype, d, (causal, q_off, k_off), lse, mask_kind in cases:
        if mask_kind and (dtype != "float16" or d != 64):
            continue  # masks run the reference on the GPU: a few cases suffice
        h, s_q, s_k = 4, 513, 777
        dt = td.as_dtype(dtype)
        q = rng.standard_normal((h, s_q, d), np.float32).astype(dt.numpy)
        k = rng.standard_normal((h, s_k, d), np.float32).astype(dt.numpy)
        v = rng.standard_normal((h, s_k, d), np.float32).astype(dt.numpy)
        mask = rng.random((s_q, s_k)) < 0.8 if mask_kind else None
        net = td.Network("attn")
        ins = [net.input(n, a.shape, dtype) for n, a in zip("qkv", (q, k, v))]
        out = F.attention(*ins, mask=mask, causal=causal, q_offset=q_off, k_offset=k_off,
                          return_lse=lse)  # fmt: skip
        net.output(out[0] if lse else out, "o")
        if lse:
            net.output(out[1], "lse")
        feeds = {n: cp.asarray(a) for n, a in zip("qkv", (q, k, v))}
        got = net.run(feeds, backend="cupy")
        want_o, want_l = formula(q, k, v, 1 / math.sqrt(d), causal, q_off, k_off, mask)
        o = got["o"].astype(np.float64)
        rows = np.isfinite(want_l)
        err = np.linalg.norm(o[:, rows.all(0)] - want_o[:, rows.all(0)]) / max(
            np.linalg.norm(want_o[:, rows.all(0)]), 1e-30
        )
        ok = bool(np.isfinite(o).all()) and err < TOL[dtype]
        ok &= bool((o[~rows] == 0).all())  # rows that see no key are 0
        if lse:
            lerr = np.abs(got["lse"][rows] - want_l[rows]).max(initial=0.0)
            ok &= bool(lerr < 1e-3 * 50) and bool(np.isneginf(got["lse"][~rows]).all())
        path = "kernel" if mask is None and dtype != "float32" else "reference"
        print(f"{'PASS' if ok else 'FAIL'} {dtype} d={d} causal={causal} q+{q_off} k+{k_off} "
              f"lse={lse} mask={mask_kind} ({path}): rel err {err:.1e}")  # fmt: skip
        passed += ok
        failed += not ok
    print(f"ATTENTION OP: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
