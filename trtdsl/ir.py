"""The typed graph that a Network records: tensor types and layers.

A layer is one call of the DSL (and, as far as possible, one TensorRT layer). It keeps its op,
its input tensors, its attributes, its inferred output types and the user's source line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .dtypes import DType
from .errors import DefinitionError, SourceLocation

Dim = "int | None"
Shape = tuple  # tuple[int | None, ...]; None is a dynamic dimension


def format_shape(shape: Shape) -> str:
    """(2, None, 4) -> '(2, ?, 4)'."""
    inner = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


@dataclass(frozen=True)
class TensorType:
    """Shape (None for a dynamic dimension) and element type of a tensor."""

    shape: Shape
    dtype: DType

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(d is not None for d in self.shape)

    def numel(self) -> int | None:
        n = 1
        for d in self.shape:
            if d is None:
                return None
            n *= d
        return n

    def __str__(self) -> str:
        return f"{format_shape(self.shape)} {self.dtype}"


class RankInfo(Protocol):
    """Who this rank is (:class:`trtdsl.worlds.World` and its subclasses have it)."""

    size: int
    rank: int


class OpLike(Protocol):
    """What a layer needs of its op (:class:`trtdsl.ops.base.OpDef` is the implementation)."""

    name: str
    is_collective: bool

    def resolve(self, layer: Layer) -> Any: ...

    def infer(self, layer: Layer) -> list[TensorType]: ...

    def describe(self, layer: Layer) -> str: ...


class Graph(Protocol):
    """What an op's builder needs of the network it records into (:class:`trtdsl.Network`)."""

    name: str

    @property
    def world_size(self) -> int | None: ...

    @property
    def rank(self) -> int | None: ...

    def add_layer(
        self,
        op: OpLike,
        inputs: Sequence[Value],
        attrs: dict[str, Any] | None = None,
        name: str | None = None,
        base: str | None = None,
    ) -> list[Any]: ...

    def constant(self, value: Any, *, dtype: Any = None, name: str | None = None) -> Any: ...


class Value:
    """Output ``index`` of layer ``producer`` in ``network``, of type ``type``.

    :class:`trtdsl.Tensor` is the public subclass (operators and one method per op); ops and
    backends only need what is here.
    """

    def __init__(
        self, network: Graph, producer: Layer, index: int, type: TensorType, name: str
    ) -> None:
        self.network = network
        self.producer = producer
        self.index = index
        self.type = type
        self.name = name

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.rank

    rank = ndim


@dataclass(eq=False)
class Layer:
    """One recorded layer. ``op`` knows its shape rule, NumPy reference and TensorRT lowering."""

    name: str
    op: OpLike
    inputs: tuple[Value, ...]
    attrs: dict[str, Any]
    where: SourceLocation
    index: int
    outputs: list[Value] = field(default_factory=list)
    #: What the op derived from ``attrs`` when the layer was recorded (``op.resolve``), e.g. a
    #: collective's CollectiveSpec; None for most ops. ``attrs`` stay as the user gave them.
    spec: Any = None

    @property
    def input_types(self) -> list[TensorType]:
        return [t.type for t in self.inputs]

    def describe_inputs(self) -> str:
        return ", ".join(f"{t.name}: {t.type}" for t in self.inputs) or "no inputs"

    def fail(self, message: str) -> DefinitionError:
        """An error naming this layer, its source line and its inputs' shapes (raise it)."""
        return DefinitionError(
            f"{self.op.name}: {message} [inputs: {self.describe_inputs()}]",
            layer=self.name,
            where=self.where,
        )

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


@dataclass(eq=False)
class Region:
    """Layers of a network that together compute one known function, named by ``kind`` with
    its ``params``: a backend that has a fused implementation of ``kind`` may run the region
    as one step (from ``inputs`` to ``outputs``) instead of its layers; every other backend
    runs the layers. ``Network.add_region`` records one; ``Network.regions`` lists them.

    E.g. Ring attention: ``Region(kind="ring_attention", inputs=(q, k, v), outputs=(out,),
    params={"causal": True, "scale": 0.125, ...})`` over its broadcasts, block attentions and
    merges; the cupy backend runs it as a real ring (NCCL send/recv overlapped with compute).
    """

    kind: str
    name: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    layers: tuple[Layer, ...]
    params: dict[str, Any]
    where: SourceLocation

    def describe_inputs(self) -> str:
        return ", ".join(f"{t.name}: {t.type}" for t in self.inputs) or "no inputs"
