"""Slice full NumPy weights and activations into per-rank shards (tensor and context parallel).

Every helper takes the full array, this rank's index ``rank`` and the number of ranks ``size``
and returns a C-contiguous copy of the rank's contiguous chunk. A dimension that does not
split evenly raises :class:`~trtdsl.DefinitionError` (a ``ValueError``) naming the sizes.

>>> import numpy as np
>>> w = np.arange(12.0).reshape(2, 6)               # [in=2, out=6]
>>> shard_columns(w, rank=1, size=3).tolist()        # output features 2..3
[[2.0, 3.0], [8.0, 9.0]]
>>> shard_rows(np.arange(6.0).reshape(6, 1), 2, 3).ravel().tolist()
[4.0, 5.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DefinitionError, user_location


def _fail(message: str) -> DefinitionError:
    return DefinitionError(message, where=user_location())


def check_rank(rank: int, size: int) -> None:
    """Raise DefinitionError unless ``size >= 1`` and ``0 <= rank < size``."""
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise _fail(f"number of ranks must be an int >= 1, got {size!r}")
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank < size:
        raise _fail(f"rank must be an int in [0, {size}), got {rank!r}")


def shard(x: Any, rank: int, size: int, axis: int, what: str = "array") -> np.ndarray:
    """Chunk ``rank`` of ``size`` equal contiguous chunks of ``x`` along ``axis``.

    >>> shard(np.arange(6), 1, 3, axis=0).tolist()
    [2, 3]
    """
    check_rank(rank, size)
    arr = np.asarray(x)
    if arr.ndim == 0:
        raise _fail(f"cannot shard a scalar {what}")
    if not -arr.ndim <= axis < arr.ndim:
        raise _fail(f"axis {axis} is out of range for {what} of shape {arr.shape}")
    axis %= arr.ndim
    d = arr.shape[axis]
    if d % size:
        raise _fail(
            f"cannot split axis {axis} of {what} of shape {arr.shape} ({d}) evenly over "
            f"{size} ranks: {d} % {size} = {d % size}"
        )
    c = d // size
    idx = [slice(None)] * arr.ndim
    idx[axis] = slice(rank * c, (rank + 1) * c)
    return np.ascontiguousarray(arr[tuple(idx)])


def shard_columns(w: Any, rank: int, size: int) -> np.ndarray:
    """Split output features: ``w`` is ``[in, out]`` (or a bias ``[out]``); returns
    ``[in, out/size]`` (``[out/size]``), the columns ``rank*out/size ... (rank+1)*out/size``.

    >>> shard_columns(np.ones((4, 8)), 0, 2).shape
    (4, 4)
    """
    return shard(w, rank, size, axis=-1, what="weight (columns)")


def shard_rows(w: Any, rank: int, size: int) -> np.ndarray:
    """Split input features: ``w`` is ``[in, out]``; returns ``[in/size, out]``.

    >>> shard_rows(np.ones((4, 8)), 1, 2).shape
    (2, 8)
    """
    if np.ndim(w) < 2:
        raise _fail(f"shard_rows needs a [in, out] weight, got shape {np.shape(w)}")
    return shard(w, rank, size, axis=-2, what="weight (rows)")


def shard_heads(
    w: Any, rank: int, size: int, num_heads: int, *, axis: int = -1, parts: int = 1
) -> np.ndarray:
    """Split attention heads. ``axis`` of ``w`` is laid out ``[parts, num_heads, head_dim]``
    (``parts=3`` for a packed QKV weight ``[d_model, 3*H*Dh]`` or bias ``[3*H*Dh]``,
    ``parts=1`` for one of Q/K/V; ``axis=0`` for the out-projection ``[H*Dh, d_model]``).
    Returns the rank's ``num_heads/size`` heads of every part, still packed
    ``[parts, num_heads/size, head_dim]`` along ``axis``.

    >>> w_qkv = np.ones((8, 3 * 4 * 2))              # d_model 8, 4 heads of dim 2
    >>> shard_heads(w_qkv, 1, 2, num_heads=4, parts=3).shape
    (8, 12)
    """
    check_rank(rank, size)
    arr = np.asarray(w)
    if not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise _fail(f"num_heads must be an int >= 1, got {num_heads!r}")
    if num_heads % size:
        raise _fail(
            f"cannot split {num_heads} attention heads over {size} ranks: "
            f"{num_heads} % {size} = {num_heads % size}"
        )
    if arr.ndim == 0 or not -arr.ndim <= axis < arr.ndim:
        raise _fail(f"axis {axis} is out of range for weight of shape {arr.shape}")
    axis %= arr.ndim
    d = arr.shape[axis]
    if d % (parts * num_heads):
        raise _fail(
            f"axis {axis} of weight of shape {arr.shape} ({d}) is not {parts} part(s) x "
            f"{num_heads} heads x head_dim"
        )
    head_dim = d // (parts * num_heads)
    split = arr.shape[:axis] + (parts, num_heads, head_dim) + arr.shape[axis + 1 :]
    local = shard(arr.reshape(split), rank, size, axis=axis + 1, what="heads")
    return np.ascontiguousarray(local.reshape(arr.shape[:axis] + (-1,) + arr.shape[axis + 1 :]))


#: How a sequence is laid out over the ranks of a context-parallel group.
#: ``contiguous``: rank r holds tokens [r*S/N, (r+1)*S/N). ``zigzag``: the sequence is cut in 2N
#: chunks and rank r holds chunks r and 2N-1-r (in that order), so causal attention costs every
#: rank the same.
LAYOUTS = ("contiguous", "zigzag")


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise _fail(f"unknown sequence layout {layout!r}; expected one of {LAYOUTS}")


def sequence_segments(rank: int, size: int, seq: int, layout: str) -> list[tuple[int, int]]:
    """``(start, length)`` of the global token ranges rank ``rank`` holds, in local order.

    >>> sequence_segments(1, 4, 16, "zigzag")
    [(2, 2), (12, 2)]
    """
    check_rank(rank, size)
    check_layout(layout)
    parts = size if layout == "contiguous" else 2 * size
    if seq % parts:
        raise _fail(
            f"cannot split a sequence of {seq} evenly over {size} ranks ({layout}: {parts} chunks)"
        )
    c = seq // parts
    if layout == "contiguous":
        return [(rank * c, c)]
    return [(rank * c, c), ((2 * size - 1 - rank) * c, c)]


def _array_module(x: Any) -> Any:
    if isinstance(x, np.ndarray) or not hasattr(x, "__cuda_array_interface__"):
        return np
    import cupy  # a device array: keep it on the device

    return cupy


def shard_sequence(x: Any, rank: int, size: int, axis: int = 0, layout: str = "contiguous") -> Any:
    """Context parallelism: the tokens of ``axis`` that rank ``rank`` holds in ``layout``
    (see :data:`LAYOUTS`). NumPy in, NumPy out; a CuPy array stays on its device.

    >>> shard_sequence(np.arange(8), 3, 4).tolist()
    [6, 7]
    >>> shard_sequence(np.arange(8), 1, 2, layout="zigzag").tolist()
    [2, 3, 4, 5]
    """
    xp = _array_module(x)
    arr = x if xp is not np else np.asarray(x)
    if arr.ndim == 0:
        raise _fail("cannot shard a scalar sequence")
    if not -arr.ndim <= axis < arr.ndim:
        raise _fail(f"axis {axis} is out of range for a sequence of shape {arr.shape}")
    axis %= arr.ndim
    pieces = []
    for start, length in sequence_segments(rank, size, arr.shape[axis], layout):
        idx = [slice(None)] * arr.ndim
        idx[axis] = slice(start, start + length)
        pieces.append(arr[tuple(idx)])
    return xp.ascontiguousarray(xp.concatenate(pieces, axis=axis))


def unshard(chunks: list[Any], axis: int = 0, layout: str = "contiguous") -> np.ndarray:
    """Concatenate per-rank chunks in rank order on ``axis`` (inverse of :func:`shard_columns`,
    :func:`shard_rows`, :func:`shard_sequence` with its ``layout``; not of packed
    :func:`shard_heads`).

    >>> unshard([np.array([0, 1, 6, 7]), np.array([2, 3, 4, 5])], layout="zigzag").tolist()
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    check_layout(layout)
    arrays = [np.asarray(c) for c in chunks]
    if layout == "contiguous":
        return np.concatenate(arrays, axis=axis)
    n = len(arrays)
    halves = [np.split(a, 2, axis=axis) for a in arrays]
    ordered = [halves[g][0] if g < n else halves[2 * n - 1 - g][1] for g in range(2 * n)]
    return np.concatenate(ordered, axis=axis)
