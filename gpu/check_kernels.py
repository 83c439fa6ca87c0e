"""GPU check: the Triton kernels (``trtdsl.kernels``) against the float64 NumPy reference.

Run on one CUDA GPU (sm_90): ``python3 gpu/check_kernels.py [--quick]``. Fresh random inputs
per case; the output buffers are poisoned with NaN first (through CuPy's memory pool: a NaN
block of the output's size is freed just before the call, and the check reports how often the
kernel's output landed in it). Covers fp16/bf16 x head_dim 64/128 (32/256 once each) x
full/causal x query/key offsets (q chunk after, before and overlapping the k chunk) x lengths
that are not multiples of the blocks, with LSE, and the merge kernel. Prints one line per case
and ``KERNEL CHECK: N passed, M failed``; exits non-zero on any failure.

The TMA kernel (``attention_fwd_tma``, ``kernels/tma_configs.py``) is checked too (``--no-tma``
skips it): the same attention cases through ``flash_attention`` with ``TRTDSL_ATTENTION_TMA=1``
(each line says which kernel ran), then every sweep candidate tile directly on strided views
(rows and heads padded, the padding of O poisoned: it must stay untouched, i.e. TMA stores clip
at Sq and D) with offsets and lengths that are not block multiples. ``--quick`` checks the
table's tiles only.

The warp-specialized kernel (``attention_fwd_ws``, Gluon, ``kernels/ws_configs.py``) is checked
too (``--no-ws`` skips it): the attention cases through ``flash_attention`` with
``TRTDSL_ATTENTION_WS=1`` (it must take exactly the calls ``ws_call_ok`` allows: a causal
q chunk before its k chunk goes to the TMA kernel), then every tile on padded strided views
with ragged lengths and causal shifts, as for TMA. The other checks run with it off.

The accumulating epilogues (``flash_attention_into``: a float32 running (o, lse) written, then
merged into, by the kernel itself; pointer and TMA kernels) are checked by ``gpu/check_accum.py``
(``--no-accum`` skips them): two or three blocks chained vs float64, each line with the error of
the previous path (o in q's dtype, cast, merge kernel) for comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from check_accum import check_accumulate, expected_kind  # gpu/check_accum.py (this folder)
from check_support import GpuCheck, check_args, check_lse, rel  # gpu/ (this folder)

try:
    import trtdsl.kernels as K
    import trtdsl.kernels.attention as A
    import trtdsl.kernels.reference as R
    import trtdsl.kernels.tma_configs as T
    import trtdsl.kernels.ws_configs as W
except ImportError:  # run from a checkout where kernels/ is not installed under trtdsl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import kernels as K
    from kernels import attention as A
    from kernels import reference as R
    from kernels import tma_configs as T
    from kernels import ws_configs as W

TOL_O = {"float16": 1e-3, "bfloat16": 8e-3}  # ||o - ref|| / ||ref||
TOL_LSE = 1e-4  # |lse - ref| / max(1, |ref|)


class Ctx(GpuCheck):
    """The shared CuPy / bf16 / tally helper (gpu/check_support.py), plus a record of which
    kernels ``flash_attention`` looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.launched: list[str] = []  # kinds of the kernels attention.py looked up
        self.variants: list[tuple] = []  # (kind, variant) of the same lookups
        kernel = A._kernel

        def spy(kind: str, *variant: Any) -> Any:  # which kernel flash_attention launches
            self.launched.append(kind)
            self.variants.append((kind, variant))
            return kernel(kind, *variant)

        A._kernel = spy


