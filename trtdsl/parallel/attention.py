"""Softmax attention from DSL ops, and tensor-parallel self-attention (heads split over ranks).

>>> import numpy as np, trtdsl as td
>>> net = td.Network("sdpa")
>>> q = net.input("q", (2, 4, 8))                      # [heads, seq, head_dim]
>>> out = scaled_dot_product_attention(q, q, q, causal=True)
>>> out.shape
(2, 4, 8)
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from ..dtypes import DType
from ..functional import add, attention, concat, matmul, reshape, split, transpose
from ..tensor import Tensor
from ._common import as_weight, check_static, coords, fail, sub
from .linear import row_parallel_linear
from .sharding import shard_heads


def mask_value(dtype: DType) -> float:
    """The additive mask for disallowed scores: a large negative *finite* number (half the
    type's most negative value), so that ``exp(x - max)`` is 0 and never NaN."""
    return float(-0.5 * float(ml_dtypes.finfo(dtype.numpy).max))


def causal_allowed(s_q: int, s_k: int, q_offset: int = 0, k_offset: int = 0) -> np.ndarray:
    """Bool ``[s_q, s_k]``: query at global position ``q_offset+i`` may see key
    ``k_offset+j`` iff ``k_offset+j <= q_offset+i``.

    >>> causal_allowed(2, 4, q_offset=2).astype(int).tolist()
    [[1, 1, 1, 0], [1, 1, 1, 1]]
    """
    qi = q_offset + np.arange(s_q)[:, None]
    kj = k_offset + np.arange(s_k)[None, :]
    return kj <= qi


def causal_mask(
    s_q: int, s_k: int, dtype: DType, q_offset: int = 0, k_offset: int = 0
) -> np.ndarray:
    """Additive mask ``[s_q, s_k]`` of ``dtype``: 0 where allowed, :func:`mask_value` else."""
    allowed = causal_allowed(s_q, s_k, q_offset, k_offset)
    return np.where(allowed, 0.0, mask_value(dtype)).astype(dtype.numpy)


def default_scale(head_dim: int) -> float:
    return 1.0 / float(np.sqrt(head_dim))


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    q_offset: int = 0,
    k_offset: int = 0,
    q_chunk: int | None = None,
    name: str | None = None,
) -> Tensor:
    """``softmax(q @ k^T * scale + mask) @ v`` over ``[..., heads, seq, head_dim]`` tensors:
    one fused attention layer (:func:`trtdsl.functional.attention`, TensorRT's IAttention).

    ``causal``: query ``q_offset+i`` sees keys up to its own position (``k_offset+j``).
    ``scale`` defaults to ``1/sqrt(head_dim)``. ``q_chunk``: split the queries into static
    chunks of that many rows, one attention layer each (the fused op already bounds the
    scores it holds; chunks remain useful to pipeline or shard work).

    >>> out = scaled_dot_product_attention(q, k, v, causal=True)      # doctest: +SKIP
    """
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise fail("attention: q, k, v need shape [..., seq, head_dim]")
    dh = q.shape[-1]
    if scale is None:
        if dh is None:
            raise fail("attention: head_dim must be static (or pass scale)")
        scale = default_scale(dh)
    if q_chunk is not None and q_chunk < 1:
        raise fail(f"attention: q_chunk must be >= 1, got {q_chunk}")
    if q_chunk is not None and (q.shape[-2] is None or q.shape[-2] > q_chunk):
        check_static(q, (-2,), "chunked attention (queries)")
        sq = q.shape[-2]
        sizes = [q_chunk] * (sq // q_chunk) + ([sq % q_chunk] if sq % q_chunk else [])
        chunks = split(q, sizes, axis=-2, name=sub(name, "q_chunks"))
        outs, start = [], 0
        for i, (qc, size) in enumerate(zip(chunks, sizes)):
            outs.append(
                scaled_dot_product_attention(
                    qc,
                    k,
                    v,
                    causal=causal,
                    scale=scale,
                    q_offset=q_offset + start,
                    k_offset=k_offset,
                    name=sub(name, f"chunk{i}"),
                )
            )
            start += size
        return concat(outs, axis=-2, name=sub(name, "q_chunks_out"))
    if causal:
        check_static(q, (-2,), "causal attention (queries)")
        check_static(k, (-2,), "causal attention (keys)")
    return attention(
        q, k, v, causal=causal, scale=scale, q_offset=q_offset, k_offset=k_offset, name=name
    )


def _heads_first(x: Tensor, heads: int, head_dim: int, name: str | None) -> Tensor:
    """``[..., s, heads*head_dim] -> [..., heads, s, head_dim]``."""
    r = x.ndim
    y = reshape(x, (0,) * (r - 1) + (heads, head_dim), name=sub(name, "split_heads"))
    perm = tuple(range(r - 2)) + (r - 1, r - 2, r)
    return transpose(y, perm, name=sub(name, "heads_first"))


def _heads_last(x: Tensor, name: str | None) -> Tensor:
    """``[..., heads, s, head_dim] -> [..., s, heads*head_dim]``."""
    r = x.ndim - 1
    perm = tuple(range(r - 2)) + (r - 1, r - 2, r)
    y = transpose(x, perm, name=sub(name, "seq_first"))
    return reshape(y, (0,) * (r - 1) + (-1,), name=sub(name, "merge_heads"))


def _local_heads(num_heads: Any, n: int, x: Tensor) -> int:
    """Heads per rank; errors for a bad count, heads that do not split, or a bad ``x``."""
    if not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise fail(f"tensor_parallel_attention: num_heads must be an int >= 1, got {num_heads!r}")
    if num_heads % n:
        raise fail(
            f"tensor_parallel_attention: {num_heads} heads do not split over {n} ranks "
            f"({num_heads} % {n} = {num_heads % n})"
        )
    if x.ndim < 2:
        raise fail(f"tensor_parallel_attention: x must be [..., seq, d_model], got {x.shape}")
    return int(num_heads) // n


def _qkv_projection(
    x: Tensor,
    w_qkv: Any,
    b_qkv: Any,
    idx: int,
    n: int,
    num_heads: int,
    sharded: bool,
    name: str | None,
) -> tuple[Tensor, int]:
    """The rank's column-parallel QKV projection ``[..., s, 3*(H/N)*Dh]`` and head_dim."""
    local_heads = num_heads // n
    if isinstance(w_qkv, (tuple, list)):
        w_qkv = np.concatenate([np.asarray(w) for w in w_qkv], axis=-1)
    if isinstance(b_qkv, (tuple, list)):
        b_qkv = np.concatenate([np.asarray(b) for b in b_qkv], axis=-1)

    def weight(value: Any, what: str) -> Tensor:
        return as_weight(
            x.network,
            value,
            x,
            sharded=sharded,
            shard_fn=lambda a: shard_heads(a, idx, n, num_heads, axis=-1, parts=3),
            what=f"tensor_parallel_attention {what}",
            name=sub(name, what),
        )

    w = weight(w_qkv, "w_qkv")
    width = w.shape[-1]
    if w.ndim != 2 or width is None or width % (3 * local_heads):
        raise fail(
            f"tensor_parallel_attention: local w_qkv {w.shape} is not [d_model, 3*{local_heads}"
            "*head_dim]"
        )
    qkv = matmul(x, w, name=sub(name, "qkv"))
    if b_qkv is not None:
        qkv = add(qkv, weight(b_qkv, "b_qkv"), name=sub(name, "qkv_bias"))
    return qkv, width // (3 * local_heads)


def tensor_parallel_attention(
    x: Tensor,
    w_qkv: Any,
    w_out: Any,
    *,
    num_heads: int,
    b_qkv: Any = None,
    b_out: Any = None,
    causal: bool = False,
    scale: float | None = None,
    sharded: bool = False,
    reduce: str = "all_reduce",
    groups: Any = None,
    name: str | None = None,
) -> Tensor:
    """Multi-head self-attention with the heads split over ranks (one all_reduce per block).

    ``x``: ``[seq, d_model]`` or ``[batch, seq, d_model]``, the same on every rank.
    ``w_qkv``: full packed ``[d_model, 3*H*Dh]`` laid out ``[q | k | v]``, each head-major
    (or a tuple ``(w_q, w_k, w_v)`` of ``[d_model, H*Dh]``), sharded here with
    :func:`shard_heads`; with ``sharded=True`` this rank's ``[d_model, 3*(H/N)*Dh]``
    (``[q_local | k_local | v_local]``). ``w_out``: full ``[H*Dh, d_model]`` (or the rank's
    rows). ``b_qkv`` follows ``w_qkv``; ``b_out`` ``[d_model]`` is added once after the
    all_reduce. Each rank runs attention on its ``H/N`` heads (QKV column-parallel), then the
    out-projection is row-parallel: its partial sums are all-reduced (or reduce-scattered over
    axis 0 with ``reduce="reduce_scatter"``). ``num_heads % N != 0`` is a DefinitionError.

    >>> y = tensor_parallel_attention(x, w_qkv, w_out, num_heads=8, causal=True)  # doctest: +SKIP
    """
    idx, n = coords(x.network, groups)
    local_heads = _local_heads(num_heads, n, x)
    qkv, head_dim = _qkv_projection(x, w_qkv, b_qkv, idx, n, num_heads, sharded, name)
    q, k, v = (
        _heads_first(t, local_heads, head_dim, sub(name, part))
        for t, part in zip(split(qkv, 3, axis=-1, name=sub(name, "split_qkv")), "qkv")
    )
    o = scaled_dot_product_attention(
        q, k, v, causal=causal, scale=scale, name=sub(name, "attention")
    )
    o = _heads_last(o, name)
    return row_parallel_linear(
        o,
        w_out,
        b_out,
        reduce=reduce,
        sharded=sharded,
        groups=groups,
        name=sub(name, "out_proj"),
    )


__all__ = [
    "scaled_dot_product_attention",
    "tensor_parallel_attention",
    "causal_mask",
    "causal_allowed",
    "mask_value",
    "default_scale",
]
