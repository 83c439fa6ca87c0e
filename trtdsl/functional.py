"""The DSL as functions, one call per layer (Tensor methods call these).

>>> import numpy as np, trtdsl as td
>>> from trtdsl import functional as F
>>> net = td.Network("f")
>>> x = net.input("x", (2, 3))
>>> y = F.softmax(F.matmul(x, np.ones((3, 3), "float32")), axis=-1, name="probs")
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import dtypes
from .errors import DefinitionError, user_location
from .ops import (
    ACTIVATION,
    CAST,
    COLLECTIVE,
    CONCAT,
    ELEMENTWISE,
    GATHER,
    IDENTITY,
    MATMUL,
    NORMALIZATION,
    REDUCE,
    RESHAPE,
    SELECT,
    SLICE,
    SOFTMAX,
    SPLIT,
    TRANSPOSE,
    UNARY,
)
from .tensor import Tensor

if TYPE_CHECKING:
    from .network import Network

TensorLike = Any  # Tensor, NumPy array or Python scalar


def _describe(values: Sequence[Any]) -> str:
    shown = [f"{v.name}: {v.type}" for v in values if isinstance(v, Tensor)]
    return ", ".join(shown) or "no inputs"


def _fail(op: str, message: str, *inputs: Any, name: str | None = None) -> DefinitionError:
    """An error for a layer the DSL refused to record: it names the layer (its explicit name or
    its op), the inputs' shapes and the user's line (raise it)."""
    return DefinitionError(
        f"{op}: {message} [inputs: {_describe(inputs)}]", layer=name or op, where=user_location()
    )


def _network(*values: Any, op: str | None = None, name: str | None = None) -> Network:
    nets = {id(v.network): v.network for v in values if isinstance(v, Tensor)}
    what = op or "layer"
    if not nets:
        kinds = ", ".join(type(v).__name__ for v in values)
        raise _fail(what, f"no Tensor among the arguments ({kinds})", name=name)
    if len(nets) > 1:
        names = ", ".join(f"'{n.name}'" for n in nets.values())
        raise _fail(what, f"tensors from different networks ({names})", *values, name=name)
    return next(iter(nets.values()))


def _lift(net: Network, value: TensorLike, like: Tensor | None, op: str = "layer") -> Tensor:
    """A Tensor for ``value``: scalars (and float64 arrays) become constants of ``like``'s dtype.

    A value that the dtype cannot hold (2.5 for an int32 tensor, 1e6 for float16) is an error
    rather than a silent truncation or overflow.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float, np.number, np.bool_)) or (
        isinstance(value, np.ndarray)
    ):
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
                raise _fail(
                    op,
                    f"value {shown!r} cannot be represented in {like.dtype} (the dtype of "
                    f"'{like.name}'); cast explicitly",
                    like,
                )
            arr = cast
        return net.constant(arr)
    raise _fail(op, f"expected a Tensor, NumPy array or number, got {type(value).__name__}", like)


def _binary(kind: str, a: TensorLike, b: TensorLike, name: str | None) -> Tensor:
    net = _network(a, b, op=kind, name=name)
    like = a if isinstance(a, Tensor) else b
    x, y = _lift(net, a, like, kind), _lift(net, b, like, kind)
    return net.add_layer(ELEMENTWISE, (x, y), {"kind": kind}, name=name, base=kind)[0]


def _unary(op: Any, kind: str, x: Tensor, name: str | None) -> Tensor:
    return _network(x, op=kind, name=name).add_layer(
        op, (x,), {"kind": kind}, name=name, base=kind
    )[0]


