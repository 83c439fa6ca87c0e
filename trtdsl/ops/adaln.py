"""adaLN's fused norm + modulation (DiT, FLUX): one layer for
``norm(x) [* weight + bias] * (1 + scale) + shift`` over the last axis.

Layouts: x ``[..., D]`` (rank >= 2, D static; DiT: ``[B, S, D]`` or ``[S, D]``), shift and scale
broadcastable to x with D last (DiT: ``[B, 1, D]`` or ``[1, D]``), weight and bias ``[D]``; the
output has x's shape and dtype. ``kind``: ``"layer"`` (``(x - mean) / sqrt(var + eps)``) or
``"rms"`` (``x / sqrt(mean(x**2) + eps)``). Statistics and the modulation are computed in
float32 for 16-bit inputs, rounded once at the end.

Backends: the numpy reference below; on GPUs (``cupy``) the Triton kernel of
``kernels/triton_norm.py`` (x read once, y written once); TensorRT: INormalization (layer) or
a reduce chain (rms), then elementwise layers, in float32 for 16-bit inputs.

>>> import numpy as np, trtdsl as td
>>> net = td.Network("adaln")
>>> x = net.input("x", (2, 16, 64), "float16")                 # [B, S, D]
>>> shift = net.input("shift", (2, 1, 64), "float16")          # [B, 1, D]
>>> scale = net.input("scale", (2, 1, 64), "float16")
>>> y = x.modulated_norm(shift, scale, eps=1e-6)               # F.modulated_norm
>>> y.shape, y.dtype
((2, 16, 64), trtdsl.float16)
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, Value, format_shape
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import TensorLike, fail, lift, network_of

KINDS: tuple[str, ...] = ("layer", "rms")


@runtime_checkable
class FusedNormContext(Protocol):
    """The optional hook a backend's run context may offer (the cupy backend does): the
    layer's outputs from a fused kernel, or None to run the reference."""

    def fused_modulated_norm(self, layer: Layer, inputs: list[Any]) -> list[Any] | None: ...


def modulated_norm_reference(
    xp: Any,
    x: Any,
    shift: Any,
    scale: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    kind: str = "layer",
    eps: float = 1e-6,
) -> Any:
    """``norm(x) [* weight + bias] * (1 + scale) + shift`` over the last axis, computed in
    float32 (float64 stays float64); returns the float array (the caller rounds)."""
    cdt = xp.float64 if x.dtype == xp.float64 else xp.float32
    x = x.astype(cdt)
    if kind == "layer":
        x = x - xp.mean(x, axis=-1, keepdims=True)
    y = x / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + cdt(eps))
    if weight is not None:
        y = y * weight.astype(cdt)
    if bias is not None:
        y = y + bias.astype(cdt)
    return y * (scale.astype(cdt) + cdt(1)) + shift.astype(cdt)


def _broadcasts_to(t: TensorType, x: TensorType) -> bool:
    """``t`` broadcasts to x's shape without growing it. A dynamic dim on either side fits
    (checked at run time), except a dynamic ``t`` dim against a static 1 of x."""
    if t.rank > x.rank:
        return False
    return all(
        p == 1 or q is None or p == q or (p is None and q != 1)
        for p, q in zip(t.shape[::-1], x.shape[::-1])
    )


