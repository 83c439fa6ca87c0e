"""Gluon source of the warp-specialized Hopper (sm_90) attention forward ``attention_fwd_ws``.

It takes the run-time arguments of ``attention_fwd`` (``triton_attention.py``), then its own
constexprs with ``ACCUM`` last, covers the same grid rows and gives the same results in each
``ACCUM`` epilogue, so the same host code and launcher call it:

- ``Q`` [BH, Sq, D], ``K`` / ``V`` [BH, Sk, D] -> ``O`` [BH, Sq, D] and ``LSE`` [BH, Sq]
  (float32, contiguous, natural log). Q/K/V are bf16 or fp16, last stride 1, the other strides
  in elements.
- ``ACCUM`` 0: O in Q's dtype, the LSE when ``write_lse``. 1 ("init"): O float32 = acc / l and
  the LSE, always. 2 ("merge"): the float32 O / LSE hold a running (o_prev, lse_prev) of the
  rows, replaced by its merge with this call's result (``lse = logaddexp(lse_prev, lse_blk)``,
  ``o = o_prev w_prev + (acc / l) w_blk``, both -inf: 0, -inf; ``_merge_weights``): Ring
  attention folds its K/V blocks without a merge kernel. Rows past Sq are never touched.
- Key ``j`` is visible to query row ``i`` iff ``j < Sk`` and, with ``CAUSAL``,
  ``j <= i + shift`` where ``shift = q_offset - k_offset`` (offsets unused otherwise).
  ``qk_scale`` is ``scale * log2(e)``: the softmax runs in base 2 with float32 accumulation.

A program computes ``2 * BLOCK_M`` query rows of one (batch, head): grid
``(cdiv(Sq, 2 * BLOCK_M), BH)``, compiled with ``num_warps=NUM_WARPS`` (4, the default
partition). Partitions (``gl.warp_specialize``, registers set by ``setmaxnreg``):

- consumer 0 (default partition) and consumer 1 (worker), one warpgroup and ``CONSUMER_REGS``
  registers each: BLOCK_M query rows, async wgmma S = Q K^T, the online softmax in registers,
  async wgmma O += P V with P from registers, then the O / LSE epilogue;
- the loader (worker, 1 warp, ``LOADER_REGS``): TMA loads of both Q tiles, then of K_j / V_j
  into a ``NUM_STAGES``-deep shared-memory ring.

mbarriers (ring slot ``j % NUM_STAGES`` at phase ``(j // NUM_STAGES) & 1``): ``q_bars[c]``
(count 1, used once), ``k_ready`` / ``v_ready`` (count 1: the loader's expect-tx plus the TMA
bytes), ``k_empty`` / ``v_empty`` (count 2: each consumer arrives once the wgmma reading the slot
retired), ``turns`` (PINGPONG: the consumers take turns issuing their wgmma).

Variants (constexpr): ``OVERLAP`` (the QK^T wgmma of block j runs with the PV wgmma of block
j-1), ``PINGPONG`` (needs ``OVERLAP`` and not ``CAUSAL``), ``CAUSAL``, ``NUM_STAGES``, tiles,
``ACCUM`` (the epilogue).
Key blocks visible to every row of a consumer run unmasked, blocks crossing the diagonal or
the end of K masked, invisible ones are skipped; with ``CAUSAL`` the longest rows go first.

TMA descriptors are made in the kernel: per program one 2-D [S, D] descriptor per tensor over
its head's slab, by the warps that use it (the loader: Q, K, V; with ``ACCUM`` 0 each consumer
its O), so ``global_scratch_size`` is 5 x 128 = 640 bytes with ``ACCUM`` 0 and 3 x 128 = 384
with ``ACCUM`` 1/2 (the launcher passes ``grid size * global_scratch_size`` bytes). They clip
at Sq / Sk: loads past the end read zeros (keys there are masked out of the scores, rows there
are computed but not stored) and the O store drops rows past Sq. ``ACCUM`` 1/2 load / store the
float32 O by pointers straight from the wgmma accumulator's registers (2 contiguous floats a
thread: 8-byte accesses filling whole 32-byte sectors), masked to rows < Sq; a consumer whose
rows all lie past Sq stores nothing.

Preconditions (the host checks them): HEAD_DIM 64 or 128; each head's Q/K/V/O base 16-byte
aligned and ``stride_qm`` / ``stride_kn`` / ``stride_vn`` / ``stride_om`` multiples of 16
bytes (TMA; the float32 O of ``ACCUM`` 1/2 too: its row offsets are declared multiples of 4
elements); Sq >= 1, Sk >= 1; with ``CAUSAL``, ``shift >= 0``, so every row sees key 0 and no
row is empty (rows without a visible key would get O = 0 and LSE = -inf, as in
``attention_fwd``).

Imports without a GPU (only Triton's Gluon front end is needed to compile it) and without
Triton (``triton_shim.py``: the decorators are then the identity).
"""

