"""GPU check: the parallel blocks on the cupy backend (NCCL) against float64 NumPy formulas and
against the numpy backend running the very same graph.

Run with one process per GPU: ``mpirun -np 2 python3 gpu/check_blocks.py``.
Prints one line per case and ``BLOCKS: N passed, M failed``; exits non-zero on failure.
``--cpu`` runs both sides on the numpy backend (checks this script where no GPU is present).
"""

# ruff: noqa: B023  (the builders are called inside the loop iteration that defines them)

from __future__ import annotations

import sys
import time

import numpy as np

import trtdsl as td
from trtdsl import parallel as P

TOL = {"float32": 2e-3, "float16": 2e-2}  # max |err| / max |ref|


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(q, k, v, causal: bool) -> np.ndarray:
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        n_q, n_k = s.shape[-2:]
        s = np.where(np.tril(np.ones((n_q, n_k), bool)), s, -np.inf)
    return softmax(s) @ v


def gelu(x: np.ndarray) -> np.ndarray:
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def main() -> int:
    on_cpu = "--cpu" in sys.argv
    if not on_cpu:
        from trtdsl.backends.cupy import NcclWorld
    gpu = td.MPIWorld() if on_cpu else NcclWorld()
    cpu = td.MPIWorld(gpu.comm)
    first = "numpy" if on_cpu else "cupy"
    rank, n = gpu.rank, gpu.size
    passed = failed = 0

    def check(label: str, build, feeds: dict, want: np.ndarray, dtype: str) -> None:
        nonlocal passed, failed
        outs = {}
        times = {}
        for backend, world in (("cupy", gpu), ("numpy", cpu)):
            backend = first if world is gpu else backend
            net = td.Network(label, world=world)
            net.output(build(net), "y")
            t0 = time.perf_counter()
            key = "cupy" if world is gpu else "numpy"
            outs[key] = net.run(feeds, backend=backend)["y"].astype(np.float64)
            times[key] = time.perf_counter() - t0
        scale = float(np.max(np.abs(want))) or 1.0
        err_ref = float(np.max(np.abs(outs["cupy"] - want))) / scale
        err_np = float(np.max(np.abs(outs["cupy"] - outs["numpy"]))) / scale
        ok = err_ref < TOL[dtype] and err_np < TOL[dtype]
        oks = gpu.comm.allgather(ok)
        errs = gpu.comm.allgather((err_ref, err_np))
        if all(oks):
            passed += 1
        else:
            failed += 1
        if rank == 0:
            worst = max(e[0] for e in errs), max(e[1] for e in errs)
            print(
                f"{'ok  ' if all(oks) else 'FAIL'} {label:<40} {dtype:<8} rel err vs f64 "
                f"{worst[0]:.1e}, vs numpy backend {worst[1]:.1e}; cupy {times['cupy']:.3f} s,"
                f" numpy {times['numpy']:.3f} s",
                flush=True,
            )

    rng = np.random.default_rng(1234)  # same draws on every rank
    for dtype in ("float32", "float16"):
        # tensor-parallel MLP: one all_reduce
        t, d, hid = 256, 512, 2048
        x = rng.standard_normal((t, d)).astype(dtype)
        w_up = (rng.standard_normal((d, hid)) / np.sqrt(d)).astype(dtype)
        w_down = (rng.standard_normal((hid, d)) / np.sqrt(hid)).astype(dtype)
        want = gelu(x.astype(np.float64) @ w_up.astype(np.float64)) @ w_down.astype(np.float64)
        check(
            "tensor_parallel_mlp",
            lambda net, x=x, a=w_up, b=w_down: P.tensor_parallel_mlp(
                net.input("x", x.shape, dtype), a, b, activation="gelu"
            ),
            {"x": x},
            want,
            dtype,
        )

        # tensor-parallel attention: heads split, one all_reduce
        s, d, h = 512, 512, 8
        dh = d // h
        x = rng.standard_normal((s, d)).astype(dtype)
        w_qkv = (rng.standard_normal((d, 3 * d)) / np.sqrt(d)).astype(dtype)
        w_out = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(dtype)
        q, k, v = (
            (x.astype(np.float64) @ w_qkv.astype(np.float64)[:, i * d : (i + 1) * d])
            .reshape(s, h, dh)
            .transpose(1, 0, 2)
            for i in range(3)
        )
        for causal in (False, True):
            o = attention(q, k, v, causal).transpose(1, 0, 2).reshape(s, d)
            want = o @ w_out.astype(np.float64)
            check(
                f"tensor_parallel_attention causal={causal}",
                lambda net, x=x, a=w_qkv, b=w_out, c=causal: P.tensor_parallel_attention(
                    net.input("x", x.shape, dtype), a, b, num_heads=h, causal=c
                ),
                {"x": x},
                want,
                dtype,
            )

        # context-parallel attention, sequence split over ranks
        h, seq, dh = 8, 2048 * n, 64
        sl = seq // n
        qf, kf, vf = (rng.standard_normal((h, seq, dh)).astype(dtype) for _ in range(3))
        local = {
            name: a[:, rank * sl : (rank + 1) * sl] for name, a in (("q", qf), ("k", kf), ("v", vf))
        }
        for causal in (False, True):
            full = attention(*(a.astype(np.float64) for a in (qf, kf, vf)), causal)
            want = full[:, rank * sl : (rank + 1) * sl]
            for strategy in ("allgather_kv", "ring", "ulysses"):

                def build(net, st=strategy, c=causal):
                    t = [net.input(nm, (h, sl, dh), dtype) for nm in ("q", "k", "v")]
                    return P.cp_attention(*t, strategy=st, causal=c)

                check(f"cp_attention {strategy} causal={causal}", build, local, want, dtype)
    if not on_cpu:
        gpu.close()
    if rank == 0:
        print(f"BLOCKS: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