def check_attention_case(
    ctx: Ctx,
    rng: np.random.Generator,
    dtype: str,
    lead: tuple[int, ...],
    sq: int,
    sk: int,
    d: int,
    causal: bool,
    q_off: int,
    k_off: int,
    return_lse: bool = True,
    kernel: str = "pointer",
    stream: Any = None,
) -> None:
    """One flash_attention call vs the reference; ``kernel`` ("pointer", "tma" or "ws": run
    with the switches set so) is the kernel flash_attention must pick (checked);
    ``stream`` is passed on (None: CuPy's current stream)."""
    cp = ctx.cp
    q = rng.standard_normal(lead + (sq, d))
    k = rng.standard_normal(lead + (sk, d))
    v = rng.standard_normal(lead + (sk, d))
    scale = float(rng.uniform(0.5, 1.5) / np.sqrt(d))
    gq, gk, gv = (ctx.to_gpu(x, dtype) for x in (q, k, v))
    # the reference sees the inputs as rounded to the kernel's dtype
    hq, hk, hv = (ctx.to_host(x, dtype) for x in (gq, gk, gv))
    ref_o, ref_lse = R.attention(hq, hk, hv, scale, causal, q_off, k_off)
    n_rows = int(np.prod(lead)) * sq
    ptrs = ctx.poison_blocks([n_rows * d * 2] + ([n_rows * 4] if return_lse else []))
    ctx.launched.clear()
    cp.cuda.Device().synchronize()  # inputs and poison in place before another stream reads
    o, lse = K.flash_attention(
        gq, gk, gv, scale=scale, causal=causal, q_offset=q_off, k_offset=k_off,
        return_lse=return_lse, as_dtype=ctx.as_dtype(dtype), stream=stream,
    )  # fmt: skip
    cp.cuda.Device().synchronize()
    ctx.poison_tries += 1
    ctx.poison_hits += int(o.data.ptr) in ptrs
    go = ctx.to_host(o, dtype)
    e_o = rel(go, ref_o)
    ok = bool(np.isfinite(go).all()) and e_o <= TOL_O[dtype] and go.shape == ref_o.shape
    empty = np.isneginf(ref_lse)
    if empty.any():  # rows with no key: exactly 0
        ok = ok and bool((go[empty] == 0).all())
    kinds = {"tma": "tma", "attn": "pointer", "ws": "ws"}
    ran = kinds.get(ctx.launched[-1] if ctx.launched else "", "none")
    ok = ok and ran == kernel
    on = "" if stream is None else f" stream={type(stream).__name__}"
    msg = f"attn[{ran}{on}] {dtype} lead={lead} Sq={sq} Sk={sk} D={d} "
    msg += f"causal={causal} off=({q_off},{k_off}) o_err={e_o:.1e} empty_rows={int(empty.sum())}"
    if return_lse:
        lok, e_l = check_lse(cp.asnumpy(lse).astype(np.float64), ref_lse, TOL_LSE)
        ok = ok and lok and lse.shape == ref_lse.shape
        msg += f" lse_err={e_l:.1e}"
    else:
        ok = ok and lse is None
    ctx.record(ok, msg)


def padded(ctx: Ctx, x: Any, pad: int) -> tuple[Any, Any]:
    """(view, buffer): ``x`` [BH, S, D] copied into a NaN-filled [BH, S + pad, D + pad] buffer
    (16-bit storage; ``view`` is its [BH, S, D] corner: row stride D + pad, head stride
    (S + pad)(D + pad) elements). ``buffer`` is the uint16 view of the whole allocation."""
    bh, s, d = x.shape
    raw = ctx.cp.full((bh, s + pad, d + pad), 0xFFFF, ctx.cp.uint16)
    buf = raw if x.dtype == ctx.cp.uint16 else raw.view(x.dtype)
    view = buf[:, :s, :d]
    view[...] = x
    return view, raw


