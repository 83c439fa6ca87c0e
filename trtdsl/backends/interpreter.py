"""Walks a network's layers in order and calls each op's reference with an array module.

Shared by the NumPy backend (reference semantics on the CPU) and the CuPy backend (the same
references on a GPU). Every layer's outputs are checked against the inferred types, so a
dynamic dimension that turns out inconsistent fails at the layer that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import ExecutionError
from ..ir import Layer, Region, TensorType, format_shape


class RunContext:
    """What op references see: ``xp`` (array module), ``feeds``, ``erf``, ``collective``."""

    xp: Any = np

    def __init__(self, network: Any, feeds: Mapping[str, Any], world: Any) -> None:
        self.network, self.feeds, self.world = network, feeds, world

    #: Data-dependent checks in references (e.g. gather indices in range); off while a CUDA
    #: graph is captured (no host reads then), where the first, eager run has checked them.
    check_values: bool = True

    def asarray(self, value: Any) -> Any:
        return self.xp.asarray(value)

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` with NumPy broadcasting (backends may route it to a library of theirs)."""
        return self.xp.matmul(a, b)

    def matmul_rounded(self, a: Any, b: Any) -> Any | None:
        """``a @ b`` of two 16-bit float arrays with float32 accumulation, rounded once to
        their dtype (what the reference computes by upcasting), from a library that does it
        natively; None: the reference upcasts and calls :meth:`matmul`."""
        return None

    def constant(self, layer: Layer) -> Any:
        """The value of a constant layer as an array of this backend."""
        return self.asarray(layer.attrs["value"])

    def erf(self, x: Any) -> Any:
        from ..ops.elementwise import erf_numpy

        return erf_numpy(x)

    def fused_attention(self, layer: Layer, inputs: list[Any]) -> list[Any] | None:
        """Outputs of an attention layer from a fused kernel, or None to run the reference
        (the numpy backend has none)."""
        return None

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


def _storage_dtype(ctx: RunContext, dtype: Any) -> Any:
    """The array dtype a backend holds ``dtype`` in: FP8 as its uint8 bit patterns off NumPy
    (CuPy has no FP8 dtype; see ops/quantize.py)."""
    if ctx.xp is not np and dtype.name == "float8_e4m3":
        return np.dtype(np.uint8)
    return dtype.numpy


def _check_output(ctx: RunContext, layer: Layer, i: int, value: Any, ty: TensorType) -> None:
    if (
        value.dtype != _storage_dtype(ctx, ty.dtype)
        or value.ndim != ty.rank
        or any(d is not None and d != a for d, a in zip(ty.shape, value.shape))
    ):
        raise ctx.error(
            layer,
            f"output {i} is {tuple(value.shape)} {value.dtype} but {ty} was inferred "
            f"(inputs: {layer.describe_inputs()}); a dynamic dimension is inconsistent",
        )


#: A backend's fused implementation of a region kind: ``fusion(region, inputs, ctx, check)``
#: returns the region's outputs; ``check`` is True on a new input signature (agree first).
Fusion = Callable[[Region, list[Any], RunContext, bool], list[Any]]
log = logging.getLogger("trtdsl")


class FusedRegion:
    """The op of a fused step: one call of the backend's fusion in place of a region's
    layers (its ``reference`` is what :class:`Program` runs)."""

    is_collective = False

    def __init__(self, region: Region, fusion: Fusion, program: Program) -> None:
        self.region, self.fusion, self.program = region, fusion, program
        self.name = f"fused_{region.kind}"

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        return self.fusion(self.region, inputs, ctx, self.program.checking)

    def resolve(self, layer: Layer) -> Any:
        return None

    def infer(self, layer: Layer) -> list[TensorType]:
        return [t.type for t in layer.outputs]

    def describe(self, layer: Layer) -> str:
        return f"{self.region.kind} ({len(self.region.layers)} layers fused)"


def fusion_problem(network: Any, region: Region, claimed: set[int]) -> str | None:
    """Why ``region`` cannot run as one step, or None: its layers must be contiguous and
    unclaimed, read only the region's inputs and each other, and nothing outside may read a
    value made inside except the region's outputs."""
    first = region.layers[0].index
    span = network.layers[first : first + len(region.layers)]
    if len(span) != len(region.layers) or any(a is not b for a, b in zip(span, region.layers)):
        return "its layers are not contiguous layers of the network"
    if any(id(lay) in claimed for lay in region.layers):
        return "it overlaps a region fused before it"
    inside = {id(t) for lay in region.layers for t in lay.outputs}
    given = {id(t) for t in region.inputs}
    for t in region.inputs:
        if t.producer.index >= first:
            return f"its input '{t.name}' is made after the region starts"
    for lay in region.layers:
        for t in lay.inputs:
            if id(t) not in inside and id(t) not in given:
                return f"layer '{lay.name}' reads '{t.name}', which is not an input of the region"
    outs = {id(t) for t in region.outputs}
    members = {id(lay) for lay in region.layers}
    for lay in network.layers:
        if id(lay) not in members:
            for t in lay.inputs:
                if id(t) in inside and id(t) not in outs:
                    return f"layer '{lay.name}' outside the region reads '{t.name}' from inside it"
    for name, t in network.outputs.items():
        if id(t) in inside and id(t) not in outs:
            return f"network output '{name}' is '{t.name}', made inside the region"
    return None


