"""Fused attention, mirroring TensorRT 11's IAttention: ``softmax(scale q k^T + mask) v``.

Layout: q ``[..., heads, seq_q, head_dim]``, k ``[..., heads, seq_k, head_dim]``, v
``[..., heads, seq_k, head_dim_v]`` -> out ``[..., heads, seq_q, head_dim_v]`` (q's dtype) and,
with ``return_lse``, the float32 log-sum-exp of each query row ``[..., heads, seq_q]`` (what
Ring attention's online-softmax merge needs).

``causal``: the query at global position ``q_offset + i`` sees the key at ``k_offset + j`` iff
``k_offset + j <= q_offset + i`` (context-parallel chunks pass their global offsets). ``mask``:
bool (True = allowed) or additive (q's dtype), broadcastable to ``[..., heads, seq_q, seq_k]``.
A query row that sees no key gives 0 and log-sum-exp -inf.

>>> import trtdsl as td
>>> net = td.Network("attn")
>>> q = net.input("q", (8, 128, 64), "float16")             # [heads, seq, head_dim]
>>> out, lse = td.functional.attention(q, q, q, causal=True, return_lse=True)
>>> out.shape, lse.shape, lse.dtype
((8, 128, 64), (8, 128), trtdsl.float32)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, Value
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import fail, is_int, lift, network_of, refuse_quantized, require_bool

#: Query rows per chunk of the reference are chosen so one chunk's float32 scores stay under
#: this many bytes (64k tokens x 8 heads fit on a laptop).
REFERENCE_CHUNK_BYTES = 256 * 2**20


def causal_allowed(xp: Any, rows: Any, s_k: int, k_offset: int) -> Any:
    """Bool ``[len(rows), s_k]``: key ``k_offset+j`` allowed for the query at global ``rows[i]``."""
    return (k_offset + xp.arange(s_k))[None, :] <= rows[:, None]


class Attention(OpDef):
    """IAttention: attrs ``causal``, ``q_offset``, ``k_offset``, ``scale``, ``mask`` (None,
    "bool" or "additive": the 4th input), ``return_lse``."""

    name = "attention"

    def infer(self, layer: Layer) -> list[TensorType]:
        q, k, v = layer.input_types[:3]
        for label, t in (("q", q), ("k", k), ("v", v)):
            if t.rank < 3:
                raise layer.fail(f"{label} must be [..., heads, seq, head_dim], got rank {t.rank}")
        if not q.dtype.is_float or not (q.dtype == k.dtype == v.dtype):
            raise layer.fail(f"q, k, v need one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
        refuse_quantized(layer, q.dtype, "attention")
        if not (q.rank == k.rank == v.rank):
            raise layer.fail("q, k and v need the same rank")
        lead = q.shape[:-2]
        if k.shape[:-2] != lead or v.shape[:-2] != lead:
            raise layer.fail("q, k and v need the same leading dims [..., heads]")
        if k.shape[-1] != q.shape[-1] or k.shape[-1] is None:
            raise layer.fail("q and k need the same static head_dim")
        if v.shape[-2] != k.shape[-2]:
            raise layer.fail("k and v need the same sequence length")
        if layer.attrs["mask"] is not None:
            self._check_mask(layer, layer.input_types[3], q, k)
        out = TensorType(q.shape[:-1] + (v.shape[-1],), q.dtype)
        if not layer.attrs["return_lse"]:
            return [out]
        return [out, TensorType(q.shape[:-1], dtypes.float32)]

    @staticmethod
    def _check_mask(layer: Layer, m: TensorType, q: TensorType, k: TensorType) -> None:
        want = q.shape[:-1] + (k.shape[-2],)
        kind = layer.attrs["mask"]
        if kind == "bool" and m.dtype != dtypes.bool_:
            raise layer.fail(f"a bool mask must be bool, got {m.dtype}")
        if kind == "additive" and m.dtype != q.dtype:
            raise layer.fail(f"an additive mask must have q's dtype {q.dtype}, got {m.dtype}")
        if m.rank > len(want) or any(
            d not in (1, w) and None not in (d, w) for d, w in zip(m.shape[::-1], want[::-1])
        ):
            raise layer.fail(f"mask {m.shape} does not broadcast to [..., heads, seq_q, seq_k]")

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        fused = ctx.fused_attention(layer, inputs)
        if fused is not None:
            return fused
        q, k, v = inputs[:3]
        mask = inputs[3] if layer.attrs["mask"] is not None else None
        out, lse = attention_reference(ctx.xp, q, k, v, mask, **self.options(layer))
        out = out.astype(q.dtype)
        return [out, lse] if layer.attrs["return_lse"] else [out]

    @staticmethod
    def options(layer: Layer) -> dict[str, Any]:
        a = layer.attrs
        return {
            "scale": a["scale"],
            "causal": a["causal"],
            "q_offset": a["q_offset"],
            "k_offset": a["k_offset"],
        }

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        """IAttention (``add_attention_v2``) where it can say the layer; the log-sum-exp
        variant in float16/bfloat16 with a kernel head_dim and no mask: the trtdsl plugin
        (``b.plugin``: the Triton flash-attention kernel, AOT); other log-sum-exp variants, a
        mask together with causal, ranks other than 3-4 and a v head_dim unlike k's: primitive
        layers in float32 (matmul, reduce, exp, log)."""
        a, q_t, k_t = layer.attrs, layer.input_types[0], layer.input_types[1]
        out_dynamic = sum(d is None for d in layer.outputs[0].shape)
        if _plugin_lowers(layer, b, out_dynamic):  # rows that see no key: o = 0, lse = -inf
            return _lower_plugin(layer, inputs, b)
        if a["causal"] and a["q_offset"] < a["k_offset"]:
            raise layer.fail(
                f"causal attention with q_offset {a['q_offset']} < k_offset {a['k_offset']} "
                "has query rows that see no key; TensorRT leaves them undefined (the "
                "log-sum-exp plugin defines them: fp16/bf16, head_dim 32/64/128/256, "
                "return_lse=True, no mask)"
            )
        if (
            a["return_lse"]
            or (a["mask"] and a["causal"])
            or q_t.rank not in (3, 4)
            or (q_t.rank == 3 and out_dynamic > 1)
            or layer.input_types[2].shape != k_t.shape  # IAttention: k, v both [B, H, S, D]
        ):
            return _lower_decomposed(layer, inputs, b)
        rank = q_t.rank
        q, k, v = (b.expand_rank(t, rank, 4) for t in inputs[:3])
        prod = b.enum("ElementWiseOperation", "mul")
        q = b.named(b.network.add_elementwise(q, b.scalar(a["scale"], q_t.dtype, 4), prod),
                    layer, "scale_q")  # fmt: skip
        causal_kind, mask = "none", None
        if a["causal"]:
            s_q, s_k = q_t.shape[-2], k_t.shape[-2]
            if a["q_offset"] == a["k_offset"]:
                causal_kind = "upper_left"
            elif None not in (s_q, s_k) and a["q_offset"] - a["k_offset"] == s_k - s_q:
                causal_kind = "lower_right"
            else:
                if None in (s_q, s_k):
                    raise layer.fail("causal attention with these offsets needs static seq")
                rows = a["q_offset"] + np.arange(s_q)
                allowed = causal_allowed(np, rows, s_k, a["k_offset"])
                mask = b.constant(allowed[None, None], layer, "causal_mask")
        elif a["mask"]:
            mask = b.expand_rank(inputs[3], layer.input_types[3].rank, 4)
        att = b.network.add_attention_v2(
            q, k, v, b.enum("AttentionNormalizationOp", "softmax"),
            b.enum("CausalMaskKind", causal_kind),
        )  # fmt: skip
        if mask is not None:
            att.mask = mask
        out = b.out(att, layer)
        if rank == 3:  # [1, H, S, Dv] -> [H, S, Dv]
            dims = tuple(-1 if d is None else d for d in layer.outputs[0].shape)
            out = b.reshape(out, dims, layer, "drop_batch")
        return [out]

    def describe(self, layer: Layer) -> str:
        a = layer.attrs
        parts = [f"scale={a['scale']:.4g}"]
        if a["causal"]:
            parts.append(f"causal(q+{a['q_offset']}, k+{a['k_offset']})")
        if a["mask"]:
            parts.append(f"mask={a['mask']}")
        if a["return_lse"]:
            parts.append("lse")
        return f"attention({', '.join(parts)})"


ATTENTION = Attention()


def _plugin_lowers(layer: Layer, b: Any, out_dynamic: int) -> bool:
    """The log-sum-exp variant the flash-attention plugin computes (where ``b`` has it)."""
    a, q_t, k_t = layer.attrs, layer.input_types[0], layer.input_types[1]
    has_plugin = getattr(b, "has_plugin", None)
    return bool(
        a["return_lse"]
        and not a["mask"]
        and has_plugin is not None
        and has_plugin(
            "flash_attention_lse",
            dtype=q_t.dtype.name,
            head_dim=q_t.shape[-1],
            q_shape=q_t.shape,
            k_shape=k_t.shape,
        )  # fmt: skip
        and q_t.rank in (3, 4)
        and not (q_t.rank == 3 and out_dynamic > 1)
        and layer.input_types[2].shape == k_t.shape
    )


def _lower_plugin(layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
    """q, k, v as [B, H, S, D] into the plugin; rank-3 outputs lose the batch dim again."""
    rank = layer.input_types[0].rank
    q, k, v = (b.expand_rank(t, rank, 4) for t in inputs[:3])
    o, lse = b.plugin("flash_attention_lse", [q, k, v], layer)
    if rank == 3:
        o_dims, l_dims = (tuple(-1 if d is None else d for d in t.shape) for t in layer.outputs)
        o, lse = b.reshape(o, o_dims, layer, "drop_batch"), b.reshape(lse, l_dims, layer, "lse")
    return [o, lse]


def _lower_decomposed(layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
    """Attention from primitive layers, in float32: scores, mask, row max m, p = exp(s - m),
    l = sum(p), out = (p @ v) / l, lse = m + log(l)."""
    a, q_t = layer.attrs, layer.input_types[0]
    rank, net, f32 = q_t.rank, b.network, dtypes.float32
    low = q_t.dtype != f32

    def ew(x: Any, y: Any, kind: str, tag: str) -> Any:
        return b.named(net.add_elementwise(x, y, b.enum("ElementWiseOperation", kind)), layer, tag)

    def unary(x: Any, kind: str, tag: str) -> Any:
        return b.named(net.add_unary(x, b.enum("UnaryOperation", kind)), layer, tag)

    def reduce_last(x: Any, kind: str, tag: str) -> Any:
        op = b.enum("ReduceOperation", kind)
        return b.named(net.add_reduce(x, op, 1 << (rank - 1), True), layer, tag)

    q, k, v = (
        b.named(net.add_cast(t, b.dtype(f32)), layer, f"{n}_float32") if low else t
        for t, n in zip(inputs[:3], "qkv")
    )
    none, tr = b.enum("MatrixOperation", "none"), b.enum("MatrixOperation", "transpose")
    s = b.named(net.add_matrix_multiply(q, none, k, tr), layer, "scores")
    s = ew(s, b.scalar(a["scale"], f32, rank), "mul", "scale")
    if a["causal"]:
        s_q, s_k = q_t.shape[-2], layer.input_types[1].shape[-2]
        if None in (s_q, s_k):
            raise layer.fail("causal attention lowered to primitive layers needs static seq")
        allowed = causal_allowed(np, a["q_offset"] + np.arange(s_q), s_k, a["k_offset"])
        bias = (
            np.where(allowed, 0.0, -np.inf)
            .astype(np.float32)
            .reshape((1,) * (rank - 2) + allowed.shape)
        )
        s = ew(s, b.constant(bias, layer, "causal_mask"), "add", "causal")
    if a["mask"] == "bool":
        m = b.expand_rank(inputs[3], layer.input_types[3].rank, rank)
        ninf = b.scalar(-np.inf, f32, rank)
        sel = net.add_select(m, s, ninf)
        s = b.named(sel, layer, "mask")
    elif a["mask"] == "additive":
        m = b.expand_rank(inputs[3], layer.input_types[3].rank, rank)
        if low:
            m = b.named(net.add_cast(m, b.dtype(f32)), layer, "mask_float32")
        s = ew(s, m, "add", "mask")
    mx = reduce_last(s, "max", "row_max")
    p = unary(ew(s, mx, "sub", "shift"), "exp", "exp")
    total = reduce_last(p, "sum", "row_sum")
    o = b.named(net.add_matrix_multiply(p, none, v, none), layer, "weighted")
    o = ew(o, total, "div", "normalize")
    if low:
        o = b.named(net.add_cast(o, b.dtype(q_t.dtype)), layer, "cast_out")
    if not a["return_lse"]:
        return [o]
    lse = ew(mx, unary(total, "log", "log_sum"), "add", "lse_keepdims")
    dims = (0,) * (rank - 1)
    return [o, b.reshape(lse, dims, layer, "lse")]


def attention_reference(
    xp: Any,
    q: Any,
    k: Any,
    v: Any,
    mask: Any = None,
    *,
    scale: float,
    causal: bool = False,
    q_offset: int = 0,
    k_offset: int = 0,
) -> tuple[Any, Any]:
    """(out float32, lse float32) with float32 accumulation, in chunks of query rows."""
    f32 = xp.float32
    s_q, s_k = q.shape[-2], k.shape[-2]
    rows_per_chunk = max(1, REFERENCE_CHUNK_BYTES // max(1, 4 * s_k * math.prod(q.shape[:-2])))
    kt = xp.swapaxes(k.astype(f32), -1, -2)
    v32 = v.astype(f32)
    outs, lses = [], []
    for i in range(0, max(s_q, 1), rows_per_chunk):
        j = min(s_q, i + rows_per_chunk)
        s = xp.matmul(q[..., i:j, :].astype(f32), kt) * f32(scale)
        allowed = None
        if causal:
            allowed = causal_allowed(xp, q_offset + xp.arange(i, j), s_k, k_offset)
        if mask is not None:
            m = xp.broadcast_to(mask, mask.shape[:-2] + (s_q, s_k))[..., i:j, :]
            if m.dtype == xp.bool_:
                allowed = m if allowed is None else xp.logical_and(m, allowed)
            else:
                s = s + m.astype(f32)
        if allowed is not None:
            s = xp.where(allowed, s, f32(-np.inf))
        mx = xp.max(s, axis=-1, keepdims=True) if s_k else xp.full(s.shape[:-1] + (1,), -np.inf)
        mx = xp.where(xp.isfinite(mx), mx, f32(0))
        p = xp.exp(s - mx)
        total = xp.sum(p, axis=-1, keepdims=True)
        empty = total == 0
        outs.append(xp.matmul(p / xp.where(empty, f32(1), total), v32))
        with np.errstate(divide="ignore"):
            lse = xp.where(empty, f32(-np.inf), mx + xp.log(xp.where(empty, f32(1), total)))
        lses.append(lse[..., 0].astype(f32))
    if len(outs) == 1:
        return outs[0], lses[0]
    return xp.concatenate(outs, axis=-2), xp.concatenate(lses, axis=-1)


# -- builders ------------------------------------------------------------------------------
@public("attention", method=None)
def attention(
    q: Value,
    k: Value,
    v: Value,
    *,
    mask: Any = None,
    causal: bool = False,
    q_offset: int = 0,
    k_offset: int = 0,
    scale: float | None = None,
    return_lse: bool = False,
    name: str | None = None,
) -> Any:
    """Fused attention (TensorRT's IAttention): ``softmax(scale q k^T + mask) v`` over
    ``[..., heads, seq, head_dim]``; ``scale`` defaults to ``1/sqrt(head_dim)``. Returns out, or
    ``(out, lse)`` with ``return_lse`` (float32 ``[..., heads, seq_q]``).

    ``F.attention(q, k, v, causal=True, q_offset=r * s)``  (rank r's chunk of a CP sequence)
    """
    net = network_of(q, k, v, op="attention", name=name)
    for label, off in (("q_offset", q_offset), ("k_offset", k_offset)):
        if not is_int(off):
            raise fail("attention", f"{label} must be an int, got {off!r}", q, name=name)
    if scale is None:
        d = q.shape[-1] if isinstance(q, Value) and q.ndim else None
        if d is None:
            raise fail("attention", "head_dim must be static (or pass scale)", q, name=name)
        scale = 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)):
        raise fail("attention", f"scale must be a number, got {scale!r}", q, name=name)
    inputs = [q, k, v]
    kind = None
    if mask is not None:
        m = lift(net, mask, None, "attention")
        kind = "bool" if m.dtype == dtypes.bool_ else "additive"
        inputs.append(m)
    attrs = {
        "causal": require_bool("attention", "causal", causal, q, name=name),
        "q_offset": int(q_offset),
        "k_offset": int(k_offset),
        "scale": float(scale),
        "mask": kind,
        "return_lse": require_bool("attention", "return_lse", return_lse, q, name=name),
    }
    outs = net.add_layer(ATTENTION, inputs, attrs, name=name)
    return (outs[0], outs[1]) if return_lse else outs[0]
