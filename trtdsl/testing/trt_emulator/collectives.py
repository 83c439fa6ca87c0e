"""IDistCollectiveLayer across in-process ranks.

Each rank evaluates its own recorded network in a thread; a collective layer deposits its
input in a :class:`Communicator` under (group, n-th collective of that group) and waits for the
group's other members. Semantics (TensorRT's DistCollective operator page, the 11.4 bindings):
every operation works on axis 0; ``groups``, ``root`` and ``num_ranks`` follow
:data:`trtdsl.backends.tensorrt.lowering.SUBGROUP_RULE` (imported here, so lowering and emulator
cannot disagree): ``groups`` the ordered global ranks taking part (empty or None: every rank),
``root`` the root's global rank (-1 where there is none), ``num_ranks`` the group size.
Chunk ``i`` of a split goes to the group's ``i``-th member; gathers concatenate in group
order. Outputs TensorRT leaves unwritten (REDUCE and GATHER on non-roots) are poisoned: NaN for
floats, the type's minimum for integers, so that any use shows up.
"""

from __future__ import annotations

import operator
import threading
from typing import Any

import numpy as np

from trtdsl.backends.tensorrt.lowering import (
    NUM_RANKS_IS_GROUP_SIZE,
    ROOT_IS_GLOBAL_RANK,
    SUBGROUP_RULE,
)

from .graph import EmulatorError, LayerView, enum_name, is_float, type_name
from .reductions import reduce_values

REDUCING = ("ALL_REDUCE", "REDUCE", "REDUCE_SCATTER")
ROOTED = ("BROADCAST", "REDUCE", "GATHER", "SCATTER")
SPLITTING = ("REDUCE_SCATTER", "SCATTER", "ALL_TO_ALL")


class Communicator:
    """Rendezvous of ``world_size`` in-process ranks (one per thread)."""

    def __init__(self, world_size: int, timeout: float = 30.0) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        self.world_size = world_size
        self.timeout = timeout
        self._cond = threading.Condition()
        self._slots: dict[tuple, dict[int, Any]] = {}
        self._counts: dict[tuple[int, tuple[int, ...]], int] = {}
        self._failed: str | None = None

    def abort(self, reason: str) -> None:
        """Wake every waiting rank with an error (a rank failed)."""
        with self._cond:
            self._failed = self._failed or reason
            self._cond.notify_all()

    def exchange(self, rank: int, group: tuple[int, ...], item: Any, what: str) -> list[Any]:
        """Every member's ``item`` in group order, once all members of ``group`` called."""
        with self._cond:
            n = self._counts.get((rank, group), 0)
            self._counts[(rank, group)] = n + 1
            key = (group, n)
            slot = self._slots.setdefault(key, {})
            slot[rank] = item
            self._cond.notify_all()
            ok = self._cond.wait_for(
                lambda: self._failed is not None or len(slot) == len(group), self.timeout
            )
            if self._failed is not None:
                raise EmulatorError(f"rank {rank}, {what}: another rank failed: {self._failed}")
            if not ok:
                missing = sorted(set(group) - set(slot))
                raise EmulatorError(
                    f"rank {rank}, {what}: timed out after {self.timeout}s waiting for ranks "
                    f"{missing} of group {list(group)} (collective #{n} of that group)"
                )
            return [slot[r] for r in group]


