"""Helpers that op builders share: find the network, lift scalars to constants, fail well.

A builder (``F.add``, ``F.softmax``, ...) takes tensors and Python values, checks what only
it can check, and records one layer with ``net.add_layer(OP, inputs, attrs)``; shape and dtype
rules live in the OpDef's ``infer``. Errors name the layer, the inputs' shapes and the user's
``file:line``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DefinitionError, user_location
from ..ir import Graph, OpLike, Value

#: What builders accept where a tensor goes: a Tensor, a NumPy array or a Python scalar.
TensorLike = Value | np.ndarray | float | int | bool


def describe(values: Sequence[Any]) -> str:
    shown = [f"{v.name}: {v.type}" for v in values if isinstance(v, Value)]
    return ", ".join(shown) or "no inputs"


def fail(op: str, message: str, *inputs: Any, name: str | None = None) -> DefinitionError:
    """An error for a layer the DSL refused to record: it names the layer (its explicit name or
    its op), the inputs' shapes and the user's line (raise it)."""
    return DefinitionError(
        f"{op}: {message} [inputs: {describe(inputs)}]", layer=name or op, where=user_location()
    )


#: TensorRT 11's INT8 is "a signed 8-bit integer representing a quantized floating-point value"
#: (DataType.INT8 in the 11.4 bindings), not an integer type: strongly typed networks move and
#: cast it, but compute on it only through dequantize (docs/dsl.md, Dtypes).
INT8_REFUSAL = (
    "int8 is TensorRT's quantized type: {what} on it is not supported; dequantize it first "
    "(F.dequantize) or cast it to int32"
)


#: FP8 E4M3 is quantized too: TensorRT computes on it only through dequantize.
FP8_REFUSAL = (
    "float8_e4m3 is TensorRT's quantized FP8 type: {what} on it is not supported; dequantize "
    "it first (F.dequantize)"
)


def refuse_quantized(layer: Any, dtype: Any, what: str) -> None:
    """Raise ``layer.fail`` (op, layer name, inputs' shapes, user's file:line) when ``dtype`` is
    a quantized type (int8, float8_e4m3): ``what`` names the refused computation ("'add'",
    "reduce 'sum'", ...). Moving and casting them stays allowed."""
    name = getattr(dtype, "name", None)
    if name == "int8":
        raise layer.fail(INT8_REFUSAL.format(what=what))
    if name == "float8_e4m3":
        raise layer.fail(FP8_REFUSAL.format(what=what))


def network_of(*values: Any, op: str | None = None, name: str | None = None) -> Graph:
    """The one network that the tensors among ``values`` belong to."""
    nets = {id(v.network): v.network for v in values if isinstance(v, Value)}
    what = op or "layer"
    if name is not None and (not isinstance(name, str) or not name):
        # checked before a builder records anything (some record several layers)
        raise fail(what, f"layer name must be a non-empty string, got {name!r}", *values)
    if not nets:
        kinds = ", ".join(type(v).__name__ for v in values)
        raise fail(what, f"no Tensor among the arguments ({kinds})", name=name)
    if len(nets) > 1:
        names = ", ".join(f"'{n.name}'" for n in nets.values())
        raise fail(what, f"tensors from different networks ({names})", *values, name=name)
    return next(iter(nets.values()))


def lift(net: Graph, value: TensorLike, like: Value | None, op: str = "layer") -> Value:
    """A tensor for ``value``: scalars (and float64 arrays) become constants of ``like``'s
    dtype. A value that the dtype cannot hold (2.5 for an int32 tensor, 1e6 for float16) is an
    error rather than a silent truncation or overflow."""
    if isinstance(value, Value):
        return value
    if not isinstance(value, (bool, int, float, np.number, np.bool_, np.ndarray)):
        raise fail(
            op, f"expected a Tensor, NumPy array or number, got {type(value).__name__}", like
        )
    arr = np.asarray(value)
    if like is not None and (np.ndim(value) == 0 or arr.dtype == np.float64):
        with np.errstate(all="ignore"):
            cast = arr.astype(like.dtype.numpy)
            back = cast.astype(np.float64 if like.dtype.is_float else arr.dtype)
        if like.dtype.is_float:
            bad = np.isfinite(arr.astype(np.float64)) & ~np.isfinite(back)
        else:
            bad = back != arr
        if np.any(bad):
            shown = arr[bad].flat[0] if arr.ndim else arr.item()
            raise fail(
                op,
                f"value {shown!r} cannot be represented in {like.dtype} (the dtype of "
                f"'{like.name}'); cast explicitly",
                like,
            )
        arr = cast
    return net.constant(arr)


def record(
    op: OpLike,
    inputs: Sequence[TensorLike],
    attrs: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    base: str | None = None,
    like: Value | None = None,
) -> list[Any]:
    """Record one layer of ``op`` over ``inputs`` (scalars and arrays lifted to constants of
    ``like``'s dtype, default the first tensor's); returns the output tensors."""
    what = base or op.name
    net = network_of(*inputs, op=what, name=name)
    if like is None:
        like = next((v for v in inputs if isinstance(v, Value)), None)
    xs = [lift(net, v, like, what) for v in inputs]
    return net.add_layer(op, xs, attrs, name=name, base=base)


def record1(
    op: OpLike,
    inputs: Sequence[TensorLike],
    attrs: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    base: str | None = None,
    like: Value | None = None,
) -> Any:
    """:func:`record` for a layer with one output."""
    return record(op, inputs, attrs, name=name, base=base, like=like)[0]


def is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def require_bool(op: str, param: str, value: Any, *inputs: Any, name: str | None = None) -> bool:
    """``value`` as a bool if it is one (Python's or NumPy's), else a located DefinitionError:
    a truthy stand-in (1, "no", an array) is more likely a misplaced argument than a choice."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise fail(op, f"{param} must be True or False, got {value!r}", *inputs, name=name)
