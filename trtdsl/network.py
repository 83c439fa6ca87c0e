"""``Network``: records a typed graph of layers, one DSL call per layer.

>>> import numpy as np, trtdsl as td
>>> net = td.Network("mlp")
>>> x = net.input("x", (None, 4))                    # dynamic batch
>>> h = (x @ net.constant(np.ones((4, 8), "float32"))).relu()
>>> net.output(h.sum(axis=-1), "y")
>>> net.run({"x": np.ones((2, 4), "float32")})["y"].tolist()
[32.0, 32.0]
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import dtypes
from .errors import (
    DefinitionError,
    ExecutionError,
    SourceLocation,
    TrtDslError,
    UnknownBackendError,
    user_location,
)
from .ir import Layer, RankInfo, Region, TensorType, format_shape
from .ops import CONSTANT, INPUT
from .ops.base import OpDef
from .tensor import Tensor

#: Backends by name. They sit above this module (they import the IR, never the Network), so
#: they are looked up by name when a network runs rather than imported here.
BACKEND_MODULES = {
    "numpy": "trtdsl.backends.numpy",
    "cupy": "trtdsl.backends.cupy",
    "tensorrt": "trtdsl.backends.tensorrt",
}


def backend_module(name: str) -> Any:
    """The backend module called ``name`` (it has ``run(network, feeds, **options)``)."""
    if name not in BACKEND_MODULES:
        msg = f"unknown backend {name!r}; choose one of {sorted(BACKEND_MODULES)}"
        raise UnknownBackendError(msg)
    return importlib.import_module(BACKEND_MODULES[name])


def _narrow(arr: np.ndarray, target: np.dtype) -> np.ndarray:
    """``arr`` as ``target``; ValueError where that changes a value beyond rounding (finite
    values overflowing a float type, fractions or out-of-range values cast to an int type,
    complex values, whose imaginary part the cast would drop)."""
    if arr.dtype.kind == "c":
        raise ValueError(f"{target.name} cannot hold complex values ({arr.dtype.name})")
    with np.errstate(all="ignore"):
        out = arr.astype(target)
    if arr.dtype.kind in "biuf" and target.kind == "f":
        bad = np.isfinite(arr) & ~np.isfinite(out.astype(np.float64))
        if bad.any():
            raise ValueError(f"values overflow {target.name} (e.g. {arr[bad].flat[0]!r})")
    elif arr.dtype.kind in "biuf" and target.kind in "iu":
        bad = arr.astype(np.float64) != out.astype(np.float64)
        if bad.any():
            raise ValueError(f"{target.name} cannot hold {arr[bad].flat[0]!r}")
    return out


class Network:
    """A network definition: inputs, layers and outputs, for one rank of a ``world``."""

    def __init__(self, name: str = "network", *, world: RankInfo | None = None) -> None:
        if not isinstance(name, str):
            raise DefinitionError(
                f"Network name must be a string, got {name!r}", where=user_location()
            )
        if world is not None and not (
            isinstance(getattr(world, "size", None), int)
            and isinstance(getattr(world, "rank", None), int)
        ):
            raise DefinitionError(
                f"Network {name!r}: world must be a World (size and rank), got {world!r}",
                where=user_location(),
            )
        self.name = name
        self.world = world
        self.layers: list[Layer] = []
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}
        #: fusable groups of layers (:class:`~trtdsl.ir.Region`), in the order recorded
        self.regions: list[Region] = []
        self._names: set[str] = set()
        self._counters: dict[str, int] = {}

    # -- world -----------------------------------------------------------------------------
    @property
    def world_size(self) -> int | None:
        return None if self.world is None else self.world.size

    @property
    def rank(self) -> int | None:
        return None if self.world is None else self.world.rank

    # -- definition --------------------------------------------------------------------------
    def _fail(self, message: str, where: SourceLocation | None = None) -> DefinitionError:
        return DefinitionError(message, layer=None, where=where or user_location())

    def _unique_name(
        self, base: str, name: str | None, where: SourceLocation, inputs: str = ""
    ) -> str:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise self._fail(f"layer name must be a non-empty string, got {name!r}", where)
            if name in self._names:
                raise DefinitionError(
                    f"{base}: duplicate layer name '{name}' (an earlier layer has it)"
                    + (f" [inputs: {inputs}]" if inputs else ""),
                    layer=name,
                    where=where,
                )
            self._names.add(name)
            return name
        while True:
            n = self._counters.get(base, 0)
            self._counters[base] = n + 1
            candidate = f"{base}_{n}"
            if candidate not in self._names:
                self._names.add(candidate)
                return candidate

    def add_layer(
        self,
        op: OpDef,
        inputs: Sequence[Tensor],
        attrs: dict[str, Any] | None = None,
        name: str | None = None,
        base: str | None = None,
    ) -> list[Tensor]:
        """Record one layer; infer its output types (errors point at the user's line)."""
        where = user_location()
        shown = ", ".join(
            f"{t.name}: {t.type}" if isinstance(t, Tensor) else type(t).__name__ for t in inputs
        )
        for t in inputs:
            if not isinstance(t, Tensor):
                raise DefinitionError(
                    f"{op.name}: expected a Tensor input, got {type(t).__name__} [inputs: {shown}]",
                    layer=name or base or op.name,
                    where=where,
                )
            if t.network is not self:
                raise DefinitionError(
                    f"{op.name}: tensor '{t.name}' belongs to network '{t.network.name}', "
                    f"not '{self.name}' [inputs: {shown}]",
                    layer=name or base or op.name,
                    where=where,
                )
        layer_name = self._unique_name(base or op.name, name, where, shown)
        layer = Layer(layer_name, op, tuple(inputs), dict(attrs or {}), where, len(self.layers))
        try:
            layer.spec = op.resolve(layer)
            types = op.infer(layer)
        except DefinitionError:
            self._names.discard(layer_name)
            raise
        except (TypeError, ValueError, KeyError, IndexError) as e:
            # a malformed argument that the shape rule did not anticipate
            self._names.discard(layer_name)
            raise layer.fail(f"invalid arguments {layer.attrs}: {type(e).__name__}: {e}") from e
        multi = len(types) > 1
        layer.outputs = [
            Tensor(self, layer, i, ty, f"{layer_name}:{i}" if multi else layer_name)
            for i, ty in enumerate(types)
        ]
        self.layers.append(layer)
        return layer.outputs

    def input(
        self,
        name: str,
        shape: Sequence[int | None],
        dtype: dtypes.DType | str = "float32",
    ) -> Tensor:
        """A network input. Use None or -1 for a dynamic dimension."""
        where = user_location()
        if not isinstance(name, str) or not name:
            raise self._fail(f"input name must be a non-empty string, got {name!r}", where)
        if name in self.inputs:
            raise self._fail(
                f"duplicate input name '{name}' (already an input of type "
                f"{self.inputs[name].type}; now {shape!r} {dtype})",
                where,
            )
        try:
            dt = dtypes.as_dtype(dtype)
        except ValueError as e:
            raise self._fail(f"input '{name}': {e}", where) from None
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        if isinstance(shape, (str, bytes)):
            raise self._fail(f"input '{name}': shape must be a sequence, got {shape!r}", where)
        try:
            shape = tuple(shape)
        except TypeError:
            msg = f"input '{name}': shape must be a sequence, got {shape!r}"
            raise self._fail(msg, where) from None
        dims = []
        for d in shape:
            if isinstance(d, (bool, np.bool_)):
                raise self._fail(f"input '{name}': bad dimension {d!r} in shape {shape}", where)
            if d is None or (isinstance(d, (int, np.integer)) and d == -1):
                dims.append(None)
            elif isinstance(d, (int, np.integer)) and d >= 0:
                dims.append(int(d))
            else:
                raise self._fail(
                    f"input '{name}': bad dimension {d!r} in shape {tuple(shape)}", where
                )
        ty = TensorType(tuple(dims), dt)
        (t,) = self.add_layer(INPUT, (), {"name": name, "type": ty}, name=name)
        self.inputs[name] = t
        return t

    def constant(
        self, value: Any, *, dtype: dtypes.DType | str | None = None, name: str | None = None
    ) -> Tensor:
        """A constant (weights) from a NumPy array or scalar; float64 becomes float32."""
        try:
            arr = np.asarray(value)
            if dtype is not None:
                arr = _narrow(arr, dtypes.as_dtype(dtype).numpy)
            elif arr.dtype == np.float64:
                arr = _narrow(arr, np.dtype(np.float32))
            elif arr.dtype == np.int64 and np.ndim(value) == 0 and -(2**31) <= arr < 2**31:
                arr = arr.astype(np.int32)  # a Python int, when int32 holds it
            dtypes.as_dtype(arr.dtype)
        except (ValueError, TypeError) as e:
            raise self._fail(f"constant{f' {name!r}' if name else ''}: {e}") from None
        arr = np.array(arr, order="C", copy=True)
        arr.setflags(write=False)
        (t,) = self.add_layer(CONSTANT, (), {"value": arr}, name=name)
        return t

    def output(self, tensor: Tensor, name: str | None = None) -> Tensor:
        """Mark ``tensor`` as a network output called ``name`` (default: the tensor's name)."""
        where = user_location()
        if not isinstance(tensor, Tensor) or tensor.network is not self:
            raise self._fail("output: expected a Tensor of this network", where)
        if name is not None and (not isinstance(name, str) or not name):
            raise self._fail(f"output name must be a non-empty string, got {name!r}", where)
        name = name or tensor.name
        if name in self.outputs:
            raise self._fail(
                f"duplicate output name '{name}' (already given to tensor "
                f"'{self.outputs[name].name}': {self.outputs[name].type}; "
                f"now tensor '{tensor.name}': {tensor.type})",
                where,
            )
        if name in self.inputs and self.inputs[name] is not tensor:
            raise self._fail(
                f"output name '{name}' is already the name of an input (TensorRT needs unique "
                f"input/output names) [tensor '{tensor.name}': {tensor.type}]",
                where,
            )
        for other, t in self.outputs.items():
            if t is tensor:
                raise self._fail(f"tensor '{tensor.name}' is already output '{other}'", where)
        self.outputs[name] = tensor
        return tensor

    def add_region(
        self,
        kind: str,
        inputs: Sequence[Tensor],
        outputs: Sequence[Tensor],
        *,
        since: int,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Region:
        """Mark the layers recorded since ``len(net.layers) == since`` as one region computing
        ``kind`` from ``inputs`` to ``outputs`` (see :class:`~trtdsl.ir.Region`). Blocks call
        it; backends with a fused ``kind`` may run the region as one step.

        >>> net = Network("r"); x = net.input("x", (4,)); start = len(net.layers)
        >>> r = net.add_region("double", [x], [x + x], since=start, params={"factor": 2})
        >>> r.kind, len(r.layers), net.regions == [r]
        ('double', 1, True)
        """
        where = user_location()
        if not isinstance(kind, str) or not kind:
            raise self._fail(f"region kind must be a non-empty string, got {kind!r}", where)
        if not isinstance(since, int) or not 0 <= since < len(self.layers):
            raise self._fail(
                f"region '{kind}': since={since!r} must index a layer (the network has "
                f"{len(self.layers)}): the region needs at least one layer",
                where,
            )
        layers = tuple(self.layers[since:])
        inside = {id(t) for layer in layers for t in layer.outputs}
        for label, values in (("input", inputs), ("output", outputs)):
            for t in values:
                if not isinstance(t, Tensor) or t.network is not self:
                    raise self._fail(
                        f"region '{kind}': {label} {t!r} is not a Tensor of network '{self.name}'",
                        where,
                    )
                if (id(t) in inside) != (label == "output"):
                    where_t = "inside" if label == "input" else "outside"
                    raise self._fail(
                        f"region '{kind}': {label} '{t.name}' ({t.type}) is produced {where_t} "
                        f"the region's layers {layers[0].name} .. {layers[-1].name}",
                        where,
                    )
        region = Region(
            kind,
            name or f"{kind}_{len(self.regions)}",
            tuple(inputs),
            tuple(outputs),
            layers,
            dict(params or {}),
            where,
        )
        self.regions.append(region)
        return region

    # -- lookup ------------------------------------------------------------------------------
    def layer(self, name: str) -> Layer:
        """The layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        known = ", ".join(lay.name for lay in self.layers[:20])
        raise self._fail(f"unknown layer '{name}'; layers: {known}")

    @property
    def collectives(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.op.is_collective]

    def collective_fingerprint(self) -> list[tuple]:
        """(layer name, source line, fingerprint) of each collective, in order."""
        return [(c.name, str(c.where), c.op.fingerprint(c)) for c in self.collectives]

    # -- execution ---------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any], backend: str = "numpy", **options: Any) -> dict:
        """Run the network and return ``{output name: array}``.

        ``backend``: "numpy" (reference, CPU), "cupy" (GPU, NCCL collectives) or "tensorrt".
        With a world of several ranks this is a collective call: every rank must call it.
        Errors are :class:`~trtdsl.errors.ExecutionError` (or another TrtDslError) whose
        message ends with the ``file:line`` of this call.
        """
        where = user_location()
        try:
            self._check_runnable(feeds)
            return backend_module(backend).run(self, feeds, **options)
        except TrtDslError as e:
            note = f" [network '{self.name}' run at {where}]"
            if e.args and isinstance(e.args[0], str) and not e.args[0].endswith(note):
                e.args = (e.args[0] + note, *e.args[1:])
            raise

    def _check_runnable(self, feeds: Any) -> None:
        """What every backend needs before it starts: outputs, and feeds that are arrays with
        at least one element (checked on every rank, before any exchange)."""
        if not self.outputs:
            raise ExecutionError(
                f"network '{self.name}' has no outputs: mark at least one with "
                "net.output(tensor, name) before running it"
            )
        if not isinstance(feeds, Mapping):
            raise ExecutionError(
                f"network '{self.name}': feeds must be a mapping {{input name: array}}, got "
                f"{type(feeds).__name__}"
            )
        for name, value in feeds.items():
            shape = getattr(value, "shape", None)
            if shape is None:  # a list or a scalar: what NumPy makes of it
                try:
                    shape = np.asarray(value).shape
                except (ValueError, TypeError) as e:
                    raise ExecutionError(
                        f"input {name!r}: the feed is not an array ({type(value).__name__}: {e})"
                    ) from None
            if 0 in tuple(shape):
                raise ExecutionError(
                    f"input {name!r}: the feed has no elements (shape {tuple(shape)}); every "
                    "dimension needs at least one element"
                )

    def compile(self, backend: str = "numpy", **options: Any) -> Any:
        """Compile once, run many: a session with ``run(feeds, out=None)`` and ``close()`` (also
        a context manager) that keeps the rank's program, device buffers, NCCL communicators
        and (tensorrt) the engine and execution context across calls. The ranks agree on the
        collectives once per input signature, not before every collective. Options depend on
        the backend (e.g. ``cuda_graph=True`` for cupy, ``profiles=`` for tensorrt; ``check=
        "always"`` re-checks every call). Collective call with a multi-rank world."""
        return backend_module(backend).compile(self, **options)

    def build(self, **options: Any) -> bytes:
        """Build a serialized TensorRT engine for this rank (needs TensorRT 11)."""
        return backend_module("tensorrt").build_engine(self, **options)

    # -- inspection --------------------------------------------------------------------------
    def summary(self, file: Any = None, print_it: bool = True) -> str:
        """Print (and return) a per-layer table: name, op, output shape, dtype, parameter bytes."""
        rows = [("layer", "op", "output shape", "dtype", "params")]
        total = 0
        for layer in self.layers:
            pb = layer.op.param_bytes(layer)
            total += pb
            for i, t in enumerate(layer.outputs):
                rows.append(
                    (
                        layer.name if i == 0 else "",
                        layer.op.describe(layer) if i == 0 else "",
                        format_shape(t.type.shape),
                        t.type.dtype.name,
                        str(pb) if i == 0 else "",
                    )
                )
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        out = io.StringIO()
        world = "" if self.world is None else f", rank {self.rank} of {self.world_size}"
        out.write(f"Network '{self.name}': {len(self.layers)} layers{world}\n")
        for j, r in enumerate(rows):
            out.write(
                "  ".join(
                    cell.rjust(w) if c == 4 else cell.ljust(w)
                    for c, (cell, w) in enumerate(zip(r, widths))
                ).rstrip()
                + "\n"
            )
            if j == 0:
                out.write("  ".join("-" * w for w in widths) + "\n")
        outs = ", ".join(f"{k} <- {t.name}" for k, t in self.outputs.items()) or "none"
        out.write(f"outputs: {outs}\nparameters: {total} bytes\n")
        text = out.getvalue()
        if print_it:
            print(text, end="", file=file)
        return text

    def to_dot(self) -> str:
        """The graph in Graphviz dot: one node per layer, edges labelled with shapes."""

        def q(s: str) -> str:
            """A quoted dot ID: backslashes and quotes escaped, newlines as dot's ``\\n``."""
            s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            return '"' + s + '"'

        def edge(t: Tensor) -> str:  # the output's name too where a layer has several
            return q(f"{t.name}: {t.type}" if len(t.producer.outputs) > 1 else str(t.type))

        lines = [f"digraph {q(self.name)} {{", "  rankdir=TB;", "  node [shape=box, fontsize=10];"]
        for layer in self.layers:
            shape = "ellipse" if layer.op.name in ("input", "constant") else "box"
            style = ', style=filled, fillcolor="#ffe9b3"' if layer.op.is_collective else ""
            label = f"{layer.name}\n{layer.op.describe(layer)}"
            lines.append(f"  {q(layer.name)} [label={q(label)}, shape={shape}{style}];")
            for t in layer.inputs:
                lines.append(f"  {q(t.producer.name)} -> {q(layer.name)} [label={edge(t)}];")
        for name, t in self.outputs.items():
            lines.append(f"  {q('out:' + name)} [label={q(name)}, shape=ellipse, style=bold];")
            lines.append(f"  {q(t.producer.name)} -> {q('out:' + name)} [label={edge(t)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return (
            f"Network({self.name!r}, layers={len(self.layers)}, inputs={list(self.inputs)}, "
            f"outputs={list(self.outputs)})"
        )
