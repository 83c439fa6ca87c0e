"""Tensor-parallel MLP: column-parallel up (and gate), activation, row-parallel down.

Exactly one collective per block: the all_reduce of the down projection's partial sums (or a
reduce_scatter over the tokens with ``reduce="reduce_scatter"``).

>>> import numpy as np, trtdsl as td
>>> def rank_fn(world):
...     net = td.Network("mlp", world=world)
...     x = net.input("x", (4, 8))
...     y = tensor_parallel_mlp(x, np.ones((8, 32)) / 8, np.ones((32, 8)) / 32, activation="relu")
...     net.output(y, "y")
...     return net.run({"x": np.ones((4, 8), "float32")})["y"][0, 0], len(net.collectives)
>>> [(float(v), c) for v, c in td.InProcessWorld(2).run(rank_fn)]
[(1.0, 1), (1.0, 1)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import functional as F
from ..tensor import Tensor
from ._common import fail, sub
from .linear import column_parallel_linear, row_parallel_linear

ACTIVATIONS: dict[str, Callable[..., Tensor]] = {
    "relu": lambda t, name: F.relu(t, name=name),
    "gelu": lambda t, name: F.gelu(t, name=name),
    "gelu_tanh": lambda t, name: F.gelu(t, approximate="tanh", name=name),
    "silu": lambda t, name: F.silu(t, name=name),
    "sigmoid": lambda t, name: F.sigmoid(t, name=name),
}


def tensor_parallel_mlp(
    x: Tensor,
    w_up: Any,
    w_down: Any,
    *,
    w_gate: Any = None,
    b_up: Any = None,
    b_gate: Any = None,
    b_down: Any = None,
    activation: str | Callable[[Tensor], Tensor] | None = None,
    sharded: bool = False,
    reduce: str = "all_reduce",
    groups: Any = None,
    name: str | None = None,
) -> Tensor:
    """``down(act(x @ w_up + b_up))``, or with ``w_gate`` (SwiGLU / GeGLU)
    ``down(act(x @ w_gate + b_gate) * (x @ w_up + b_up))``, the hidden features split over
    ranks.

    ``x``: ``[..., d_model]``, the same on every rank. ``w_up``, ``w_gate``: full
    ``[d_model, hidden]`` (column-sharded here) and ``w_down`` full ``[hidden, d_model]``
    (row-sharded here); with ``sharded=True`` the rank's ``[d_model, hidden/N]`` and
    ``[hidden/N, d_model]``. ``activation``: "relu", "gelu", "gelu_tanh", "silu", "sigmoid" or
    a callable; default "silu" with a gate, else "gelu". Returns ``[..., d_model]`` (or
    ``[tokens/N, ..., d_model]`` with ``reduce="reduce_scatter"``).

    >>> y = tensor_parallel_mlp(x, w_up, w_down, w_gate=w_gate)        # doctest: +SKIP
    """
    if activation is None:
        activation = "silu" if w_gate is not None else "gelu"
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise fail(
                f"tensor_parallel_mlp: unknown activation {activation!r}; expected one of "
                f"{sorted(ACTIVATIONS)} or a callable"
            )
        act_fn = ACTIVATIONS[activation]

        def act(t: Tensor) -> Tensor:
            return act_fn(t, sub(name, "act"))
    else:
        act = activation
    up = column_parallel_linear(x, w_up, b_up, sharded=sharded, groups=groups, name=sub(name, "up"))
    if w_gate is not None:
        gate = column_parallel_linear(
            x, w_gate, b_gate, sharded=sharded, groups=groups, name=sub(name, "gate")
        )
        if gate.shape != up.shape:
            raise fail(f"tensor_parallel_mlp: gate {gate.shape} and up {up.shape} differ")
        h = F.mul(act(gate), up, name=sub(name, "glu"))
    else:
        if b_gate is not None:
            raise fail("tensor_parallel_mlp: b_gate given without w_gate")
        h = act(up)
    return row_parallel_linear(
        h, w_down, b_down, reduce=reduce, sharded=sharded, groups=groups, name=sub(name, "down")
    )


__all__ = ["tensor_parallel_mlp", "ACTIVATIONS"]