class ModulatedNorm(OpDef):
    """Inputs x, shift, scale, then weight and bias where the attrs ``weight``/``bias`` say;
    attrs ``kind`` ('layer' or 'rms'), ``eps``."""

    name = "modulated_norm"

    def infer(self, layer: Layer) -> list[TensorType]:
        x, shift, scale, *params = layer.input_types
        a = layer.attrs
        if a["kind"] not in KINDS:
            raise layer.fail(f"unknown kind {a['kind']!r}; expected one of {KINDS}")
        if not x.dtype.is_float or x.dtype.itemsize < 2:
            raise layer.fail(f"x must be float32, float16 or bfloat16, got {x.dtype}")
        if x.rank < 2:
            raise layer.fail(f"x must be [..., D] of rank >= 2, got rank {x.rank}")
        d = x.shape[-1]
        if d is None:
            raise layer.fail(f"x's last dim (D) must be static, got {format_shape(x.shape)}")
        for label, t in (("shift", shift), ("scale", scale)):
            if t.dtype != x.dtype:
                raise layer.fail(f"{label} dtype {t.dtype} differs from x's {x.dtype}")
            if t.rank == 0 or t.shape[-1] != d or not _broadcasts_to(t, x):
                raise layer.fail(
                    f"{label} {format_shape(t.shape)} must broadcast to x "
                    f"{format_shape(x.shape)} with D={d} last (e.g. [B, 1, D] or [1, D])"
                )
        labels = [k for k in ("weight", "bias") if a[k]]
        if len(labels) != len(params):
            raise layer.fail(f"expected {3 + len(labels)} inputs, got {3 + len(params)}")
        for label, t in zip(labels, params):
            if t.dtype != x.dtype:
                raise layer.fail(f"{label} dtype {t.dtype} differs from x's {x.dtype}")
            if t.shape != (d,):
                raise layer.fail(f"{label} must be [D] = ({d},), got {format_shape(t.shape)}")
        eps = a["eps"]
        if not (isinstance(eps, float) and math.isfinite(eps) and eps > 0):
            raise layer.fail(f"eps must be a finite number > 0, got {eps!r}")
        return [x]

    @staticmethod
    def params(layer: Layer, inputs: list[Any]) -> tuple[Any, Any]:
        """(weight or None, bias or None) among ``inputs``."""
        rest = iter(inputs[3:])
        w = next(rest) if layer.attrs["weight"] else None
        b = next(rest) if layer.attrs["bias"] else None
        return w, b

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        if isinstance(ctx, FusedNormContext):
            fused = ctx.fused_modulated_norm(layer, inputs)
            if fused is not None:
                return fused
        x, shift, scale = inputs[:3]
        w, b = self.params(layer, inputs)
        a = layer.attrs
        y = modulated_norm_reference(ctx.xp, x, shift, scale, w, b, kind=a["kind"], eps=a["eps"])
        return [y.astype(x.dtype)]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        """Layer norm: INormalization (its scale/bias: weight/bias or ones/zeros); RMS: square,
        mean, + eps, sqrt, recip, mul (TensorRT has no RMS mode), * weight, + bias. Then
        ``* (scale + 1) + shift``. 16-bit inputs are cast to float32 first and back last."""
        x_t = layer.input_types[0]
        rank, d, net = x_t.rank, x_t.shape[-1], b.network
        low = x_t.dtype.itemsize < 4
        cdt = dtypes.float32 if low else x_t.dtype
        a = layer.attrs

        def ew(p: Any, q: Any, kind: str, tag: str) -> Any:
            return b.named(net.add_elementwise(p, q, b.enum("ElementWiseOperation", kind)), layer,
                           tag)  # fmt: skip

        def prep(t: Any, t_rank: int, tag: str) -> Any:
            if low:
                t = b.named(net.add_cast(t, b.dtype(cdt)), layer, f"{tag}_float32")
            return b.expand_rank(t, t_rank, rank)

        x, shift, scale = (
            prep(t, layer.input_types[i].rank, tag)
            for i, (t, tag) in enumerate(zip(inputs[:3], ("x", "shift", "scale")))
        )
        w, bias = self.params(layer, inputs)
        w = None if w is None else prep(w, 1, "weight")
        bias = None if bias is None else prep(bias, 1, "bias")
        mask = 1 << (rank - 1)
        if a["kind"] == "layer":
            ones = (1,) * (rank - 1) + (d,)
            if w is None:
                w = b.constant(np.ones(ones, cdt.numpy), layer, "ones")
            if bias is None:
                bias = b.constant(np.zeros(ones, cdt.numpy), layer, "zeros")
            norm = net.add_normalization_v2(x, w, bias, mask)
            norm.epsilon = a["eps"]
            y = b.named(norm, layer, "norm")
        else:
            sq = ew(x, x, "mul", "square")
            mean = b.enum("ReduceOperation", "mean")
            ms = b.named(net.add_reduce(sq, mean, mask, True), layer, "mean_square")
            var = ew(ms, b.scalar(a["eps"], cdt, rank), "add", "add_eps")
            rs = b.named(net.add_unary(var, b.enum("UnaryOperation", "sqrt")), layer, "sqrt")
            inv = b.named(net.add_unary(rs, b.enum("UnaryOperation", "recip")), layer, "recip")
            y = ew(x, inv, "mul", "norm")
            if w is not None:
                y = ew(y, w, "mul", "weight")
            if bias is not None:
                y = ew(y, bias, "add", "bias")
        one_plus = ew(scale, b.scalar(1.0, cdt, rank), "add", "one_plus_scale")
        y = ew(y, one_plus, "mul", "modulate")
        add = net.add_elementwise(y, shift, b.enum("ElementWiseOperation", "add"))
        if not low:
            return [b.out(add, layer)]
        y = b.named(add, layer, "shift")
        return [b.out(net.add_cast(y, b.dtype(x_t.dtype)), layer)]

    def describe(self, layer: Layer) -> str:
        a = layer.attrs
        extra = "".join(f", {k}" for k in ("weight", "bias") if a[k])
        return f"modulated_norm({a['kind']}, eps={a['eps']:.3g}{extra})"


MODULATED_NORM = ModulatedNorm()


# -- builder -------------------------------------------------------------------------------
@public("normalization")
def modulated_norm(
    x: Value,
    shift: TensorLike,
    scale: TensorLike,
    *,
    kind: str = "layer",
    eps: float = 1e-6,
    weight: TensorLike | None = None,
    bias: TensorLike | None = None,
    name: str | None = None,
) -> Value:
    """adaLN in one layer: ``norm(x) [* weight + bias] * (1 + scale) + shift`` over the last
    axis of ``x [..., D]``; ``kind`` "layer" or "rms"; shift/scale broadcast to x with D last
    (``[B, 1, D]``, ``[1, D]``, ...), weight/bias ``[D]``. Float32 statistics.

    ``h = x.modulated_norm(shift, scale)``  (DiT: ``layer_norm(x) * (1 + scale) + shift``)
    """
    op = "modulated_norm"
    net = network_of(x, shift, scale, weight, bias, op=op, name=name)
    if not isinstance(x, Value):
        raise fail(op, f"x must be a Tensor, got {type(x).__name__}", shift, scale, name=name)
    if not isinstance(kind, str) or kind not in KINDS:
        raise fail(op, f"kind must be one of {KINDS}, got {kind!r}", x, name=name)
    ok = isinstance(eps, numbers.Real) and not isinstance(eps, bool)
    if not ok or not 0 < float(eps) < float("inf"):
        raise fail(op, f"eps must be a finite number > 0, got {eps!r}", x, name=name)
    inputs = [x, lift(net, shift, x, op), lift(net, scale, x, op)]
    inputs += [lift(net, t, x, op) for t in (weight, bias) if t is not None]
    attrs = {"kind": kind, "eps": float(eps)}
    attrs.update(weight=weight is not None, bias=bias is not None)
    return net.add_layer(MODULATED_NORM, inputs, attrs, name=name)[0]
