"""Data-movement ops: input, constant, identity, cast, reshape, transpose (and the builders
expand_dims, squeeze that are reshapes).

>>> import trtdsl as td
>>> net = td.Network("shapes")
>>> x = net.input("x", (2, 3, 4))
>>> y = x.reshape((0, -1)).transpose((1, 0))   # (12, 2)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, Value, format_shape
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import fail, is_int, network_of
from .shapes import prod


class Input(OpDef):
    """A network input (attrs ``name``, ``type``); its value comes from the feeds."""

    name = "input"

    def infer(self, layer: Layer) -> list[TensorType]:
        return [layer.attrs["type"]]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        return [ctx.feeds[layer.attrs["name"]]]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
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

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        return [ctx.constant(layer)]  # on CuPy, FP8 as its bit patterns (see ops/quantize.py)

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
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

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        return [inputs[0].copy()]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        return [b.out(b.network.add_identity(inputs[0]), layer)]


class Cast(OpDef):
    """Element type conversion (attr ``dtype``); float to int truncates toward zero."""

    name = "cast"

    def infer(self, layer: Layer) -> list[TensorType]:
        return [TensorType(layer.input_types[0].shape, layer.attrs["dtype"])]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        src, dst = layer.input_types[0].dtype, layer.attrs["dtype"]
        x = inputs[0]
        if src.is_float and dst.kind == "int":
            x = ctx.xp.trunc(x.astype(np.float32 if src.itemsize < 4 else x.dtype))
        elif src.is_float and dst.is_float and src.itemsize < 4 and dst.itemsize < 4:
            x = x.astype(np.float32)  # fp16 <-> bf16 goes through float32
        return [x.astype(dst.numpy)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
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

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        x = inputs[0]
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(layer.attrs["dims"])]
        return [x.reshape(dims)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
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

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        return [ctx.xp.ascontiguousarray(ctx.xp.transpose(inputs[0], layer.attrs["perm"]))]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        sh = b.network.add_shuffle(inputs[0])
        sh.first_transpose = b.permutation(layer.attrs["perm"])
        return [b.out(sh, layer)]


INPUT = Input()
CONSTANT = Constant()
IDENTITY = Identity()
CAST = Cast()
RESHAPE = Reshape()
TRANSPOSE = Transpose()


# -- builders ------------------------------------------------------------------------------
@public("data movement")
def reshape(x: Value, shape: Sequence[int], name: str | None = None) -> Value:
    """Reshape; 0 copies the input dim, -1 is inferred. ``F.reshape(x, (0, -1))``"""
    net = network_of(x, op="reshape", name=name)
    if is_int(shape):
        shape = (shape,)
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise fail("reshape", f"dims must be ints, got {shape!r}", x, name=name) from None
    return net.add_layer(RESHAPE, (x,), {"dims": dims}, name=name)[0]


@public("data movement", aliases=("permute",))
def transpose(x: Value, perm: Sequence[int] | None = None, name: str | None = None) -> Value:
    """Permute axes (default: reverse them)."""
    net = network_of(x, op="transpose", name=name)
    if perm is not None and not isinstance(perm, (list, tuple, np.ndarray)):
        raise fail("transpose", f"perm must be a sequence of axes, got {perm!r}", x, name=name)
    p = None if perm is None else tuple(perm)
    return net.add_layer(TRANSPOSE, (x,), {"perm": p}, name=name)[0]


def regroup(x: Value, keep: Sequence[int | None], name: str | None) -> Value:
    """Drop size-1 axes of ``x`` and insert new ones: output axis j is x's axis ``keep[j]``
    (kept axes in increasing order) or, where ``keep[j]`` is None, a new axis of size 1.

    One reshape when TensorRT's reshape dims can say it (0 copies the dim at the same position,
    at most one -1). When several dynamic dims (or empty dims) change position, a transpose
    first moves the dropped axes last, the reshape then only drops/appends trailing 1s, and a
    transpose after puts the new axes in place.
    """
    dims, moved_dynamic, moved_empty = [], 0, False
    for j, a in enumerate(keep):
        if a is None:
            dims.append(1)
        elif a == j:
            dims.append(0)
        elif x.shape[a] is None:
            dims.append(-1)
            moved_dynamic += 1
        else:
            dims.append(x.shape[a])
            moved_empty |= x.shape[a] == 0  # a literal 0 would mean "copy the input dim"
    if moved_dynamic <= 1 and not moved_empty:
        return reshape(x, dims, name=name)
    kept = [a for a in keep if a is not None]
    dropped = [a for a in range(x.ndim) if a not in kept]
    y = transpose(x, kept + dropped) if kept + dropped != list(range(x.ndim)) else x
    new_axes = iter(range(len(kept), len(keep)))
    perm = [kept.index(a) if a is not None else next(new_axes) for a in keep]
    last = perm == list(range(len(keep)))
    y = reshape(y, [0] * len(kept) + [1] * (len(keep) - len(kept)), name=name if last else None)
    return y if last else transpose(y, perm, name=name)


permute = transpose


@public("data movement")
def expand_dims(x: Value, axis: int, name: str | None = None) -> Value:
    """Insert a dimension of size 1 at ``axis`` (a reshape)."""
    network_of(x, op="expand_dims", name=name)
    r = x.ndim + 1
    if not is_int(axis) or not -r <= axis < r:
        raise fail(
            "expand_dims", f"axis {axis!r} is out of range for an output of rank {r}", x, name=name
        )
    keep: list[int | None] = list(range(x.ndim))
    keep.insert(int(axis) % r, None)
    return regroup(x, keep, name)


@public("data movement")
def squeeze(x: Value, axis: int, name: str | None = None) -> Value:
    """Remove dimension ``axis``, which must have size 1 (a reshape)."""
    network_of(x, op="squeeze", name=name)
    if not is_int(axis) or not -x.ndim <= axis < x.ndim:
        raise fail("squeeze", f"axis {axis!r} is out of range for rank {x.ndim}", x, name=name)
    axis = int(axis) % x.ndim
    if x.shape[axis] != 1:
        d = "?" if x.shape[axis] is None else x.shape[axis]
        raise fail("squeeze", f"axis {axis} has size {d}, not 1", x, name=name)
    return regroup(x, [a for a in range(x.ndim) if a != axis], name)


@public("data movement", aliases=("astype",))
def cast(x: Value, dtype: Any, name: str | None = None) -> Value:
    """Convert to ``dtype`` ('float16', td.bfloat16, ...)."""
    net = network_of(x, op="cast", name=name)
    try:
        dt = dtypes.as_dtype(dtype)
    except ValueError as e:
        raise fail("cast", str(e), x, name=name) from None
    return net.add_layer(CAST, (x,), {"dtype": dt}, name=name)[0]


astype = cast


@public("data movement")
def identity(x: Value, name: str | None = None) -> Value:
    """A copy of ``x``."""
    return network_of(x, op="identity", name=name).add_layer(IDENTITY, (x,), {}, name=name)[0]