def check_tile(
    ctx: Ctx, rng: np.random.Generator, dtype: str, cfg: Any, d: int, causal: bool,
    shape: tuple[int, int, int, int, int], pad: int, kind: str = "tma",
) -> None:  # fmt: skip
    """One TMA (``kind`` "tma") or warp-specialized ("ws") tile launched directly
    (attention_forward(tma=cfg) or (ws=cfg)) on padded, strided q/k/v/o vs the reference; the
    padding of o must stay poisoned (NaN bits)."""
    cp = ctx.cp
    bh, sq, sk, q_off, k_off = shape
    q, k, v = (rng.standard_normal((bh, s, d)) for s in (sq, sk, sk))
    scale = float(rng.uniform(0.5, 1.5) / np.sqrt(d))
    gq, gk, gv = (ctx.to_gpu(x, dtype) for x in (q, k, v))
    hq, hk, hv = (ctx.to_host(x, dtype) for x in (gq, gk, gv))
    ref_o, ref_lse = R.attention(hq, hk, hv, scale, causal, q_off, k_off)
    (q3, _), (k3, _), (v3, _) = (padded(ctx, x, pad) for x in (gq, gk, gv))
    o3, o_raw = padded(ctx, cp.zeros_like(gq), pad)
    o_raw[...] = 0xFFFF  # poison the output, padding included
    lse_buf = cp.full(bh * sq + 256, np.nan, cp.float32)  # a poisoned tail past the rows
    lse = lse_buf[: bh * sq].reshape(bh, sq)
    A.attention_forward(
        q3, k3, v3, o3, lse, scale=scale, causal=causal, q_offset=q_off, k_offset=k_off,
        dtype=dtype, **{kind: cfg},
    )  # fmt: skip
    cp.cuda.get_current_stream().synchronize()
    go = ctx.to_host(cp.ascontiguousarray(o3), dtype)
    e_o = rel(go, ref_o)
    ok = bool(np.isfinite(go).all()) and e_o <= TOL_O[dtype]
    empty = np.isneginf(ref_lse)
    ok = ok and bool((go[empty] == 0).all())
    lok, e_l = check_lse(cp.asnumpy(lse).astype(np.float64), ref_lse, TOL_LSE)
    outside = cp.ones(o_raw.shape, dtype=bool)
    outside[:, :sq, :d] = False
    touched = int(cp.count_nonzero((o_raw != 0xFFFF) & outside))
    touched += int(cp.count_nonzero(~cp.isnan(lse_buf[bh * sq :])))  # no LSE past the rows
    ok = ok and lok and touched == 0
    ctx.record(ok, f"{kind} {cfg.label} {dtype} BH={bh} Sq={sq} Sk={sk} D={d} causal={causal} "
               f"off=({q_off},{k_off}) pad={pad} o_err={e_o:.1e} lse_err={e_l:.1e} "
               f"empty_rows={int(empty.sum())} padding_written={touched}")  # fmt: skip


def tma_tile_cases(quick: bool) -> list[tuple]:
    """(dtype, cfg, D, causal, (BH, Sq, Sk, q_off, k_off), pad) for every candidate tile (the
    table's only, with ``quick``), both dtypes and masks."""
    shapes = [(3, 300, 391, 100, 37), (2, 257, 300, 0, 50)]  # overlap; first rows see no key
    cases = []
    for d, cands in T.CANDIDATES.items():
        for dtype in ("float16", "bfloat16"):
            for causal in (False, True):
                table = T.tma_config(d, dtype, causal)
                tiles = [table] if quick else list(dict.fromkeys(cands + (table,)))
                for i, cfg in enumerate(t for t in tiles if t is not None):
                    shape = shapes[i % len(shapes)]
                    cases.append((dtype, cfg, d, causal, shape, 8 if i % 2 == 0 else 16))
    return cases


def check_merge_case(
    ctx: Ctx, rng: np.random.Generator, dtype: str, rows: int, d: int, o2_dtype: str | None = None
) -> None:
    """The merge kernel vs float64 on the rounded inputs; ``o2_dtype``: a 16-bit o2 merged
    into a float32 o1 (``dtype`` then is float32)."""
    cp = ctx.cp
    dt2 = o2_dtype or dtype
    o1 = rng.standard_normal((rows, d))
    o2 = rng.standard_normal((rows, d))
    l1 = rng.standard_normal(rows) * 3
    l2 = rng.standard_normal(rows) * 3
    l1[::7] = -np.inf  # one side empty
    l2[::11] = -np.inf  # the other side empty (and both, every 77th row)
    o1[::7] = 0.0
    o2[::11] = 0.0
    g1, g2 = ctx.to_gpu(o1, dtype), ctx.to_gpu(o2, dt2)
    h1, h2 = ctx.to_host(g1, dtype), ctx.to_host(g2, dt2)
    ref_o, ref_l = R.merge(h1, l1.astype(np.float32), h2, l2.astype(np.float32))
    gl1, gl2 = cp.asarray(l1.astype(np.float32)), cp.asarray(l2.astype(np.float32))
    as_dt = ctx.as_dtype(dt2)
    ptrs = ctx.poison_blocks([rows * d * g1.itemsize, rows * 4])
    o, lse = K.merge_attention(g1, gl1, g2, gl2, inplace=False, as_dtype=as_dt)
    cp.cuda.get_current_stream().synchronize()
    ctx.poison_tries += 1
    ctx.poison_hits += int(o.data.ptr) in ptrs
    go = ctx.to_host(o, dtype)
    tol = {"float32": 1e-6, "float16": 1e-3, "bfloat16": 8e-3}[dtype]
    e_o = rel(go, ref_o)
    lok, e_l = check_lse(cp.asnumpy(lse).astype(np.float64), ref_l, TOL_LSE)
    ok = bool(np.isfinite(go).all()) and e_o <= tol and lok
    both = np.isneginf(ref_l)
    ok = ok and bool((go[both] == 0).all())
    # in place into the first pair gives the same numbers
    o_in, l_in = K.merge_attention(g1, gl1, g2, gl2, as_dtype=as_dt)
    same = o_in is g1 and l_in is gl1 and bool(cp.all(cp.asarray(o_in) == cp.asarray(o)))
    ok = ok and same
    label = f"{dt2} into {dtype}" if dt2 != dtype else dtype
    ctx.record(ok, f"merge {label} rows={rows} D={d} o_err={e_o:.1e} lse_err={e_l:.1e} "
               f"both_empty={int(both.sum())} inplace_same={same}")  # fmt: skip


