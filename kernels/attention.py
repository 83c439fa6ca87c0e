"""Public entry points on CuPy arrays: fused attention forward and the Ring-attention merge.

``flash_attention`` takes q [..., H, Sq, D], k/v [..., H, Sk, D] (fp16 or bf16, D in 32, 64,
128, 256) and returns o [..., H, Sq, D] in q's dtype and, when asked, lse [..., H, Sq] float32
(natural log of the softmax denominator of the scaled scores; -inf for rows with no key).
Three kernels compute it, the first that applies running:

1. the warp-specialized one (``attention_fwd_ws``, Gluon: a TMA loader warp and two consumer
   warpgroups; tiles in ``ws_configs.py``) when ``ws_configs.use_ws()``, the variant has a tile
   and the call qualifies (:func:`pick_ws`);
2. the TMA one (``attention_fwd_tma``, tiles in ``tma_configs.py``) when ``use_tma()`` and the
   arrays qualify;
3. the pointer one (``attention_fwd``, tiles in ``configs.py``): every other call.

``flash_attention_into`` picks among the same kernels, run with a float32 epilogue that writes
or merges into a running (o, lse) state: Ring attention over K/V blocks, no merge kernel.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from . import ws_configs
from .compile import CompiledKernel, compile_kernel
from .configs import (
    ACCUM_INIT,
    ACCUM_MERGE,
    ACCUM_MODES,
    ACCUM_NONE,
    AttentionConfig,
    attention_config,
    attention_spec,
    merge_spec,
)
from .errors import KernelArgumentError, KernelLaunchError
from .launch import launch
from .tma_configs import (
    SCRATCH_PER_PROGRAM,
    TmaConfig,
    tma_compatible,
    tma_config,
    tma_spec,
    use_tma,
)
from .validate import check_accumulators, check_attention, check_merge
from .ws_configs import WsConfig, use_ws, ws_call_ok, ws_config, ws_spec

LOG2E = 1.4426950408889634
#: The most heads (batch x heads) one launch covers: CUDA's limit on grid y.
MAX_GRID_Y = 65535
#: Bytes of per-program global scratch a launch may span: Triton indexes it with 32-bit offsets.
MAX_SCRATCH = 2**31 - 1
_compiled: dict[tuple, CompiledKernel] = {}
#: Scratch of launches captured into CUDA graphs: a replay writes it, so it is never freed.
_captured_scratch: list[Any] = []


def _kernel(kind: str, *variant: Any) -> CompiledKernel:
    """The compiled variant, memoized in-process (the disk cache costs a read and a hash)."""
    key = (kind, *variant)
    if key not in _compiled:
        make = {"attn": attention_spec, "tma": tma_spec, "ws": ws_spec, "merge": merge_spec}[kind]
        _compiled[key] = compile_kernel(make(*variant))
    return _compiled[key]


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as e:
        raise KernelLaunchError("the trtdsl kernels run on CuPy arrays (pip install cupy)") from e
    return cupy


def _as_bsd(x: Any, cp: Any, name: str) -> Any:
    """``x`` viewed as [BH, S, D] with unit last stride, 16-aligned (copied if it is not)."""
    if not isinstance(x, cp.ndarray):
        raise KernelArgumentError(f"{name} must be a CuPy array, got {type(x).__name__}")
    y = x.reshape((-1,) + tuple(x.shape[-2:]))
    item = y.itemsize
    aligned = y.data.ptr % 16 == 0 and all(s % (16 * item) == 0 for s in y.strides[:2])
    if y.strides[2] != item or not aligned:
        y = cp.ascontiguousarray(y)
    return y


def _contiguous_aligned(x: Any, cp: Any) -> Any:
    """``x`` itself when C-contiguous and 16-byte aligned, else a fresh copy."""
    if x.flags.c_contiguous and x.data.ptr % 16 == 0:
        return x
    return cp.array(x, order="C", copy=True)


def _device_of(*xs: Any) -> int:
    ids = {int(x.device.id) for x in xs}
    if len(ids) != 1:
        raise KernelArgumentError(f"arrays live on different devices: {sorted(ids)}")
    return ids.pop()


def _bsd_strides(x: Any) -> tuple[int, int, int]:
    """The element strides of a [BH, S, D] array."""
    st = x.strides
    return (st[0] // x.itemsize, st[1] // x.itemsize, st[2] // x.itemsize)


def tma_qualifies(q3: Any, k3: Any, v3: Any, o: Any | None) -> bool:
    """Whether these [BH, S, D] arrays can be TMA descriptors (``tma_configs.tma_compatible``;
    a descriptor dim cannot be 0, so there must be a key). ``o`` None: the accumulating
    epilogues, which store O by pointers (no O descriptor)."""
    xs = (q3, k3, v3) if o is None else (q3, k3, v3, o)
    ptrs, strides = [int(x.data.ptr) for x in xs], [_bsd_strides(x) for x in xs]
    return k3.shape[1] > 0 and tma_compatible(ptrs, strides, q3.itemsize)


def scratch_fits(q3: Any, rows_per_program: int, per_program: int) -> bool:
    """Whether one launch's per-program scratch (``per_program`` bytes for each of its
    programs: ``rows_per_program`` query rows of at most :data:`MAX_GRID_Y` heads) stays within
    Triton's 32-bit scratch offsets (:data:`MAX_SCRATCH`)."""
    bh, sq = q3.shape[0], q3.shape[1]
    return math.ceil(sq / rows_per_program) * min(bh, MAX_GRID_Y) * per_program <= MAX_SCRATCH


