"""Reading a network recorded by the fake ``tensorrt`` module: layers, tensors, properties.

The fake (:mod:`trtdsl.testing.fake_tensorrt`) records, for every object a network method
returned, the call that created it (``origin``: owner, method, bound arguments), its property
values (arguments named like a property, then assignments) and, for layers, its input tensors
(updated by ``set_input``). This module turns that into :class:`LayerView` objects the
evaluators read, and into an evaluation order (``set_input`` may wire a tensor made later).
"""

from __future__ import annotations

import ctypes
import heapq
import operator
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np


class EmulatorError(Exception):
    """The recorded network cannot be evaluated: TensorRT would reject it (or fail at run
    time), or the feeds do not match the network's inputs."""


class UnsupportedLayerError(EmulatorError):
    """A layer type, property or mode the emulator does not model (never silently ignored)."""


#: ``tensorrt.DataType`` member name -> NumPy dtype.
NUMPY_TYPES: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "INT8": np.dtype(np.int8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "FP8": np.dtype(ml_dtypes.float8_e4m3fn),
}
FLOAT_TYPES = frozenset(NUMPY_TYPES[k] for k in ("FLOAT", "HALF", "BF16", "FP8"))
INT_TYPES = frozenset(NUMPY_TYPES[k] for k in ("INT8", "INT32", "INT64", "UINT8"))
BOOL_TYPE = np.dtype(np.bool_)


def numpy_type(trt_dtype: Any) -> np.dtype:
    """NumPy dtype of a ``tensorrt.DataType`` member."""
    name = getattr(trt_dtype, "name", None)
    if name not in NUMPY_TYPES:
        raise UnsupportedLayerError(f"tensorrt.DataType.{name} is not modelled by the emulator")
    return NUMPY_TYPES[name]


def type_name(dt: np.dtype) -> str:
    """``tensorrt.DataType`` member name of a NumPy dtype (for messages)."""
    for name, npd in NUMPY_TYPES.items():
        if npd == dt:
            return name
    return str(dt)


def is_float(a: np.ndarray) -> bool:
    return a.dtype in FLOAT_TYPES


def is_int(a: np.ndarray) -> bool:
    return a.dtype in INT_TYPES


def compute_type(dt: np.dtype) -> np.dtype:
    """The type a layer computes in: float32 for 16/8-bit floats (TensorRT's kernels
    accumulate in float32 and round the result once to the layer's type)."""
    return np.dtype(np.float32) if dt in FLOAT_TYPES and dt.itemsize < 4 else dt


def enum_name(value: Any, what: str) -> str:
    """Member name of a fake (or real) enum value."""
    name = getattr(value, "name", None)
    if not isinstance(name, str):
        raise EmulatorError(f"{what}: expected a tensorrt enum member, got {value!r}")
    return name


def dims(value: Any, what: str) -> tuple[int, ...]:
    """A tuple of ints from a ``Dims``-like value (tuple, list, fake ``Dims``)."""
    seq = getattr(value, "__dict__", {}).get("_seq") if hasattr(value, "_trt_class") else None
    if seq is not None:
        value = seq
    elif hasattr(value, "_trt_class"):
        args = value.origin[2] if value.origin else {}
        value = args.get("shape", args.get("arg0"))
    try:
        return tuple(operator.index(v) for v in value)
    except TypeError:
        raise EmulatorError(f"{what}: expected a sequence of ints, got {value!r}") from None


def permutation(value: Any, rank: int, what: str) -> tuple[int, ...]:
    """The order of a ``trt.Permutation`` (None: identity); NumPy ``transpose`` semantics:
    output dim i is input dim ``perm[i]`` (CHW -> HWC is [1, 2, 0], TensorRT's example)."""
    if value is None:
        return tuple(range(rank))
    if getattr(value, "_trt_class", None) != "Permutation":
        raise EmulatorError(f"{what}: expected a tensorrt.Permutation, got {value!r}")
    if value.calls:
        raise UnsupportedLayerError(f"{what}: Permutation edited in place is not modelled")
    args = value.origin[2] if value.origin else {}
    if "arg0" not in args:
        raise UnsupportedLayerError(f"{what}: Permutation() without an order is not modelled")
    perm = tuple(operator.index(p) for p in args["arg0"])
    if sorted(perm) != list(range(rank)):
        raise EmulatorError(f"{what}: {list(perm)} is not a permutation of {rank} dims")
    return perm


def read_weights(w: Any, what: str) -> np.ndarray:
    """The 1-D array a ``trt.Weights`` holds (its memory is read, so a wrong type, pointer or
    count shows up as wrong values)."""
    if getattr(w, "_trt_class", None) != "Weights":
        raise EmulatorError(f"{what}: expected tensorrt.Weights, got {w!r}")
    args = w.origin[2] if w.origin else {}
    if "a" in args:
        arr = np.ascontiguousarray(args["a"]).reshape(-1)
        if arr.dtype not in NUMPY_TYPES.values():
            raise EmulatorError(f"{what}: Weights of a {arr.dtype} array")
        return arr.copy()
    dt = numpy_type(args.get("type"))
    count = operator.index(args.get("count", 0))
    if count == 0:
        return np.zeros(0, dt)
    ptr = operator.index(args["ptr"])
    if ptr == 0:
        raise EmulatorError(f"{what}: Weights with a null pointer and count {count}")
    raw = ctypes.string_at(ptr, count * dt.itemsize)
    if dt == BOOL_TYPE:
        u8 = np.frombuffer(raw, np.uint8)
        if np.any(u8 > 1):
            raise EmulatorError(
                f"{what}: BOOL weights hold bytes other than 0/1 ({sorted(set(u8.tolist()))[:5]}"
                "...), undefined in TensorRT"
            )
        return u8.astype(np.bool_)
    return np.frombuffer(raw, dt).copy()


