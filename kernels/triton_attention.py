"""Triton source of the attention kernels (compiled ahead of time by ``compile.py``).

Layouts (row-major, last dim contiguous, the other strides passed in elements):

- ``Q`` [BH, Sq, D], ``K`` / ``V`` [BH, Sk, D], ``O`` [BH, Sq, D] (dtype of Q), ``LSE`` [BH, Sq]
  float32 contiguous.
- Query row ``i`` sits at position ``q_offset + i``, key ``j`` at ``k_offset + j``; with
  ``CAUSAL`` key ``j`` is allowed for row ``i`` iff ``k_offset + j <= q_offset + i``.
- ``qk_scale`` is ``scale * log2(e)``: the softmax runs in base 2 (``exp2``), float32 accumulation.
- A row with no allowed key gets ``O = 0`` and ``LSE = -inf``.
- ``ACCUM`` (constexpr) picks the epilogue (``_store_rows``): 0 writes O in Q's dtype (LSE when
  ``write_lse``); 1 ("init") writes a float32 O and the LSE; 2 ("merge") reads the float32
  running (O, LSE) of the rows and writes its online-softmax merge with this call's result
  (Ring attention over K/V blocks without a separate merge kernel).

This module imports without Triton (the decorator then is the identity), so the package stays
importable on machines without it; only ``compile.py`` needs Triton to build the kernels.
"""

from __future__ import annotations

from .triton_shim import jit as _jit
from .triton_shim import tl


