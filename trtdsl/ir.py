"""The typed graph that a Network records: tensor types and layers.

A layer is one call of the DSL (and, as far as possible, one TensorRT layer). It keeps its op,
its input tensors, its attributes, its inferred output types and the user's source line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .dtypes import DType
from .errors import DefinitionError, SourceLocation

if TYPE_CHECKING:
    from .ops.base import OpDef
    from .tensor import Tensor

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


@dataclass(eq=False)
class Layer:
    """One recorded layer. ``op`` knows its shape rule, NumPy reference and TensorRT lowering."""

    name: str
    op: OpDef
    inputs: tuple[Tensor, ...]
    attrs: dict[str, Any]
    where: SourceLocation
    index: int
    outputs: list[Tensor] = field(default_factory=list)

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