def _poison(shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    if is_float(np.zeros(0, dt)):
        return np.full(shape, np.nan, np.float32).astype(dt)
    if dt.kind == "b":
        return np.zeros(shape, dt)
    return np.full(shape, np.iinfo(dt).min, dt)


def _reduce(op: str, xs: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(xs)
    if op == "AVG" and not is_float(stacked):
        raise EmulatorError(f"ReduceOperation.AVG of {type_name(stacked.dtype)} is not modelled")
    return reduce_values(op, stacked, (0,), False)


def dist_collective(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """One collective layer on this rank (``ev.rank`` of ``ev.comm``)."""
    v.allow("num_ranks")
    (x,) = ins
    op = enum_name(v.args.get("dist_collective_op"), v.where())
    red = enum_name(v.args.get("reduce_op"), v.where())
    root = operator.index(v.args.get("root"))
    groups = v.args.get("groups")
    comm: Communicator | None = ev.comm
    size = comm.world_size if comm is not None else 1
    group = tuple(range(size)) if not groups else tuple(operator.index(r) for r in groups)
    if v.set_names[:1] != ["num_ranks"] and "num_ranks" in v.set_names:
        raise v.fail("num_ranks must be set right after the layer is created")
    n = operator.index(v.prop("num_ranks", 1))
    if op not in REDUCING + ROOTED + ("ALL_GATHER", "ALL_TO_ALL"):
        raise v.unsupported(f"CollectiveOperation.{op}")
    if (red == "NONE") == (op in REDUCING):
        raise v.fail(f"{op} with ReduceOperation.{red} (NONE exactly for non-reducing ops)")
    if len(set(group)) != len(group) or any(not 0 <= r < size for r in group):
        raise v.fail(f"groups {list(group)} are not distinct ranks of a world of {size}")
    if ev.rank not in group:
        raise v.fail(f"rank {ev.rank} is not in its own group {list(group)}")
    want = len(group) if NUM_RANKS_IS_GROUP_SIZE else size
    if n != want:
        raise v.fail(f"num_ranks is {n}, expected {want} ({SUBGROUP_RULE}; group {list(group)})")
    if op in ROOTED and not ROOT_IS_GLOBAL_RANK:
        root = group[root] if 0 <= root < len(group) else -2  # an index into the group
    if op in ROOTED and root not in group:
        raise v.fail(f"root {root} is not a (global) rank of the group {list(group)}")
    if op not in ROOTED and root != -1:
        raise v.fail(f"{op} has no root: pass -1, not {root}")
    if x.ndim == 0:
        raise v.fail("collectives need an input of rank >= 1 (they work on axis 0)")
    if op in SPLITTING and x.shape[0] % n:
        raise v.fail(f"{op}: axis 0 of size {x.shape[0]} does not split into {n} chunks")
    me = group.index(ev.rank)
    if comm is None:
        if len(group) != 1:
            raise v.fail(f"a group of {len(group)} ranks needs a Communicator")
        items = [(op, red, root, x)]
    else:
        items = comm.exchange(ev.rank, group, (op, red, root, x), v.where())
    for o, r, rt, t in items:
        if (o, r, rt) != (op, red, root) or t.dtype != x.dtype:
            raise v.fail(
                f"ranks disagree: ({op}, {red}, root {root}, {type_name(x.dtype)}) here vs "
                f"({o}, {r}, root {rt}, {type_name(t.dtype)})"
            )
        if t.shape != x.shape:  # NCCL moves equal counts from every rank
            raise v.fail(f"ranks disagree on the shape: {x.shape} here vs {t.shape}")
    xs = [t for *_, t in items]
    is_root = op in ROOTED and ev.rank == root
    if op == "ALL_REDUCE":
        out = _reduce(red, xs)
    elif op == "REDUCE":
        out = _reduce(red, xs) if is_root else _poison(x.shape, x.dtype)
    elif op == "BROADCAST":
        out = xs[group.index(root)].copy()
    elif op == "ALL_GATHER":
        out = np.concatenate(xs, axis=0)
    elif op == "GATHER":
        out = (
            np.concatenate(xs, axis=0)
            if is_root
            else _poison((x.shape[0] * n,) + x.shape[1:], x.dtype)
        )
    elif op == "REDUCE_SCATTER":
        out = np.split(_reduce(red, xs), n, axis=0)[me]
    elif op == "SCATTER":
        out = np.split(xs[group.index(root)], n, axis=0)[me]
    else:  # ALL_TO_ALL: chunk `me` of every member's input, in group order
        out = np.concatenate([np.split(t, n, axis=0)[me] for t in xs], axis=0)
    return [out.copy(order="C")]
