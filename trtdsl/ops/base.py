"""The op definition protocol: shape rule, NumPy reference and TensorRT lowering side by side.

An op is declared once as a subclass of :class:`OpDef`::

    class Relu(OpDef):
        name = "relu"
        def infer(self, layer):                 # shape and dtype rule
            return [layer.input_types[0]]
        def reference(self, layer, xs, ctx):    # NumPy semantics (TensorRT's)
            return [ctx.xp.maximum(xs[0], 0)]
        def lower(self, layer, xs, b):          # TensorRT 11 network calls
            return [b.network.add_activation(xs[0], b.enum("ActivationType", "relu"))]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ir import Layer, TensorType


class OpDef:
    """Base class of every op. Subclasses are stateless singletons; attributes live on the layer."""

    name: str = "op"
    #: True for ops whose output depends on other ranks (collectives).
    is_collective: bool = False

    def resolve(self, layer: Layer) -> Any:
        """Validated, normalized facts derived from ``layer.attrs`` (stored as ``layer.spec``
        before :meth:`infer` runs); raise ``layer.fail``. Default: nothing to derive."""
        return None

    def infer(self, layer: Layer) -> list[TensorType]:
        """Output types from ``layer.input_types`` and ``layer.attrs``; raise ``layer.fail``."""
        raise NotImplementedError

    def reference(self, layer: Layer, inputs: list[Any], ctx: Any) -> list[Any]:
        """Outputs computed with ``ctx.xp`` (NumPy or CuPy) following TensorRT's semantics."""
        raise NotImplementedError

    def lower(self, layer: Layer, inputs: list[Any], b: Any) -> list[Any]:
        """Emit TensorRT layers through ``b`` (a lowering context); returns output ITensors."""
        raise NotImplementedError(f"op '{self.name}' has no TensorRT lowering")

    def param_bytes(self, layer: Layer) -> int:
        """Bytes of weights this layer holds (constants)."""
        return 0

    def describe(self, layer: Layer) -> str:
        """A short text for summaries and graph drawings, e.g. 'add' or 'softmax(axis=-1)'."""
        shown = {k: v for k, v in layer.attrs.items() if not k.startswith("_")}
        if not shown:
            return self.name
        inner = ", ".join(f"{k}={v}" for k, v in shown.items())
        return f"{self.name}({inner})"

    def __repr__(self) -> str:
        return f"<op {self.name}>"