class LayerView:
    """One recorded layer: class, name, creation arguments, properties and input tensors."""

    def __init__(self, obj: Any, index: int) -> None:
        self.obj = obj
        self.index = index
        self.cls: str = obj._trt_class
        self.method: str = obj.origin[1] if obj.origin else "?"
        self.args: dict[str, Any] = dict(obj.origin[2]) if obj.origin else {}
        self.props: dict[str, Any] = dict(obj._props)
        self.set_names = [name for name, _ in obj.sets]
        self.inputs: list[Any] = list(obj._inputs or [])
        self.name: str = self.props.get("name") or f"<unnamed {self.cls} #{index}>"

    def where(self) -> str:
        return f"{self.cls} '{self.name}' ({self.method})"

    def prop(self, name: str, default: Any = None) -> Any:
        """A property: assigned or given at creation, else ``default``."""
        return self.props.get(name, default)

    def allow(self, *names: str) -> None:
        """Refuse any property assignment the evaluator does not model."""
        known = {"name", "metadata", *names}
        unknown = [n for n in self.set_names if n not in known]
        if unknown:
            raise UnsupportedLayerError(
                f"{self.where()}: property {', '.join(sorted(set(unknown)))} is set, but the "
                f"emulator models only {', '.join(sorted(known))} for this layer"
            )

    def fail(self, message: str) -> EmulatorError:
        return EmulatorError(f"{self.where()}: {message}")

    def unsupported(self, message: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"{self.where()}: {message}")


def layer_outputs(obj: Any) -> dict[int, Any]:
    """The output tensors of a fake layer that anyone asked for, by index."""
    outs = {}
    for key, value in obj._cache.items():
        if key[0] == "get_output":
            outs[operator.index(dict(key[1])["index"])] = value
    return outs


def is_layer(network: Any, obj: Any) -> bool:
    m = network._rt.manifest
    return m.is_subclass(obj._trt_class, "ILayer") or obj._trt_class == "IAttention"


def evaluation_order(network: Any) -> tuple[list[LayerView], dict[int, tuple[int, int]]]:
    """Layers in an order where every input is computed first (creation order where possible),
    and ``id(tensor) -> (layer position, output index)``."""
    views = [
        LayerView(obj, i)
        for i, (_, obj) in enumerate(network.created)
        if not network._rt.manifest.is_subclass(obj._trt_class, "ITensor")
    ]
    for v in views:
        if not is_layer(network, v.obj):
            raise UnsupportedLayerError(f"{v.where()}: not a layer the emulator knows")
    producer: dict[int, tuple[int, int]] = {}
    for pos, v in enumerate(views):
        for i, t in layer_outputs(v.obj).items():
            producer[id(t)] = (pos, i)
    inputs = {id(t) for t in network.inputs}
    deps: list[set[int]] = []
    for v in views:
        d = set()
        for t in list(v.inputs) + [v.props.get("mask")]:
            if t is None or id(t) in inputs:
                continue
            if id(t) not in producer:
                raise EmulatorError(
                    f"{v.where()}: input tensor {t.__dict__.get('_props', {}).get('name')!r} "
                    "is neither a network input nor an output of a layer of this network"
                )
            d.add(producer[id(t)][0])
        deps.append(d)
    users: list[list[int]] = [[] for _ in views]
    for pos, d in enumerate(deps):
        for p in d:
            users[p].append(pos)
    waiting = [len(d) for d in deps]
    ready = [pos for pos, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        pos = heapq.heappop(ready)
        order.append(views[pos])
        for u in users[pos]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(views):
        stuck = [views[p].where() for p, n in enumerate(waiting) if n > 0][:3]
        raise EmulatorError(f"the network has a cycle through {', '.join(stuck)}")
    return order, producer


def broadcast_shape(what: str, *shapes: Sequence[int]) -> tuple[int, ...]:
    """TensorRT's broadcast: equal ranks; per dim all equal, or 1 where they differ."""
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1:
        raise EmulatorError(
            f"{what}: inputs of ranks {[len(s) for s in shapes]} (TensorRT needs equal ranks: "
            "no implicit rank broadcast)"
        )
    out = []
    for i, ds in enumerate(zip(*shapes)):
        big = {d for d in ds if d != 1}
        if len(big) > 1:
            raise EmulatorError(f"{what}: dim {i} sizes {list(ds)} do not broadcast")
        out.append(big.pop() if big else 1)
    return tuple(out)
