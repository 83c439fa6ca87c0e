"""Argument checks of the public entry points (array-library neutral: reads shape and dtype)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .configs import DTYPES, HEAD_DIMS, MERGE_DTYPES
from .errors import KernelArgumentError, KernelDTypeError, KernelShapeError

_I32 = 2**31 - 1


@dataclass(frozen=True)
class AttentionProblem:
    """q [..., H, Sq, D], k/v [..., H, Sk, D] seen as [BH, S, D]."""

    lead: tuple[int, ...]
    bh: int
    seq_q: int
    seq_k: int
    head_dim: int
    dtype: str


def dtype_name(x: Any) -> str:
    """The dtype's name (``float16``, ``bfloat16``, ...), for NumPy, CuPy and ml_dtypes."""
    return str(getattr(getattr(x, "dtype", None), "name", getattr(x, "dtype", type(x).__name__)))


def effective_dtype(x: Any, as_dtype: str | None, allowed: tuple[str, ...]) -> str:
    """``x``'s dtype, or ``as_dtype`` for 16-bit storage reinterpreted (checked)."""
    if as_dtype is None:
        return dtype_name(x)
    if as_dtype not in allowed or as_dtype == "float32":
        raise KernelDTypeError(f"as_dtype must be one of {allowed[:2]}, got {as_dtype!r}")
    itemsize = getattr(getattr(x, "dtype", None), "itemsize", None)
    if itemsize != 2:
        raise KernelDTypeError(
            f"as_dtype={as_dtype} needs 16-bit arrays, got {dtype_name(x)} of shape {x.shape}"
        )
    return as_dtype


