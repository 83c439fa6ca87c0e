"""Tensor-parallel linear layers (Megatron-style), built from matmuls and collectives.

Weights are ``[in, out]`` (``y = x @ w``). Each function takes either the **full** weight as a
NumPy array and slices this rank's shard itself, using the network's world (rank and size, or
the rank's group of ``groups``), or, with ``sharded=True``, this rank's shard (NumPy array or
Tensor) as is. Without a world (or with a group of one) no collective is added.

>>> import numpy as np, trtdsl as td
>>> def rank_fn(world):
...     net = td.Network("tp", world=world)
...     x = net.input("x", (4, 8))
...     h = column_parallel_linear(x, np.ones((8, 16)))        # [4, 16/N] on each rank
...     y = row_parallel_linear(h.relu(), np.ones((16, 8)))    # [4, 8], one all_reduce
...     net.output(y, "y")
...     return net.run({"x": np.ones((4, 8), "float32")})["y"][0, 0]
>>> [float(v) for v in td.InProcessWorld(2).run(rank_fn)]
[128.0, 128.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..functional import add, matmul
from ..tensor import Tensor
from ._common import coords, fail, linear_weight, sub
from .sharding import shard_columns, shard_rows

REDUCE_MODES = ("all_reduce", "reduce_scatter")


def gather_features(y: Tensor, groups: Any = None, name: str | None = None) -> Tensor:
    """All-gather the last (feature) axis over the group: collectives work on axis 0, so the
    feature axis is moved to 0, gathered and moved back. ``[..., f] -> [..., N*f]``."""
    idx, n = coords(y.network, groups)
    if n == 1:
        return y
    r = y.ndim
    if r == 1:
        return y.all_gather(groups=groups, name=sub(name, "all_gather"))
    to_front = (r - 1,) + tuple(range(r - 1))
    back = tuple(range(1, r)) + (0,)
    t = y.transpose(to_front, name=sub(name, "features_first"))
    g = t.all_gather(groups=groups, name=sub(name, "all_gather"))
    return g.transpose(back, name=sub(name, "features_last"))


def column_parallel_linear(
    x: Tensor,
    weight: Any,
    bias: Any = None,
    *,
    gather_output: bool = False,
    sharded: bool = False,
    groups: Any = None,
    weight_dtype: str | None = None,
    weight_scale: Any = None,
    name: str | None = None,
) -> Tensor:
    """``x @ weight + bias`` with the weight split by **output features** over ranks.

    ``x``: ``[..., in]`` (the same on every rank). ``weight``: full ``[in, out]`` (sharded here
    with :func:`shard_columns`) or, with ``sharded=True``, this rank's ``[in, out/N]``;
    ``bias`` likewise ``[out]`` or ``[out/N]``. Returns ``[..., out/N]``, or with
    ``gather_output=True`` the full ``[..., out]`` (one all_gather over the feature axis).
    ``weight_dtype="float8_e4m3"`` (or ``"int8"``) stores the weight quantized per output
    column (scales from the full weight) and dequantizes it in the network; or pass an FP8/INT8
    ``weight`` with its ``weight_scale`` (``[out]`` or a number).

    >>> h = column_parallel_linear(x, w_full, gather_output=True)    # doctest: +SKIP
    """
    net = x.network
    idx, n = coords(net, groups)
    if x.ndim < 1:
        raise fail("column_parallel_linear: x needs rank >= 1")
    w = linear_weight(
        net,
        weight,
        x,
        sharded=sharded,
        shard_fn=lambda a: shard_columns(a, idx, n),
        scale_shard_fn=lambda a: shard_columns(a, idx, n),
        weight_dtype=weight_dtype,
        weight_scale=weight_scale,
        what="column_parallel_linear weight",
        name=sub(name, "weight"),
    )
    if w.ndim != 2:
        raise fail(f"column_parallel_linear: weight must be [in, out], got {w.shape}")
    y = matmul(x, w, name=sub(name, "matmul"))
    if bias is not None:
        b = linear_weight(
            net,
            bias,
            x,
            sharded=sharded,
            shard_fn=lambda a: shard_columns(a, idx, n),
            scale_shard_fn=lambda a: a,
            weight_dtype=None,
            weight_scale=None,
            what="column_parallel_linear bias",
            name=sub(name, "bias"),
        )
        y = add(y, b, name=sub(name, "add_bias"))
    if gather_output:
        y = gather_features(y, groups=groups, name=name)
    return y


def _own_features(x: Tensor, idx: int, n: int) -> Tensor:
    """This rank's contiguous slice of the last axis (the input features it multiplies)."""
    d = x.shape[-1]
    if d is None or d % n:
        raise fail(f"row_parallel_linear: input features {d} do not split evenly over {n} ranks")
    c = d // n
    return x[..., idx * c : (idx + 1) * c]


