"""The collective op (TensorRT 11's IDistCollectiveLayer): shape rule, multi-rank semantics and
lowering, declared once.

All eight collectives work on axis 0. For a group of ``n`` ranks, each holding ``x`` of shape
``[d0, ...]``:

=============== ================================= ===================================
op              output shape                      output on group member ``i``
=============== ================================= ===================================
all_reduce      ``[d0, ...]``                     reduce over members
broadcast       ``[d0, ...]``                     the root's input
reduce          ``[d0, ...]``                     root: reduce over members; others undefined
all_gather      ``[n*d0, ...]``                   members' inputs concatenated in group order
reduce_scatter  ``[d0/n, ...]``                   chunk ``i`` of the reduction
all_to_all      ``[d0, ...]``                     chunk ``i`` of every member, concatenated
gather          ``[n*d0, ...]``                   root: as all_gather; others undefined
scatter         ``[d0/n, ...]``                   chunk ``i`` of the root's input
=============== ================================= ===================================

``root`` is an index into the rank's group (with ``groups=None`` that is the global rank).
The NumPy backend fills "undefined" outputs with NaN (floats) or the type's minimum (ints).

>>> import trtdsl as td
>>> net = td.Network("ar", world=td.StaticWorld(size=4, rank=0))
>>> y = net.input("x", (8, 16)).all_reduce("sum")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import dtypes
from ..ir import Layer, TensorType, Value
from .api import public
from .base import LoweringContext, OpDef, RunContext
from .building import network_of, refuse_quantized

COLLECTIVE_OPS: tuple[str, ...] = (
    "all_reduce",
    "broadcast",
    "reduce",
    "all_gather",
    "reduce_scatter",
    "all_to_all",
    "gather",
    "scatter",
)
REDUCE_OPS: tuple[str, ...] = ("sum", "prod", "max", "min", "avg")
REDUCING = frozenset({"all_reduce", "reduce", "reduce_scatter"})
ROOTED = frozenset({"broadcast", "reduce", "gather", "scatter"})
SPLITTING = frozenset({"reduce_scatter", "all_to_all", "scatter"})
ALLOWED_DTYPES = (
    dtypes.float32,
    dtypes.float16,
    dtypes.bfloat16,
    dtypes.int8,
    dtypes.int32,
    dtypes.int64,
)


@dataclass(frozen=True)
class CollectiveSpec:
    """A validated collective as one rank sees it: op, reduce op, root (group index), the rank's
    own ordered group of global ranks, and the full partition of ranks into groups."""

    op: str
    reduce: str | None
    root: int | None
    group: tuple[int, ...]
    partition: tuple[tuple[int, ...], ...]

    @property
    def n(self) -> int:
        return len(self.group)

    def root_rank(self) -> int | None:
        """The root's global rank, or None."""
        return None if self.root is None else self.group[self.root]


def _is_rank(r: Any) -> bool:
    return isinstance(r, (int, np.integer)) and not isinstance(r, (bool, np.bool_))


def normalize_groups(groups: Any, size: int) -> tuple[tuple[int, ...], ...]:
    """None -> one group of all ranks; [0, 1, 2, 3] -> one ordered group (must hold every rank);
    [[0, 1], [2, 3]] -> a partition of range(size). ValueError with the reason otherwise."""
    if groups is None or (isinstance(groups, Sequence) and len(groups) == 0):
        return (tuple(range(size)),)
    if not isinstance(groups, Sequence) or isinstance(groups, str):
        raise ValueError(f"groups must be None, a list of ranks or a list of lists, got {groups!r}")
    if all(_is_rank(g) for g in groups):
        groups = [groups]
    parts: list[tuple[int, ...]] = []
    for g in groups:
        if not isinstance(g, Sequence) or isinstance(g, str) or not all(_is_rank(r) for r in g):
            raise ValueError(f"each group must be a list of int ranks, got {g!r}")
        if len(g) == 0:
            raise ValueError("groups must not be empty")
        parts.append(tuple(int(r) for r in g))
    seen = [r for g in parts for r in g]
    bad = sorted({r for r in seen if not 0 <= r < size})
    if bad:
        raise ValueError(f"groups name ranks {bad} outside the world of {size} ranks")
    dup = sorted({r for r in seen if seen.count(r) > 1})
    missing = sorted(set(range(size)) - set(seen))
    if dup or missing:
        what = []
        if dup:
            what.append(f"ranks {dup} appear more than once")
        if missing:
            what.append(f"ranks {missing} are in no group")
        raise ValueError(
            f"groups {[list(g) for g in parts]} are not a partition of ranks 0..{size - 1}: "
            + "; ".join(what)
        )
    return tuple(parts)