def pick_tma(
    q3: Any, k3: Any, v3: Any, o: Any | None, dtype: str, causal: bool
) -> TmaConfig | None:
    """The TMA tile ``flash_attention`` runs with, or None for the pointer kernel: the switch
    is on (``use_tma()``), the variant is in ``TMA_CONFIGS`` and the arrays qualify (``o``
    None: no O descriptor, as for ``flash_attention_into``)."""
    if not use_tma():
        return None
    cfg = tma_config(q3.shape[-1], dtype, causal)
    if cfg is None or not scratch_fits(q3, cfg.block_m, SCRATCH_PER_PROGRAM):
        return None
    return cfg if tma_qualifies(q3, k3, v3, o) else None


def pick_ws(
    q3: Any, k3: Any, v3: Any, o: Any, dtype: str, causal: bool, q_offset: int, k_offset: int
) -> WsConfig | None:
    """The warp-specialized tile ``flash_attention`` runs with, or None: the switch is on
    (``use_ws()``), the variant has a tile, the call suits the kernel (``ws_call_ok``: a key,
    and causal rows that all see one) and the arrays can be TMA descriptors."""
    if not use_ws():
        return None
    cfg = ws_config(q3.shape[-1], dtype, causal)
    if cfg is None or not ws_call_ok(causal, q_offset, k_offset, k3.shape[1]):
        return None
    if not scratch_fits(q3, cfg.rows_per_cta, ws_configs.SCRATCH_PER_PROGRAM):
        return None
    return cfg if tma_qualifies(q3, k3, v3, o) else None


def pick_tiles(
    q3: Any, k3: Any, v3: Any, o: Any | None, dtype: str, causal: bool, q_offset: int,
    k_offset: int,
) -> tuple[WsConfig | None, TmaConfig | None]:  # fmt: skip
    """``(ws, tma)``: the tiles ``flash_attention`` (``o`` None: ``flash_attention_into``) runs
    with, at most one of them set (:func:`pick_ws` first, then :func:`pick_tma`); both None:
    the pointer kernel."""
    ws = pick_ws(q3, k3, v3, o, dtype, causal, q_offset, k_offset)
    return ws, None if ws else pick_tma(q3, k3, v3, o, dtype, causal)


def _on_stream(stream: Any) -> Any:
    """A context with ``stream`` as CuPy's current stream (a no-op for None): the scratch the
    launcher takes from CuPy's pool, freed when the launch returns, is then reused only by
    work queued on that stream after the kernel."""
    if stream is None:
        return contextlib.nullcontext()
    cp = _cupy()
    if hasattr(stream, "ptr"):  # a CuPy stream (as in launch.as_stream)
        return stream
    handle = stream if isinstance(stream, int) else int(stream.__cuda_stream__()[1])
    if handle == cp.cuda.get_current_stream().ptr:
        return contextlib.nullcontext()
    return cp.cuda.ExternalStream(handle)