from __future__ import annotations

from .triton_shim import constexpr_function, gl, gluon_jit, hopper

fence_async_shared, mbarrier, tma = hopper.fence_async_shared, hopper.mbarrier, hopper.tma
warpgroup_mma, warpgroup_mma_wait = hopper.warpgroup_mma, hopper.warpgroup_mma_wait

#: Registers a thread of each consumer warpgroup / of the loader warp gets (setmaxnreg).
CONSUMER_REGS = gl.constexpr(240)
LOADER_REGS = gl.constexpr(24)
#: Warps of the default partition (consumer 0): compile with ``num_warps=NUM_WARPS``.
NUM_WARPS = 4

_LN2 = gl.constexpr(0.6931471805599453)


# -- layouts and descriptors --------------------------------------------------------------------
@constexpr_function
def _mma_layout(n):
    """Layout of a wgmma accumulator [BLOCK_M, n] on one warpgroup."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, n, 16])


@constexpr_function
def _smem_layout(rows, head_dim, dtype):
    """Shared-memory / TMA layout of a [rows, head_dim] tile (128-byte swizzle for D 64, 128)."""
    return gl.NVMMASharedLayout.get_default_for([rows, head_dim], dtype)


@gluon_jit
def _head_desc(base, bh, stride_b, stride_row, n_rows, BLOCK_ROWS: gl.constexpr,
               HEAD_DIM: gl.constexpr):  # fmt: skip
    """TMA descriptor over head ``bh``'s [n_rows, HEAD_DIM] slab in tiles of BLOCK_ROWS rows.
    Triton's lowering: the partition's first warp builds it in shared memory, copies it to
    global scratch with a tensormap release, acquires it, then the partition synchronises."""
    layout: gl.constexpr = _smem_layout(BLOCK_ROWS, HEAD_DIM, base.dtype.element_ty)
    return tma.make_tensor_descriptor(
        base + bh * stride_b, [n_rows, HEAD_DIM], [stride_row, 1], [BLOCK_ROWS, HEAD_DIM], layout
    )


# -- block ranges -------------------------------------------------------------------------------
@gluon_jit
def _key_blocks(m0, seq_k, shift, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                CAUSAL: gl.constexpr):  # fmt: skip
    """(n_full, n_mine) for query rows [m0, m0 + BLOCK_M): key blocks [0, n_full) need no mask
    (all their keys exist and are visible to every row), blocks [n_full, n_mine) are masked,
    blocks from n_mine on are visible to no row."""
    n_whole = seq_k // BLOCK_N
    if CAUSAL:
        hi = gl.minimum(seq_k, gl.maximum(0, m0 + BLOCK_M + shift))
        n_mine = (hi + BLOCK_N - 1) // BLOCK_N
        n_full = gl.minimum(n_whole, gl.maximum(0, m0 + shift + 1) // BLOCK_N)
    else:
        n_mine = (seq_k + BLOCK_N - 1) // BLOCK_N
        n_full = n_whole
    return n_full, n_mine


# -- loader partition (1 warp) ------------------------------------------------------------------
@gluon_jit
def _loader(Q, K, V, bh, strides, seq_q, seq_k, q_smem, q_bars, ring, m_cta, n_blocks,
            BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
            NUM_STAGES: gl.constexpr):  # fmt: skip
    """Both Q tiles, then K_j / V_j for j < n_blocks into the ring, each slot once both
    consumers released it (a fresh mbarrier passes the parity-1 wait of the first round). The
    K/V descriptors are made while the Q tiles load."""
    k_smem, v_smem, k_ready, k_empty, v_ready, v_empty = ring
    stride_qb, stride_qm, stride_kb, stride_kn, stride_vb, stride_vn = strides
    q_desc = _head_desc(Q, bh, stride_qb, stride_qm, seq_q, BLOCK_M, HEAD_DIM)
    for c in gl.static_range(2):
        # a tile wholly past Sq (consumer 1 of the last program; its rows are computed but not
        # stored) is loaded from row Sq - 1 on, so that no box lies entirely out of bounds
        q_row = gl.minimum(m_cta + c * BLOCK_M, seq_q - 1)
        mbarrier.expect(q_bars.index(c), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [q_row, 0], q_bars.index(c), q_smem.index(c))
    k_desc = _head_desc(K, bh, stride_kb, stride_kn, seq_k, BLOCK_N, HEAD_DIM)
    v_desc = _head_desc(V, bh, stride_vb, stride_vn, seq_k, BLOCK_N, HEAD_DIM)
    for j in range(n_blocks):
        s = j % NUM_STAGES
        ph = (j // NUM_STAGES) & 1
        mbarrier.wait(k_empty.index(s), ph ^ 1)
        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [j * BLOCK_N, 0], k_ready.index(s), k_smem.index(s))
        mbarrier.wait(v_empty.index(s), ph ^ 1)
        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [j * BLOCK_N, 0], v_ready.index(s), v_smem.index(s))


# -- consumer partitions (1 warpgroup each) -----------------------------------------------------
@gluon_jit
def _softmax_block(s, m_i, l_i, rows, j, sm, MASKED: gl.constexpr, CAUSAL: gl.constexpr,
                   BLOCK_N: gl.constexpr):  # fmt: skip
    """Online-softmax step for the scores ``s`` [BLOCK_M, BLOCK_N] (unscaled, f32) of ``rows``
    against key block ``j``; ``sm`` = (qk_scale, seq_k, shift). Returns (p, alpha, m, l), the
    caller rescaling its accumulator by alpha. ``MASKED``: keys >= seq_k and, with ``CAUSAL``,
    keys past ``row + shift`` get p = 0 (a row with no key yet keeps m = -inf, l = 0)."""
    qk_scale, seq_k, shift = sm
    if MASKED:
        cols = j * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s.type.layout))
        keep = gl.expand_dims(cols < seq_k, 0)
        if CAUSAL:
            keep = keep & (gl.expand_dims(cols, 0) <= gl.expand_dims(rows + shift, 1))
        s = gl.where(keep, s, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        m_use = m_new
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_use, 1))
    alpha = gl.exp2(m_i - m_use)
    return p, alpha, m_new, l_i * alpha + gl.sum(p, axis=1)


@gluon_jit
def _rescale(acc, alpha):
    """acc * alpha row by row (alpha comes in the scores' row layout)."""
    return acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, acc.type.layout)), 1)


