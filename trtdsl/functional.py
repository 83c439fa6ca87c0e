"""The DSL as functions, one call per layer (Tensor methods call these).

>>> import numpy as np, trtdsl as td
>>> from trtdsl import functional as F
>>> net = td.Network("f")
>>> x = net.input("x", (2, 3))
>>> y = F.softmax(F.matmul(x, np.ones((3, 3), "float32")), axis=-1, name="probs")
"""

from __future__ import annotations

import builtins
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


def _network(*values: Any) -> Network:
    nets = {id(v.network): v.network for v in values if isinstance(v, Tensor)}
    if not nets:
        raise DefinitionError("no Tensor among the arguments", where=user_location())
    if len(nets) > 1:
        names = ", ".join(f"'{n.name}'" for n in nets.values())
        raise DefinitionError(f"tensors from different networks ({names})", where=user_location())
    return next(iter(nets.values()))


def _lift(net: Network, value: TensorLike, like: Tensor | None) -> Tensor:
    """A Tensor for ``value``: scalars and arrays become constants of ``like``'s dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float, np.number, np.bool_)) or (
        isinstance(value, np.ndarray)
    ):
        arr = np.asarray(value)
        if like is not None and (np.ndim(value) == 0 or arr.dtype == np.float64):
            arr = arr.astype(like.dtype.numpy)
        return net.constant(arr)
    raise DefinitionError(
        f"expected a Tensor, NumPy array or number, got {type(value).__name__}",
        where=user_location(),
    )


def _binary(kind: str, a: TensorLike, b: TensorLike, name: str | None) -> Tensor:
    net = _network(a, b)
    like = a if isinstance(a, Tensor) else b
    x, y = _lift(net, a, like), _lift(net, b, like)
    return net.add_layer(ELEMENTWISE, (x, y), {"kind": kind}, name=name, base=kind)[0]


def _unary(op: Any, kind: str, x: Tensor, name: str | None) -> Tensor:
    return _network(x).add_layer(op, (x,), {"kind": kind}, name=name, base=kind)[0]


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
        raise DefinitionError(
            f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}",
            where=user_location(),
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
    net = _network(a, b)
    like = a if isinstance(a, Tensor) else b
    x, y = _lift(net, a, like), _lift(net, b, like)
    attrs = {"transpose_a": bool(transpose_a), "transpose_b": bool(transpose_b)}
    return net.add_layer(MATMUL, (x, y), attrs, name=name)[0]


def softmax(x: Tensor, axis: int = -1, name: str | None = None) -> Tensor:
    """Softmax over ``axis``."""
    return _network(x).add_layer(SOFTMAX, (x,), {"axis": axis}, name=name)[0]


def _reduce(kind: str, x: Tensor, axis: Any, keepdims: bool, name: str | None) -> Tensor:
    attrs = {"kind": kind, "axes": axis, "keepdims": bool(keepdims)}
    return _network(x).add_layer(REDUCE, (x,), attrs, name=name, base=f"reduce_{kind}")[0]


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
    net = _network(x)
    s, b = _lift(net, scale, x), _lift(net, bias, x)
    attrs = {"kind": "layer", "axes": axes, "eps": float(eps)}
    return net.add_layer(NORMALIZATION, (x, s, b), attrs, name=name, base="layer_norm")[0]


def rms_norm(
    x: Tensor, scale: TensorLike, axes: Any = -1, eps: float = 1e-6, name: str | None = None
) -> Tensor:
    """RMS normalization ``x / sqrt(mean(x**2) + eps) * scale`` over trailing ``axes``."""
    net = _network(x)
    s = _lift(net, scale, x)
    attrs = {"kind": "rms", "axes": axes, "eps": float(eps)}
    return net.add_layer(NORMALIZATION, (x, s), attrs, name=name, base="rms_norm")[0]


# -- data movement -------------------------------------------------------------------------
def reshape(x: Tensor, shape: Sequence[int], name: str | None = None) -> Tensor:
    """Reshape; 0 copies the input dim, -1 is inferred. ``F.reshape(x, (0, -1))``"""
    if isinstance(shape, int):
        shape = (shape,)
    return _network(x).add_layer(RESHAPE, (x,), {"dims": tuple(shape)}, name=name)[0]


def transpose(x: Tensor, perm: Sequence[int] | None = None, name: str | None = None) -> Tensor:
    """Permute axes (default: reverse them)."""
    p = None if perm is None else tuple(perm)
    return _network(x).add_layer(TRANSPOSE, (x,), {"perm": p}, name=name)[0]


permute = transpose


def expand_dims(x: Tensor, axis: int, name: str | None = None) -> Tensor:
    """Insert a dimension of size 1 at ``axis`` (a reshape)."""
    r = x.ndim + 1
    if not -r <= axis < r:
        raise DefinitionError(
            f"expand_dims: axis {axis} out of range for rank {x.ndim}", where=user_location()
        )
    axis %= r
    dims = [0] * x.ndim
    dims.insert(axis, 1)
    return reshape(x, dims, name=name)


def squeeze(x: Tensor, axis: int, name: str | None = None) -> Tensor:
    """Remove dimension ``axis``, which must have size 1 (a reshape)."""
    if not -x.ndim <= axis < x.ndim or x.shape[axis] != 1:
        raise DefinitionError(
            f"squeeze: axis {axis} of shape {x.shape} is not of size 1", where=user_location()
        )
    axis %= x.ndim
    if builtins.sum(d is None for d in x.shape) > 1:
        raise DefinitionError(
            "squeeze: at most one dynamic dim is supported", where=user_location()
        )
    dims = [-1 if d is None else d for i, d in enumerate(x.shape) if i != axis]
    return reshape(x, dims, name=name)


def concat(tensors: Sequence[Tensor], axis: int = 0, name: str | None = None) -> Tensor:
    """Concatenate along ``axis``."""
    tensors = list(tensors)
    net = _network(*tensors)
    return net.add_layer(CONCAT, tensors, {"axis": axis}, name=name)[0]


def slice(
    x: Tensor,
    start: Sequence[int],
    size: Sequence[int],  # noqa: A001
    stride: Sequence[int] | None = None,
    name: str | None = None,
) -> Tensor:
    """Static strided slice: ``size[i]`` elements from ``start[i]`` every ``stride[i]``."""
    stride = (1,) * len(start) if stride is None else tuple(stride)
    attrs = {"start": tuple(start), "size": tuple(size), "stride": stride}
    return _network(x).add_layer(SLICE, (x,), attrs, name=name)[0]


def getitem(x: Tensor, index: Any) -> Tensor:
    """Basic NumPy indexing (ints, slices with positive steps, ``...``, ``None``)."""
    where = user_location()
    idx = index if isinstance(index, tuple) else (index,)
    if builtins.sum(i is Ellipsis for i in idx) > 1:
        raise DefinitionError("an index can only have one '...'", where=where)
    used = builtins.sum(1 for i in idx if i is not None and i is not Ellipsis)
    if used > x.ndim:
        raise DefinitionError(f"too many indices for tensor of rank {x.ndim}", where=where)
    if Ellipsis in idx:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (builtins.slice(None),) * (x.ndim - used) + idx[k + 1 :]
    else:
        idx = idx + (builtins.slice(None),) * (x.ndim - used)
    start, size, stride, out_dims = [], [], [], []
    axis = 0
    for i in idx:
        if i is None:
            out_dims.append(1)
            continue
        d = x.shape[axis]
        if isinstance(i, builtins.slice):
            if i == builtins.slice(None):
                start.append(0)
                size.append(d)
                stride.append(1)
                out_dims.append(-1 if d is None else d)
                axis += 1
                continue
            if d is None:
                raise DefinitionError(
                    f"slicing dynamic dim {axis} needs a static size", where=where
                )
            s, e, st = i.indices(d)
            if st < 1:
                raise DefinitionError(
                    f"negative or zero step {i.step} is not supported", where=where
                )
            n = builtins.max(0, (e - s + st - 1) // st)
            start.append(s if n else 0)
            size.append(n)
            stride.append(st)
            out_dims.append(n)
        elif isinstance(i, (int, np.integer)):
            if d is None:
                raise DefinitionError(f"indexing dynamic dim {axis} is not supported", where=where)
            if not -d <= i < d:
                raise DefinitionError(
                    f"index {i} out of range for dim {axis} of size {d}", where=where
                )
            start.append(int(i) % d)
            size.append(1)
            stride.append(1)
        else:
            raise DefinitionError(f"unsupported index {i!r}", where=where)
        axis += 1
    y = slice(x, start, size, stride)
    if tuple(out_dims) != tuple(-1 if s is None else s for s in size):
        if builtins.sum(d == -1 for d in out_dims) > 1:
            raise DefinitionError(
                "indexing that drops or adds dims supports at most one dynamic dim", where=where
            )
        y = reshape(y, out_dims)
    return y


def split(
    x: Tensor, sections: int | Sequence[int], axis: int = 0, name: str | None = None
) -> list[Tensor]:
    """Split into ``sections`` equal pieces, or pieces of the given sizes."""
    sizes = sections if isinstance(sections, int) else tuple(sections)
    return _network(x).add_layer(SPLIT, (x,), {"axis": axis, "sizes": sizes}, name=name)


def gather(x: Tensor, indices: TensorLike, axis: int = 0, name: str | None = None) -> Tensor:
    """Take slices of ``x`` along ``axis`` at ``indices`` (int32/int64)."""
    net = _network(x)
    idx = indices if isinstance(indices, Tensor) else net.constant(np.asarray(indices, np.int32))
    return net.add_layer(GATHER, (x, idx), {"axis": axis}, name=name)[0]


def cast(x: Tensor, dtype: Any, name: str | None = None) -> Tensor:
    """Convert to ``dtype`` ('float16', td.bfloat16, ...)."""
    try:
        dt = dtypes.as_dtype(dtype)
    except ValueError as e:
        raise DefinitionError(f"cast: {e}", where=user_location()) from None
    return _network(x).add_layer(CAST, (x,), {"dtype": dt}, name=name)[0]


def identity(x: Tensor, name: str | None = None) -> Tensor:
    """A copy of ``x``."""
    return _network(x).add_layer(IDENTITY, (x,), {}, name=name)[0]


def select(condition: Tensor, a: TensorLike, b: TensorLike, name: str | None = None) -> Tensor:
    """``where(condition, a, b)`` with broadcasting."""
    net = _network(condition, a, b)
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    x, y = _lift(net, a, like), _lift(net, b, like)
    return net.add_layer(SELECT, (condition, x, y), {}, name=name)[0]


where = select


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
