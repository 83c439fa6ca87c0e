"""Layout ops: patchify / unpatchify (a DiT's patch embedding as data movement), constant pad,
and top-k.

``patchify(x, p)``: ``[..., C, H, W] -> [..., (H/p)*(W/p), C*p*p]``, token ``hi*(W/p) + wi``,
feature ``c*p*p + ph*p + pw`` (so ``patchify(x, p) @ w.reshape(D, -1).T`` is a stride-p
convolution with kernel ``w [D, C, p, p]``). Lowered to two IShuffle layers.

``pad(x, pads, value)``: constant padding, lowered to an ISliceLayer in FILL mode (negative
start, the fill value as input 4), which pads any dims with any value (IPaddingLayer pads
only the two or three innermost dims, with zeros).

``topk(x, k, axis, largest)``: values and int32 indices (ITopKLayer), largest (or smallest)
first; ties go to the lower index here (TensorRT does not promise an order for ties).

>>> import trtdsl as td
>>> net = td.Network("layout")
>>> img = net.input("img", (3, 8, 8))
>>> img.patchify(2).shape, img.pad([(1, 1), (0, 2)]).shape
((16, 12), (3, 10, 10))
>>> v, i = net.input("s", (4, 10)).topk(3)
>>> v.shape, i.dtype
((4, 3), trtdsl.int32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, Value
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import fail, is_int, network_of, require_bool
from .shapes import normalize_axis


def _patch_plan(layer: Layer) -> tuple[tuple, tuple, tuple]:
    """(intermediate shape, permutation, output shape) with lead dims as 0 placeholders."""
    x = layer.input_types[0]
    p, lead = layer.attrs["patch"], x.rank - 3 if not layer.attrs["inverse"] else x.rank - 2
    keep = (0,) * lead
    lp = tuple(range(lead))
    if not layer.attrs["inverse"]:
        c, h, w = x.shape[-3:]
        hp, wp = h // p, w // p
        mid = keep + (c, hp, p, wp, p)
        perm = lp + tuple(lead + i for i in (1, 3, 0, 2, 4))
        return mid, perm, keep + (hp * wp, c * p * p)
    hp, wp = layer.attrs["grid"]
    c = x.shape[-1] // (p * p)
    mid = keep + (hp, wp, c, p, p)
    perm = lp + tuple(lead + i for i in (2, 0, 3, 1, 4))
    return mid, perm, keep + (c, hp * p, wp * p)


class Patchify(OpDef):
    """Patches of an image (attrs ``patch``, ``inverse``, ``grid`` = (H/p, W/p) when inverse)."""

    name = "patchify"

    def infer(self, layer: Layer) -> list[TensorType]:
        x, p = layer.input_types[0], layer.attrs["patch"]
        lead = x.shape[: -3 if not layer.attrs["inverse"] else -2]
        if not layer.attrs["inverse"]:
            if x.rank not in (3, 4):
                raise layer.fail(f"patchify takes [C, H, W] or [B, C, H, W], got rank {x.rank}")
            c, h, w = x.shape[-3:]
            if None in (c, h, w) or h % p or w % p:
                raise layer.fail(f"C, H, W must be static and H, W multiples of {p}: {x.shape}")
            return [TensorType(lead + ((h // p) * (w // p), c * p * p), x.dtype)]
        if x.rank not in (2, 3):
            raise layer.fail(f"unpatchify takes [T, C*p*p] or [B, T, C*p*p], got rank {x.rank}")
        hp, wp = layer.attrs["grid"]
        t, f = x.shape[-2:]
        if f is None or f % (p * p) or t != hp * wp:
            raise layer.fail(f"[T, F] = {x.shape[-2:]} is not [{hp}*{wp}, C*{p}*{p}]")
        return [TensorType(lead + (f // (p * p), hp * p, wp * p), x.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        x = inputs[0]
        mid, perm, out = _patch_plan(layer)
        fill = lambda dims: tuple(x.shape[i] if d == 0 else d for i, d in enumerate(dims))  # noqa: E731
        y = x.reshape(fill(mid)).transpose(perm)
        return [ctx.xp.ascontiguousarray(y.reshape(fill(out)))]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        mid, perm, out = _patch_plan(layer)
        sh = b.network.add_shuffle(inputs[0])
        sh.zero_is_placeholder = True
        sh.reshape_dims = mid
        sh.second_transpose = b.permutation(perm)
        t = b.out(sh, layer, 0, "blocks")
        return [b.reshape(t, out, layer, "tokens")]

    def describe(self, layer: Layer) -> str:
        a = layer.attrs
        return f"{'un' if a['inverse'] else ''}patchify(p={a['patch']})"


class Pad(OpDef):
    """Constant padding: attrs ``pads`` ((before, after) per dim) and ``value``."""

    name = "pad"

    def infer(self, layer: Layer) -> list[TensorType]:
        x, pads = layer.input_types[0], layer.attrs["pads"]
        shape = []
        for i, (d, (lo, hi)) in enumerate(zip(x.shape, pads)):
            if d is None and (lo or hi):
                raise layer.fail(f"dim {i} is dynamic: only static dims can be padded")
            shape.append(None if d is None else d + lo + hi)
        return [TensorType(tuple(shape), x.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        x = inputs[0]
        value = np.asarray(layer.attrs["value"]).astype(x.dtype)
        return [ctx.xp.pad(x, layer.attrs["pads"], mode="constant", constant_values=value)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        x_t, pads = layer.input_types[0], layer.attrs["pads"]
        if None in x_t.shape:
            raise layer.fail("pad is lowered for static shapes only")
        start = tuple(-lo for lo, _ in pads)
        size = layer.outputs[0].type.shape
        sl = b.network.add_slice(inputs[0], start, size, (1,) * x_t.rank)
        sl.mode = b.enum("SampleMode", "fill")
        fill = np.asarray(layer.attrs["value"]).astype(x_t.dtype.numpy).reshape(())
        sl.set_input(4, b.constant(fill, layer, "fill_value"))
        return [b.out(sl, layer)]


class TopK(OpDef):
    """ITopKLayer: attrs ``k``, ``axis``, ``largest``; outputs values and int32 indices."""

    name = "topk"

    def infer(self, layer: Layer) -> list[TensorType]:
        x = layer.input_types[0]
        if x.dtype.kind != "float" and x.dtype not in (dtypes.int32, dtypes.int64):
            raise layer.fail(f"topk takes float, int32 or int64 input, got {x.dtype}")
        if x.rank == 0:
            raise layer.fail("topk needs rank >= 1")
        ax = normalize_axis(layer, layer.attrs["axis"], x.rank)
        layer.attrs["axis"] = ax
        k, d = layer.attrs["k"], x.shape[ax]
        if d is not None and k > d:
            raise layer.fail(f"k={k} exceeds the size {d} of axis {ax}")
        shape = x.shape[:ax] + (k,) + x.shape[ax + 1 :]
        return [TensorType(shape, x.dtype), TensorType(shape, dtypes.int32)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        xp, x = ctx.xp, inputs[0]
        ax, k = layer.attrs["axis"], layer.attrs["k"]
        key = x.astype(xp.float64)
        key = -key if layer.attrs["largest"] else key
        kw = {"kind": "stable"} if xp is np else {}
        idx = xp.argsort(key, axis=ax, **kw)
        idx = xp.take(idx, xp.arange(k), axis=ax)
        return [xp.take_along_axis(x, idx, axis=ax), idx.astype(xp.int32)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        a = layer.attrs
        op = b.enum("TopKOperation", "max" if a["largest"] else "min")
        tk = b.network.add_topk(inputs[0], op, int(a["k"]), 1 << a["axis"], b.dtype("int32"))
        b.name(tk, layer)
        return [tk.get_output(0), tk.get_output(1)]

    def describe(self, layer: Layer) -> str:
        a = layer.attrs
        return f"topk(k={a['k']}, axis={a['axis']}, {'largest' if a['largest'] else 'smallest'})"


PATCHIFY = Patchify()
PAD = Pad()
TOPK = TopK()
#: TensorRT's limit on k (ITopKLayer.k: "only values up to 3840 are supported").
MAX_K = 3840


# -- builders ------------------------------------------------------------------------------
def _patch(x: Any, patch: Any, op: str, name: Any) -> int:
    if not is_int(patch) or patch < 1:
        raise fail(op, f"patch must be an int >= 1, got {patch!r}", x, name=name)
    return int(patch)


@public("data movement")
def patchify(x: Value, patch: int, *, name: str | None = None) -> Value:
    """Image to patch tokens: ``[..., C, H, W] -> [..., (H/p)*(W/p), C*p*p]`` (row-major
    patches, features ordered (c, ph, pw): the layout of a stride-p conv kernel)."""
    net = network_of(x, op="patchify", name=name)
    attrs = {"patch": _patch(x, patch, "patchify", name), "inverse": False, "grid": None}
    return net.add_layer(PATCHIFY, [x], attrs, name=name)[0]


@public("data movement")
def unpatchify(x: Value, patch: int, grid: Sequence[int], *, name: str | None = None) -> Value:
    """Inverse of :func:`patchify`: ``[..., T, C*p*p] -> [..., C, Hp*p, Wp*p]`` for
    ``grid = (Hp, Wp)`` patches (``T = Hp*Wp``)."""
    net = network_of(x, op="unpatchify", name=name)
    p = _patch(x, patch, "unpatchify", name)
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(map(is_int, grid))):
        raise fail("unpatchify", f"grid must be (H/p, W/p), got {grid!r}", x, name=name)
    attrs = {"patch": p, "inverse": True, "grid": (int(grid[0]), int(grid[1]))}
    return net.add_layer(PATCHIFY, [x], attrs, name=name, base="unpatchify")[0]


@public("data movement")
def pad(x: Value, pads: Sequence[Any], value: float = 0.0, *, name: str | None = None) -> Value:
    """Constant padding: ``pads`` is ``(before, after)`` for each trailing dim (fewer pairs
    than dims pad the last ones), sizes >= 0; ``value`` fills (default 0)."""
    net = network_of(x, op="pad", name=name)
    try:
        pairs = [(int(lo), int(hi)) for lo, hi in pads]
        ok = all(is_int(v) for pr in pads for v in pr)
    except (TypeError, ValueError):
        ok = False
    if not ok or len(pairs) > x.ndim or any(v < 0 for pr in pairs for v in pr):
        raise fail("pad", f"pads must be up to {x.ndim} (before, after) ints >= 0, got {pads!r}",
                   x, name=name)  # fmt: skip
    full = [(0, 0)] * (x.ndim - len(pairs)) + pairs
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise fail("pad", f"value must be a number, got {value!r}", x, name=name)
    with np.errstate(all="ignore"):
        cast = np.asarray(value).astype(x.dtype.numpy)
    if np.isfinite(value) and cast.astype(np.float64) != value and not x.dtype.is_float:
        raise fail("pad", f"value {value!r} does not fit {x.dtype}", x, name=name)
    attrs = {"pads": tuple(full), "value": float(value) if x.dtype.is_float else int(value)}
    return net.add_layer(PAD, [x], attrs, name=name)[0]


@public("indexing")
def topk(
    x: Value, k: int, axis: int = -1, largest: bool = True, *, name: str | None = None
) -> tuple[Value, Value]:
    """The ``k`` largest (or smallest) entries along ``axis``, sorted, and their int32 indices
    (TensorRT's ITopKLayer, k <= 3840). Returns ``(values, indices)``."""
    net = network_of(x, op="topk", name=name)
    if not is_int(k) or not 1 <= k <= MAX_K:
        raise fail("topk", f"k must be an int in [1, {MAX_K}], got {k!r}", x, name=name)
    big = require_bool("topk", "largest", largest, x, name=name)
    attrs = {"k": int(k), "axis": axis, "largest": big}
    values, indices = net.add_layer(TOPK, [x], attrs, name=name)
    return values, indices