# -- elementwise ---------------------------------------------------------------------------
def add(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a + b`` with broadcasting. ``F.add(x, 1.0)``"""
    return _binary("add", a, b, name)


def sub(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a - b``."""
    return _binary("sub", a, b, name)


def mul(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a * b``."""
    return _binary("mul", a, b, name)


def div(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a / b`` (ints: rounds toward zero)."""
    return _binary("div", a, b, name)


def floor_div(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a // b`` (rounds toward minus infinity)."""
    return _binary("floor_div", a, b, name)


def pow(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:  # noqa: A001
    """``a ** b`` (floats)."""
    return _binary("pow", a, b, name)


def minimum(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """Elementwise minimum."""
    return _binary("min", a, b, name)


def maximum(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """Elementwise maximum."""
    return _binary("max", a, b, name)


def equal(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a == b`` as bool."""
    return _binary("equal", a, b, name)


def less(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a < b`` as bool."""
    return _binary("less", a, b, name)


def greater(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a > b`` as bool."""
    return _binary("greater", a, b, name)


def less_equal(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a <= b`` as bool (two layers: not greater)."""
    return logical_not(greater(a, b), name=name)


def greater_equal(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a >= b`` as bool (two layers: not less)."""
    return logical_not(less(a, b), name=name)


def not_equal(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``a != b`` as bool (two layers: not equal)."""
    return logical_not(equal(a, b), name=name)


def logical_and(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """Bool ``a and b``."""
    return _binary("and", a, b, name)


def logical_or(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """Bool ``a or b``."""
    return _binary("or", a, b, name)


def logical_xor(a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """Bool ``a xor b``."""
    return _binary("xor", a, b, name)


def logical_not(x: Tensor, name: str | None = None) -> Tensor:
    """Bool not."""
    return _unary(UNARY, "not", x, name)


def exp(x: Tensor, name: str | None = None) -> Tensor:
    """``e ** x``."""
    return _unary(UNARY, "exp", x, name)


def log(x: Tensor, name: str | None = None) -> Tensor:
    """Natural logarithm."""
    return _unary(UNARY, "log", x, name)


def sqrt(x: Tensor, name: str | None = None) -> Tensor:
    """Square root."""
    return _unary(UNARY, "sqrt", x, name)


def recip(x: Tensor, name: str | None = None) -> Tensor:
    """``1 / x``."""
    return _unary(UNARY, "recip", x, name)


def abs(x: Tensor, name: str | None = None) -> Tensor:  # noqa: A001
    """Absolute value."""
    return _unary(UNARY, "abs", x, name)


def neg(x: Tensor, name: str | None = None) -> Tensor:
    """``-x``."""
    return _unary(UNARY, "neg", x, name)


def tanh(x: Tensor, name: str | None = None) -> Tensor:
    """Hyperbolic tangent."""
    return _unary(UNARY, "tanh", x, name)


def erf(x: Tensor, name: str | None = None) -> Tensor:
    """Error function."""
    return _unary(UNARY, "erf", x, name)


def sin(x: Tensor, name: str | None = None) -> Tensor:
    """Sine."""
    return _unary(UNARY, "sin", x, name)


def cos(x: Tensor, name: str | None = None) -> Tensor:
    """Cosine."""
    return _unary(UNARY, "cos", x, name)


def floor(x: Tensor, name: str | None = None) -> Tensor:
    """Round down."""
    return _unary(UNARY, "floor", x, name)


def ceil(x: Tensor, name: str | None = None) -> Tensor:
    """Round up."""
    return _unary(UNARY, "ceil", x, name)


# -- activations ---------------------------------------------------------------------------
def relu(x: Tensor, name: str | None = None) -> Tensor:
    """``max(x, 0)``."""
    return _unary(ACTIVATION, "relu", x, name)


def sigmoid(x: Tensor, name: str | None = None) -> Tensor:
    """``1 / (1 + exp(-x))``."""
    return _unary(ACTIVATION, "sigmoid", x, name)


def gelu(x: Tensor, approximate: str = "none", name: str | None = None) -> Tensor:
    """GELU; ``approximate="none"`` uses erf, ``"tanh"`` the tanh approximation."""
    kinds = {"none": "gelu_erf", "erf": "gelu_erf", "tanh": "gelu_tanh"}
    if approximate not in kinds:
        raise _fail(
            "gelu", f"approximate must be 'none' or 'tanh', got {approximate!r}", x, name=name
        )
    return _unary(ACTIVATION, kinds[approximate], x, name)


def silu(x: Tensor, name: str | None = None) -> Tensor:
    """``x * sigmoid(x)``."""
    return _unary(ACTIVATION, "silu", x, name)


# -- linear algebra ------------------------------------------------------------------------
def matmul(
    a: TensorLike,
    b: TensorLike,
    transpose_a: bool = False,
    transpose_b: bool = False,
    name: str | None = None,
) -> Tensor:
    """Matrix product with batch broadcasting. ``F.matmul(q, k, transpose_b=True)``"""
    net = _network(a, b, op="matmul", name=name)
    like = a if isinstance(a, Tensor) else b
    x, y = _lift(net, a, like, "matmul"), _lift(net, b, like, "matmul")
    attrs = {"transpose_a": bool(transpose_a), "transpose_b": bool(transpose_b)}
    return net.add_layer(MATMUL, (x, y), attrs, name=name)[0]


def softmax(x: Tensor, axis: int = -1, name: str | None = None) -> Tensor:
    """Softmax over ``axis``."""
    return _network(x, op="softmax", name=name).add_layer(SOFTMAX, (x,), {"axis": axis}, name=name)[
        0
    ]


def _reduce(kind: str, x: Tensor, axis: Any, keepdims: bool, name: str | None) -> Tensor:
    attrs = {"kind": kind, "axes": axis, "keepdims": bool(keepdims)}
    net = _network(x, op=f"reduce_{kind}", name=name)
    return net.add_layer(REDUCE, (x,), attrs, name=name, base=f"reduce_{kind}")[0]


def reduce_sum(
    x: Tensor, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Tensor:
    """Sum over ``axis`` (int, tuple, or None for all)."""
    return _reduce("sum", x, axis, keepdims, name)


def reduce_mean(
    x: Tensor, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Tensor:
    """Mean over ``axis``."""
    return _reduce("mean", x, axis, keepdims, name)


def reduce_max(
    x: Tensor, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Tensor:
    """Maximum over ``axis``."""
    return _reduce("max", x, axis, keepdims, name)


def reduce_min(
    x: Tensor, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Tensor:
    """Minimum over ``axis``."""
    return _reduce("min", x, axis, keepdims, name)


def reduce_prod(
    x: Tensor, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Tensor:
    """Product over ``axis``."""
    return _reduce("prod", x, axis, keepdims, name)


def layer_norm(
    x: Tensor,
    scale: TensorLike,
    bias: TensorLike,
    axes: Any = -1,
    eps: float = 1e-5,
    name: str | None = None,
) -> Tensor:
    """Layer normalization over trailing ``axes``; scale/bias have the normalized shape."""
    net = _network(x, scale, bias, op="layer_norm", name=name)
    s, b = _lift(net, scale, x, "layer_norm"), _lift(net, bias, x, "layer_norm")
    attrs = {"kind": "layer", "axes": axes, "eps": float(eps)}
    return net.add_layer(NORMALIZATION, (x, s, b), attrs, name=name, base="layer_norm")[0]


def rms_norm(
    x: Tensor, scale: TensorLike, axes: Any = -1, eps: float = 1e-6, name: str | None = None
) -> Tensor:
    """RMS normalization ``x / sqrt(mean(x**2) + eps) * scale`` over trailing ``axes``."""
    net = _network(x, scale, op="rms_norm", name=name)
    s = _lift(net, scale, x, "rms_norm")
    attrs = {"kind": "rms", "axes": axes, "eps": float(eps)}
    return net.add_layer(NORMALIZATION, (x, s), attrs, name=name, base="rms_norm")[0]


# -- data movement -------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def reshape(x: Tensor, shape: Sequence[int], name: str | None = None) -> Tensor:
    """Reshape; 0 copies the input dim, -1 is inferred. ``F.reshape(x, (0, -1))``"""
    net = _network(x, op="reshape", name=name)
    if _is_int(shape):
        shape = (shape,)
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise _fail("reshape", f"dims must be ints, got {shape!r}", x, name=name) from None
    return net.add_layer(RESHAPE, (x,), {"dims": dims}, name=name)[0]


def transpose(x: Tensor, perm: Sequence[int] | None = None, name: str | None = None) -> Tensor:
    """Permute axes (default: reverse them)."""
    net = _network(x, op="transpose", name=name)
    p = None if perm is None else tuple(perm)
    return net.add_layer(TRANSPOSE, (x,), {"perm": p}, name=name)[0]


permute = transpose


def _regroup(x: Tensor, keep: Sequence[int | None], name: str | None) -> Tensor:
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


def expand_dims(x: Tensor, axis: int, name: str | None = None) -> Tensor:
    """Insert a dimension of size 1 at ``axis`` (a reshape)."""
    _network(x, op="expand_dims", name=name)
    r = x.ndim + 1
    if not _is_int(axis) or not -r <= axis < r:
        raise _fail(
            "expand_dims", f"axis {axis!r} is out of range for an output of rank {r}", x, name=name
        )
    keep: list[int | None] = list(range(x.ndim))
    keep.insert(int(axis) % r, None)
    return _regroup(x, keep, name)


def squeeze(x: Tensor, axis: int, name: str | None = None) -> Tensor:
    """Remove dimension ``axis``, which must have size 1 (a reshape)."""
    _network(x, op="squeeze", name=name)
    if not _is_int(axis) or not -x.ndim <= axis < x.ndim:
        raise _fail("squeeze", f"axis {axis!r} is out of range for rank {x.ndim}", x, name=name)
    axis = int(axis) % x.ndim
    if x.shape[axis] != 1:
        d = "?" if x.shape[axis] is None else x.shape[axis]
        raise _fail("squeeze", f"axis {axis} has size {d}, not 1", x, name=name)
    return _regroup(x, [a for a in range(x.ndim) if a != axis], name)


def concat(tensors: Sequence[Tensor], axis: int = 0, name: str | None = None) -> Tensor:
    """Concatenate along ``axis``."""
    tensors = list(tensors)
    net = _network(*tensors, op="concat", name=name)
    return net.add_layer(CONCAT, tensors, {"axis": axis}, name=name)[0]


def slice(
    x: Tensor,
    start: Sequence[int],
    size: Sequence[int],  # noqa: A001
    stride: Sequence[int] | None = None,
    name: str | None = None,
) -> Tensor:
    """Static strided slice: ``size[i]`` elements from ``start[i]`` every ``stride[i]``."""
    net = _network(x, op="slice", name=name)
    stride = (1,) * len(start) if stride is None else tuple(stride)
    attrs = {"start": tuple(start), "size": tuple(size), "stride": stride}
    return net.add_layer(SLICE, (x,), attrs, name=name)[0]


def getitem(x: Tensor, index: Any) -> Tensor:
    """Basic NumPy indexing (ints, slices with positive steps, ``...``, ``None``)."""
    _network(x, op="getitem")

    def fail(message: str) -> DefinitionError:
        return _fail("getitem", f"index {index!r}: {message}", x)

    idx = index if isinstance(index, tuple) else (index,)
    if builtins.sum(i is Ellipsis for i in idx) > 1:
        raise fail("an index can only have one '...'")
    used = builtins.sum(1 for i in idx if i is not None and i is not Ellipsis)
    if used > x.ndim:
        raise fail(f"too many indices for a tensor of rank {x.ndim}")
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
                raise fail(f"slicing dynamic dim {axis} is not supported (only ':')")
            if d is None:
                s, n, st = 0, None, 1
            else:
                try:
                    s, e, st = i.indices(d)
                except (TypeError, ValueError) as exc:
                    raise fail(str(exc)) from None
                if st < 1:
                    raise fail(f"step {i.step} is not supported (steps must be positive)")
                n = builtins.max(0, (e - s + st - 1) // st)
                s = s if n else 0
            start.append(s)
            size.append(n)
            stride.append(st)
            keep.append(axis)
        elif _is_int(i):
            if d is None:
                raise fail(f"indexing dynamic dim {axis} is not supported")
            if not -d <= i < d:
                raise fail(f"index {i} is out of range for dim {axis} of size {d}")
            start.append(int(i) % d)
            size.append(1)
            stride.append(1)
        else:
            raise fail(f"unsupported index {i!r} (use ints, slices, '...' or None)")
        axis += 1
    y = slice(x, start, size, stride)
    if keep != list(range(x.ndim)):
        y = _regroup(y, keep, None)
    return y


def split(
    x: Tensor, sections: int | Sequence[int], axis: int = 0, name: str | None = None
) -> list[Tensor]:
    """Split into ``sections`` equal pieces, or pieces of the given sizes."""
    net = _network(x, op="split", name=name)
    sizes = int(sections) if _is_int(sections) else tuple(sections)
    return net.add_layer(SPLIT, (x,), {"axis": axis, "sizes": sizes}, name=name)


def gather(x: Tensor, indices: TensorLike, axis: int = 0, name: str | None = None) -> Tensor:
    """Take slices of ``x`` along ``axis`` at ``indices`` (int32/int64).

    Constant indices may be negative (NumPy style) when the axis has a static size: they are
    wrapped here, because TensorRT's gather needs indices in [0, size). Index tensors fed at
    run time must already be in [0, size).
    """
    net = _network(x, op="gather", name=name)
    if isinstance(indices, Tensor):
        idx = indices
    else:
        arr = np.asarray(indices)
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise _fail("gather", f"indices must be integers, got {arr.dtype}", x, name=name)
        arr = arr.astype(np.int64)
        if arr.size and _is_int(axis) and -x.ndim <= axis < x.ndim:
            n = x.shape[int(axis) % x.ndim]
            lo, hi = int(arr.min()), int(arr.max())
            if n is None and lo < 0:
                raise _fail(
                    "gather",
                    f"negative index {lo} on dynamic axis {axis} (TensorRT needs [0, size))",
                    x,
                    name=name,
                )
            if n is not None and not (-n <= lo and hi < n):
                bad = lo if lo < -n else hi
                raise _fail(
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


def cast(x: Tensor, dtype: Any, name: str | None = None) -> Tensor:
    """Convert to ``dtype`` ('float16', td.bfloat16, ...)."""
    net = _network(x, op="cast", name=name)
    try:
        dt = dtypes.as_dtype(dtype)
    except ValueError as e:
        raise _fail("cast", str(e), x, name=name) from None
    return net.add_layer(CAST, (x,), {"dtype": dt}, name=name)[0]


def identity(x: Tensor, name: str | None = None) -> Tensor:
    """A copy of ``x``."""
    return _network(x, op="identity", name=name).add_layer(IDENTITY, (x,), {}, name=name)[0]


def select(condition: Tensor, a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``where(condition, a, b)`` with broadcasting."""
    net = _network(condition, a, b, op="select", name=name)
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    c = _lift(net, condition, None, "select")
    x, y = _lift(net, a, like, "select"), _lift(net, b, like, "select")
    return net.add_layer(SELECT, (c, x, y), {}, name=name)[0]


where = select


def clip(x: Tensor, low: TensorLike, high: TensorLike, name: str | None = None) -> Tensor:
    """``min(max(x, low), high)`` (two layers)."""
    return minimum(maximum(x, low), high, name=name)


# -- collectives ---------------------------------------------------------------------------
def collective(
    x: Tensor,
    op: str,
    reduce: str | None = None,
    root: int | None = None,
    groups: Any = None,
    name: str | None = None,
) -> Tensor:
    """TensorRT 11's IDistCollectiveLayer: ``op`` one of all_reduce, broadcast, reduce,
    all_gather, reduce_scatter, all_to_all, gather, scatter; ``reduce`` one of sum, prod, max,
    min, avg (reducing ops only); ``root`` an index into the group (rooted ops); ``groups``
    None (all ranks) or a partition such as ``[[0, 1], [2, 3]]``.

    >>> y = x.collective("reduce_scatter", reduce="sum")      # doctest: +SKIP
    """
    net = _network(x)
    attrs = {
        "op": op,
        "reduce": reduce,
        "root": root,
        "groups": groups,
        "world_size": net.world_size,
        "rank": net.rank,
    }
    return net.add_layer(COLLECTIVE, (x,), attrs, name=name, base=str(op))[0]


def all_reduce(
    x: Tensor, reduce: str = "sum", groups: Any = None, name: str | None = None
) -> Tensor:
    """Reduce over ranks; every rank gets the result."""
    return collective(x, "all_reduce", reduce=reduce, groups=groups, name=name)


def broadcast(x: Tensor, root: int = 0, groups: Any = None, name: str | None = None) -> Tensor:
    """Every rank gets the root's input."""
    return collective(x, "broadcast", root=root, groups=groups, name=name)


def reduce(
    x: Tensor, reduce: str = "sum", root: int = 0, groups: Any = None, name: str | None = None
) -> Tensor:
    """Reduce over ranks to the root (other ranks' output is undefined)."""
    return collective(x, "reduce", reduce=reduce, root=root, groups=groups, name=name)


def all_gather(x: Tensor, groups: Any = None, name: str | None = None) -> Tensor:
    """Concatenate every rank's input along axis 0, on every rank."""
    return collective(x, "all_gather", groups=groups, name=name)


def reduce_scatter(
    x: Tensor, reduce: str = "sum", groups: Any = None, name: str | None = None
) -> Tensor:
    """Reduce over ranks, then rank i keeps chunk i of axis 0."""
    return collective(x, "reduce_scatter", reduce=reduce, groups=groups, name=name)


def all_to_all(x: Tensor, groups: Any = None, name: str | None = None) -> Tensor:
    """Chunk j of axis 0 goes to rank j; chunks received are concatenated in rank order."""
    return collective(x, "all_to_all", groups=groups, name=name)


def gather_collective(
    x: Tensor, root: int = 0, groups: Any = None, name: str | None = None
) -> Tensor:
    """The GATHER collective: like all_gather, but only the root's output is defined."""
    return collective(x, "gather", root=root, groups=groups, name=name)


def scatter(x: Tensor, root: int = 0, groups: Any = None, name: str | None = None) -> Tensor:
    """Rank i gets chunk i of axis 0 of the root's input."""
    return collective(x, "scatter", root=root, groups=groups, name=name)


__all__ = [
    n
    for n in dir()
    if not n.startswith("_")
    and n
    not in {
        "annotations",
        "builtins",
        "operator",
        "np",
        "dtypes",
        "Any",
        "Sequence",
        "TYPE_CHECKING",
        "Tensor",
        "DefinitionError",
        "user_location",
        "TensorLike",
    }
    and n.upper() != n
]
