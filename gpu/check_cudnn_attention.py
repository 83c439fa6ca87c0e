"""GPU check: the cuDNN attention engine (``trtdsl/backends/cupy/cudnn_attention.py``) against
float64 NumPy and our Triton kernel, then its speed against the kernel.

Run on one CUDA GPU with the cuDNN frontend importable (``gpu/run_all.sh`` installs ``.whl/*.whl``
into /tmp/site)::

    PYTHONPATH=/tmp/site:$PWD python3 gpu/check_cudnn_attention.py [--quick] [--no-bench]

Cases (each a PASS/FAIL line): fp16/bf16 x head_dim 64/128 x B*H 1x1 and 2x3 x (Sq, Sk) in
(128, 128), (1000, 1000), (257, 4096), (4096, 257) x full and causal with shift q_offset -
k_offset in {0, 17, Sk - Sq if >= 0} (absolute offsets not 0), with and without LSE: the engine
(called directly: a refusal or a failed build is a FAIL, never a silent fallback) vs the float64
formula (o: ||err|| / ||ref|| within the dtype's tolerance, LSE within 1e-3) and vs the Triton
kernel on the same inputs. Then: q, k, v as transposed views ([B, S, H, D] buffers seen as
[B, H, S, D]); a side stream (the handle must run on it); a CUDA-graph capture of the engine
replayed on new inputs; the switch (``TRTDSL_ATTENTION_ENGINE=cudnn``: cuDNN where it can, the
kernel for head_dim 32); the DSL attention op in a ``cuda_graph=True`` session on the cuDNN
engine. Last, one line per bf16, 8 heads x 128, S 16k/64k, full/causal: TFLOP/s of the cuDNN
engine and of the Triton kernel. Prints ``CUDNN CHECK: N passed, M failed``; exits 1 on a
failure, 2 when ``import cudnn`` fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import trtdsl.kernels as K  # gpu/run_all.sh links kernels/ there
import trtdsl.kernels.attention as KA  # the module the engine switch calls the kernel from
import trtdsl.kernels.reference as R
from check_support import GpuCheck, check_args  # gpu/check_support.py (this folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # timing.py

TOL_O = {"float16": 1e-3, "bfloat16": 8e-3}  # ||o - ref|| / ||ref||, as gpu/check_kernels.py
TOL_LSE = 1e-3  # absolute
SHAPES = [(128, 128), (1000, 1000), (257, 4096), (4096, 257)]


def reference(q, k, v, scale, causal, q_off, k_off) -> tuple[np.ndarray, np.ndarray]:
    """kernels/reference.py's formula in float64 (rows see keys; offsets as its mask), with
    BLAS matmuls instead of its einsum (which is too slow at 4096 x 4096 rows x keys)."""
    s = scale * (q @ np.swapaxes(k, -1, -2))
    s = np.where(R.attention_mask(q.shape[-2], k.shape[-2], causal, q_off, k_off), s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - m)
    tot = e.sum(-1, keepdims=True)
    return (e / tot) @ v, (m + np.log(tot))[..., 0]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


class Check(GpuCheck):
    def __init__(self, cudnn: Any) -> None:
        super().__init__()
        from trtdsl.backends.cupy import attention_engine as AE
        from trtdsl.backends.cupy import cudnn_attention as CA

        self.cudnn, self.CA, self.AE = cudnn, CA, AE
        self.triton_calls = 0
        kernel = KA.flash_attention

        def counted(*a: Any, **kw: Any) -> Any:  # how often the switch fell back to ours
            self.triton_calls += 1
            return kernel(*a, **kw)

        KA.flash_attention = counted

    def inputs(self, rng, dtype, lead, sq, sk, d, layout="bhsd") -> tuple[list, list]:
        """(device q, k, v; host float64 copies of the values they hold). ``bshd``: views of
        [*lead[:-1], S, H, D] buffers as [*lead, S, D] (not contiguous)."""
        dev, host = [], []
        for s in (sq, sk, sk):
            x = rng.standard_normal((*lead, s, d))
            if layout == "bshd":
                g = self.to_gpu(np.swapaxes(x, -2, -3), dtype)
                g = self.cp.swapaxes(g, -2, -3)
                assert not g.flags.c_contiguous
            else:
                g = self.to_gpu(x, dtype)
            dev.append(g)
            host.append(self.to_host(g, dtype))
        return dev, host

    def compare(self, tag, dtype, o, lse, want_o, want_lse, return_lse) -> tuple[bool, str]:
        go = self.to_host(o, dtype)
        e_o = rel(go, want_o)
        ok = go.shape == want_o.shape and bool(np.isfinite(go).all()) and e_o <= TOL_O[dtype]
        msg = f"{tag}_o={e_o:.1e}"
        if return_lse:
            gl = self.cp.asnumpy(lse).astype(np.float64)
            e_l = float(np.abs(gl - want_lse).max()) if gl.size else 0.0
            ok = ok and gl.shape == want_lse.shape and e_l <= TOL_LSE
            msg += f" {tag}_lse={e_l:.1e}"
        else:
            ok = ok and lse is None
        return ok, msg

    def case(self, rng, dtype, d, lead, sq, sk, causal, shift, layout="bhsd") -> None:
        """One engine call with and one without LSE on the same inputs, vs float64 and vs
        the Triton kernel (which also runs with and without LSE)."""
        k_off = 100
        q_off = k_off + shift
        (q, k, v), host = self.inputs(rng, dtype, lead, sq, sk, d, layout)
        scale = float(rng.uniform(0.5, 1.5) / np.sqrt(d))
        want_o, want_lse = reference(*host, scale, causal, q_off, k_off)
        as_dt = self.as_dtype(dtype)
        kw = dict(scale=scale, causal=causal, q_offset=q_off, k_offset=k_off)
        for return_lse in (True, False):
            name = (f"{dtype} D={d} lead={lead} Sq={sq} Sk={sk} causal={causal} shift={shift} "
                    f"layout={layout} lse={return_lse}")  # fmt: skip
            try:
                n = sq * int(np.prod(lead))
                self.poison_blocks([n * d * 2] + ([n * 4] if return_lse else []))
                o, lse = self.CA.attention(q, k, v, return_lse=return_lse, as_dtype=as_dt, **kw)
                ot, lt = K.flash_attention(q, k, v, return_lse=return_lse, as_dtype=as_dt, **kw)
                self.cp.cuda.get_current_stream().synchronize()
                ok, msg = self.compare("ref", dtype, o, lse, want_o, want_lse, return_lse)
                tri_o = self.to_host(ot, dtype)
                tri_l = self.cp.asnumpy(lt).astype(np.float64) if return_lse else None
                ok2, msg2 = self.compare("triton", dtype, o, lse, tri_o, tri_l, return_lse)
                self.record(ok and ok2, f"cudnn {name}: {msg} {msg2}")
            except Exception as e:  # a crash is a failure; keep checking
                self.record(False, f"cudnn {name}: {type(e).__name__}: {e}")

    def side_stream(self, rng) -> None:
        cp, CA = self.cp, self.CA
        (q, k, v), host = self.inputs(rng, "float16", (2, 3), 1000, 1000, 128)
        want_o, want_lse = reference(*host, 0.1, True, 17, 0)
        cp.cuda.Device().synchronize()
        side = cp.cuda.Stream(non_blocking=True)
        with side:
            o, lse = CA.attention(q, k, v, scale=0.1, causal=True, q_offset=17, return_lse=True)
        handle = CA._handle(self.cudnn, int(q.device.id))
        on = getattr(self.cudnn, "get_stream", lambda h: side.ptr)(handle)
        side.synchronize()
        ok, msg = self.compare("ref", "float16", o, lse, want_o, want_lse, True)
        self.record(ok and int(on) == side.ptr, f"side stream: {msg} handle stream ok="
                    f"{int(on) == side.ptr}")  # fmt: skip

    def capture(self, rng) -> None:
        """Eager call (builds the graph), capture on the same stream, replay on new inputs."""
        cp, CA = self.cp, self.CA
        (q, k, v), _ = self.inputs(rng, "bfloat16", (2, 3), 1000, 1000, 64)
        as_dt = self.as_dtype("bfloat16")
        kw = dict(scale=0.125, causal=True, q_offset=5, k_offset=0, return_lse=True)
        stream = cp.cuda.Stream(non_blocking=True)
        cp.cuda.Device().synchronize()
        with stream:
            o0, _ = CA.attention(q, k, v, as_dtype=as_dt, **kw)
            stream.synchronize()
            del o0
            try:
                stream.begin_capture(cp.cuda.runtime.streamCaptureModeRelaxed)
            except TypeError:  # older CuPy: no mode argument
                stream.begin_capture()
            try:
                o, lse = CA.attention(q, k, v, as_dtype=as_dt, **kw)
            finally:
                graph = stream.end_capture()
        (nq, nk, nv), host = self.inputs(rng, "bfloat16", (2, 3), 1000, 1000, 64)
        for dst, src in ((q, nq), (k, nk), (v, nv)):
            dst[...] = src
        cp.cuda.Device().synchronize()
        graph.launch(stream)
        stream.synchronize()
        want_o, want_lse = reference(*host, 0.125, True, 5, 0)
        ok, msg = self.compare("ref", "bfloat16", o, lse, want_o, want_lse, True)
        pinned = any(getattr(e, "pinned", False) for e in CA.graphs().values())
        self.record(ok and pinned, f"CUDA graph capture + replay on new inputs: {msg} "
                    f"pinned={pinned}")  # fmt: skip

    def switch(self, rng) -> None:
        """TRTDSL_ATTENTION_ENGINE=cudnn through the selector: cuDNN for head_dim 128 (a new
        cached graph), the Triton kernel for head_dim 32 (none)."""
        AE = self.AE
        os.environ[AE.ENGINE_ENV] = "cudnn"
        try:
            for d, cudnn_runs in ((128, True), (32, False)):
                (q, k, v), host = self.inputs(rng, "float16", (1, 4), 333, 555, d)
                before = self.triton_calls
                o, lse = AE.fused_attention(q, k, v, scale=0.2, causal=True, q_offset=300,
                                            k_offset=0, return_lse=True)  # fmt: skip
                self.cp.cuda.get_current_stream().synchronize()
                want_o, want_lse = reference(*host, 0.2, True, 300, 0)
                ok, msg = self.compare("ref", "float16", o, lse, want_o, want_lse, True)
                ran = self.triton_calls == before
                self.record(ok and ran == cudnn_runs, f"switch=cudnn D={d}: {msg} "
                            f"cudnn ran={ran} (want {cudnn_runs})")  # fmt: skip
        finally:
            del os.environ[AE.ENGINE_ENV]

    def session(self, rng) -> None:
        """The DSL attention op in a CUDA-graph session with the cuDNN engine: two calls (the
        eager one and a replay) on different inputs."""
        import trtdsl as td
        from trtdsl import functional as F

        AE = self.AE
        os.environ[AE.ENGINE_ENV] = "cudnn"
        try:
            net = td.Network("attn_cudnn")
            ins = [net.input(n, (8, 777, 128), "float16") for n in "qkv"]
            o, lse = F.attention(*ins, causal=True, q_offset=40, k_offset=0, return_lse=True)
            net.output(o, "o")
            net.output(lse, "lse")
            sess = net.compile(backend="cupy", cuda_graph=True, return_device=True)
            before = self.triton_calls
            for call in range(2):
                (q, k, v), host = self.inputs(rng, "float16", (8,), 777, 777, 128)
                got = sess.run(dict(zip("qkv", (q, k, v))))
                self.cp.cuda.Device().synchronize()
                want_o, want_lse = reference(*host, 1 / np.sqrt(128), True, 40, 0)
                ok, msg = self.compare("ref", "float16", got["o"], got["lse"], want_o,
                                       want_lse, True)  # fmt: skip
                ran = self.triton_calls == before
                self.record(ok and ran, f"session cuda_graph call {call}: {msg} cudnn ran={ran}")
            sess.close()
        finally:
            del os.environ[AE.ENGINE_ENV]

    def bench(self, rng, reps: int) -> None:
        from timing import cupy_events, median_ms  # benchmarks/timing.py

        h, d = 8, 128
        as_dt = self.as_dtype("bfloat16")
        for s in (16384, 65536):
            qkv = self.inputs_fast((h, s, d))
            for causal in (False, True):
                kw = dict(scale=1 / np.sqrt(d), causal=causal, as_dtype=as_dt)
                ms_c = median_ms(partial(self.CA.attention, *qkv, **kw), cupy_events, reps, 2)
                ms_t = median_ms(partial(K.flash_attention, *qkv, **kw), cupy_events, reps, 2)
                fl = 4.0 * s * s * h * d * (0.5 if causal else 1.0)
                tc, tt = fl / ms_c / 1e9, fl / ms_t / 1e9
                print(f"bench bf16 H={h} D={d} S={s} {'causal' if causal else 'full'}: cudnn "
                      f"{tc:.0f} TFLOP/s ({ms_c:.2f} ms), triton {tt:.0f} TFLOP/s "
                      f"({ms_t:.2f} ms), triton/cudnn {tt / tc:.2f}", flush=True)  # fmt: skip
            qkv.clear()

    def inputs_fast(self, shape: tuple[int, ...]) -> list:
        """bf16 q, k, v drawn on the GPU (64k x 8 x 128 is too many for host draws)."""
        normal = self.cp.random.standard_normal
        return [self.cast_bf16(normal(shape, dtype=self.cp.float32)) for _ in "qkv"]

    def cast_bf16(self, x: Any) -> Any:
        """float32 -> bf16 on the GPU (native dtype, or its uint16 bits: round to nearest)."""
        cp = self.cp
        if self.native_bf16:
            return x.astype(self.bf16)
        bits = x.view(cp.uint32)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(cp.uint16)


def cases(quick: bool) -> list[tuple]:
    out = []
    for dtype in ("float16", "bfloat16"):
        for d in (64, 128):
            for lead in ((2, 3),) if quick else ((1, 1), (2, 3)):
                for sq, sk in SHAPES[1:3] if quick else SHAPES:
                    out.append((dtype, d, lead, sq, sk, False, 0))
                    for shift in dict.fromkeys([0, 17] + ([sk - sq] if sk >= sq else [])):
                        out.append((dtype, d, lead, sq, sk, True, shift))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--no-bench", action="store_true", help="skip the timing lines")
    ap.add_argument("--reps", type=int, default=10)
    args, seed, rng = check_args(ap, "fewer shapes")
    try:
        import cudnn

        backend = cudnn.backend_version()  # fails when no libcudnn could be loaded
    except Exception as e:
        print(f"CUDNN CHECK: cannot import cudnn ({type(e).__name__}: {e}); install "
              "nvidia-cudnn-frontend (gpu/run_all.sh puts .whl/*.whl in /tmp/site)")  # fmt: skip
        return 2
    ctx = Check(cudnn)
    fe = getattr(cudnn, "__version__", "?")
    print(f"seed {seed}; cudnn frontend {fe}, backend {backend}; "
          f"cupy native bf16: {ctx.native_bf16}", flush=True)  # fmt: skip
    t0 = time.time()
    for case in cases(args.quick):
        ctx.case(rng, *case)
    for dtype, d in (("float16", 128), ("bfloat16", 64)):
        ctx.case(rng, dtype, d, (2, 3), 1000, 1000, True, 17, layout="bshd")
        ctx.case(rng, dtype, d, (2, 3), 257, 4096, False, 0, layout="bshd")
    for part in (ctx.side_stream, ctx.capture, ctx.switch, ctx.session):
        try:
            part(rng)
        except Exception as e:
            ctx.record(False, f"{part.__name__}: {type(e).__name__}: {e}")
    print(f"time {time.time() - t0:.1f}s", flush=True)
    if not args.no_bench:
        try:
            ctx.bench(rng, args.reps)
        except Exception as e:
            ctx.record(False, f"bench: {type(e).__name__}: {e}")
    print(f"CUDNN CHECK: {ctx.passed} passed, {ctx.failed} failed", flush=True)
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    sys.exit(main())