@gluon_jit
def _p_operand(p, acc, dtype: gl.constexpr):
    """P in the MMA input dtype, laid out as the register A operand of the PV wgmma."""
    k_width: gl.constexpr = 32 // dtype.primitive_bitwidth
    layout: gl.constexpr = gl.DotOperandLayout(
        operand_index=0, parent=acc.type.layout, k_width=k_width
    )
    return gl.convert_layout(p.to(dtype), layout)


@gluon_jit
def _blocks_serial(q_tile, ring, acc, m_i, l_i, rows, sm, lo, hi, MASKED: gl.constexpr,
                   CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
                   NUM_STAGES: gl.constexpr):  # fmt: skip
    """Key blocks [lo, hi): QK^T, softmax, PV one after the other; a slot is released as soon
    as the wgmma reading it retired."""
    k_smem, v_smem, k_ready, k_empty, v_ready, v_empty = ring
    BLOCK_M: gl.constexpr = q_tile.type.shape[0]
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=_mma_layout(BLOCK_N))
    for j in range(lo, hi):
        st = j % NUM_STAGES
        ph = (j // NUM_STAGES) & 1
        mbarrier.wait(k_ready.index(st), ph)
        s_tok = warpgroup_mma(
            q_tile, k_smem.index(st).permute((1, 0)), s_zero, use_acc=False, is_async=True
        )
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok,))
        mbarrier.arrive(k_empty.index(st), count=1)
        p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, rows, j, sm, MASKED, CAUSAL, BLOCK_N)
        acc = _rescale(acc, alpha)
        p_op = _p_operand(p, acc, q_tile.dtype)
        mbarrier.wait(v_ready.index(st), ph)
        o_tok = warpgroup_mma(p_op, v_smem.index(st), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok,))
        mbarrier.arrive(v_empty.index(st), count=1)
    return acc, m_i, l_i


