"""GPU check of the accumulating attention epilogues (``flash_attention_into``: the kernel
writes, then merges into, a float32 running (o, lse)), run by ``gpu/check_kernels.py``.

Each case chains two or three K/V blocks (the first with ``first=True``) into NaN-poisoned
float32 state that is the head of a longer NaN buffer (the tail must stay NaN), on the pointer
kernel (``TRTDSL_ATTENTION_TMA=0``), the TMA one (``=1``; the table's tile where it has one)
and the warp-specialized one (``TRTDSL_ATTENTION_WS=1``: each block on it where it applies,
else on the TMA kernel),
fp16/bf16 x head_dim 64/128 x full/causal x shapes whose blocks hold rows that see no key (in
one block, in all of them) and lengths that are not block multiples; checked against float64
attention over all the blocks' keys at their positions (O within ``TOL_O``: only p is rounded,
to the inputs' dtype, for the PV product; LSE within 1e-4; rows with no key exactly 0 / -inf),
and the kernels launched must be the expected kernel with ACCUM 1 then 2. Each line also gives
the error of the previous path (per block ``flash_attention`` in q's dtype, cast to float32,
``merge_attention``) for comparison; ``accumulate_summary`` prints the median ratio.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np
from check_support import check_lse, rel  # gpu/check_support.py (this folder)

TOL_O = {"float16": 5e-4, "bfloat16": 5e-3}  # ||o - ref|| / ||ref|| (p is rounded to bf16)
TOL_LSE = 1e-4  # |lse - ref| / max(1, |ref|)
TAIL = 4096  # NaN elements after O and LSE

#: (lead, Sq, q_off, [(Sk, k_off), ...]): what each one exercises
SHAPES = [
    ((1, 2), 1024, 1024, [(1024, 1024), (1024, 0)]),  # a ring step: diagonal, then earlier
    ((2,), 300, 0, [(257, 50), (300, 400), (100, 0)]),  # rows < 50 see no key in block 1 and
    # none of block 2 (causal); block 3 gives them keys
    ((1, 3), 257, 100, [(391, 37), (129, 428)]),  # overlapping, not multiples of any block
    ((1, 2), 200, 0, [(64, 500), (200, 300)]),  # causal: the first block (and all) sees no key
    ((2,), 1, 64, [(129, 0), (1, 64)]),  # one query row
]


def reference(q, blocks, scale: float, causal: bool, q_off: int) -> tuple:
    """float64 (o, lse) of q [BH, Sq, D] over the keys of every (k, v, k_off) block at their
    positions, with BLAS matmuls; rows with no key: 0, -inf."""
    k = np.concatenate([b[0] for b in blocks], 1)
    v = np.concatenate([b[1] for b in blocks], 1)
    k_pos = np.concatenate([off + np.arange(b.shape[1]) for b, _, off in blocks])
    s = scale * (q @ np.swapaxes(k, -1, -2))
    if causal:
        s = np.where(k_pos[None, None, :] <= (q_off + np.arange(q.shape[1]))[None, :, None], s,
                     -np.inf)  # fmt: skip
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    tot = e.sum(-1, keepdims=True)
    safe = np.where(tot == 0, 1.0, tot)
    return (e / safe) @ v, np.where(tot == 0, -np.inf, m + np.log(safe))[..., 0]


def _as_f32(ctx: Any, x: Any, dtype: str) -> Any:
    """A 16-bit device array as float32 (bf16 bits in uint16 storage shifted into place)."""
    cp = ctx.cp
    if x.dtype == cp.uint16:
        return (x.astype(cp.uint32) << 16).view(cp.float32)
    return x.astype(cp.float32)


def _previous_path(ctx: Any, K: Any, gq: Any, gblocks: list, scale: float, causal: bool,
                   q_off: int, dtype: str) -> np.ndarray:  # fmt: skip
    """o of the previous ring composition: per block flash_attention (o in q's dtype) cast to
    float32, merged with merge_attention."""
    acc = None
    for gk, gv, k_off in gblocks:
        o, lse = K.flash_attention(
            gq, gk, gv, scale=scale, causal=causal, q_offset=q_off, k_offset=k_off,
            return_lse=True, as_dtype=ctx.as_dtype(dtype),
        )  # fmt: skip
        o32 = _as_f32(ctx, o, dtype)
        if acc is None:
            acc = (o32, lse)
        else:
            K.merge_attention(acc[0], acc[1], o32, lse, inplace=True)
    return ctx.cp.asnumpy(acc[0]).astype(np.float64)


def expected_kind(
    K: Any, kernel: str, dtype: str, d: int, causal: bool, q_off: int, k_off: int, sk: int
) -> str:
    """The kernel kind ("ws", "tma" or "attn": ``attention._kernel``'s) the attention entry
    points must launch for one call with the switches of ``kernel`` ("pointer": both off,
    "tma": TMA on, "ws": both on), from the tile tables and the warp-specialized kernel's call
    conditions."""
    T = importlib.import_module(K.__name__ + ".tma_configs")
    W = importlib.import_module(K.__name__ + ".ws_configs")
    if kernel == "ws" and W.ws_config(d, dtype, causal) and W.ws_call_ok(causal, q_off, k_off, sk):
        return "ws"
    return "tma" if kernel != "pointer" and T.tma_config(d, dtype, causal) else "attn"


def expected_kinds(K: Any, kernel: str, dtype: str, d: int, causal: bool, shape: tuple) -> list:
    """``expected_kind`` for each block of ``shape`` (chained by ``flash_attention_into``)."""
    _, _, q_off, blocks = shape
    return [expected_kind(K, kernel, dtype, d, causal, q_off, off, n) for n, off in blocks]


def check_accum_case(ctx: Any, K: Any, rng: np.random.Generator, kernel: str, dtype: str, d: int,
                     causal: bool, shape: tuple, stream: Any = None) -> float | None:  # fmt: skip
    """One chain of blocks through flash_attention_into vs the float64 reference (``kernel``:
    the switches, see ``expected_kinds``); returns the ratio of its O error to the previous
    path's (None on a failure)."""
    cp = ctx.cp
    lead, sq, q_off, blocks = shape
    bh = int(np.prod(lead))
    scale = float(rng.uniform(0.5, 1.5) / np.sqrt(d))
    gq = ctx.to_gpu(rng.standard_normal(lead + (sq, d)), dtype)
    gblocks = [
        (ctx.to_gpu(rng.standard_normal(lead + (n, d)), dtype),
         ctx.to_gpu(rng.standard_normal(lead + (n, d)), dtype), off)
        for n, off in blocks
    ]  # fmt: skip
    # the reference sees the inputs as rounded to the kernel's dtype
    hq = ctx.to_host(gq, dtype).reshape(bh, sq, d)
    hblocks = [(ctx.to_host(k, dtype).reshape(bh, -1, d), ctx.to_host(v, dtype).reshape(bh, -1, d),
                off) for k, v, off in gblocks]  # fmt: skip
    ref_o, ref_lse = reference(hq, hblocks, scale, causal, q_off)
    n_o, n_l = bh * sq * d, bh * sq
    o_buf = cp.full(n_o + TAIL, np.nan, cp.float32)
    l_buf = cp.full(n_l + TAIL, np.nan, cp.float32)
    o_acc, lse_acc = o_buf[:n_o].reshape(lead + (sq, d)), l_buf[:n_l].reshape(lead + (sq,))
    ctx.variants.clear()
    cp.cuda.Device().synchronize()
    for i, (gk, gv, off) in enumerate(gblocks):
        K.flash_attention_into(
            gq, gk, gv, o_acc, lse_acc, scale=scale, causal=causal, q_offset=q_off,
            k_offset=off, first=i == 0, stream=stream, as_dtype=ctx.as_dtype(dtype),
        )  # fmt: skip
    cp.cuda.Device().synchronize()
    go = cp.asnumpy(o_acc).astype(np.float64).reshape(bh, sq, d)
    gl = cp.asnumpy(lse_acc).astype(np.float64).reshape(bh, sq)
    e_o = rel(go, ref_o)
    ok = bool(np.isfinite(go).all()) and e_o <= TOL_O[dtype]
    empty = np.isneginf(ref_lse)
    lok, e_l = check_lse(gl, ref_lse, TOL_LSE)
    ok = ok and bool((go[empty] == 0).all()) and lok
    tails = int(cp.count_nonzero(~cp.isnan(o_buf[n_o:]))) + int(
        cp.count_nonzero(~cp.isnan(l_buf[n_l:]))
    )
    ok = ok and tails == 0
    modes = [(kind, variant[-1]) for kind, variant in ctx.variants]
    kinds = expected_kinds(K, kernel, dtype, d, causal, shape)
    ok = ok and modes == [(k, 1 if i == 0 else 2) for i, k in enumerate(kinds)]
    e_old = rel(_previous_path(ctx, K, gq, gblocks, scale, causal, q_off, dtype), ref_o)
    on = "" if stream is None else f" stream={type(stream).__name__}"
    ctx.record(ok, f"accum[{kernel}{on}] {dtype} lead={lead} Sq={sq} D={d} causal={causal} "
               f"q_off={q_off} blocks={blocks} o_err={e_o:.1e} (previous path {e_old:.1e}) "
               f"lse_err={e_l:.1e} empty_rows={int(empty.sum())} tail_written={tails} "
               f"launched={modes}")  # fmt: skip
    return e_o / e_old if ok and e_old > 0 else None


def check_accumulate(ctx: Any, K: Any, T: Any, rng: np.random.Generator, quick: bool) -> None:
    """Every case on the pointer kernel, then with the TMA switch on (the table's TMA tile
    where it has one, else the pointer kernel again), then with the warp-specialized switch on
    too, plus side-stream cases; prints the median ratio of the O errors (this path / the
    previous one) per dtype."""
    W = importlib.import_module(K.__name__ + ".ws_configs")
    ratios: dict[str, list[float]] = {"float16": [], "bfloat16": []}
    saved = {name: os.environ.get(name) for name in (T.TMA_ENV, W.WS_ENV)}
    try:
        for kernel, tma_on, ws_on in (("pointer", "0", "0"), ("tma", "1", "0"), ("ws", "1", "1")):
            os.environ[T.TMA_ENV], os.environ[W.WS_ENV] = tma_on, ws_on
            for dtype in ("float16", "bfloat16"):
                for d in (64, 128):
                    for causal in (False, True):
                        for shape in SHAPES[:2] if quick else SHAPES:
                            _run(ctx, K, rng, kernel, dtype, d, causal, shape, ratios)
            side = ctx.cp.cuda.Stream(non_blocking=True)
            _run(ctx, K, rng, kernel, "bfloat16", 128, True, SHAPES[0], ratios, stream=side)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    for dtype, r in ratios.items():
        med = float(np.median(r)) if r else float("nan")
        print(f"accumulate {dtype}: median o_err ratio (in-kernel / previous path) {med:.2f} "
              f"over {len(r)} cases", flush=True)  # fmt: skip


def _run(ctx: Any, K: Any, rng: np.random.Generator, kernel: str, dtype: str, d: int,
         causal: bool, shape: tuple, ratios: dict, stream: Any = None) -> None:  # fmt: skip
    try:
        r = check_accum_case(ctx, K, rng, kernel, dtype, d, causal, shape, stream)
        if r is not None:
            ratios[dtype].append(r)
    except Exception as e:  # a crash is a failure, keep checking the rest
        ctx.record(False, f"accum[{kernel}] {dtype} D={d} causal={causal} {shape}: "
                   f"{type(e).__name__}: {e}")  # fmt: skip
