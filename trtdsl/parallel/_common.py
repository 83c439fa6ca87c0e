"""Shared plumbing of the parallel blocks: which ranks share the work, weights as constants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DefinitionError, user_location
from ..network import Network
from ..ops.collective import normalize_groups
from ..tensor import Tensor


def fail(message: str) -> DefinitionError:
    return DefinitionError(message, where=user_location())


def sub(name: str | None, suffix: str) -> str | None:
    """``name.suffix`` for a layer name, or None (automatic names) without a prefix."""
    return None if name is None else f"{name}.{suffix}"


def coords(net: Network, groups: Any) -> tuple[int, int]:
    """(this rank's index in its group, the group's size). A network without a world is one
    rank of one: blocks then add no collectives."""
    if net.world is None:
        if groups is not None:
            raise fail("groups given but the network has no world (Network(name, world=...))")
        return 0, 1
    try:
        partition = normalize_groups(groups, net.world.size)
    except ValueError as e:
        raise fail(str(e)) from None
    group = next(g for g in partition if net.rank in g)
    return group.index(net.rank), len(group)


def as_weight(
    net: Network,
    w: Any,
    like: Tensor,
    *,
    sharded: bool,
    shard_fn: Callable[[np.ndarray], np.ndarray],
    what: str,
    name: str | None,
) -> Tensor:
    """This rank's shard of a weight as a Tensor of ``like``'s dtype.

    A NumPy array is the full weight (sliced with ``shard_fn``) unless ``sharded``; a Tensor
    must already be this rank's shard (``sharded=True``)."""
    if isinstance(w, Tensor):
        if not sharded:
            raise fail(
                f"{what}: a Tensor weight must be this rank's shard: pass sharded=True, or pass "
                "the full weight as a NumPy array to have it sharded"
            )
        if w.network is not net:
            raise fail(f"{what}: tensor '{w.name}' belongs to another network")
        if w.dtype != like.dtype:
            raise fail(f"{what}: dtype {w.dtype} differs from the input's {like.dtype}")
        return w
    arr = np.asarray(w)
    if not np.issubdtype(arr.dtype, np.floating) and arr.dtype.kind != "V":
        raise fail(f"{what}: expected a float array, got dtype {arr.dtype}")
    if not sharded:
        arr = shard_fn(arr)
    return net.constant(arr.astype(like.dtype.numpy), name=name)


def linear_weight(
    net: Network,
    w: Any,
    like: Tensor,
    *,
    sharded: bool,
    shard_fn: Callable[[np.ndarray], np.ndarray],
    scale_shard_fn: Callable[[np.ndarray], np.ndarray],
    weight_dtype: str | None,
    weight_scale: Any,
    what: str,
    name: str | None,
) -> Tensor:
    """:func:`as_weight`, or with ``weight_dtype`` ("float8_e4m3", "int8") / ``weight_scale``
    a quantized constant and a dequantize layer to ``like``'s dtype. A float weight is
    quantized here per output column (over the full weight, then sharded: every rank uses the
    same scales); a weight already quantized (an FP8/INT8 array) comes with ``weight_scale``
    (per output column ``[out]``, or one number)."""
    if weight_dtype is None and weight_scale is None:
        return as_weight(net, w, like, sharded=sharded, shard_fn=shard_fn, what=what, name=name)
    from ..ops.quantize import QUANTIZED, dequantize, quantize_array

    if isinstance(w, Tensor):
        raise fail(f"{what}: a quantized weight must be a NumPy array (with weight_scale)")
    arr = np.asarray(w)
    if weight_scale is None:
        if weight_dtype not in QUANTIZED:
            raise fail(f"{what}: weight_dtype must be one of {sorted(QUANTIZED)}")
        if arr.ndim != 2:
            raise fail(f"{what}: weight must be [in, out], got {arr.shape}")
        q, scale = quantize_array(arr, weight_dtype, axis=1)
    else:
        q, scale = arr, np.asarray(weight_scale, np.float32)
        kind = str(q.dtype).replace("float8_e4m3fn", "float8_e4m3")
        if kind not in QUANTIZED or weight_dtype not in (None, kind):
            raise fail(f"{what}: weight_scale needs an FP8/INT8 weight, got {q.dtype}")
        if scale.ndim > 1:
            raise fail(f"{what}: weight_scale must be a number or [out], got {scale.shape}")
    if not sharded:
        q = shard_fn(q)
        scale = scale_shard_fn(scale) if scale.ndim == 1 else scale
    wq = net.constant(q, name=name)
    axis = 1 if scale.ndim == 1 else None
    dq = None if name is None else f"{name}.dequantize"
    return dequantize(wq, scale.astype(like.dtype.numpy), like.dtype, axis=axis, name=dq)


def check_static(t: Tensor, dims: tuple[int, ...], what: str) -> None:
    for d in dims:
        if t.shape[d] is None:
            raise fail(f"{what}: dimension {d} of {t.shape} must be static")
