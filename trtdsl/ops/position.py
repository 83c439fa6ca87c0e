"""Positions and tokens: rotary position embedding (RoPE), its cos/sin tables, embedding lookup.

RoPE rotates pairs of features of ``x [..., seq, head_dim]`` by ``angle[s, i] = pos[s] *
theta**(-2i / dim)``: the pair i is ``(x[2i], x[2i+1])`` with ``interleaved=True`` (GPT-J,
FLUX) or ``(x[i], x[i + R])`` with ``interleaved=False`` (GPT-NeoX / Llama's ``rotate_half``),
``R = cos.shape[-1]`` pairs; features past ``2R`` pass through unchanged::

    out_a = a * cos - b * sin        out_b = a * sin + b * cos

``rope_frequencies`` makes the ``cos``/``sin`` tables ``[seq, R]`` from static positions (NumPy,
giving constants) or from a positions tensor fed at run time (a few layers), for one axis
(LLMs) or several (FLUX's ``axes_dim``: each axis of ``positions [seq, n_axes]`` gets its own
``axes_dim[i] / 2`` frequencies).

The RoPE op lowers to primitive layers (slices, elementwise, concatenation, shuffles; float32
for 16-bit inputs): TensorRT 11's ``add_rotary_embedding`` (IRotaryEmbeddingLayer) follows
ONNX's RotaryEmbedding, whose input layout (``[batch, heads, seq, dim]`` or packed ``[batch,
seq, hidden]`` with ``num_heads``) and cache shapes we cannot check against a TensorRT build
here, so it is not used.

>>> import numpy as np, trtdsl as td
>>> from trtdsl import functional as F
>>> net = td.Network("rope")
>>> q = net.input("q", (4, 16, 8))                       # [heads, seq, head_dim]
>>> cos, sin = F.rope_frequencies(np.arange(16), 8, net=net)
>>> F.rope(q, cos, sin).shape
(4, 16, 8)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, Value
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import fail, is_int, lift, network_of, require_bool
from .indexing import GATHER, concat


class Rope(OpDef):
    """Rotary embedding: inputs x ``[..., S, D]``, cos, sin ``[S, R]``; attr ``interleaved``."""

    name = "rope"

    def infer(self, layer: Layer) -> list[TensorType]:
        x, c, s = layer.input_types
        if not x.dtype.is_float or x.dtype.itemsize < 2:
            raise layer.fail(f"rope needs a float32/float16/bfloat16 input, got {x.dtype}")
        if c.dtype != x.dtype or s.dtype != x.dtype:
            raise layer.fail(f"cos and sin must have x's dtype {x.dtype}, got {c.dtype}, {s.dtype}")
        if x.rank < 2:
            raise layer.fail(f"x must be [..., seq, head_dim], got rank {x.rank}")
        if c.rank != 2 or c.shape != s.shape:
            raise layer.fail(f"cos and sin must both be [seq, pairs], got {c.shape}, {s.shape}")
        d, r = x.shape[-1], c.shape[-1]
        if d is None or r is None or r < 1 or 2 * r > d:
            raise layer.fail(f"{r} rotated pairs do not fit head_dim {d} (need 1 <= 2*pairs <= D)")
        if None not in (x.shape[-2], c.shape[0]) and x.shape[-2] != c.shape[0]:
            raise layer.fail(f"cos/sin have {c.shape[0]} positions, x has seq {x.shape[-2]}")
        return [x]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        xp = ctx.xp
        x, c, s = (t.astype(xp.float32) for t in inputs)
        r = c.shape[-1]
        if layer.attrs["interleaved"]:
            a, b = x[..., 0 : 2 * r : 2], x[..., 1 : 2 * r : 2]
        else:
            a, b = x[..., :r], x[..., r : 2 * r]
        o1, o2 = a * c - b * s, a * s + b * c
        if layer.attrs["interleaved"]:
            rot = xp.stack([o1, o2], axis=-1).reshape(o1.shape[:-1] + (2 * r,))
        else:
            rot = xp.concatenate([o1, o2], axis=-1)
        out = xp.concatenate([rot, x[..., 2 * r :]], axis=-1)
        return [out.astype(inputs[0].dtype)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        x_t = layer.input_types[0]
        rank, d, r = x_t.rank, x_t.shape[-1], layer.input_types[1].shape[-1]
        net, f32 = b.network, dtypes.float32
        low = x_t.dtype != f32

        def ew(p: Any, q: Any, kind: str, tag: str) -> Any:
            op = b.enum("ElementWiseOperation", kind)
            return b.named(net.add_elementwise(p, q, op), layer, tag)

        x, c, s = inputs
        if low:
            x, c, s = (b.named(net.add_cast(t, b.dtype(f32)), layer, f"{n}_float32")
                       for t, n in zip(inputs, ("x", "cos", "sin")))  # fmt: skip
        c, s = b.expand_rank(c, 2, rank), b.expand_rank(s, 2, rank)
        lead = tuple(x_t.shape[:-1])
        zeros, ones = (0,) * rank, (1,) * rank
        if layer.attrs["interleaved"]:
            step = ones[:-1] + (2,)
            a = b.slice(x, zeros, lead + (r,), step, layer, "even")
            bb = b.slice(x, zeros[:-1] + (1,), lead + (r,), step, layer, "odd")
        else:
            a = b.slice(x, zeros, lead + (r,), ones, layer, "first_half")
            bb = b.slice(x, zeros[:-1] + (r,), lead + (r,), ones, layer, "second_half")
        o1 = ew(ew(a, c, "mul", "a_cos"), ew(bb, s, "mul", "b_sin"), "sub", "rot_a")
        o2 = ew(ew(a, s, "mul", "a_sin"), ew(bb, c, "mul", "b_cos"), "add", "rot_b")
        keep = (0,) * (rank - 1)
        if layer.attrs["interleaved"]:  # [..., R] x 2 -> [..., R, 2] -> [..., 2R]
            p1, p2 = (
                b.reshape(o, keep + (r, 1), layer, f"pair{i}") for i, o in enumerate((o1, o2))
            )
            cat = net.add_concatenation([p1, p2])
            cat.axis = rank
            rot = b.reshape(b.named(cat, layer, "interleave"), keep + (2 * r,), layer, "rotated")
        else:
            cat = net.add_concatenation([o1, o2])
            cat.axis = rank - 1
            rot = b.named(cat, layer, "rotated")
        if 2 * r < d:
            rest = b.slice(x, zeros[:-1] + (2 * r,), lead + (d - 2 * r,), ones, layer, "pass")
            cat = net.add_concatenation([rot, rest])
            cat.axis = rank - 1
            rot = b.named(cat, layer, "joined")
        if low:
            rot = b.named(net.add_cast(rot, b.dtype(x_t.dtype)), layer, "cast_out")
        return [rot]

    def describe(self, layer: Layer) -> str:
        return f"rope({'interleaved' if layer.attrs['interleaved'] else 'rotate_half'})"


ROPE = Rope()


def frequencies(dim: int, theta: float) -> np.ndarray:
    """float64 ``theta ** (-2i / dim)`` for i in [0, dim/2)."""
    return theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)


def _axes(dim: int, axes_dim: Any) -> tuple[int, ...]:
    axes = (dim,) if axes_dim is None else tuple(int(a) for a in axes_dim)
    if any(a < 2 or a % 2 for a in axes) or sum(axes) != dim:
        raise ValueError(f"axes_dim {axes} must be even sizes summing to dim {dim}")
    return axes


def rope_tables(
    positions: Any, dim: int, theta: float = 10000.0, axes_dim: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(cos, sin)`` tables ``[seq, dim/2]`` for static ``positions`` (``[seq]``, or
    ``[seq, n_axes]`` with ``axes_dim``), computed in float64.

    >>> c, s = rope_tables(np.arange(3), 4)
    >>> c.shape, float(c[1, 0]), float(s[1, 1])            # angle 1 and 1/100
    ((3, 2), 0.5403023058681398, 0.009999833334166664)
    """
    axes = _axes(dim, axes_dim)
    pos = np.asarray(positions, np.float64)
    pos = pos[:, None] if pos.ndim == 1 else pos
    if pos.ndim != 2 or pos.shape[1] != len(axes):
        raise ValueError(f"positions of shape {np.shape(positions)} for {len(axes)} axes")
    ang = np.concatenate([pos[:, [i]] * frequencies(a, theta) for i, a in enumerate(axes)], 1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


# -- builders ------------------------------------------------------------------------------
@public("attention")
def rope(
    x: Value, cos: Any, sin: Any, *, interleaved: bool = False, name: str | None = None
) -> Value:
    """Rotary position embedding of ``x [..., seq, head_dim]`` with ``cos``/``sin`` tables
    ``[seq, pairs]`` (from :func:`rope_frequencies`); ``interleaved`` pairs ``(x[2i],
    x[2i+1])`` (GPT-J, FLUX), else ``(x[i], x[i+pairs])`` (rotate_half: GPT-NeoX, Llama).

    ``q = q.rope(cos, sin, interleaved=True)``
    """
    net = network_of(x, op="rope", name=name)
    if not isinstance(x, Value):
        raise fail("rope", "x must be a Tensor", name=name)
    c, s = (lift(net, t, x, "rope") for t in (cos, sin))
    inter = require_bool("rope", "interleaved", interleaved, x, name=name)
    return net.add_layer(ROPE, [x, c, s], {"interleaved": inter}, name=name)[0]


@public("attention", method=None)
def rope_frequencies(
    positions: Any,
    dim: int,
    *,
    theta: float = 10000.0,
    axes_dim: Sequence[int] | None = None,
    dtype: Any = "float32",
    net: Any = None,
    name: str | None = None,
) -> tuple[Value, Value]:
    """``(cos, sin)`` tensors ``[seq, dim/2]`` for RoPE: ``angle[s, i] = pos[s] * theta **
    (-2i/dim)``. ``positions``: a NumPy array / list (static: two constants of ``net``) or an
    int32/float32 tensor ``[seq]`` fed at run time (``[seq, n_axes]`` with ``axes_dim``, FLUX's
    per-axis frequencies). ``dtype``: the tables' dtype (x's).

    ``cos, sin = F.rope_frequencies(pos, 64, axes_dim=(16, 24, 24))``
    """
    what = "rope_frequencies"
    if not is_int(dim) or not 2 <= dim <= 2**16 or dim % 2:
        raise fail(what, f"dim must be an even int in [2, 65536], got {dim!r}", name=name)
    ok = isinstance(theta, numbers.Real) and not isinstance(theta, bool)
    if not ok or not theta > 0 or not math.isfinite(theta):
        raise fail(what, f"theta must be a positive number, got {theta!r}", name=name)
    try:
        axes = _axes(int(dim), axes_dim)
        dt = dtypes.as_dtype(dtype)
    except (ValueError, TypeError) as e:
        raise fail(what, f"{type(e).__name__}: {e}", name=name) from None
    pre = (lambda tag: None) if name is None else (lambda tag: f"{name}.{tag}")
    if not isinstance(positions, Value):
        if not callable(getattr(net, "constant", None)):
            msg = f"static positions need net= (the network to add constants to), got {net!r}"
            raise fail(what, msg, name=name)
        try:
            c, s = rope_tables(positions, int(dim), theta, axes_dim)
        except (ValueError, TypeError) as e:
            raise fail(what, str(e), name=name) from None
        return (net.constant(c.astype(dt.numpy), name=pre("cos")),
                net.constant(s.astype(dt.numpy), name=pre("sin")))  # fmt: skip
    p = positions
    want_rank = 1 if axes_dim is None else 2
    if p.ndim != want_rank or (want_rank == 2 and p.shape[1] != len(axes)):
        raise fail(what, f"positions must be [seq]{'' if want_rank == 1 else ', n_axes'}", p)
    if p.dtype not in (dtypes.int32, dtypes.float32):
        raise fail(what, f"positions must be int32 or float32, got {p.dtype}", p)
    if p.dtype != dtypes.float32:
        p = p.cast("float32", name=pre("positions"))
    if want_rank == 1:
        p = p.reshape((-1, 1), name=pre("column"))
    parts = []
    for i, a in enumerate(axes):
        col = p if want_rank == 1 else p[:, i : i + 1]
        freq = frequencies(a, theta).astype(np.float32)[None, :]
        parts.append(col * freq)
    ang = parts[0] if len(parts) == 1 else concat(parts, axis=-1, name=pre("angles"))
    c, s = ang.cos(name=pre("cos")), ang.sin(name=pre("sin"))
    if dt != dtypes.float32:
        c, s = c.cast(dt, name=pre("cos_cast")), s.cast(dt, name=pre("sin_cast"))
    return c, s


@public("indexing", method=None)
def embedding(indices: Any, table: Any, *, name: str | None = None) -> Value:
    """Embedding lookup: rows of ``table [vocab, ...]`` at int32/int64 ``indices`` (TensorRT's
    IGather on axis 0); ``[*indices.shape, ...]``. Indices must be in [0, vocab).

    ``h = F.embedding(token_ids, net.constant(w_embed, name="embed"))``
    """
    net = network_of(indices, table, op="embedding", name=name)
    t = lift(net, table, None, "embedding")
    idx = lift(net, indices, None, "embedding")
    if idx.dtype not in (dtypes.int32, dtypes.int64):
        raise fail("embedding", f"indices must be int32 or int64, got {idx.dtype}", idx, t)
    if t.ndim < 1:
        raise fail("embedding", "the table needs rank >= 1 ([vocab, ...])", idx, t)
    return net.add_layer(GATHER, [t, idx], {"axis": 0}, name=name, base="embedding")[0]