@gluon_jit
def _turn_acquire(turns, t, CID: gl.constexpr, PINGPONG: gl.constexpr):
    """PINGPONG: wait for this consumer's t-th turn. Turns alternate consumer 0, 1, 0, ...;
    consumer 0 owns the first (a fresh mbarrier passes a parity-1 wait)."""
    if PINGPONG:
        mbarrier.wait(turns.index(CID), (t & 1) ^ (1 - CID))


@gluon_jit
def _turn_release(turns, CID: gl.constexpr, PINGPONG: gl.constexpr):
    """PINGPONG: this consumer's wgmma of the turn are issued; hand the turn over."""
    if PINGPONG:
        mbarrier.arrive(turns.index(1 - CID), count=1)


@gluon_jit
def _blocks_overlap(q_tile, ring, turns, acc, m_i, l_i, rows, sm, lo, hi, turn0,
                    MASKED: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
                    NUM_STAGES: gl.constexpr, CID: gl.constexpr,
                    PINGPONG: gl.constexpr):  # fmt: skip
    """Key blocks [lo, hi), hi > lo, with FA3's intra-warpgroup overlap: S_j = Q K_j^T is
    issued before O += P_{j-1} V_{j-1}, so the softmax of block j runs during that PV wgmma.
    PINGPONG: each batch of wgmma is issued in a turn (turns turn0 .. turn0 + hi - lo), so one
    consumer's softmax overlaps the other's wgmma; both consumers must run the same blocks."""
    k_smem, v_smem, k_ready, k_empty, v_ready, v_empty = ring
    dtype: gl.constexpr = q_tile.dtype
    BLOCK_M: gl.constexpr = q_tile.type.shape[0]
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=_mma_layout(BLOCK_N))
    # prologue: S of block lo
    st = lo % NUM_STAGES
    _turn_acquire(turns, turn0, CID, PINGPONG)
    mbarrier.wait(k_ready.index(st), (lo // NUM_STAGES) & 1)
    s_tok = warpgroup_mma(
        q_tile, k_smem.index(st).permute((1, 0)), s_zero, use_acc=False, is_async=True
    )
    _turn_release(turns, CID, PINGPONG)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok,))
    mbarrier.arrive(k_empty.index(st), count=1)
    p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, rows, lo, sm, MASKED, CAUSAL, BLOCK_N)
    acc = _rescale(acc, alpha)
    p_op = _p_operand(p, acc, dtype)
    for j in range(lo + 1, hi):
        st_prev = (j - 1) % NUM_STAGES
        st = j % NUM_STAGES
        _turn_acquire(turns, turn0 + j - lo, CID, PINGPONG)
        mbarrier.wait(k_ready.index(st), (j // NUM_STAGES) & 1)
        s_tok = warpgroup_mma(
            q_tile, k_smem.index(st).permute((1, 0)), s_zero, use_acc=False, is_async=True
        )
        mbarrier.wait(v_ready.index(st_prev), ((j - 1) // NUM_STAGES) & 1)
        o_tok = warpgroup_mma(p_op, v_smem.index(st_prev), acc, is_async=True)
        _turn_release(turns, CID, PINGPONG)
        # wgmma groups retire in order: this waits for S_j only
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok,))
        mbarrier.arrive(k_empty.index(st), count=1)
        p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, rows, j, sm, MASKED, CAUSAL, BLOCK_N)
        p_prev = p_op
        p_op = _p_operand(p, acc, dtype)
        # PV_{j-1} retired (its register operand P_{j-1} kept alive until then): rescale O
        acc, p_prev = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p_prev))
        mbarrier.arrive(v_empty.index(st_prev), count=1)
        acc = _rescale(acc, alpha)
    # epilogue: PV of block hi - 1
    st = (hi - 1) % NUM_STAGES
    _turn_acquire(turns, turn0 + hi - lo, CID, PINGPONG)
    mbarrier.wait(v_ready.index(st), ((hi - 1) // NUM_STAGES) & 1)
    o_tok = warpgroup_mma(p_op, v_smem.index(st), acc, is_async=True)
    _turn_release(turns, CID, PINGPONG)
    acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p_op))
    mbarrier.arrive(v_empty.index(st), count=1)
    return acc, m_i, l_i