def _sum_partials(y: Tensor, reduce: str, n: int, groups: Any, name: str | None) -> Tensor:
    """All-reduce the partial products, or reduce-scatter them over axis 0 (the tokens)."""
    if reduce == "all_reduce":
        return y.all_reduce("sum", groups=groups, name=sub(name, "all_reduce"))
    if y.ndim < 2:
        raise fail("row_parallel_linear: reduce_scatter needs x of rank >= 2 (tokens)")
    d0 = y.shape[0]
    if d0 is not None and d0 % n:
        raise fail(
            f"row_parallel_linear: reduce_scatter splits {d0} tokens (axis 0) over "
            f"{n} ranks: {d0} % {n} = {d0 % n}"
        )
    return y.reduce_scatter("sum", groups=groups, name=sub(name, "reduce_scatter"))


def row_parallel_linear(
    x: Tensor,
    weight: Any,
    bias: Any = None,
    *,
    reduce: str = "all_reduce",
    input_is_parallel: bool = True,
    sharded: bool = False,
    groups: Any = None,
    weight_dtype: str | None = None,
    weight_scale: Any = None,
    name: str | None = None,
) -> Tensor:
    """``x @ weight + bias`` with the weight split by **input features** over ranks.

    ``x``: this rank's feature shard ``[..., in/N]`` (e.g. the output of
    :func:`column_parallel_linear`), or with ``input_is_parallel=False`` the full
    ``[..., in]`` (sliced here). ``weight``: full ``[in, out]`` (sharded with
    :func:`shard_rows`) or, with ``sharded=True``, this rank's ``[in/N, out]``. ``bias``: the
    full ``[out]``, added once after the reduction. The partial products are summed with
    ``reduce="all_reduce"`` (output ``[..., out]``) or ``"reduce_scatter"`` over axis 0, the
    tokens (output ``[tokens/N, ..., out]``: rank r keeps tokens ``r*T/N ... (r+1)*T/N``).
    ``weight_dtype`` / ``weight_scale``: an FP8 or INT8 weight, as in
    :func:`column_parallel_linear`.

    >>> y = row_parallel_linear(h, w_down_full)                      # doctest: +SKIP
    """
    net = x.network
    idx, n = coords(net, groups)
    if reduce not in REDUCE_MODES:
        raise fail(f"row_parallel_linear: reduce must be one of {REDUCE_MODES}, got {reduce!r}")
    if x.ndim < 1:
        raise fail("row_parallel_linear: x needs rank >= 1")
    if not input_is_parallel and n > 1:
        x = _own_features(x, idx, n)
    w = linear_weight(
        net,
        weight,
        x,
        sharded=sharded,
        shard_fn=lambda a: shard_rows(a, idx, n),
        scale_shard_fn=lambda a: a,  # per output column: every rank has all the columns
        weight_dtype=weight_dtype,
        weight_scale=weight_scale,
        what="row_parallel_linear weight",
        name=sub(name, "weight"),
    )
    if w.ndim != 2:
        raise fail(f"row_parallel_linear: weight must be [in, out], got {w.shape}")
    y = matmul(x, w, name=sub(name, "matmul"))
    if n > 1:
        y = _sum_partials(y, reduce, n, groups, name)
    if bias is not None:
        if not isinstance(bias, Tensor):
            bias = net.constant(np.asarray(bias).astype(x.dtype.numpy), name=sub(name, "bias"))
        y = add(y, bias, name=sub(name, "add_bias"))
    return y


__all__ = [
    "column_parallel_linear",
    "row_parallel_linear",
    "gather_features",
    "REDUCE_MODES",
]
