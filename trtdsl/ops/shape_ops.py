"""Data-movement ops: input, constant, identity, cast, reshape, transpose, concat, slice,
split, gather, select.

>>> import trtdsl as td
>>> net = td.Network("shapes")
>>> x = net.input("x", (2, 3, 4))
>>> y = x.reshape((0, -1)).transpose((1, 0))   # (12, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, format_shape
from .base import OpDef
from .shapes import broadcast_shapes, normalize_axis, prod


class Input(OpDef):
    """A network input (attrs ``name``, ``type``); its value comes from the feeds."""

    name = "input"

    def infer(self, layer: Layer) -> list[TensorType]:
        return [layer.attrs["type"]]

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        return [ctx.feeds[layer.attrs["name"]]]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
        ty = layer.attrs["type"]
        dims = tuple(-1 if d is None else d for d in ty.shape)
        return [b.network.add_input(layer.attrs["name"], b.dtype(ty.dtype), dims)]

    def describe(self, layer: Layer) -> str:
        return "input"


class Constant(OpDef):
    """A constant tensor (weights) from a NumPy array (attr ``value``)."""

    name = "constant"

    def infer(self, layer: Layer) -> list[TensorType]:
        v = layer.attrs["value"]
        return [TensorType(tuple(v.shape), dtypes.as_dtype(v.dtype))]

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        return [ctx.constant(layer)]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
        return [b.constant(layer.attrs["value"], layer)]

    def param_bytes(self, layer: Layer) -> int:
        return int(layer.attrs["value"].nbytes)

    def describe(self, layer: Layer) -> str:
        return "constant"


class Identity(OpDef):
    """Copy of the input."""

    name = "identity"

    def infer(self, layer: Layer) -> list[TensorType]:
        return [layer.input_types[0]]

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        return [inputs[0].copy()]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
        return [b.out(b.network.add_identity(inputs[0]), layer)]


class Cast(OpDef):
    """Element type conversion (attr ``dtype``); float to int truncates toward zero."""

    name = "cast"

    def infer(self, layer: Layer) -> list[TensorType]:
        return [TensorType(layer.input_types[0].shape, layer.attrs["dtype"])]

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        src, dst = layer.input_types[0].dtype, layer.attrs["dtype"]
        x = inputs[0]
        if src.is_float and dst.kind == "int":
            x = ctx.xp.trunc(x.astype(np.float32 if src.itemsize < 4 else x.dtype))
        elif src.is_float and dst.is_float and src.itemsize < 4 and dst.itemsize < 4:
            x = x.astype(np.float32)  # fp16 <-> bf16 goes through float32
        return [x.astype(dst.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
        return [b.out(b.network.add_cast(inputs[0], b.dtype(layer.attrs["dtype"])), layer)]


def reshape_dims(layer: Layer, in_shape: tuple, dims: Sequence[int]) -> tuple:
    """Resolve TensorRT reshape dims: 0 copies the input dim, -1 is inferred (at most one).

    Dims copied by 0 appear on both sides, so they cancel: (?, ?, 64) reshaped to (0, 0, 4, -1)
    is (?, ?, 4, 16) even though the element count is unknown.
    """
    dims = tuple(int(d) for d in dims)
    if sum(d == -1 for d in dims) > 1:
        raise layer.fail(f"reshape {dims}: at most one -1")
    if any(d < -1 for d in dims):
        raise layer.fail(f"reshape {dims}: dims must be >= -1")
    out: list[int | None] = []
    for i, d in enumerate(dims):
        if d == 0:
            if i >= len(in_shape):
                raise layer.fail(f"reshape {dims}: 0 at position {i} has no input dim to copy")
            out.append(in_shape[i])
        else:
            out.append(d)
    copied = {i for i, d in enumerate(dims) if d == 0}
    rest_in = prod([d for i, d in enumerate(in_shape) if i not in copied])
    rest_out = prod([d for i, d in enumerate(out) if i not in copied and dims[i] != -1])
    total = prod(in_shape)
    if -1 in dims:
        k = dims.index(-1)
        if rest_in is None:
            out[k] = None
        elif rest_out == 0 or rest_in % rest_out:
            raise layer.fail(
                f"cannot reshape {format_shape(in_shape)} ({total} elements) to {dims}"
            )
        else:
            out[k] = rest_in // rest_out
    elif rest_in is not None and rest_in != rest_out:
        raise layer.fail(f"cannot reshape {format_shape(in_shape)} ({total} elements) to {dims}")
    return tuple(out)


class Reshape(OpDef):
    """Reshape (attr ``dims``; 0 copies the input dim, -1 is inferred), TensorRT's shuffle."""

    name = "reshape"

    def infer(self, layer: Layer) -> list[TensorType]:
        x = layer.input_types[0]
        return [TensorType(reshape_dims(layer, x.shape, layer.attrs["dims"]), x.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        x = inputs[0]
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(layer.attrs["dims"])]
        return [x.reshape(dims)]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
        return [b.reshape(inputs[0], tuple(layer.attrs["dims"]), layer)]


class Transpose(OpDef):
    """Permute axes (attr ``perm``), TensorRT's shuffle first transpose."""

    name = "transpose"

    def infer(self, layer: Layer) -> list[TensorType]:
        x = layer.input_types[0]
        perm = layer.attrs["perm"]
        if perm is None:
            perm = tuple(reversed(range(x.rank)))
        perm = tuple(perm)
        if (
            len(perm) != x.rank
            or not all(isinstance(p, (int, np.integer)) and -x.rank <= p < x.rank for p in perm)
            or sorted(int(p) % x.rank for p in perm) != list(range(x.rank))
        ):
            raise layer.fail(f"perm {perm} is not a permutation of {x.rank} axes")
        perm = tuple(p % x.rank for p in perm)
        layer.attrs["perm"] = perm
        return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        return [ctx.xp.ascontiguousarray(ctx.xp.transpose(inputs[0], layer.attrs["perm"]))]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
        sh = b.network.add_shuffle(inputs[0])
        sh.first_transpose = b.permutation(layer.attrs["perm"])
        return [b.out(sh, layer)]


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

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        return [ctx.xp.concatenate(inputs, axis=layer.attrs["axis"])]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
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

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        start, size, stride = (layer.attrs[k] for k in ("start", "size", "stride"))
        idx = tuple(
            slice(None) if n is None else slice(s, s + n * st, st)
            for s, n, st in zip(start, size, stride)
        )
        return [ctx.xp.ascontiguousarray(inputs[0][idx])]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
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

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        ax, sizes = layer.attrs["axis"], layer.attrs["sizes"]
        bounds = np.cumsum((0,) + sizes)
        x = inputs[0]
        return [
            ctx.xp.ascontiguousarray(ctx.xp.take(x, ctx.xp.arange(lo, hi), axis=ax))
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
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

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        x, idx = inputs
        ax = layer.attrs["axis"]
        n = x.shape[ax]
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise ctx.error(
                layer, f"gather index {bad} out of range [0, {n}) on axis {ax} (TensorRT's rule)"
            )
        return [ctx.xp.take(x, idx, axis=ax)]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
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

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        return [ctx.xp.where(*inputs).astype(layer.input_types[1].dtype.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
        rank = layer.outputs[0].type.rank
        xs = [b.expand_rank(t, ty.rank, rank) for t, ty in zip(inputs, layer.input_types)]
        return [b.out(b.network.add_select(*xs), layer)]


INPUT = Input()
CONSTANT = Constant()
IDENTITY = Identity()
CAST = Cast()
RESHAPE = Reshape()
TRANSPOSE = Transpose()
CONCAT = Concat()
SLICE = Slice()
SPLIT = Split()
GATHER = Gather()
SELECT = Select()