@gluon_jit
def _run_blocks(q_tile, ring, turns, acc, m_i, l_i, rows, sm, lo, hi, turn0,
                MASKED: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
                NUM_STAGES: gl.constexpr, CID: gl.constexpr, OVERLAP: gl.constexpr,
                PINGPONG: gl.constexpr):  # fmt: skip
    """Key blocks [lo, hi) (none when hi <= lo) with the OVERLAP or the serial schedule."""
    if hi > lo:
        if OVERLAP:
            acc, m_i, l_i = _blocks_overlap(
                q_tile, ring, turns, acc, m_i, l_i, rows, sm, lo, hi, turn0,
                MASKED, CAUSAL, BLOCK_N, NUM_STAGES, CID, PINGPONG,
            )  # fmt: skip
        else:
            acc, m_i, l_i = _blocks_serial(
                q_tile, ring, acc, m_i, l_i, rows, sm, lo, hi, MASKED, CAUSAL, BLOCK_N, NUM_STAGES
            )
    return acc, m_i, l_i


@gluon_jit
def _drain(ring, lo, hi, NUM_STAGES: gl.constexpr):
    """Release this consumer's share of blocks [lo, hi), which the loader fetched for the other
    consumer only; each once its data landed, so the arrive cannot count towards an older phase
    of the slot."""
    k_smem, v_smem, k_ready, k_empty, v_ready, v_empty = ring
    for j in range(lo, hi):
        st = j % NUM_STAGES
        ph = (j // NUM_STAGES) & 1
        mbarrier.wait(k_ready.index(st), ph)
        mbarrier.arrive(k_empty.index(st), count=1)
        mbarrier.wait(v_ready.index(st), ph)
        mbarrier.arrive(v_empty.index(st), count=1)


@gluon_jit
def _store_tile(acc, m_i, l_i, m0, rows, q_tile, o_desc, lse_head, seq_q, write_lse):
    """Epilogue of rows [m0, m0 + BLOCK_M): O = acc / l by a TMA store (clipped at seq_q)
    staged in this consumer's Q tile, whose wgmma readers all retired; LSE = (m + log2 l) ln 2
    of the rows < seq_q when ``write_lse``. Rows with l = 0 get O = 0, LSE = -inf."""
    empty = l_i == 0.0
    l_safe = gl.where(empty, 1.0, l_i)
    o = acc / gl.expand_dims(gl.convert_layout(l_safe, gl.SliceLayout(1, acc.type.layout)), 1)
    if write_lse != 0:
        lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * _LN2)
        gl.store(lse_head + rows, lse, mask=rows < seq_q)
    if m0 < seq_q:  # else the whole tile lies past Sq
        fence_async_shared()
        q_tile.store(o.to(q_tile.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [m0, 0], q_tile)
        tma.store_wait(pendings=0)


@gluon_jit
def _merge_weights(lse1, lse2):
    """``triton_attention._merge_weights``: ``(w1, w2, lse)`` of merging two partial results
    with natural-log LSEs ``lse1`` / ``lse2`` (per row): ``lse = logaddexp(lse1, lse2)``,
    ``w_i = exp(lse_i - lse)``; rows where both are -inf get ``w1 = w2 = 0``, ``lse = -inf``."""
    m = gl.maximum(lse1, lse2)
    m = gl.where(m == float("-inf"), 0.0, m)
    w1 = gl.exp(lse1 - m)
    w2 = gl.exp(lse2 - m)
    s = w1 + w2
    empty = s == 0.0
    s_safe = gl.where(empty, 1.0, s)
    return w1 / s_safe, w2 / s_safe, gl.where(empty, float("-inf"), m + gl.log(s_safe))


@gluon_jit
def _accum_tile(acc, m_i, l_i, m0, O, o_head, stride_om, lse_head, seq_q,
                ACCUM: gl.constexpr):  # fmt: skip
    """``ACCUM`` 1/2 epilogue of rows [m0, m0 + BLOCK_M) < seq_q (nothing when m0 >= seq_q), by
    pointers in the accumulator's own layout (a thread holds 2 contiguous floats per row and
    8-column group: 8-byte accesses, whole 32-byte sectors). ``O`` float32, the head's rows from
    element ``o_head`` on, ``stride_om`` apart (both multiples of 4: 16-byte rows). ``ACCUM`` 1:
    O = acc / l and the LSE. 2: O / LSE hold a running (o_prev, lse_prev), replaced by their
    merge with this block as in ``triton_attention._store_rows``: lse = logaddexp(lse_prev,
    lse_blk), O = o_prev w_prev + acc (w_blk / l); rows where both are -inf get 0, -inf."""
    HEAD_DIM: gl.constexpr = acc.type.shape[1]
    row_layout: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    if m0 < seq_q:  # else the whole tile lies past Sq
        rows = m0 + gl.arange(0, acc.type.shape[0], layout=row_layout)
        in_q = rows < seq_q
        l_row = gl.convert_layout(l_i, row_layout)
        empty = l_row == 0.0
        l_safe = gl.where(empty, 1.0, l_row)
        m_row = gl.convert_layout(m_i, row_layout)
        lse_blk = gl.where(empty, float("-inf"), (m_row + gl.log2(l_safe)) * _LN2)
        cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, acc.type.layout))
        o_rows = gl.multiple_of(o_head + rows.to(gl.int64) * stride_om, 4)  # 16-byte rows
        o_ptrs = O + (gl.expand_dims(o_rows, 1) + gl.expand_dims(cols, 0))
        o_mask = gl.expand_dims(in_q, 1)
        if ACCUM == 1:
            gl.store(o_ptrs, acc / gl.expand_dims(l_safe, 1), mask=o_mask)
            gl.store(lse_head + rows, lse_blk, mask=in_q)
        else:
            lse_prev = gl.load(lse_head + rows, mask=in_q, other=float("-inf"))
            w_prev, w_blk, lse = _merge_weights(lse_prev, lse_blk)
            o_prev = gl.load(o_ptrs, mask=o_mask, other=0.0)
            o = o_prev * gl.expand_dims(w_prev, 1) + acc * gl.expand_dims(w_blk / l_safe, 1)
            gl.store(o_ptrs, o, mask=o_mask)
            gl.store(lse_head + rows, lse, mask=in_q)