@_jit
def _softmax_step(
    qk,
    l_i,
    m_i,
    offs_m,
    offs_n,
    seq_k,
    shift,
    qk_scale,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    """One key block of the online softmax: scores ``qk`` [M, N] (unscaled, f32) of rows
    ``offs_m`` against keys ``offs_n``; returns (p [M, N], new l_i, new m_i, alpha [M]), the
    caller rescaling its accumulator by alpha. ``MASKED``: drop keys >= seq_k and, with
    ``CAUSAL``, keys past ``row + shift`` (a row with no key yet keeps m = -inf, p = 0)."""
    if MASKED:
        allowed = (offs_n < seq_k)[None, :]
        if CAUSAL:
            allowed = allowed & (offs_n[None, :] <= offs_m[:, None] + shift)
        qk = tl.where(allowed, qk, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = tl.where(m_ij == float("-inf"), 0.0, m_ij)
    else:
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = m_ij
    p = tl.math.exp2(qk * qk_scale - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    return p, l_i * alpha + tl.sum(p, 1), m_ij, alpha


@_jit
def _attn_blocks(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    stride_kn,
    stride_vn,
    offs_m,
    offs_d,
    lo,
    hi,
    seq_k,
    shift,
    qk_scale,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    """Key blocks [lo, hi) into (acc [M, D] f32, l_i [M], m_i [M] in log2 units)."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + offs_n0
        k_ptrs = k_base + offs_n[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :]
        if MASKED:
            in_k = offs_n < seq_k
            k = tl.load(k_ptrs, mask=in_k[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
        qk = tl.dot(q, tl.trans(k))
        p, l_i, m_ij, alpha = _softmax_step(
            qk, l_i, m_i, offs_m, offs_n, seq_k, shift, qk_scale, MASKED, CAUSAL
        )
        acc = acc * alpha[:, None]
        if MASKED:
            v = tl.load(v_ptrs, mask=in_k[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_ij
    return acc, l_i, m_i


@_jit
def _key_range(
    start_m, seq_k, shift, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr
):
    """(full_hi, hi) for the query block at ``start_m``: key blocks [0, full_hi) need no mask
    (every key exists and, with ``CAUSAL``, is allowed for every row of the block); blocks
    [full_hi, hi) are masked; keys from ``hi`` on are allowed for no row."""
    full_k = (seq_k // BLOCK_N) * BLOCK_N
    if CAUSAL:
        hi = tl.minimum(seq_k, tl.maximum(0, shift + start_m + BLOCK_M))
        unmasked = (tl.maximum(0, shift + start_m + 1) // BLOCK_N) * BLOCK_N
        full_hi = tl.minimum(full_k, unmasked)
    else:
        hi = seq_k
        full_hi = full_k
    return full_hi, hi


@_jit
def _normalize(acc, l_i):
    """O = acc / l row by row; rows with no allowed key (l = 0) stay 0."""
    return acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]


@_jit
def _lse(l_i, m_i):
    """Natural-log softmax denominator from the base-2 running (l, m); -inf where l = 0."""
    return tl.where(l_i == 0.0, float("-inf"), (m_i + tl.math.log2(l_i)) * 0.6931471805599453)


@_jit
def _merge_weights(lse1, lse2):
    """``(w1, w2, lse)`` of merging two partial results with log-sum-exps ``lse1``/``lse2``
    (natural log, per row): ``lse = logaddexp(lse1, lse2)``, ``w_i = exp(lse_i - lse)``; rows
    where both are -inf get ``w1 = w2 = 0`` and ``lse = -inf``."""
    m = tl.maximum(lse1, lse2)
    m = tl.where(m == float("-inf"), 0.0, m)
    w1 = tl.exp(lse1 - m)
    w2 = tl.exp(lse2 - m)
    s = w1 + w2
    empty = s == 0.0
    s_safe = tl.where(empty, 1.0, s)
    return w1 / s_safe, w2 / s_safe, tl.where(empty, float("-inf"), m + tl.log(s_safe))


@_jit
def _store_rows(acc, l_i, m_i, o_ptrs, lse_ptrs, in_q, write_lse, ACCUM: tl.constexpr):
    """The epilogue of one row-block by pointers: ``o_ptrs`` [M, D], ``lse_ptrs`` [M], rows
    ``in_q`` only. ``ACCUM`` 0: O = acc / l in O's dtype, LSE if ``write_lse``; 1: O (float32)
    and LSE; 2: O/LSE hold a running (o_prev, lse_prev), replaced by the merge with this block
    (lse = logaddexp(lse_prev, lse_blk), o = o_prev w_prev + o_blk w_blk; both -inf: 0, -inf;
    as ``attention_merge``, with o_blk w_blk = acc (w_blk / l))."""
    if ACCUM == 2:
        lse_prev = tl.load(lse_ptrs, mask=in_q, other=float("-inf"))
        w_prev, w_blk, lse = _merge_weights(lse_prev, _lse(l_i, m_i))
        w_acc = w_blk / tl.where(l_i == 0.0, 1.0, l_i)
        o_prev = tl.load(o_ptrs, mask=in_q[:, None], other=0.0)
        o = o_prev * w_prev[:, None] + acc * w_acc[:, None]
        tl.store(o_ptrs, o, mask=in_q[:, None])
        tl.store(lse_ptrs, lse, mask=in_q)
    else:
        o = _normalize(acc, l_i).to(o_ptrs.dtype.element_ty)
        tl.store(o_ptrs, o, mask=in_q[:, None])
        if ACCUM == 1:
            tl.store(lse_ptrs, _lse(l_i, m_i), mask=in_q)
        elif write_lse != 0:
            tl.store(lse_ptrs, _lse(l_i, m_i), mask=in_q)


@_jit
def attention_fwd(
    Q,
    K,
    V,
    O,
    LSE,
    stride_qb,
    stride_qm,
    stride_kb,
    stride_kn,
    stride_vb,
    stride_vn,
    stride_ob,
    stride_om,
    seq_q,
    seq_k,
    q_offset,
    k_offset,
    qk_scale,
    write_lse,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    ACCUM: tl.constexpr,
):
    """Grid (cdiv(Sq, BLOCK_M), BH): one program per query block of one (batch, head).
    ``ACCUM`` 1/2: O is float32 (see the module docstring)."""
    pid_m = tl.program_id(0)
    if CAUSAL:  # the longest rows first, so the short ones fill the last wave
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1).to(tl.int64)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    in_q = offs_m < seq_q
    q_ptrs = Q + bh * stride_qb + offs_m[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=in_q[:, None], other=0.0)

    shift = q_offset - k_offset  # key j allowed for row i iff j <= i + shift
    full_hi, hi = _key_range(start_m, seq_k, shift, BLOCK_M, BLOCK_N, CAUSAL)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + bh * stride_kb
    v_base = V + bh * stride_vb
    acc, l_i, m_i = _attn_blocks(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
        0, full_hi, seq_k, shift, qk_scale, BLOCK_N, False, CAUSAL,
    )  # fmt: skip
    acc, l_i, m_i = _attn_blocks(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
        full_hi, hi, seq_k, shift, qk_scale, BLOCK_N, True, CAUSAL,
    )  # fmt: skip

    o_ptrs = O + bh * stride_ob + offs_m[:, None] * stride_om + offs_d[None, :]
    _store_rows(acc, l_i, m_i, o_ptrs, LSE + bh * seq_q + offs_m, in_q, write_lse, ACCUM)


@_jit
def _tma_blocks(
    acc,
    l_i,
    m_i,
    q,
    k_desc,
    v_desc,
    bh,
    offs_m,
    lo,
    hi,
    seq_k,
    shift,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    """``_attn_blocks`` with K/V tiles fetched by TMA from [BH, Sk, D] descriptors (rows past
    Sk arrive as zeros; ``MASKED`` blocks still drop their scores)."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in tl.range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k = k_desc.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        qk = tl.dot(q, tl.trans(k))
        p, l_i, m_ij, alpha = _softmax_step(
            qk, l_i, m_i, offs_m, start_n + offs_n0, seq_k, shift, qk_scale, MASKED, CAUSAL
        )
        acc = acc * alpha[:, None]
        v = v_desc.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_ij
    return acc, l_i, m_i


@_jit
def _tma_blocks2(
    acc0,
    l0,
    m0,
    acc1,
    l1,
    m1,
    q0,
    q1,
    k_desc,
    v_desc,
    bh,
    offs_m0,
    offs_m1,
    lo,
    hi,
    seq_k,
    shift,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    """``_tma_blocks`` for two row-blocks sharing each K/V tile, in the order qk0, qk1,
    softmax 0, pv0, softmax 1, pv1: each softmax can overlap the other block's async wgmma."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in tl.range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + offs_n0
        kt = tl.trans(k_desc.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM))
        qk0 = tl.dot(q0, kt)
        qk1 = tl.dot(q1, kt)
        p0, l0, m0n, a0 = _softmax_step(
            qk0, l0, m0, offs_m0, offs_n, seq_k, shift, qk_scale, MASKED, CAUSAL
        )
        v = v_desc.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        acc0 = tl.dot(p0.to(v.dtype), v, acc0 * a0[:, None])
        p1, l1, m1n, a1 = _softmax_step(
            qk1, l1, m1, offs_m1, offs_n, seq_k, shift, qk_scale, MASKED, CAUSAL
        )
        acc1 = tl.dot(p1.to(v.dtype), v, acc1 * a1[:, None])
        m0 = m0n
        m1 = m1n
    return acc0, l0, m0, acc1, l1, m1


@_jit
def _tma_store(o_out, LSE, acc, l_i, m_i, bh, start, offs_m, seq_q, stride_ob, stride_om,
               write_lse, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr,
               ACCUM: tl.constexpr):  # fmt: skip
    """O rows [start, start + ROWS) of head ``bh``: ``ACCUM`` 0 by TMA through the descriptor
    ``o_out`` (rows past Sq are clipped), LSE by pointer (masked); 1/2 by pointers through
    ``_store_rows`` (``o_out`` is then the float32 O pointer)."""
    if ACCUM == 0:
        o = _normalize(acc, l_i).to(o_out.dtype)
        o_out.store([bh, start, 0], o.reshape(1, ROWS, HEAD_DIM))
        if write_lse != 0:
            tl.store(LSE + bh.to(tl.int64) * seq_q + offs_m, _lse(l_i, m_i), mask=offs_m < seq_q)
    else:
        bh64 = bh.to(tl.int64)
        offs_d = tl.arange(0, HEAD_DIM)
        o_ptrs = o_out + bh64 * stride_ob + offs_m[:, None] * stride_om + offs_d[None, :]
        lse_ptrs = LSE + bh64 * seq_q + offs_m
        _store_rows(acc, l_i, m_i, o_ptrs, lse_ptrs, offs_m < seq_q, write_lse, ACCUM)


@_jit
def attention_fwd_tma(
    Q,
    K,
    V,
    O,
    LSE,
    stride_qb,
    stride_qm,
    stride_kb,
    stride_kn,
    stride_vb,
    stride_vn,
    stride_ob,
    stride_om,
    seq_q,
    seq_k,
    q_offset,
    k_offset,
    qk_scale,
    write_lse,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    ACCUM: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """``attention_fwd`` (same arguments, grid and results) loading Q/K/V and storing O by TMA
    through [BH, S, D] tensor descriptors made in the kernel (128 bytes of global scratch per
    descriptor and program). Needs 16-byte aligned Q/K/V/O and strides that are multiples of 16
    bytes. ``SPLIT`` 2: the program's BLOCK_M rows are two row-blocks of BLOCK_M / 2 sharing
    each K/V tile (``_tma_blocks2``). ``ACCUM`` 1/2 store the float32 O by pointers (no O
    descriptor)."""
    pid_m = tl.program_id(0)
    if CAUSAL:  # the longest rows first, so the short ones fill the last wave
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1)
    n_bh = tl.num_programs(1)
    start_m = pid_m * BLOCK_M
    ROWS: tl.constexpr = BLOCK_M // SPLIT
    q_desc = tl.make_tensor_descriptor(
        Q, [n_bh, seq_q, HEAD_DIM], [stride_qb, stride_qm, 1], [1, ROWS, HEAD_DIM]
    )
    k_desc = tl.make_tensor_descriptor(
        K, [n_bh, seq_k, HEAD_DIM], [stride_kb, stride_kn, 1], [1, BLOCK_N, HEAD_DIM]
    )
    v_desc = tl.make_tensor_descriptor(
        V, [n_bh, seq_k, HEAD_DIM], [stride_vb, stride_vn, 1], [1, BLOCK_N, HEAD_DIM]
    )
    if ACCUM == 0:
        o_out = tl.make_tensor_descriptor(
            O, [n_bh, seq_q, HEAD_DIM], [stride_ob, stride_om, 1], [1, ROWS, HEAD_DIM]
        )
    else:
        o_out = O  # float32 running state, stored by pointers
    shift = q_offset - k_offset  # key j allowed for row i iff j <= i + shift
    full_hi, hi = _key_range(start_m, seq_k, shift, BLOCK_M, BLOCK_N, CAUSAL)
    offs_m0 = start_m + tl.arange(0, ROWS)
    q0 = q_desc.load([bh, start_m, 0]).reshape(ROWS, HEAD_DIM)
    m0 = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    l0 = tl.zeros([ROWS], dtype=tl.float32)
    acc0 = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)
    if SPLIT == 1:
        acc0, l0, m0 = _tma_blocks(
            acc0, l0, m0, q0, k_desc, v_desc, bh, offs_m0, 0, full_hi, seq_k, shift, qk_scale,
            HEAD_DIM, BLOCK_N, False, CAUSAL,
        )  # fmt: skip
        acc0, l0, m0 = _tma_blocks(
            acc0, l0, m0, q0, k_desc, v_desc, bh, offs_m0, full_hi, hi, seq_k, shift, qk_scale,
            HEAD_DIM, BLOCK_N, True, CAUSAL,
        )  # fmt: skip
    else:
        offs_m1 = offs_m0 + ROWS
        q1 = q_desc.load([bh, start_m + ROWS, 0]).reshape(ROWS, HEAD_DIM)
        m1 = tl.full([ROWS], float("-inf"), dtype=tl.float32)
        l1 = tl.zeros([ROWS], dtype=tl.float32)
        acc1 = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)
        acc0, l0, m0, acc1, l1, m1 = _tma_blocks2(
            acc0, l0, m0, acc1, l1, m1, q0, q1, k_desc, v_desc, bh, offs_m0, offs_m1,
            0, full_hi, seq_k, shift, qk_scale, HEAD_DIM, BLOCK_N, False, CAUSAL,
        )  # fmt: skip
        acc0, l0, m0, acc1, l1, m1 = _tma_blocks2(
            acc0, l0, m0, acc1, l1, m1, q0, q1, k_desc, v_desc, bh, offs_m0, offs_m1,
            full_hi, hi, seq_k, shift, qk_scale, HEAD_DIM, BLOCK_N, True, CAUSAL,
        )  # fmt: skip
        _tma_store(o_out, LSE, acc1, l1, m1, bh, start_m + ROWS, offs_m1, seq_q, stride_ob,
                   stride_om, write_lse, ROWS, HEAD_DIM, ACCUM)  # fmt: skip
    _tma_store(o_out, LSE, acc0, l0, m0, bh, start_m, offs_m0, seq_q, stride_ob, stride_om,
               write_lse, ROWS, HEAD_DIM, ACCUM)  # fmt: skip


@_jit
def attention_fwd_qdp(
    Q,
    K,
    V,
    stride_qb,
    stride_qm,
    stride_kb,
    stride_kn,
    stride_vb,
    stride_vn,
    stride_ob,
    stride_om,
    seq_q,
    seq_k,
    q_offset,
    k_offset,
    qk_scale_bits,
    write_lse,
    O,
    LSE,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    ACCUM: tl.constexpr,
):
    """``attention_fwd`` in TensorRT's AOT plugin calling convention (``tensorrt.plugin``):
    input pointers, then 32-bit integer scalars (the only extra arguments a QDP kernel gets),
    then output pointers. Strides arrive as i32 and are widened; ``qk_scale_bits`` holds the
    float32 bits of ``scale * log2(e)``. Same grid as ``attention_fwd`` (it is inlined).
    ``ACCUM`` must be 0 (O in Q's dtype: the plugin has no running state)."""
    tl.static_assert(ACCUM == 0, "attention_fwd_qdp writes O in Q's dtype: ACCUM must be 0")
    attention_fwd(
        Q, K, V, O, LSE,
        stride_qb.to(tl.int64), stride_qm.to(tl.int64), stride_kb.to(tl.int64),
        stride_kn.to(tl.int64), stride_vb.to(tl.int64), stride_vn.to(tl.int64),
        stride_ob.to(tl.int64), stride_om.to(tl.int64),
        seq_q, seq_k, q_offset, k_offset, qk_scale_bits.to(tl.float32, bitcast=True), write_lse,
        HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, ACCUM,
    )  # fmt: skip


@_jit
def attention_merge(
    O1,
    LSE1,
    O2,
    LSE2,
    O_out,
    LSE_out,
    n_rows,
    HEAD_DIM: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Merge two partial softmax results row by row; rows of ``HEAD_DIM`` contiguous values.

    ``O*`` [R, D], ``LSE*`` [R] float32; ``O_out``/``LSE_out`` may alias ``O1``/``LSE1``.
    ``LSE = logaddexp(LSE1, LSE2)``, ``O = O1 exp(LSE1 - LSE) + O2 exp(LSE2 - LSE)``; both
    ``-inf`` gives ``O = 0``, ``LSE = -inf``.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    in_r = rows < n_rows
    offs_d = tl.arange(0, HEAD_DIM)
    l1 = tl.load(LSE1 + rows, mask=in_r, other=float("-inf"))
    l2 = tl.load(LSE2 + rows, mask=in_r, other=float("-inf"))
    w1, w2, lse = _merge_weights(l1, l2)
    ptrs = rows[:, None] * HEAD_DIM + offs_d[None, :]
    o1 = tl.load(O1 + ptrs, mask=in_r[:, None], other=0.0).to(tl.float32)
    o2 = tl.load(O2 + ptrs, mask=in_r[:, None], other=0.0).to(tl.float32)
    o = o1 * w1[:, None] + o2 * w2[:, None]
    tl.store(O_out + ptrs, o.to(O_out.dtype.element_ty), mask=in_r[:, None])
    tl.store(LSE_out + rows, lse, mask=in_r)