def attention_cases(quick: bool) -> list[tuple]:
    """(dtype, lead, Sq, Sk, D, causal, q_off, k_off, return_lse)."""
    cases = []
    shapes = [  # (lead, Sq, Sk, q_off, k_off): what each offset pair exercises
        ((2, 3), 300, 300, 0, 0),  # self-attention, not a multiple of any block
        ((1, 2), 200, 333, 512, 0),  # q chunk after the k chunk: all keys visible
        ((1, 2), 100, 200, 0, 256),  # q chunk before the k chunk: fully masked
        ((1, 2), 257, 300, 0, 50),  # k chunk starts later: the first 50 rows see no key
        ((1, 3), 257, 391, 100, 37),  # overlapping chunks
        ((2,), 1, 129, 64, 0),  # one query row
        ((2,), 129, 1, 0, 0),  # one key
        ((1, 2), 1024, 1024, 1024, 1024),  # equal chunks, aligned
    ]
    for dtype in ("float16", "bfloat16"):
        for d in (64, 128):
            for causal in (False, True):
                for lead, sq, sk, qo, ko in shapes[:4] if quick else shapes:
                    cases.append((dtype, lead, sq, sk, d, causal, qo, ko, True))
    cases.append(("bfloat16", (2, 2), 333, 333, 128, True, 0, 0, False))  # no LSE
    for d in (32, 256):
        for causal in (False, True):
            cases.append(("bfloat16", (1, 2), 300, 500, d, causal, 200, 0, True))
            cases.append(("float16", (1, 2), 300, 500, d, causal, 200, 0, True))
    return cases


def ws_tile_cases(quick: bool) -> list[tuple]:
    """(dtype, cfg, D, causal, (BH, Sq, Sk, q_off, k_off), pad) for every warp-specialized
    tile (the table's only, with ``quick``): ragged lengths, causal shifts >= 0 (Sk = Sq +
    shift: a chunk's queries against every earlier key), overlapping chunks."""
    shapes = [(3, 300, 391, 100, 37), (2, 1000, 1000, 0, 0), (2, 777, 1500, 723, 0),
              (1, 130, 4100, 3970, 0)]  # fmt: skip
    cases = []
    for d in W.CANDIDATES:
        for dtype in ("float16", "bfloat16"):
            for causal in (False, True):
                table = W.ws_config(d, dtype, causal)
                tiles = [table] if quick else list(dict.fromkeys((table,) + W.CANDIDATES[d]))
                tiles = [t for t in tiles if t is not None and not (causal and t.pingpong)]
                for i, cfg in enumerate(tiles):
                    for j, shape in enumerate(shapes[:2] if quick else shapes):
                        cases.append((dtype, cfg, d, causal, shape, 8 if (i + j) % 2 else 16))
    return cases


#: Per kernel whose switch a pass turns on: (its environment variables, the tile cases, a
#: causal case for the side-stream runs that the kernel takes).
SWITCHED = {
    "tma": ((T.TMA_ENV,), tma_tile_cases, ("bfloat16", (1, 3), 257, 391, 128, True, 100, 37, True)),
    "ws": ((W.WS_ENV, T.TMA_ENV), ws_tile_cases,
           ("bfloat16", (1, 3), 257, 391, 128, True, 200, 37, True)),
}  # fmt: skip