@gluon_jit
def _consumer(q_smem, q_bars, ring, turns, O, LSE, bh, stride_ob, stride_om, m_cta, n_blocks,
              seq_q, seq_k, shift, qk_scale, write_lse, CID: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, OVERLAP: gl.constexpr,
              PINGPONG: gl.constexpr, ACCUM: gl.constexpr):  # fmt: skip
    """Consumer CID, query rows [m0, m0 + BLOCK_M) with m0 = m_cta + CID * BLOCK_M: unmasked
    key blocks, masked ones, the drain of blocks only the other consumer needs, the epilogue.
    ``ACCUM`` 0: its O descriptor is made while its Q tile loads (1/2 store O by pointers)."""
    row_layout: gl.constexpr = gl.SliceLayout(1, _mma_layout(BLOCK_N))
    m0 = m_cta + CID * BLOCK_M
    q_tile = q_smem.index(CID)
    rows = m0 + gl.arange(0, BLOCK_M, layout=row_layout)
    sm = (qk_scale, seq_k, shift)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=row_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=_mma_layout(HEAD_DIM))
    n_full, n_mine = _key_blocks(m0, seq_k, shift, BLOCK_M, BLOCK_N, CAUSAL)
    if ACCUM == 0:
        o_desc = _head_desc(O, bh, stride_ob, stride_om, seq_q, BLOCK_M, HEAD_DIM)

    mbarrier.wait(q_bars.index(CID), 0)
    acc, m_i, l_i = _run_blocks(
        q_tile, ring, turns, acc, m_i, l_i, rows, sm, 0, n_full, 0,
        False, CAUSAL, BLOCK_N, NUM_STAGES, CID, OVERLAP, PINGPONG,
    )  # fmt: skip
    # PINGPONG (both consumers on the same blocks): the unmasked run took n_full + 1 turns, the
    # masked last block (Sk not a multiple of BLOCK_N) continues the alternation
    turn0 = gl.where(n_full > 0, n_full + 1, 0)
    acc, m_i, l_i = _run_blocks(
        q_tile, ring, turns, acc, m_i, l_i, rows, sm, n_full, n_mine, turn0,
        True, CAUSAL, BLOCK_N, NUM_STAGES, CID, OVERLAP, PINGPONG,
    )  # fmt: skip
    if CAUSAL:
        _drain(ring, n_mine, n_blocks, NUM_STAGES)
    if ACCUM == 0:
        _store_tile(acc, m_i, l_i, m0, rows, q_tile, o_desc, LSE + bh * seq_q, seq_q, write_lse)
    else:
        _accum_tile(acc, m_i, l_i, m0, O, bh * stride_ob, stride_om, LSE + bh * seq_q, seq_q,
                    ACCUM)  # fmt: skip


