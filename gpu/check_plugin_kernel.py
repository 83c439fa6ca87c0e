"""GPU check: the TensorRT plugins' kernels (``trtdsl::flash_attention_lse``: the pointer
kernel; ``trtdsl::flash_attention_lse_ws``: the warp-specialized one, whose third output is its
scratch) launched the way TensorRT's QDP AOT path would launch them, against float64 NumPy. No
TensorRT runs here (its builder is not installable on our machines); what runs is exactly what
``aot_impl`` hands it:

- the network (``F.attention(..., return_lse=True)``) is lowered with the fake ``tensorrt``;
  its plugin layer's ``aot_impl`` is called as the real runtime calls it (the fake plugin's
  ``launch``: symbolic input shapes, static or dynamic, then evaluated for the real shapes);
- the returned PTX (cut to QDP's parameters by ``qdp_ptx``) is JIT-compiled by the CUDA driver
  (``cuda.core.ObjectCode.from_ptx``), as a PTX plugin kernel is;
- it is launched with the returned grid, block and shared memory, and the arguments in QDP's
  order: input pointers, the int32 extra arguments as evaluated, output pointers.

Every case runs the pointer plugin, and the ws plugin too where the lowering would pick it
(head_dim 64/128, a causal query chunk not before its keys); its scratch output is poisoned as
well. Cases: fp16 and bf16 x every head_dim of the plugin (32/64/128/256) x full and causal, with
query/key offsets that hide some rows entirely, offsets at the int32 limits, lengths that are not
block multiples, one query or key, several batches and heads, dynamic shapes. Outputs are NaN
before the launch. Prints one line per case and ``PLUGIN KERNEL: N passed, M failed``, then
``TIMING`` lines (both kernels at 8 heads x 128, bf16, 16k and 32k; ``--no-timing`` skips them).

    python3 gpu/check_plugin_kernel.py [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from check_support import GpuCheck, check_args, check_lse, rel  # gpu/ (this folder)

import trtdsl as td
from trtdsl import functional as F
from trtdsl.backends.tensorrt import lower_network
from trtdsl.backends.tensorrt import plugins as P
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt

try:
    from trtdsl.kernels import launch as L
    from trtdsl.kernels import reference as R
except ImportError:  # kernels/ not linked under trtdsl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kernels import launch as L
    from kernels import reference as R

TOL_O = {"float16": 2e-3, "bfloat16": 1e-2}  # ||o - ref|| / ||ref||
TOL_LSE = 1e-4  # |lse - ref| / max(1, |ref|)
GUARD = 4096  # int32 words after the ws plugin's scratch output: a write there fails the case
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


class Case:
    """One plugin call: [B, H, Sq, D] queries, [B, H, Sk, D] keys and values."""

    def __init__(self, dtype: str, d: int, causal: bool, b: int, h: int, sq: int, sk: int,
                 q_off: int = 0, k_off: int = 0, dynamic: bool = False) -> None:  # fmt: skip
        self.dtype, self.d, self.causal, self.dynamic = dtype, d, causal, dynamic
        self.b, self.h, self.sq, self.sk, self.q_off, self.k_off = b, h, sq, sk, q_off, k_off

    def __str__(self) -> str:
        return (
            f"{self.dtype:8s} D={self.d:<3d} {'causal' if self.causal else 'full  '} "
            f"B={self.b} H={self.h} Sq={self.sq} Sk={self.sk} off=({self.q_off},{self.k_off})"
            + (" dynamic" if self.dynamic else "")
        )


def cases(quick: bool) -> list[Case]:
    out = []
    dims = (64, 128) if quick else (32, 64, 128, 256)
    for dtype in ("float16", "bfloat16"):
        for d in dims:
            out.append(Case(dtype, d, False, 2, 3, 300, 200))
            out.append(Case(dtype, d, True, 2, 3, 300, 200, q_off=100))  # every row sees keys
            out.append(Case(dtype, d, True, 1, 2, 257, 190, q_off=0, k_off=50))  # 50 rows see none
    for dtype in ("float16", "bfloat16"):
        out += [
            Case(dtype, 128, True, 1, 2, 129, 300, q_off=I32_MAX, k_off=I32_MAX - 40),
            Case(dtype, 128, True, 1, 2, 64, 64, q_off=I32_MIN, k_off=I32_MAX),  # sees nothing
            Case(dtype, 128, True, 1, 2, 64, 96, q_off=I32_MAX, k_off=I32_MIN),  # sees all
            Case(dtype, 64, False, 1, 1, 1, 1),
            Case(dtype, 64, True, 1, 1, 1, 333, q_off=332),
            Case(dtype, 128, False, 3, 5, 1000, 3001, dynamic=True),
            Case(dtype, 128, True, 2, 4, 2048, 2048, q_off=0, dynamic=True),
            Case(dtype, 64, True, 2, 2, 700, 1300, q_off=600, dynamic=True),
        ]
    return out[:12] if quick else out


def plugin_launch(case: Case, scale: float, ws: bool) -> tuple[dict[str, Any], list[tuple]]:
    """What ``aot_impl`` returns for this call, evaluated for its shapes (the fake plugin's
    ``launch``: the real runtime's call of the AOT function), and the shapes of the plugin's
    outputs. ``ws``: the lowering must pick the warp-specialized kernel's plugin (False: the
    pointer kernel's, forced where both apply)."""
    trt = make_fake_tensorrt()
    net = td.Network("plugin_kernel")
    lead = (case.b, case.h)
    q = net.input("q", lead + (case.sq, case.d), case.dtype)
    k = net.input("k", lead + (case.sk, case.d), case.dtype)
    v = net.input("v", lead + (case.sk, case.d), case.dtype)
    o, lse = F.attention(
        q, k, v, causal=case.causal, q_offset=case.q_off, k_offset=case.k_off, scale=scale,
        return_lse=True,
    )  # fmt: skip
    net.output(o, "o")
    net.output(lse, "lse")
    before = os.environ.get("TRTDSL_ATTENTION_WS")
    os.environ["TRTDSL_ATTENTION_WS"] = "1" if ws else "0"  # the lowering's switch
    try:
        _, network, _ = lower_network(net, trt)
    finally:
        if before is None:
            del os.environ["TRTDSL_ATTENTION_WS"]
        else:
            os.environ["TRTDSL_ATTENTION_WS"] = before
    layers = [obj for method, obj in network.created if method == "add_plugin"]
    if len(layers) != 1:
        raise AssertionError(f"expected one plugin layer, the lowering made {len(layers)}")
    plugin = layers[0].plugin
    if plugin.plugin_id != (P.PLUGIN_WS_ID if ws else P.PLUGIN_ID):
        raise AssertionError(f"the lowering chose {plugin.plugin_id}")
    dt = trt.DataType.HALF if case.dtype == "float16" else trt.DataType.BF16
    shapes = [lead + (case.sq, case.d), lead + (case.sk, case.d), lead + (case.sk, case.d)]
    static = [(-1, case.h, -1, case.d)] * 3 if case.dynamic else shapes
    dims = plugin.output_shapes([dt] * 3, static, shapes)  # as the runtime sizes them
    return plugin.launch([dt] * 3, static, shapes), dims


def ws_applies(case: Case) -> bool:
    return case.d in (64, 128) and case.sk >= 1 and not (case.causal and case.q_off < case.k_off)


class Loader:
    """PTX -> a driver-JIT-compiled kernel (once per PTX text)."""

    def __init__(self) -> None:
        self.cc = L.cuda_core()
        self.kernels: dict[tuple[str, str], Any] = {}

    def kernel(self, name: str, ptx: str, shared: int) -> Any:
        key = (name, ptx)
        if key not in self.kernels:
            kernel = self.cc.ObjectCode.from_ptx(ptx.encode()).get_kernel(name)  # str: a path
            if shared > 48 * 1024:  # as for any kernel asking for more than the default
                L._set_max_dynamic_smem(kernel, shared, 0)
            self.kernels[key] = kernel
        return self.kernels[key]


class PluginCall:
    """One plugin call made ready: its kernel, launch configuration and arguments in QDP's
    order (inputs, int32 extras, outputs: o, lse and, for the ws plugin, its scratch)."""

    def __init__(self, ctx: GpuCheck, loader: Loader, case: Case, scale: float, ws: bool,
                 inputs: list[Any]) -> None:  # fmt: skip
        cp = ctx.cp
        got, dims = plugin_launch(case, scale, ws)
        self.got, self.loader = got, loader
        self.kernel = loader.kernel(got["kernel_name"], got["code"], got["shared_mem"])
        self.grid = (got["grid_x"], got["grid_y"], got["grid_z"])
        self.block = (got["block_x"], got["block_y"], got["block_z"])
        self.cfg = loader.cc.LaunchConfig(grid=self.grid, block=self.block,
                                          shmem_size=got["shared_mem"])  # fmt: skip
        self.o = ctx.to_gpu(np.full(dims[0], np.nan), case.dtype)
        self.lse = cp.full(dims[1], np.nan, cp.float32)
        # the ws plugin's scratch, poisoned, with GUARD words after it that must stay as they are
        self.scratch = [cp.full(int(np.prod(d)) + GUARD, -1, cp.int32) for d in dims[2:]]
        self.outs = [self.o, self.lse] + self.scratch
        extra = [np.int32(a) for a in got["extra_args"]]
        self.args = [int(x.data.ptr) for x in inputs] + extra
        self.args += [int(x.data.ptr) for x in self.outs]

    def __call__(self) -> None:
        self.loader.cc.launch(L.as_stream(None), self.cfg, self.kernel, *self.args)


def check_case(ctx: GpuCheck, loader: Loader, rng: np.random.Generator, case: Case,
               ws: bool) -> None:  # fmt: skip
    cp = ctx.cp
    scale = float(rng.uniform(0.5, 1.5) / np.sqrt(case.d))
    lead = (case.b, case.h)
    host = [rng.standard_normal(lead + (s, case.d)) for s in (case.sq, case.sk, case.sk)]
    inputs = [ctx.to_gpu(x, case.dtype) for x in host]
    hq, hk, hv = (ctx.to_host(x, case.dtype) for x in inputs)  # as rounded
    ref_o, ref_lse = R.attention(hq, hk, hv, scale, case.causal, case.q_off, case.k_off)
    call = PluginCall(ctx, loader, case, scale, ws, inputs)
    cp.cuda.Device().synchronize()
    call()
    cp.cuda.Device().synchronize()
    o = ctx.to_host(call.o, case.dtype)
    lse = cp.asnumpy(call.lse).astype(np.float64)
    e_o = rel(o, ref_o)
    empty = np.isneginf(ref_lse)
    lok, e_l = check_lse(lse, ref_lse, TOL_LSE)
    ok = bool(np.isfinite(o).all()) and e_o <= TOL_O[case.dtype] and lok
    ok = ok and bool((o[empty] == 0).all())
    ok = ok and all(bool((buf[-GUARD:] == -1).all()) for buf in call.scratch)
    kind = "ws     " if ws else "pointer"
    ctx.record(ok, f"{kind} {case} grid={call.grid} block={call.block[0]} "
                   f"smem={call.got['shared_mem']} o_err={e_o:.1e} lse_err={e_l:.1e} "
                   f"empty_rows={int(empty.sum())}")  # fmt: skip


def time_plugins(ctx: GpuCheck, loader: Loader, rng: np.random.Generator) -> None:
    """Information only: each plugin's kernel at 8 heads x 128, bf16, 16k/32k tokens (ms per
    call, median of 20 CUDA-event timed launches, after 3 warm-ups)."""
    cp = ctx.cp
    for seq in (16384, 32768):
        for causal in (False, True):
            case = Case("bfloat16", 128, causal, 1, 8, seq, seq)
            inputs = [ctx.to_gpu(rng.standard_normal((1, 8, seq, 128)), "bfloat16")
                      for _ in range(3)]  # fmt: skip
            line = []
            for ws in (False, True):
                call = PluginCall(ctx, loader, case, 1 / np.sqrt(128), ws, inputs)
                times = []
                for i in range(23):
                    start, stop = cp.cuda.Event(), cp.cuda.Event()
                    start.record()
                    call()
                    stop.record()
                    stop.synchronize()
                    if i >= 3:
                        times.append(cp.cuda.get_elapsed_time(start, stop))
                ms = float(np.median(times))
                flops = 4 * 8 * seq * seq * 128 / (2 if causal else 1)
                line.append(
                    f"{'ws' if ws else 'pointer'} {ms:.3f} ms {flops / ms / 1e9:.0f} TFLOP/s"
                )
            print(f"TIMING bf16 8x128 S={seq} {'causal' if causal else 'full'}: "
                  + ", ".join(line), flush=True)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--no-timing", action="store_true", help="skip the TIMING lines")
    args, seed, rng = check_args(ap, "fp16/bf16 at head_dim 64 and 128, 12 cases")
    ctx = GpuCheck()
    loader = Loader()
    print(f"seed {seed}; PTX through the driver's JIT (cuda.core ObjectCode.from_ptx)", flush=True)
    for case in cases(args.quick):
        for ws in (False, True) if ws_applies(case) else (False,):
            try:
                check_case(ctx, loader, rng, case, ws)
            except Exception as e:  # noqa: BLE001 - one case's failure is reported, the rest run
                ctx.record(False, f"{'ws' if ws else 'pointer'} {case}: {type(e).__name__}: {e}")
    if not args.no_timing:
        time_plugins(ctx, loader, rng)
    print(f"PLUGIN KERNEL: {ctx.passed} passed, {ctx.failed} failed", flush=True)
    return 0 if ctx.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
