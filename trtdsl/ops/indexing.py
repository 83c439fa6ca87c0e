"""Indexing and joining ops: concat, slice (and ``x[...]``), split, gather (by index), select.

>>> import trtdsl as td
>>> net = td.Network("idx")
>>> x = net.input("x", (4, 6))
>>> a, b = x.split(2, axis=1)
>>> y = td.concat([b, a[1:3].gather([1, 0], axis=0).reshape((2, 3))], axis=0)
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import DefinitionError
from ..ir import Layer, TensorType, Value, format_shape
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import TensorLike, fail, is_int, lift, network_of
from .shape_ops import regroup
from .shapes import broadcast_shapes, normalize_axis


class Concat(OpDef):
    """Concatenate inputs along ``axis``."""

    name = "concat"

    def infer(self, layer: Layer) -> list[TensorType]:
        types = layer.input_types
        if not types:
            raise layer.fail("concat needs at least one input")
        first = types[0]
        if first.rank == 0:
            raise layer.fail("concat needs inputs of rank >= 1")
        ax = normalize_axis(layer, layer.attrs["axis"], first.rank)
        layer.attrs["axis"] = ax
        total: int | None = 0
        for t in types:
            if t.dtype != first.dtype:
                raise layer.fail(f"dtype clash: {first.dtype} vs {t.dtype}")
            if t.rank != first.rank:
                raise layer.fail(
                    f"rank clash: {format_shape(first.shape)} vs {format_shape(t.shape)}"
                )
            for i, (p, q) in enumerate(zip(first.shape, t.shape)):
                if i != ax and p is not None and q is not None and p != q:
                    raise layer.fail(f"shapes differ outside axis {ax} (dim {i}: {p} vs {q})")
            total = None if total is None or t.shape[ax] is None else total + t.shape[ax]
        shape = list(first.shape)
        shape[ax] = total
        return [TensorType(tuple(shape), first.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        return [ctx.xp.concatenate(inputs, axis=layer.attrs["axis"])]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        cat = b.network.add_concatenation(list(inputs))
        cat.axis = layer.attrs["axis"]
        return [b.out(cat, layer)]


class Slice(OpDef):
    """Static strided slice (attrs ``start``, ``size``, ``stride``), TensorRT's ISliceLayer."""

    name = "slice"

    def infer(self, layer: Layer) -> list[TensorType]:
        x = layer.input_types[0]
        start, size, stride = (tuple(layer.attrs[k]) for k in ("start", "size", "stride"))
        if not len(start) == len(size) == len(stride) == x.rank:
            raise layer.fail(f"start/size/stride need {x.rank} entries each")
        for i, (s, n, st, d) in enumerate(zip(start, size, stride, x.shape)):
            if n is None:  # a whole dynamic dimension
                if d is not None or s != 0 or st != 1:
                    raise layer.fail(f"dim {i}: size None only takes a whole dynamic dim")
                continue
            if s < 0 or n < 0 or st < 1:
                raise layer.fail(f"dim {i}: need start >= 0, size >= 0, stride >= 1")
            if d is not None and n > 0 and s + (n - 1) * st >= d:
                raise layer.fail(f"dim {i}: slice start={s} size={n} stride={st} exceeds {d}")
        return [TensorType(size, x.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        start, size, stride = (layer.attrs[k] for k in ("start", "size", "stride"))
        idx = tuple(
            builtins.slice(None) if n is None else builtins.slice(s, s + n * st, st)
            for s, n, st in zip(start, size, stride)
        )
        return [ctx.xp.ascontiguousarray(inputs[0][idx])]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        a = layer.attrs
        return [b.slice(inputs[0], a["start"], a["size"], a["stride"], layer)]


class Split(OpDef):
    """Split along ``axis`` into pieces of sizes ``sizes`` (one output each)."""

    name = "split"

    def infer(self, layer: Layer) -> list[TensorType]:
        x = layer.input_types[0]
        if x.rank == 0:
            raise layer.fail("split needs an input of rank >= 1")
        ax = normalize_axis(layer, layer.attrs["axis"], x.rank)
        layer.attrs["axis"] = ax
        sizes = layer.attrs["sizes"]
        d = x.shape[ax]
        if isinstance(sizes, int):
            if sizes < 1:
                raise layer.fail(f"cannot split into {sizes} pieces")
            if d is None:
                raise layer.fail(f"cannot split dynamic axis {ax} into equal pieces")
            if d % sizes:
                raise layer.fail(f"axis {ax} of size {d} does not split into {sizes} equal pieces")
            sizes = (d // sizes,) * sizes
        sizes = tuple(int(s) for s in sizes)
        if any(s < 0 for s in sizes) or (d is not None and sum(sizes) != d):
            raise layer.fail(f"split sizes {sizes} do not add up to axis {ax} of size {d}")
        layer.attrs["sizes"] = sizes
        out = []
        for s in sizes:
            shape = list(x.shape)
            shape[ax] = s
            out.append(TensorType(tuple(shape), x.dtype))
        return out

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        ax, sizes = layer.attrs["axis"], layer.attrs["sizes"]
        bounds = np.cumsum((0,) + sizes)
        x = inputs[0]
        lead = (builtins.slice(None),) * ax
        # a basic slice and one strided copy each (``take`` would gather through an index array)
        return [
            x[lead + (builtins.slice(int(lo), int(hi)),)].copy()
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        ax, sizes = layer.attrs["axis"], layer.attrs["sizes"]
        shape = layer.input_types[0].shape
        outs, lo = [], 0
        for i, s in enumerate(sizes):
            start = tuple(lo if j == ax else 0 for j in range(len(shape)))
            size = tuple(s if j == ax else d for j, d in enumerate(shape))
            # b.slice: a dynamic (None) dim of the input is taken whole, sized at run time
            outs.append(b.slice(inputs[0], start, size, (1,) * len(shape), layer, str(i)))
            lo += s
        return outs


class Gather(OpDef):
    """Gather slices along ``axis`` at integer indices in [0, size) (TensorRT's default mode)."""

    name = "gather"

    def infer(self, layer: Layer) -> list[TensorType]:
        x, idx = layer.input_types
        if idx.dtype not in (dtypes.int32, dtypes.int64):
            raise layer.fail(f"indices must be int32 or int64, got {idx.dtype}")
        if x.rank == 0:
            raise layer.fail("gather needs data of rank >= 1")
        ax = normalize_axis(layer, layer.attrs["axis"], x.rank)
        layer.attrs["axis"] = ax
        return [TensorType(x.shape[:ax] + idx.shape + x.shape[ax + 1 :], x.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        x, idx = inputs
        ax = layer.attrs["axis"]
        n = x.shape[ax]
        if ctx.check_values and idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise ctx.error(
                layer, f"gather index {bad} out of range [0, {n}) on axis {ax} (TensorRT's rule)"
            )
        return [ctx.xp.take(x, idx, axis=ax)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        return [b.out(b.network.add_gather(inputs[0], inputs[1], layer.attrs["axis"]), layer)]


class Select(OpDef):
    """Elementwise ``where(condition, a, b)`` with broadcasting; condition is bool."""

    name = "select"

    def infer(self, layer: Layer) -> list[TensorType]:
        c, a, b = layer.input_types
        if c.dtype != dtypes.bool_:
            raise layer.fail(f"condition must be bool, got {c.dtype}")
        if a.dtype != b.dtype:
            raise layer.fail(f"dtype clash: {a.dtype} vs {b.dtype}")
        return [TensorType(broadcast_shapes(layer, c.shape, a.shape, b.shape), a.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        return [ctx.xp.where(*inputs).astype(layer.input_types[1].dtype.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        rank = layer.outputs[0].type.rank
        xs = [b.expand_rank(t, ty.rank, rank) for t, ty in zip(inputs, layer.input_types)]
        return [b.out(b.network.add_select(*xs), layer)]


CONCAT = Concat()
SLICE = Slice()
SPLIT = Split()
GATHER = Gather()
SELECT = Select()


# -- builders ------------------------------------------------------------------------------
@public("indexing", method=None)
def concat(tensors: Sequence[Value], axis: int = 0, name: str | None = None) -> Value:
    """Concatenate along ``axis``."""
    if not isinstance(tensors, (list, tuple)):  # a Tensor, None, ...: not a sequence of them
        what = "one Tensor" if isinstance(tensors, Value) else type(tensors).__name__
        args = (tensors,) if isinstance(tensors, Value) else ()
        raise fail("concat", f"expected a list or tuple of tensors, got {what}", *args, name=name)
    tensors = list(tensors)
    net = network_of(*tensors, op="concat", name=name)
    return net.add_layer(CONCAT, tensors, {"axis": axis}, name=name)[0]


@public("indexing", method=None)
def slice(
    x: Value,
    start: Sequence[int],
    size: Sequence[int],  # noqa: A001
    stride: Sequence[int] | None = None,
    name: str | None = None,
) -> Value:
    """Static strided slice: ``size[i]`` elements from ``start[i]`` every ``stride[i]``."""
    net = network_of(x, op="slice", name=name)
    for what, v in (("start", start), ("size", size), ("stride", stride)):
        if not (isinstance(v, (list, tuple, np.ndarray)) or (v is None and what == "stride")):
            raise fail("slice", f"{what} must be a sequence of ints, got {v!r}", x, name=name)
    stride = (1,) * len(start) if stride is None else tuple(stride)
    attrs = {"start": tuple(start), "size": tuple(size), "stride": stride}
    return net.add_layer(SLICE, (x,), attrs, name=name)[0]


@public("indexing", method=None)
def getitem(x: Value, index: Any) -> Value:
    """Basic NumPy indexing (ints, slices with positive steps, ``...``, ``None``)."""
    network_of(x, op="getitem")

    def bad(message: str) -> DefinitionError:
        return fail("getitem", f"index {index!r}: {message}", x)

    idx = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (np.ndarray, list, Value)) for i in idx):
        raise bad("unsupported index (use ints, slices, '...' or None; gather for arrays)")
    if builtins.sum(i is Ellipsis for i in idx) > 1:
        raise bad("an index can only have one '...'")
    used = builtins.sum(1 for i in idx if i is not None and i is not Ellipsis)
    if used > x.ndim:
        raise bad(f"too many indices for a tensor of rank {x.ndim}")
    if Ellipsis in idx:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (builtins.slice(None),) * (x.ndim - used) + idx[k + 1 :]
    else:
        idx = idx + (builtins.slice(None),) * (x.ndim - used)
    start, size, stride = [], [], []
    keep: list[int | None] = []  # output axis -> input axis (None: a new axis)
    axis = 0
    for i in idx:
        if i is None:
            keep.append(None)
            continue
        d = x.shape[axis]
        if isinstance(i, builtins.slice):
            full = i.start in (None, 0) and i.stop is None and i.step in (None, 1)
            if d is None and not full:
                raise bad(f"slicing dynamic dim {axis} is not supported (only ':')")
            if d is None:
                s, n, st = 0, None, 1
            else:
                try:
                    s, e, st = i.indices(d)
                except (TypeError, ValueError) as exc:
                    raise bad(str(exc)) from None
                if st < 1:
                    raise bad(f"step {i.step} is not supported (steps must be positive)")
                n = builtins.max(0, (e - s + st - 1) // st)
                s = s if n else 0
            start.append(s)
            size.append(n)
            stride.append(st)
            keep.append(axis)
        elif is_int(i):
            if d is None:
                raise bad(f"indexing dynamic dim {axis} is not supported")
            if not -d <= i < d:
                raise bad(f"index {i} is out of range for dim {axis} of size {d}")
            start.append(int(i) % d)
            size.append(1)
            stride.append(1)
        else:
            raise bad(f"unsupported index {i!r} (use ints, slices, '...' or None)")
        axis += 1
    y = slice(x, start, size, stride)
    if keep != list(range(x.ndim)):
        y = regroup(y, keep, None)
    return y


@public("indexing")
def split(
    x: Value, sections: int | Sequence[int], axis: int = 0, name: str | None = None
) -> list[Value]:
    """Split into ``sections`` equal pieces, or pieces of the given sizes."""
    net = network_of(x, op="split", name=name)
    if is_int(sections):
        sizes: int | tuple = int(sections)
    elif isinstance(sections, (list, tuple)) or getattr(sections, "ndim", None) == 1:
        sizes = tuple(sections)
    else:
        msg = f"sections must be an int or a list of ints, got {sections!r}"
        raise fail("split", msg, x, name=name)
    return net.add_layer(SPLIT, (x,), {"axis": axis, "sizes": sizes}, name=name)


@public("indexing")
def gather(x: Value, indices: TensorLike, axis: int = 0, name: str | None = None) -> Value:
    """Take slices of ``x`` along ``axis`` at ``indices`` (int32/int64).

    Constant indices may be negative (NumPy style) when the axis has a static size: they are
    wrapped here, because TensorRT's gather needs indices in [0, size). Index tensors fed at
    run time must already be in [0, size).
    """
    net = network_of(x, op="gather", name=name)
    if isinstance(indices, Value):
        idx = indices
    else:
        try:
            arr = np.asarray(indices)
        except (ValueError, TypeError) as e:  # ragged lists and the like
            raise fail("gather", f"indices are not an array: {e}", x, name=name) from None
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise fail("gather", f"indices must be integers, got {arr.dtype}", x, name=name)
        arr = arr.astype(np.int64)
        if arr.size and is_int(axis) and -x.ndim <= axis < x.ndim:
            n = x.shape[int(axis) % x.ndim]
            lo, hi = int(arr.min()), int(arr.max())
            if n is None and lo < 0:
                raise fail(
                    "gather",
                    f"negative index {lo} on dynamic axis {axis} (TensorRT needs [0, size))",
                    x,
                    name=name,
                )
            if n is not None and not (-n <= lo and hi < n):
                bad = lo if lo < -n else hi
                raise fail(
                    "gather",
                    f"index {bad} is out of range [-{n}, {n}) for axis {axis} of size {n}",
                    x,
                    name=name,
                )
            if n is not None:
                arr = np.where(arr < 0, arr + n, arr)
        big = arr.size and int(np.abs(arr).max()) > np.iinfo(np.int32).max
        idx = net.constant(arr.astype(np.int64 if big else np.int32))
    return net.add_layer(GATHER, (x, idx), {"axis": axis}, name=name)[0]


@public("indexing", method=None, aliases=("where",))
def select(condition: TensorLike, a: TensorLike, b: TensorLike, name: str | None = None) -> Value:
    """``where(condition, a, b)`` with broadcasting."""
    net = network_of(condition, a, b, op="select", name=name)
    like = a if isinstance(a, Value) else b if isinstance(b, Value) else None
    c = lift(net, condition, None, "select")
    x, y = lift(net, a, like, "select"), lift(net, b, like, "select")
    return net.add_layer(SELECT, (c, x, y), {}, name=name)[0]


where = select