# -- kernel -------------------------------------------------------------------------------------
@gluon_jit
def attention_fwd_ws(
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
    HEAD_DIM: gl.constexpr,
    BLOCK_M: gl.constexpr,
    BLOCK_N: gl.constexpr,
    NUM_STAGES: gl.constexpr,
    CAUSAL: gl.constexpr,
    OVERLAP: gl.constexpr,
    PINGPONG: gl.constexpr,
    ACCUM: gl.constexpr,
):
    """Grid (cdiv(Sq, 2 * BLOCK_M), BH), ``num_warps=4``: a program computes 2 x BLOCK_M query
    rows of one (batch, head), see the module docstring. Strides are i64, ``seq_*``, offsets
    and ``write_lse`` i32, ``qk_scale`` fp32. ``ACCUM`` 0: O in Q's dtype, ``LSE`` written only
    if ``write_lse != 0``; 1 / 2: O float32 (``*fp32``), ``LSE`` always written (``write_lse``
    unused), 1 the block's result, 2 its merge into the running (O, LSE)."""
    gl.static_assert(HEAD_DIM == 64 or HEAD_DIM == 128, "HEAD_DIM must be 64 or 128")
    gl.static_assert(
        not PINGPONG or (OVERLAP and not CAUSAL), "PINGPONG needs OVERLAP and not CAUSAL"
    )
    gl.static_assert(ACCUM == 0 or ACCUM == 1 or ACCUM == 2, "ACCUM must be 0, 1 or 2")
    dtype: gl.constexpr = Q.dtype.element_ty
    pid_m = gl.program_id(0)
    if CAUSAL:  # the longest rows first, so the short ones fill the last wave
        pid_m = gl.num_programs(0) - 1 - pid_m
    bh = gl.program_id(1).to(gl.int64)
    m_cta = pid_m * (2 * BLOCK_M)
    shift = q_offset - k_offset  # key j visible to row i iff j <= i + shift (CAUSAL)
    # the loader fetches every block either consumer needs (consumer 1 has the later rows)
    _, n_blocks0 = _key_blocks(m_cta, seq_k, shift, BLOCK_M, BLOCK_N, CAUSAL)
    _, n_blocks1 = _key_blocks(m_cta + BLOCK_M, seq_k, shift, BLOCK_M, BLOCK_N, CAUSAL)
    n_blocks = gl.maximum(n_blocks0, n_blocks1)

    q_layout: gl.constexpr = _smem_layout(BLOCK_M, HEAD_DIM, dtype)
    kv_layout: gl.constexpr = _smem_layout(BLOCK_N, HEAD_DIM, dtype)
    q_smem = gl.allocate_shared_memory(dtype, [2, BLOCK_M, HEAD_DIM], q_layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], kv_layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], kv_layout)
    bar_layout: gl.constexpr = mbarrier.MBarrierLayout()
    q_bars = gl.allocate_shared_memory(gl.int64, [2, 1], bar_layout)
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], bar_layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], bar_layout)
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], bar_layout)
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], bar_layout)
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], bar_layout)
    for c in gl.static_range(2):
        mbarrier.init(q_bars.index(c), count=1)
        mbarrier.init(turns.index(c), count=1)
    for s in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(s), count=1)
        mbarrier.init(v_ready.index(s), count=1)
        mbarrier.init(k_empty.index(s), count=2)  # one arrive per consumer
        mbarrier.init(v_empty.index(s), count=2)
    ring = (k_smem, v_smem, k_ready, k_empty, v_ready, v_empty)
    strides = (stride_qb, stride_qm, stride_kb, stride_kn, stride_vb, stride_vn)

    gl.warp_specialize(
        [
            (_consumer, (q_smem, q_bars, ring, turns, O, LSE, bh, stride_ob, stride_om, m_cta,
                         n_blocks, seq_q, seq_k, shift, qk_scale, write_lse, 0, BLOCK_M,
                         BLOCK_N, HEAD_DIM, NUM_STAGES, CAUSAL, OVERLAP, PINGPONG, ACCUM)),
            (_consumer, (q_smem, q_bars, ring, turns, O, LSE, bh, stride_ob, stride_om, m_cta,
                         n_blocks, seq_q, seq_k, shift, qk_scale, write_lse, 1, BLOCK_M,
                         BLOCK_N, HEAD_DIM, NUM_STAGES, CAUSAL, OVERLAP, PINGPONG, ACCUM)),
            (_loader, (Q, K, V, bh, strides, seq_q, seq_k, q_smem, q_bars, ring, m_cta,
                       n_blocks, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES)),
        ],
        [4, 1],
        [CONSUMER_REGS, LOADER_REGS],
    )  # fmt: skip


