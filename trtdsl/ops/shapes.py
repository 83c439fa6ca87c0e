"""Shape arithmetic shared by the shape rules (None is a dynamic dimension)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..ir import Layer, Shape, format_shape


def normalize_axis(layer: Layer, axis: int, rank: int, what: str = "axis") -> int:
    """Map a possibly negative axis into [0, rank); error naming the layer if out of range."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, (bool, np.bool_)):
        raise layer.fail(f"{what} must be an int, got {axis!r}")
    axis = int(axis)
    if not -rank <= axis < rank:
        raise layer.fail(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def normalize_axes(layer: Layer, axes: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
    """Axes as sorted unique non-negative ints; None means all axes."""
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    if not isinstance(axes, (tuple, list)):
        raise layer.fail(f"axes must be an int, a tuple of ints or None, got {axes!r}")
    out = sorted({normalize_axis(layer, a, rank) for a in axes})
    if len(out) != len(tuple(axes)):
        raise layer.fail(f"repeated axis in {tuple(axes)}")
    return tuple(out)


def broadcast_dim(a: int | None, b: int | None) -> int | None | str:
    """The broadcast of two dims, or 'clash' if they cannot broadcast."""
    if a == 1:
        return b
    if b == 1:
        return a
    if a is None:
        return b
    if b is None:
        return a
    return a if a == b else "clash"


def broadcast_shapes(layer: Layer, *shapes: Shape) -> Shape:
    """NumPy-style broadcast of shapes (leading 1-dims are added to shorter ones)."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for i in range(rank):
        d = padded[0][i]
        for s in padded[1:]:
            d = broadcast_dim(d, s[i])
            if d == "clash":
                shown = " and ".join(format_shape(s) for s in shapes)
                raise layer.fail(f"shapes {shown} do not broadcast (dimension {i - rank})")
        out.append(d)
    return tuple(out)


def prod(dims: Sequence[int | None]) -> int | None:
    n = 1
    for d in dims:
        if d is None:
            return None
        n *= d
    return n