def poison(xp: Any, shape: tuple, dtype: np.dtype) -> Any:
    """An array marking undefined output: NaN for floats, the minimum for ints."""
    if np.issubdtype(dtype, np.integer):
        return xp.full(shape, np.iinfo(dtype).min, dtype=dtype)
    return xp.full(shape, np.nan, dtype=dtype)


def _reduce(xp: Any, arrays: list[Any], how: str, dtype: np.dtype) -> Any:
    compute = (
        np.float32 if (dtype.kind == "f" or dtype.kind == "V") and dtype.itemsize < 4 else None
    )
    stack = xp.stack([a.astype(compute) if compute else a for a in arrays])
    if how == "sum":
        out = stack.sum(axis=0, dtype=stack.dtype)
    elif how == "prod":
        out = stack.prod(axis=0, dtype=stack.dtype)
    elif how == "max":
        out = stack.max(axis=0)
    elif how == "min":
        out = stack.min(axis=0)
    else:
        out = stack.sum(axis=0, dtype=stack.dtype) / len(arrays)
    return out.astype(dtype)


def simulate(spec: CollectiveSpec, arrays: list[Any], xp: Any = np) -> list[Any]:
    """Every group member's output, from every member's input (in group order).

    This is the single definition of the collectives' semantics used by the NumPy backend.
    """
    n = len(arrays)
    x0 = arrays[0]
    dtype = x0.dtype
    op = spec.op
    if op == "all_reduce":
        r = _reduce(xp, arrays, spec.reduce, dtype)
        return [r.copy() for _ in range(n)]
    if op == "broadcast":
        return [arrays[spec.root].copy() for _ in range(n)]
    if op == "reduce":
        r = _reduce(xp, arrays, spec.reduce, dtype)
        return [r if i == spec.root else poison(xp, x0.shape, dtype) for i in range(n)]
    if op == "all_gather":
        cat = xp.concatenate(arrays, axis=0)
        return [cat.copy() for _ in range(n)]
    if op == "gather":
        cat = xp.concatenate(arrays, axis=0)
        return [cat if i == spec.root else poison(xp, cat.shape, dtype) for i in range(n)]
    c = x0.shape[0] // n
    if op == "reduce_scatter":
        r = _reduce(xp, arrays, spec.reduce, dtype)
        return [r[i * c : (i + 1) * c].copy() for i in range(n)]
    if op == "scatter":
        src = arrays[spec.root]
        return [src[i * c : (i + 1) * c].copy() for i in range(n)]
    if op == "all_to_all":
        return [xp.concatenate([a[i * c : (i + 1) * c] for a in arrays], axis=0) for i in range(n)]
    raise ValueError(f"unknown collective {op!r}")