@gluon_jit
def attention_fwd_ws_qdp(
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
    HEAD_DIM: gl.constexpr,
    BLOCK_M: gl.constexpr,
    BLOCK_N: gl.constexpr,
    NUM_STAGES: gl.constexpr,
    CAUSAL: gl.constexpr,
    OVERLAP: gl.constexpr,
    PINGPONG: gl.constexpr,
    ACCUM: gl.constexpr,
):
    """``attention_fwd_ws`` in TensorRT's AOT plugin calling convention (``tensorrt.plugin``),
    as ``attention_fwd_qdp`` is for the pointer kernel: input pointers, int32 scalars (strides
    widened here, ``qk_scale_bits`` the float32 bits of ``scale * log2(e)``), output pointers;
    the global scratch of the in-kernel TMA descriptors is the parameter Triton appends after
    them (the plugin passes a third output there). ``ACCUM`` must be 0. It calls (inlines)
    ``attention_fwd_ws``: same grid, tiles and results."""
    gl.static_assert(ACCUM == 0, "attention_fwd_ws_qdp writes O in Q's dtype: ACCUM must be 0")
    attention_fwd_ws(
        Q, K, V, O, LSE,
        stride_qb.to(gl.int64), stride_qm.to(gl.int64), stride_kb.to(gl.int64),
        stride_kn.to(gl.int64), stride_vb.to(gl.int64), stride_vn.to(gl.int64),
        stride_ob.to(gl.int64), stride_om.to(gl.int64),
        seq_q, seq_k, q_offset, k_offset, qk_scale_bits.to(gl.float32, bitcast=True), write_lse,
        HEAD_DIM, BLOCK_M, BLOCK_N, NUM_STAGES, CAUSAL, OVERLAP, PINGPONG, ACCUM,
    )  # fmt: skip