class Program:
    """A network compiled for repeated runs: the layer list with each layer's bound reference,
    value slots instead of dict lookups, and the dead-value schedule (which slots to drop after
    each layer), all computed once.

    ``fusions`` (``{region kind: Fusion}``): each of the network's regions of such a kind runs
    as ONE step that calls the fusion with the region's input values (its layers are skipped);
    a region that cannot be fused (see :func:`fusion_problem`) runs its layers, with the reason
    in ``notes`` and a debug log line.

    ``execute(ctx, feeds, check=True)`` runs it; with ``check=False`` the per-layer output
    check is skipped (for input signatures that already ran checked: shapes are a function of
    the input shapes). ``keep_all=True`` keeps every value alive (CUDA graph capture).
    """

    def __init__(self, network: Any, fusions: Mapping[str, Fusion] | None = None) -> None:
        self.network = network
        self.checking = True
        self.notes: list[str] = []
        entries = self._entries(network, dict(fusions or {}))
        slot: dict[int, int] = {}
        for layer, _ in entries:
            for t in layer.outputs:
                slot[id(t)] = len(slot)
        self.nslots = len(slot)
        keep = {slot[id(t)] for t in network.outputs.values()}
        last_use: dict[int, int] = {}
        for pos, (layer, _) in enumerate(entries):
            for t in layer.inputs:
                last_use[slot[id(t)]] = pos
        #: (layer, reference, input slots, output slots, slots to free after the layer)
        self.steps: list[tuple[Layer, Any, tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = []
        for pos, (layer, ref) in enumerate(entries):
            ins = tuple(slot[id(t)] for t in layer.inputs)
            outs = tuple(
                slot[id(t)] if (slot[id(t)] in keep or slot[id(t)] in last_use) else -1
                for t in layer.outputs
            )
            free = tuple(sorted({s for s in ins if last_use.get(s) == pos and s not in keep}))
            self.steps.append((layer, ref, ins, outs, free))
        self.outputs = [(name, slot[id(t)]) for name, t in network.outputs.items()]

    def _entries(self, network: Any, fusions: dict[str, Fusion]) -> list[tuple[Layer, Any]]:
        """(layer, reference) in run order: fused regions in place of their first layer."""
        starts: dict[int, Layer] = {}
        claimed: set[int] = set()
        for region in getattr(network, "regions", ()):
            if region.kind not in fusions:
                continue
            problem = fusion_problem(network, region, claimed)
            if problem is not None:
                note = f"region '{region.name}' ({region.kind}) runs layer by layer: {problem}"
                self.notes.append(note)
                log.debug(note)
                continue
            claimed.update(id(lay) for lay in region.layers)
            op = FusedRegion(region, fusions[region.kind], self)
            step = Layer(
                name=region.name,
                op=op,
                inputs=tuple(region.inputs),
                attrs={"region": region},
                where=region.where,
                index=region.layers[0].index,
                outputs=list(region.outputs),
            )
            starts[id(region.layers[0])] = step
        entries: list[tuple[Layer, Any]] = []
        for layer in network.layers:
            if id(layer) in starts:
                step = starts[id(layer)]
                entries.append((step, step.op.reference))
            elif id(layer) not in claimed:
                entries.append((layer, layer.op.reference))
        return entries

    def execute(
        self, ctx: RunContext, check: bool = True, keep_all: bool = False
    ) -> dict[str, Any]:
        """Evaluate every layer; return the marked outputs by name (not yet copied)."""
        values: list[Any] = [None] * self.nslots
        asarray = ctx.asarray
        self.checking = check
        for layer, ref, ins, outs, free in self.steps:
            args = [values[s] for s in ins]
            try:
                results = ref(layer, args, ctx)
            except ExecutionError:
                raise
            except (ValueError, IndexError, TypeError, FloatingPointError) as e:
                raise ctx.error(
                    layer, f"{type(e).__name__}: {e} (inputs: {[tuple(a.shape) for a in args]})"
                ) from e
            for i, (s, v) in enumerate(zip(outs, results)):
                if check:
                    v = asarray(v)  # NumPy returns scalars, not 0-d arrays, from some 0-d ops
                    _check_output(ctx, layer, i, v, layer.outputs[i].type)
                elif not hasattr(v, "dtype") or not hasattr(v, "flags"):
                    v = asarray(v)
                if s >= 0:
                    values[s] = v
            del args
            if not keep_all:
                for s in free:
                    values[s] = None
        self.values = values if keep_all else None
        return {name: values[s] for name, s in self.outputs}


def interpret(network: Any, ctx: RunContext) -> dict[str, Any]:
    """Evaluate every layer; return the marked outputs by name."""
    if network.world is not None and network.world.size > 1:
        network.world.agree(network.collective_fingerprint())
    outs = Program(network).execute(ctx)
    return {name: _owned(v, ctx) for name, v in outs.items()}


def _owned(v: Any, ctx: RunContext) -> Any:
    """An output the caller owns: never a feed, a (read-only) constant or a view of either."""
    aliased = getattr(v, "base", None) is not None or any(v is f for f in ctx.feeds.values())
    if aliased or not getattr(v.flags, "writeable", True):
        return v.copy()
    return v