def output_shape(op: str, shape: tuple, n: int) -> tuple:
    """Output shape of a collective over ``n`` ranks (axis 0)."""
    d0 = shape[0]
    if op in ("all_gather", "gather"):
        return (None if d0 is None else d0 * n,) + tuple(shape[1:])
    if op in ("reduce_scatter", "scatter"):
        return (None if d0 is None else d0 // n,) + tuple(shape[1:])
    return tuple(shape)


class Collective(OpDef):
    """One of the eight NCCL collectives (attrs ``op``, ``reduce``, ``root``, ``groups`` and the
    world's ``world_size`` and ``rank``, filled in when the layer is created)."""

    name = "collective"
    is_collective = True

    def resolve(self, layer: Layer) -> CollectiveSpec:
        """Check op, reduce, root and groups against the world; the rank's CollectiveSpec."""
        (x,) = layer.input_types
        a = layer.attrs
        op, size, rank = a["op"], a["world_size"], a["rank"]
        if op not in COLLECTIVE_OPS:
            raise layer.fail(f"unknown collective {op!r}; expected one of {COLLECTIVE_OPS}")
        if size is None:
            raise layer.fail(
                "world size unknown: create the network with Network(name, world=...) "
                "(MPIWorld(), a rank of InProcessWorld(n), or StaticWorld(size, rank))"
            )
        if x.dtype not in ALLOWED_DTYPES:
            names = ", ".join(d.name for d in ALLOWED_DTYPES)
            raise layer.fail(f"collectives take {names}; got {x.dtype}")
        if x.rank == 0:
            raise layer.fail("collectives work on axis 0: input needs rank >= 1")
        reduce = self._reduce_op(layer, op, a["reduce"], x.dtype)
        try:
            partition = normalize_groups(a["groups"], size)
        except ValueError as e:
            raise layer.fail(str(e)) from None
        group = next(g for g in partition if rank in g)
        root = self._root(layer, op, a["root"], group)
        return CollectiveSpec(op, reduce, root, group, partition)

    @staticmethod
    def _reduce_op(layer: Layer, op: str, reduce: Any, dtype: dtypes.DType) -> str | None:
        if isinstance(reduce, str):
            reduce = None if reduce.lower() == "none" else reduce.lower()
        if op not in REDUCING:
            if reduce is not None:
                raise layer.fail(f"{op} does not reduce: pass reduce=None, not {reduce!r}")
            return None
        if reduce is None:
            raise layer.fail(f"{op} needs a reduce op, one of {REDUCE_OPS}")
        if reduce not in REDUCE_OPS:
            raise layer.fail(f"unknown reduce op {reduce!r}; expected one of {REDUCE_OPS}")
        refuse_quantized(layer, dtype, f"{op} (reduce '{reduce}')")
        if reduce == "avg" and not dtype.is_float:
            raise layer.fail(f"reduce 'avg' needs a float input, got {dtype} (use sum and divide)")
        return reduce

    @staticmethod
    def _root(layer: Layer, op: str, root: Any, group: tuple[int, ...]) -> int | None:
        if op not in ROOTED:
            if root not in (None, -1):
                raise layer.fail(f"{op} has no root: pass root=None, not {root!r}")
            return None
        n = len(group)
        root = 0 if root is None else root
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < n:
            raise layer.fail(
                f"root {root} is outside the group {list(group)} (root is an index into "
                f"the rank's group, 0..{n - 1})"
            )
        return int(root)

    def infer(self, layer: Layer) -> list[TensorType]:
        (x,) = layer.input_types
        spec: CollectiveSpec = layer.spec
        d0, n = x.shape[0], spec.n
        if spec.op in SPLITTING and d0 is not None and d0 % n:
            raise layer.fail(
                f"{spec.op} splits axis 0 of size {d0} into {n} chunks (the size of group "
                f"{list(spec.group)}): {d0} is not divisible by {n}"
            )
        return [TensorType(output_shape(spec.op, x.shape, n), x.dtype)]

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        return [ctx.collective(layer, inputs[0])]

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
        spec: CollectiveSpec = layer.spec
        if spec.n == 1:  # world-size-1 collectives are reported to crash TensorRT: skip
            return [b.out(b.network.add_identity(inputs[0]), layer)]
        op = b.enum("CollectiveOperation", spec.op)
        red = b.enum("ReduceOperation", spec.reduce or "none")
        root = -1 if spec.root is None else b.collective_root(spec)
        lay = b.network.add_dist_collective(inputs[0], op, red, root, list(spec.group))
        # right after creation (it cannot change once > 1); lowering.SUBGROUP_RULE says what
        # root and num_ranks mean when the group is a strict subset of the world
        lay.num_ranks = b.collective_num_ranks(spec, layer.attrs.get("world_size"))
        return [b.out(lay, layer)]

    def describe(self, layer: Layer) -> str:
        spec: CollectiveSpec | None = layer.spec
        if spec is None:
            return layer.attrs["op"]
        parts = [spec.op]
        if spec.reduce:
            parts.append(spec.reduce)
        if spec.root is not None:
            parts.append(f"root={spec.root}")
        if spec.n != layer.attrs["world_size"]:
            parts.append(f"group={list(spec.group)}")
        return f"{parts[0]}({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]

    def fingerprint(self, layer: Layer, shape: tuple | None = None) -> tuple:
        """What ranks must agree on before running this collective."""
        spec: CollectiveSpec = layer.spec
        t = layer.input_types[0]
        return (
            spec.op,
            spec.reduce,
            spec.root,
            spec.partition,
            t.dtype.name,
            tuple(t.shape) if shape is None else tuple(shape),
        )


COLLECTIVE = Collective()


# -- builders ------------------------------------------------------------------------------
@public("collectives")
def collective(
    x: Value,
    op: str,
    reduce: str | None = None,
    root: int | None = None,
    groups: Any = None,
    name: str | None = None,
) -> Value:
    """TensorRT 11's IDistCollectiveLayer: ``op`` one of all_reduce, broadcast, reduce,
    all_gather, reduce_scatter, all_to_all, gather, scatter; ``reduce`` one of sum, prod, max,
    min, avg (reducing ops only); ``root`` an index into the group (rooted ops); ``groups``
    None (all ranks) or a partition such as ``[[0, 1], [2, 3]]``.

    >>> y = x.collective("reduce_scatter", reduce="sum")      # doctest: +SKIP
    """
    net = network_of(x)
    attrs = {
        "op": op,
        "reduce": reduce,
        "root": root,
        "groups": groups,
        "world_size": net.world_size,
        "rank": net.rank,
    }
    return net.add_layer(COLLECTIVE, (x,), attrs, name=name, base=str(op))[0]


@public("collectives")
def all_reduce(x: Value, reduce: str = "sum", groups: Any = None, name: str | None = None) -> Value:
    """Reduce over ranks; every rank gets the result."""
    return collective(x, "all_reduce", reduce=reduce, groups=groups, name=name)


@public("collectives")
def broadcast(x: Value, root: int = 0, groups: Any = None, name: str | None = None) -> Value:
    """Every rank gets the root's input."""
    return collective(x, "broadcast", root=root, groups=groups, name=name)


@public("collectives")
def reduce_to(
    x: Value, reduce: str = "sum", root: int = 0, groups: Any = None, name: str | None = None
) -> Value:
    """The REDUCE collective: reduce over ranks to the root (other ranks' output is undefined)."""
    return collective(x, "reduce", reduce=reduce, root=root, groups=groups, name=name)


@public("collectives")
def all_gather(x: Value, groups: Any = None, name: str | None = None) -> Value:
    """Concatenate every rank's input along axis 0, on every rank."""
    return collective(x, "all_gather", groups=groups, name=name)


@public("collectives")
def reduce_scatter(
    x: Value, reduce: str = "sum", groups: Any = None, name: str | None = None
) -> Value:
    """Reduce over ranks, then rank i keeps chunk i of axis 0."""
    return collective(x, "reduce_scatter", reduce=reduce, groups=groups, name=name)


@public("collectives")
def all_to_all(x: Value, groups: Any = None, name: str | None = None) -> Value:
    """Chunk j of axis 0 goes to rank j; chunks received are concatenated in rank order."""
    return collective(x, "all_to_all", groups=groups, name=name)


@public("collectives")
def gather_to(x: Value, root: int = 0, groups: Any = None, name: str | None = None) -> Value:
    """The GATHER collective: like all_gather, but only the root's output is defined."""
    return collective(x, "gather", root=root, groups=groups, name=name)


@public("collectives")
def scatter(x: Value, root: int = 0, groups: Any = None, name: str | None = None) -> Value:
    """Rank i gets chunk i of axis 0 of the root's input."""
    return collective(x, "scatter", root=root, groups=groups, name=name)