def check_switched(ctx: Ctx, rng: np.random.Generator, quick: bool, kernel: str) -> None:
    """The attention cases through flash_attention with ``kernel``'s switches on (each call
    must take the kernel ``check_accum.expected_kind`` names: another where ``kernel`` does not
    apply), the side-stream case on another stream than CuPy's current one (its scratch must
    be ordered on that stream), then every tile of ``kernel`` directly on strided views."""
    envs, tile_cases, stream_case = SWITCHED[kernel]
    for env in envs:
        os.environ[env] = "1"
    try:
        for case in attention_cases(quick):
            dtype, _, _, sk, d, causal, qo, ko, _ = case
            kind = expected_kind(K, kernel, dtype, d, causal, qo, ko, sk)
            try:
                check_attention_case(ctx, rng, *case, kernel={"attn": "pointer"}.get(kind, kind))
            except Exception as e:
                ctx.record(False, f"attn[{kernel} switch] {case}: {type(e).__name__}: {e}")
        side = ctx.cp.cuda.Stream(non_blocking=True)
        for stream in (side, side.ptr):
            try:
                check_attention_case(ctx, rng, *stream_case, kernel=kernel, stream=stream)
            except Exception as e:
                ctx.record(False, f"attn[{kernel} stream] {stream_case}: {type(e).__name__}: {e}")
    finally:
        for env in envs:
            os.environ[env] = "0"
    for dtype, cfg, d, causal, shape, pad in tile_cases(quick):
        try:
            check_tile(ctx, rng, dtype, cfg, d, causal, shape, pad, kind=kernel)
        except Exception as e:
            ctx.record(False, f"{kernel} {cfg.label} {dtype} D={d} causal={causal} {shape}: "
                       f"{type(e).__name__}: {e}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--no-tma", action="store_true", help="skip the TMA kernel's cases")
    ap.add_argument("--no-ws", action="store_true", help="skip the warp-specialized kernel")
    ap.add_argument("--no-accum", action="store_true", help="skip flash_attention_into's cases")
    args, seed, rng = check_args(ap, "fewer shapes")
    print(f"seed {seed}", flush=True)
    ctx = Ctx()
    print(f"cupy native bfloat16: {ctx.native_bf16}", flush=True)
    t0 = time.time()
    os.environ[T.TMA_ENV], os.environ[W.WS_ENV] = "0", "0"
    for case in attention_cases(args.quick):
        try:
            check_attention_case(ctx, rng, *case)
        except Exception as e:  # a crash is a failure, keep checking the rest
            ctx.record(False, f"attn {case}: {type(e).__name__}: {e}")
    if not args.no_tma:
        check_switched(ctx, rng, args.quick, "tma")
    if not args.no_ws:
        check_switched(ctx, rng, args.quick, "ws")
    if not args.no_accum:
        check_accumulate(ctx, K, T, rng, args.quick)
    for dtype in ("float16", "bfloat16", "float32"):
        for d in (64, 128):
            try:
                check_merge_case(ctx, rng, dtype, 1000 + d, d)
            except Exception as e:
                ctx.record(False, f"merge {dtype} D={d}: {type(e).__name__}: {e}")
    for o2_dtype in ("float16", "bfloat16"):  # a 16-bit partial into a float32 running state
        for d in (64, 128):
            try:
                check_merge_case(ctx, rng, "float32", 1000 + d, d, o2_dtype)
            except Exception as e:
                ctx.record(False, f"merge {o2_dtype} into float32 D={d}: {type(e).__name__}: {e}")
    # the public entry points refuse bad arguments with ValueErrors
    cp = ctx.cp
    try:
        z = cp.zeros((2, 64, 96), cp.float16)
        K.flash_attention(z, z, z, scale=1.0)
        ctx.record(False, "head_dim 96 accepted")
    except ValueError as e:
        ctx.record("96" in str(e), f"head_dim 96 refused: {e}")
    print(f"poisoned output reused by the kernel's output: {ctx.poison_hits}/{ctx.poison_tries}")
    print(f"time {time.time() - t0:.1f}s")
    print(f"KERNEL CHECK: {ctx.passed} passed, {ctx.failed} failed", flush=True)
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    sys.exit(main())