def _capturing(stream: Any) -> bool:
    """Whether CuPy's current stream (the launch's, inside ``_on_stream``) is capturing a CUDA
    graph."""
    cp = _cupy()
    return bool(cp.cuda.get_current_stream().is_capturing())


def attention_forward(
    q3: Any,
    k3: Any,
    v3: Any,
    o: Any,
    lse: Any | None,
    *,
    scale: float,
    causal: bool,
    q_offset: int = 0,
    k_offset: int = 0,
    dtype: str,
    config: AttentionConfig | None = None,
    tma: TmaConfig | None = None,
    ws: WsConfig | None = None,
    stream: Any = None,
    accum: int = ACCUM_NONE,
) -> None:
    """Low-level launch on prepared buffers (no checks beyond what the kernel needs).

    q3 [BH, Sq, D], k3/v3 [BH, Sk, D], o [BH, Sq, D]: CuPy arrays with unit last stride,
    16-byte aligned, other strides multiples of 16 elements; lse [BH, Sq] float32 contiguous
    or None. ``config`` overrides the pointer kernel's table (for tuning sweeps); ``tma`` runs
    the TMA kernel with that tile instead (strides then need only be multiples of 16 bytes;
    KernelArgumentError if the arrays cannot be TMA descriptors); ``ws`` runs the
    warp-specialized kernel with that tile (the TMA conditions, and for causal calls
    ``q_offset >= k_offset``). ``accum``
    (``configs.ACCUM_MODES``) 1 writes, 2 merges into, a float32 running state: o then float32
    C-contiguous, lse required. More than :data:`MAX_GRID_Y` heads run as several launches;
    causal offsets reach the kernel as the equivalent (clamped shift, 0), so no int32
    arithmetic on them overflows.
    """
    bh, sq, d = q3.shape
    if accum not in ACCUM_MODES or (accum != ACCUM_NONE and lse is None):
        got = "None" if lse is None else tuple(lse.shape)
        raise KernelArgumentError(
            f"accum must be one of {ACCUM_MODES} (1 and 2 need an lse), got {accum!r}, lse {got}"
        )
    if not (bh and sq):
        return
    o_desc = o if accum == ACCUM_NONE else None  # the accumulating epilogues store by pointers
    if (tma is not None or ws is not None) and not tma_qualifies(q3, k3, v3, o_desc):
        raise KernelArgumentError(
            f"the TMA attention kernels need 16-byte aligned q/k/v/o with unit last stride, "
            f"16-byte multiples for the others and Sk > 0; strides (elements) q "
            f"{_bsd_strides(q3)}, k {_bsd_strides(k3)}, v {_bsd_strides(v3)}, o "
            f"{_bsd_strides(o)}, Sk {k3.shape[1]}"
        )
    if ws is not None and tma is not None:
        raise KernelArgumentError("give the TMA tile or the warp-specialized one, not both")
    if ws is not None:
        if d not in ws_configs.HEAD_DIMS:
            raise KernelArgumentError(
                f"the warp-specialized attention kernel takes head_dim "
                f"{ws_configs.HEAD_DIMS}, got {d}"
            )
        if not ws_call_ok(causal, q_offset, k_offset, k3.shape[1]):
            raise KernelArgumentError(
                f"the warp-specialized attention kernel needs a key and, when causal, q_offset "
                f">= k_offset (every row sees a key); got Sk {k3.shape[1]}, causal {causal}, "
                f"q_offset {q_offset}, k_offset {k_offset}"
            )
        ck, block_m = _kernel("ws", d, dtype, bool(causal), ws, accum), ws.rows_per_cta
    elif tma is not None:
        ck, block_m = _kernel("tma", d, dtype, bool(causal), tma, accum), tma.block_m
    else:
        cfg = config or attention_config(d, dtype, bool(causal))
        ck, block_m = _kernel("attn", d, dtype, bool(causal), config, accum), cfg.block_m
    programs = math.ceil(sq / block_m)
    if not scratch_fits(q3, block_m, ck.global_scratch_size):
        raise KernelArgumentError(
            f"{programs} x {min(bh, MAX_GRID_Y)} programs of {ck.global_scratch_size} bytes of "
            f"scratch exceed the kernel's 32-bit scratch offsets: use the pointer kernel"
        )
    shift = (
        min(max(q_offset - k_offset, -sq), k3.shape[1]) if causal else 0
    )  # the kernels only use q_offset - k_offset; clamped, it gives the same mask in int32
    tail = [np.int32(sq), np.int32(k3.shape[1]), np.int32(shift), np.int32(0)]
    tail += [np.float32(scale * LOG2E), np.int32(0 if lse is None else 1)]
    strides = [np.int64(s // x.itemsize) for x in (q3, k3, v3, o) for s in x.strides[:2]]
    with _on_stream(stream) if ck.global_scratch_size else contextlib.nullcontext():
        for b0 in range(0, bh, MAX_GRID_Y):  # grid y holds at most MAX_GRID_Y heads
            heads = slice(b0, min(bh, b0 + MAX_GRID_Y))
            xs = [x[heads] for x in (q3, k3, v3, o)] + [lse[heads] if lse is not None else None]
            args = [np.uint64(x.data.ptr if x is not None else 0) for x in xs]
            grid = (programs, heads.stop - heads.start, 1)
            scratch = launch(ck, grid, args + strides + tail, device=int(q3.device.id),
                             stream=stream)  # fmt: skip
            if scratch and _capturing(stream):
                _captured_scratch.extend(scratch)  # a graph replay writes it: keep it


def flash_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    scale: float,
    causal: bool = False,
    q_offset: int = 0,
    k_offset: int = 0,
    return_lse: bool = False,
    stream: Any = None,
    as_dtype: str | None = None,
) -> tuple[Any, Any | None]:
    """softmax(scale q k^T, masked) v for each (batch, head); returns ``(o, lse or None)``.

    With ``causal``, query row i (position ``q_offset + i``) sees key j (position
    ``k_offset + j``) iff ``k_offset + j <= q_offset + i``: context-parallel chunks pass their
    global offsets. ``stream``: None (CuPy's current stream), a ``CUstream`` int, a CuPy stream
    or a ``cuda.core`` Stream. ``as_dtype`` ("bfloat16"/"float16") reads 16-bit arrays of
    another dtype (e.g. uint16 holding bf16 bits, for CuPy without bfloat16) as that type;
    o then has q's storage dtype.
    """
    p = check_attention(q, k, v, scale, q_offset, k_offset, as_dtype)
    cp = _cupy()
    q3, k3, v3 = (_as_bsd(x, cp, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    dev = _device_of(q3, k3, v3)
    with cp.cuda.Device(dev):
        o = cp.empty((p.bh, p.seq_q, p.head_dim), dtype=q3.dtype)
        lse = cp.empty((p.bh, p.seq_q), dtype=cp.float32) if return_lse else None
        ws, tma = pick_tiles(q3, k3, v3, o, p.dtype, bool(causal), q_offset, k_offset)
        attention_forward(
            q3, k3, v3, o, lse, scale=scale, causal=causal, q_offset=q_offset,
            k_offset=k_offset, dtype=p.dtype, stream=stream, ws=ws, tma=tma,
        )  # fmt: skip
    o = o.reshape(p.lead + (p.seq_q, p.head_dim))
    return o, (lse.reshape(p.lead + (p.seq_q,)) if lse is not None else None)


def flash_attention_into(
    q: Any,
    k: Any,
    v: Any,
    o_acc: Any,
    lse_acc: Any,
    *,
    scale: float,
    causal: bool = False,
    q_offset: int = 0,
    k_offset: int = 0,
    first: bool,
    stream: Any = None,
    as_dtype: str | None = None,
) -> tuple[Any, Any]:
    """Attention of q to one K/V block accumulated into a float32 running state, in the
    kernel's epilogue (no o in q's dtype, no merge kernel); returns ``(o_acc, lse_acc)``.

    q [..., H, Sq, D], k/v [..., H, Sk, D] as in ``flash_attention``; o_acc [..., H, Sq, D]
    and lse_acc [..., H, Sq]: float32, C-contiguous, 16-byte aligned CuPy arrays. ``first``:
    they get this block's (o, lse) (their contents are ignored); otherwise its online-softmax
    merge with them (``lse = logaddexp(lse_acc, lse_blk)``, o rescaled to match; rows that saw
    no key so far stay o = 0, lse = -inf). Chaining every block of a key set from ``first``
    gives attention over the whole set:

        >>> o, lse = cp.empty((h, sq, d), "f4"), cp.empty((h, sq), "f4")  # doctest: +SKIP
        >>> for i, (kb, vb, ko) in enumerate(blocks):                   # doctest: +SKIP
        ...     flash_attention_into(q, kb, vb, o, lse, scale=s, causal=True, q_offset=qo,
        ...                          k_offset=ko, first=i == 0)
    """
    p = check_attention(q, k, v, scale, q_offset, k_offset, as_dtype)
    check_accumulators(o_acc, lse_acc, p)
    if not isinstance(first, bool):
        raise KernelArgumentError(f"first must be a bool, got {first!r}")
    cp = _cupy()
    q3, k3, v3 = (_as_bsd(x, cp, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    for name, x in (("o_acc", o_acc), ("lse_acc", lse_acc)):
        if not isinstance(x, cp.ndarray):
            raise KernelArgumentError(f"{name} must be a CuPy array, got {type(x).__name__}")
        if x.data.ptr % 16:
            raise KernelArgumentError(
                f"{name} {tuple(x.shape)} (strides {x.strides}) must be 16-byte aligned, its "
                f"address is {x.data.ptr:#x}"
            )
    dev = _device_of(q3, k3, v3, o_acc, lse_acc)
    o3 = o_acc.reshape(p.bh, p.seq_q, p.head_dim)
    lse2 = lse_acc.reshape(p.bh, p.seq_q)
    with cp.cuda.Device(dev):
        ws, tma = pick_tiles(q3, k3, v3, None, p.dtype, bool(causal), q_offset, k_offset)
        attention_forward(
            q3, k3, v3, o3, lse2, scale=scale, causal=causal, q_offset=q_offset,
            k_offset=k_offset, dtype=p.dtype, stream=stream, ws=ws, tma=tma,
            accum=ACCUM_INIT if first else ACCUM_MERGE,
        )  # fmt: skip
    return o_acc, lse_acc


def merge_attention(
    o1: Any,
    lse1: Any,
    o2: Any,
    lse2: Any,
    *,
    inplace: bool = True,
    stream: Any = None,
    as_dtype: str | None = None,
) -> tuple[Any, Any]:
    """Merge two partial attention results over disjoint key sets (Ring attention step).

    o* [..., D] of one dtype, or o1 float32 and o2 fp16/bf16 (a 16-bit partial merged into a
    float32 running state), lse* [...] float32: ``lse = logaddexp(lse1, lse2)``,
    ``o = o1 exp(lse1 - lse) + o2 exp(lse2 - lse)`` (both -inf: o = 0, lse = -inf). With
    ``inplace`` (default) the result is written into ``o1``/``lse1`` (which must then be
    contiguous) and those are returned; otherwise new arrays are. ``as_dtype`` as in
    ``flash_attention``.
    """
    rows, d, dt, dt2 = check_merge(o1, lse1, o2, lse2, as_dtype)
    cp = _cupy()
    for name, x in (("o1", o1), ("lse1", lse1), ("o2", o2), ("lse2", lse2)):
        if not isinstance(x, cp.ndarray):
            raise KernelArgumentError(f"{name} must be a CuPy array, got {type(x).__name__}")
    if inplace and not all(x.flags.c_contiguous and x.data.ptr % 16 == 0 for x in (o1, lse1)):
        raise KernelArgumentError(
            f"inplace merge needs contiguous, 16-byte aligned o1 {o1.shape} (strides "
            f"{o1.strides}) and lse1 {lse1.shape}"
        )
    dev = _device_of(o1, lse1, o2, lse2)
    with cp.cuda.Device(dev):
        a, la, b, lb = (_contiguous_aligned(x, cp) for x in (o1, lse1, o2, lse2))
        out, lout = (o1, lse1) if inplace else (cp.empty_like(a), cp.empty_like(la))
        if rows:
            ck = _kernel("merge", d, dt, dt2)
            args = [np.uint64(x.data.ptr) for x in (a, la, b, lb, out, lout)]
            args.append(np.int64(rows))
            block_r = merge_spec(d, dt, dt2).constexprs["BLOCK_R"]
            launch(ck, (math.ceil(rows / block_r), 1, 1), args, device=dev, stream=stream)
    return out, lout