def check_attention(
    q: Any,
    k: Any,
    v: Any,
    scale: float,
    q_offset: int,
    k_offset: int,
    as_dtype: str | None = None,
) -> AttentionProblem:
    """Validate the arguments of ``flash_attention``; raises KernelArgumentError subclasses."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise KernelArgumentError(f"{name} must be an array, got {type(x).__name__}")
        if len(x.shape) < 3:
            raise KernelShapeError(
                f"{name} must be [..., heads, seq, head_dim] (>= 3 dims), got shape {x.shape}"
            )
    dts = tuple(effective_dtype(x, as_dtype, DTYPES) for x in (q, k, v))
    if as_dtype is not None and len({dtype_name(x) for x in (q, k, v)}) != 1:
        raise KernelDTypeError(f"q, k, v dtypes differ: {[dtype_name(x) for x in (q, k, v)]}")
    if dts[0] not in DTYPES:
        raise KernelDTypeError(f"q dtype {dts[0]} is not supported; use one of {DTYPES}")
    if len(set(dts)) != 1:
        raise KernelDTypeError(f"q, k, v dtypes differ: {dts}")
    d = q.shape[-1]
    if d not in HEAD_DIMS:
        raise KernelShapeError(
            f"head_dim {d} (q shape {q.shape}) is not supported; use one of {HEAD_DIMS}"
        )
    if tuple(k.shape) != tuple(v.shape):
        raise KernelShapeError(f"k and v shapes differ: k {k.shape}, v {v.shape}")
    if tuple(q.shape[:-2]) != tuple(k.shape[:-2]) or q.shape[-1] != k.shape[-1]:
        raise KernelShapeError(
            f"q {q.shape} and k/v {k.shape} must agree on [..., heads] and head_dim"
        )
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise KernelArgumentError(f"scale must be a finite positive number, got {scale!r}")
    for name, off in (("q_offset", q_offset), ("k_offset", k_offset)):
        if not isinstance(off, int) or isinstance(off, bool) or not -_I32 <= off <= _I32:
            raise KernelArgumentError(f"{name} must be an int32 value, got {off!r}")
    lead = tuple(q.shape[:-2])
    bh = math.prod(lead)
    sq, sk = q.shape[-2], k.shape[-2]
    if max(sq, sk) > 2**30 or bh >= 2**31:
        raise KernelShapeError(f"too large: q {q.shape}, k {k.shape}")
    return AttentionProblem(lead, bh, sq, sk, d, dts[0])


def check_merge(
    o1: Any, lse1: Any, o2: Any, lse2: Any, as_dtype: str | None = None
) -> tuple[int, int, str, str]:
    """Validate ``merge_attention``'s arguments; returns (rows, head_dim, o1's dtype, o2's
    dtype): equal, or a 16-bit o2 merged into a float32 o1 (``as_dtype`` then reads o2)."""
    for name, x in (("o1", o1), ("lse1", lse1), ("o2", o2), ("lse2", lse2)):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise KernelArgumentError(f"{name} must be an array, got {type(x).__name__}")
    if tuple(o1.shape) != tuple(o2.shape) or len(o1.shape) < 1:
        raise KernelShapeError(f"o1 {o1.shape} and o2 {o2.shape} must have one shape")
    if tuple(lse1.shape) != tuple(o1.shape[:-1]) or tuple(lse2.shape) != tuple(o1.shape[:-1]):
        raise KernelShapeError(
            f"lse1 {lse1.shape} and lse2 {lse2.shape} must be o's shape {o1.shape} without its "
            "last dim"
        )
    n1, n2 = dtype_name(o1), dtype_name(o2)
    mixed = n1 == "float32" and n2 in DTYPES + ("uint16",)  # a 16-bit partial into float32
    bad = KernelDTypeError(
        f"o1/o2 dtypes {n1}/{n2} must be equal and one of {MERGE_DTYPES}, or o1 float32 and "
        f"o2 one of {DTYPES}"
        + (f" (as_dtype={as_dtype} reads uint16 storage only)" if as_dtype else "")
    )
    if mixed:
        if as_dtype is not None and n2 != "uint16":
            raise bad  # as_dtype reinterprets 16-bit storage, never a typed fp16/bf16 array
        dt, dt2 = "float32", effective_dtype(o2, as_dtype, MERGE_DTYPES)
    elif n1 != n2:
        raise bad
    else:
        dt = dt2 = effective_dtype(o1, as_dtype, MERGE_DTYPES)
    if dt not in MERGE_DTYPES or not (dt2 == dt or (mixed and dt2 in DTYPES)):
        raise bad
    if dtype_name(lse1) != "float32" or dtype_name(lse2) != "float32":
        raise KernelDTypeError(
            f"lse1/lse2 must be float32, got {dtype_name(lse1)}/{dtype_name(lse2)}"
        )
    d = o1.shape[-1]
    if d not in HEAD_DIMS:
        raise KernelShapeError(f"head_dim {d} (o shape {o1.shape}) not in {HEAD_DIMS}")
    return math.prod(o1.shape[:-1]), d, dt, dt2


def check_accumulators(o_acc: Any, lse_acc: Any, p: AttentionProblem) -> None:
    """Validate ``flash_attention_into``'s running state for problem ``p``: o_acc
    [..., H, Sq, D] and lse_acc [..., H, Sq], float32, C-contiguous (16-byte alignment is the
    caller's check: it needs the device pointer)."""
    for name, x in (("o_acc", o_acc), ("lse_acc", lse_acc)):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise KernelArgumentError(f"{name} must be an array, got {type(x).__name__}")
    want_o = p.lead + (p.seq_q, p.head_dim)
    if tuple(o_acc.shape) != want_o or tuple(lse_acc.shape) != want_o[:-1]:
        raise KernelShapeError(
            f"o_acc {tuple(o_acc.shape)} and lse_acc {tuple(lse_acc.shape)} must be q's shape "
            f"{want_o} and {want_o[:-1]}"
        )
    dts = (dtype_name(o_acc), dtype_name(lse_acc))
    if dts != ("float32", "float32"):
        raise KernelDTypeError(f"o_acc and lse_acc must be float32 (the running state), got {dts}")
    for name, x in (("o_acc", o_acc), ("lse_acc", lse_acc)):
        if not getattr(getattr(x, "flags", None), "c_contiguous", False):
            strides = getattr(x, "strides", None)
            raise KernelArgumentError(
                f"{name} must be C-contiguous (the kernel indexes it as one block), got shape "
                f"{tuple(x.shape)} strides {strides}"
            )
