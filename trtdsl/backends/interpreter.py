"""Walks a network's layers in order and calls each op's reference with an array module.

Shared by the NumPy backend (reference semantics on the CPU) and the CuPy backend (the same
references on a GPU). Every layer's outputs are checked against the inferred types, so a
dynamic dimension that turns out inconsistent fails at the layer that caused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ExecutionError
from ..ir import Layer, TensorType, format_shape


class RunContext:
    """What op references see: ``xp`` (array module), ``feeds``, ``erf``, ``collective``."""

    xp: Any = np

    def __init__(self, network: Any, feeds: Mapping[str, Any], world: Any) -> None:
        self.network, self.feeds, self.world = network, feeds, world

    def asarray(self, value: Any) -> Any:
        return self.xp.asarray(value)

    def constant(self, layer: Layer) -> Any:
        """The value of a constant layer as an array of this backend."""
        return self.asarray(layer.attrs["value"])

    def erf(self, x: Any) -> Any:
        from ..ops.elementwise import erf_numpy

        return erf_numpy(x)

    def collective(self, layer: Layer, x: Any) -> Any:
        if self.world is None:
            raise self.error(layer, "the network has no world to run collectives in")
        return self.world.collective(layer, x)

    def error(self, layer: Layer, message: str) -> ExecutionError:
        return ExecutionError(f"layer '{layer.name}' (defined at {layer.where}): {message}")


def check_feeds(network: Any, feeds: Mapping[str, Any], asarray: Any) -> dict[str, Any]:
    """Validate feeds against the inputs: names, dtypes, ranks, static dims."""
    unknown = sorted(set(feeds) - set(network.inputs))
    if unknown:
        raise ExecutionError(
            f"network '{network.name}': unknown input(s) {unknown}; inputs are "
            f"{sorted(network.inputs)}"
        )
    missing = sorted(set(network.inputs) - set(feeds))
    if missing:
        raise ExecutionError(f"network '{network.name}': missing input(s) {missing}")
    out = {}
    for name, t in network.inputs.items():
        arr = asarray(feeds[name])
        ty = t.type
        if arr.dtype != ty.dtype.numpy:
            raise ExecutionError(
                f"input '{name}': got dtype {arr.dtype}, expected {ty.dtype} "
                f"(convert with .astype({ty.dtype.numpy.name!r}))"
            )
        if arr.ndim != ty.rank or any(
            d is not None and d != a for d, a in zip(ty.shape, arr.shape)
        ):
            raise ExecutionError(
                f"input '{name}': got shape {tuple(arr.shape)}, expected {format_shape(ty.shape)}"
            )
        out[name] = arr
    return out


def _check_output(ctx: RunContext, layer: Layer, i: int, value: Any, ty: TensorType) -> None:
    if (
        value.dtype != ty.dtype.numpy
        or value.ndim != ty.rank
        or any(d is not None and d != a for d, a in zip(ty.shape, value.shape))
    ):
        raise ctx.error(
            layer,
            f"output {i} is {tuple(value.shape)} {value.dtype} but {ty} was inferred "
            f"(inputs: {layer.describe_inputs()}); a dynamic dimension is inconsistent",
        )


def interpret(network: Any, ctx: RunContext) -> dict[str, Any]:
    """Evaluate every layer; return the marked outputs by name."""
    if network.world is not None and network.world.size > 1:
        network.world.agree(network.collective_fingerprint())
    # Free each intermediate after its last use, so long sequences fit in memory.
    keep = {id(t) for t in network.outputs.values()}
    last_use: dict[int, int] = {}
    for layer in network.layers:
        for t in layer.inputs:
            last_use[id(t)] = layer.index
    values: dict[int, Any] = {}
    for layer in network.layers:
        args = [values[id(t)] for t in layer.inputs]
        try:
            outs = layer.op.reference(layer, args, ctx)
        except ExecutionError:
            raise
        except (ValueError, IndexError, TypeError, FloatingPointError) as e:
            raise ctx.error(
                layer, f"{type(e).__name__}: {e} (inputs: {[tuple(a.shape) for a in args]})"
            ) from e
        for i, (t, v) in enumerate(zip(layer.outputs, outs)):
            v = ctx.asarray(v)  # NumPy returns scalars, not 0-d arrays, from some 0-d ops
            _check_output(ctx, layer, i, v, t.type)
            if id(t) in keep or id(t) in last_use:
                values[id(t)] = v
        del args
        for t in layer.inputs:
            if last_use.get(id(t)) == layer.index and id(t) not in keep:
                values.pop(id(t), None)
    return {name: _owned(values[id(t)], ctx) for name, t in network.outputs.items()}


def _owned(v: Any, ctx: RunContext) -> Any:
    """An output the caller owns: never a feed, a (read-only) constant or a view of either."""
    aliased = getattr(v, "base", None) is not None or any(v is f for f in ctx.feeds.values())
    if aliased or not getattr(v.flags, "writeable", True):
        return v.copy()
    return v
