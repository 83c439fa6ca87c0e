"""Cross-rank agreement on collectives: fingerprints, the mismatch report, split checks.

Every rank exchanges ``(layer name, source line, fingerprint)`` entries; the ranks fail
together, with the same report, when they differ (:func:`first_mismatch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import CollectiveMismatchError, ExecutionError
from ..ops.collective import COLLECTIVE, SPLITTING


class Exchanger(Protocol):
    """What agreement needs of a world: this rank and an all-gather of plain data."""

    rank: int

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]: ...


#: A collective fingerprint entry as exchanged: (layer name, source line, fingerprint tuple),
#: the fingerprint being ``(op, reduce, root, partition, dtype name, shape)``.
Entry = tuple


def _describe(fp: tuple | None) -> str:
    if fp is None:
        return "no collective (its sequence already ended)"
    op, reduce, root, partition, dtype, shape = fp
    args = [a for a in (reduce, None if root is None else f"root={root}") if a]
    shown = "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"
    groups = "" if len(partition) == 1 else f" groups={[list(g) for g in partition]}"
    return f"{op}({', '.join(args)}) of {shown} {dtype}{groups}"


def _differ(fps: list[tuple | None]) -> bool:
    """True unless every rank holds the same (op, reduce, root, partition) and every group's
    members hold the same dtype and shape."""
    structure = {None if fp is None else fp[:4] for fp in fps}
    if len(structure) > 1 or None in structure:
        return len(structure) > 1
    for group in fps[0][3]:
        if any(not 0 <= r < len(fps) for r in group):
            return True  # the partition names ranks that did not report
        if len({fps[r] for r in group}) > 1:
            return True
    return False


def _report(entries: list[Entry | None]) -> str:
    by_value: dict[Any, list[int]] = {}
    for r, e in enumerate(entries):
        by_value.setdefault(None if e is None else e[2], []).append(r)
    lines = []
    for fp, ranks in by_value.items():
        e = entries[ranks[0]]
        where = f" (layer '{e[0]}' at {e[1]})" if e is not None else ""
        who = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks}"
        lines.append(f"  {who}: {_describe(fp)}{where}")
    return "\n".join(lines)


def first_mismatch(per_rank: Sequence[Sequence[Entry]]) -> str | None:
    """Compare every rank's collective sequence; a message naming the first differing
    collective and which ranks hold what, or None if they agree.

    Ranks must agree on (op, reduce, root, groups) everywhere, and on dtype and shape with the
    members of their own group (different groups may move different shapes). A rank whose
    sequence is shorter is reported as holding "no collective" at that position.

    >>> fp = ("all_reduce", "sum", None, ((0, 1),), "float32", (4,))
    >>> print(first_mismatch([[("a", "f.py:1", fp)], []]))
    ranks disagree on collective #0:
      rank 0: all_reduce(sum) of (4) float32 (layer 'a' at f.py:1)
      rank 1: no collective (its sequence already ended)
    """
    length = max((len(s) for s in per_rank), default=0)
    for k in range(length):
        entries = [s[k] if k < len(s) else None for s in per_rank]
        if _differ([None if e is None else e[2] for e in entries]):
            return f"ranks disagree on collective #{k}:\n" + _report(entries)
    return None


def agree_on_collective(
    world: Exchanger, layer: Any, shape: tuple, payload: Any = None
) -> list[Any]:
    """Exchange this rank's fingerprint of collective ``layer`` (with its run-time input
    ``shape``) and ``payload``; every rank raises alike if the ranks disagree or a split does not
    divide. Returns every rank's payload, in rank order."""

    entry = (layer.name, str(layer.where), COLLECTIVE.fingerprint(layer, tuple(shape)))
    gathered = world.exchange((entry, payload), f"collective '{layer.name}'", key="collective")
    entries = [g[0] for g in gathered]
    if _differ([e[2] for e in entries]):
        raise CollectiveMismatchError(
            f"rank {world.rank}: ranks disagree at run time on collective '{layer.name}' "
            f"(defined at {layer.where}):\n" + _report(entries)
        )
    check_split(layer.spec, [e[2][5] for e in entries], layer)
    return [g[1] for g in gathered]


def check_split(spec: Any, shapes: Sequence[tuple], layer: Any) -> None:
    """Run-time check (all ranks alike) that a splitting collective's axis 0 divides by the
    group size in every group; dynamic dimensions are only known now."""

    if spec.op not in SPLITTING:
        return
    bad = [(list(g), shapes[g[0]][0]) for g in spec.partition if shapes[g[0]][0] % len(g) != 0]
    if bad:
        detail = "; ".join(f"group {g}: axis 0 is {d}" for g, d in bad)
        raise ExecutionError(
            f"layer '{layer.name}' (defined at {layer.where}): {spec.op} splits axis 0 into "
            f"group-size chunks, but at run time {detail} (not divisible)"
        )
