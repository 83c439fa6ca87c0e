"""Argument checks of ``modulated_norm`` and how its shift/scale broadcasts map onto rows
(array-library neutral: reads shapes and dtypes only, so it runs without a GPU).

x ``[..., D]`` is seen as ``R`` rows of ``D``. A shift/scale broadcastable to x (D last) is
read by the kernel at element offset ``o * so + i * si`` for row ``r = o * inner + i``: the
leading dims of x split once, at ``t``, into an outer group (``o``) and an inner group
(``i``), and on each side a parameter must be either all x's sizes or all 1 (x's own size-1
dims count as either). ``[B, 1, D]`` vs ``[B, S, D]``: ``t = 1``, ``inner = S``, ``(so, si) =
(D, 0)``; ``[S, D]``: ``t = 0``, ``(0, D)``; ``[1, D]`` or ``[D]``: ``(0, 0)``.

>>> plan_rows((2, 5), [(2, 1), (1, 1)], 8)
(5, ((8, 0), (0, 0)))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .configs import NORM_DTYPES, NORM_KINDS, NORM_MAX_D
from .errors import KernelArgumentError, KernelDTypeError, KernelShapeError
from .validate import dtype_name, effective_dtype

_MAX_ROWS = 2**31 - 1


@dataclass(frozen=True)
class NormProblem:
    """What the launch needs: rows of ``d`` values, the split and per-parameter strides."""

    rows: int
    d: int
    dtype: str
    kind: str
    inner: int
    shift_strides: tuple[int, int]
    scale_strides: tuple[int, int]

    @property
    def aligned(self) -> bool:
        """D (so every row and stride) a multiple of 16 elements: vector loads."""
        return self.d % 16 == 0


def _group_kind(pairs: list[tuple[int, int]]) -> str | None:
    """'full' (every dim is x's), 'bcast' (every dim 1) or None (mixed); pairs exclude x's
    size-1 dims. An empty group is 'bcast'."""
    if all(p == 1 for _, p in pairs):
        return "bcast"
    if all(p == n for n, p in pairs):
        return "full"
    return None


def plan_rows(
    lead: Sequence[int], params: Sequence[Sequence[int]], d: int
) -> tuple[int, tuple[tuple[int, int], ...]] | None:
    """``(inner, ((so, si), ...))`` for parameters with leading dims ``params`` (each at most
    as long as x's leading dims ``lead``, sizes 1 or x's), or None if no split fits all."""
    lead = tuple(lead)
    padded = [(1,) * (len(lead) - len(p)) + tuple(p) for p in params]
    for t in range(len(lead) + 1):
        strides = []
        for p in padded:
            outer = [(n, q) for n, q in zip(lead[:t], p[:t]) if n != 1]
            inner = [(n, q) for n, q in zip(lead[t:], p[t:]) if n != 1]
            ko, ki = _group_kind(outer), _group_kind(inner)
            if ko is None or ki is None:
                break
            so = d * math.prod(p[t:]) if ko == "full" and outer else 0
            si = d if ki == "full" and inner else 0
            strides.append((so, si))
        else:
            return math.prod(lead[t:]), tuple(strides)
    return None


def _check_array(name: str, a: Any) -> None:
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise KernelArgumentError(f"{name} must be an array, got {type(a).__name__}")


def check_norm(
    x: Any,
    shift: Any,
    scale: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    kind: str = "layer",
    eps: float = 1e-6,
    as_dtype: str | None = None,
) -> NormProblem:
    """Validate ``modulated_norm``'s arguments; raises KernelArgumentError subclasses that
    name the shapes and dtypes. ``as_dtype``: 16-bit storage read as that dtype."""
    if kind not in NORM_KINDS:
        raise KernelArgumentError(f"kind must be one of {NORM_KINDS}, got {kind!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise KernelArgumentError(f"eps must be a finite number > 0, got {eps!r}")
    named = {"x": x, "shift": shift, "scale": scale, "weight": weight, "bias": bias}
    for name, a in named.items():
        if a is not None or name in ("x", "shift", "scale"):
            _check_array(name, a)
    dt = effective_dtype(x, as_dtype, NORM_DTYPES)
    if dt not in NORM_DTYPES:
        raise KernelDTypeError(f"x dtype {dt} is not supported; use one of {NORM_DTYPES}")
    stored = dtype_name(x)
    for name, a in named.items():
        if a is not None and dtype_name(a) != stored:
            raise KernelDTypeError(f"{name} dtype {dtype_name(a)} differs from x's {stored}")
    xs = tuple(x.shape)
    if len(xs) < 1 or not 1 <= xs[-1] <= NORM_MAX_D:
        raise KernelShapeError(f"x {xs} must be [..., D] with 1 <= D <= {NORM_MAX_D}")
    d, lead = xs[-1], xs[:-1]
    for name in ("weight", "bias"):
        a = named[name]
        if a is not None and tuple(a.shape) != (d,):
            raise KernelShapeError(f"{name} {tuple(a.shape)} must be [D] = ({d},) (x {xs})")
    for name in ("shift", "scale"):
        s = tuple(named[name].shape)
        ok = 1 <= len(s) <= len(xs) and s[-1] == d
        if not ok or any(q not in (1, n) for q, n in zip(s[::-1], xs[::-1])):
            raise KernelShapeError(
                f"{name} {s} must broadcast to x {xs} with D={d} last (e.g. [B, 1, D])"
            )
    rows = math.prod(lead)
    if rows > _MAX_ROWS:
        raise KernelShapeError(f"x {xs} has {rows} rows; at most {_MAX_ROWS}")
    plan = plan_rows(lead, [tuple(shift.shape)[:-1], tuple(scale.shape)[:-1]], d)
    if plan is None:
        raise KernelShapeError(
            f"shift {tuple(shift.shape)} / scale {tuple(scale.shape)} against x {xs}: the "
            "kernel reads a broadcast that splits x's leading dims once into a full and a "
            "broadcast part (e.g. [B, 1, D], [1, S, D], [S, D]); expand it first"
        )
    inner, (sh, sc) = plan
    return NormProblem(rows, d, dt, kind, inner, sh, sc)
