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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..dtypes import DType
    from ..errors import TrtDslError
    from ..ir import Layer, TensorType


class RunContext(Protocol):
    """What an op's ``reference`` receives (the numpy and cupy backends implement it)."""

    #: the array module: numpy, or cupy on GPUs
    xp: Any
    #: the network's feeds by input name, as arrays of ``xp``
    feeds: Any
    #: False while a CUDA graph is captured: skip data-dependent checks (host reads)
    check_values: bool

    def constant(self, layer: Layer) -> Any: ...

    def erf(self, x: Any) -> Any: ...

    def matmul(self, a: Any, b: Any) -> Any: ...

    def matmul_rounded(self, a: Any, b: Any) -> Any | None: ...

    def collective(self, layer: Layer, x: Any) -> Any: ...

    def fused_attention(self, layer: Layer, inputs: list[Any]) -> list[Any] | None: ...

    def error(self, layer: Layer, message: str) -> TrtDslError: ...


class LoweringContext(Protocol):
    """What an op's ``lower`` receives: the ``tensorrt`` module, the ``INetworkDefinition``
    and helpers that name layers after the DSL layer (implemented by
    :class:`trtdsl.backends.tensorrt.lowering.LoweringContext`). TensorRT objects are ``Any``:
    TensorRT is not importable where most of this runs."""

    trt: Any
    network: Any

    def enum(self, enum_name: str, key: str) -> Any: ...

    def dtype(self, dtype: DType | str) -> Any: ...

    def name(self, trt_layer: Any, layer: Layer | None, suffix: str | None = None) -> Any: ...

    def out(
        self, trt_layer: Any, layer: Layer | None, i: int = 0, suffix: str | None = None
    ) -> Any: ...

    def named(self, trt_layer: Any, layer: Layer | None, suffix: str) -> Any: ...

    def shape_of(self, t: Any) -> tuple | None: ...

    def expand_rank(self, t: Any, from_rank: int, to_rank: int) -> Any: ...

    def reshape(
        self, t: Any, dims: Sequence[int], layer: Layer | None, suffix: str | None = None
    ) -> Any: ...

    def constant(self, value: Any, layer: Layer | None, suffix: str | None = None) -> Any: ...

    def scalar(self, value: Any, dtype: DType | str, rank: int) -> Any: ...

    def slice(
        self,
        t: Any,
        start: Sequence[int],
        size: Sequence[int | None],
        stride: Sequence[int],
        layer: Layer | None,
        suffix: str | None = None,
    ) -> Any: ...

    def permutation(self, perm: Sequence[int]) -> Any: ...

    def collective_root(self, spec: Any) -> int: ...

    def collective_num_ranks(self, spec: Any, world_size: int | None = None) -> int: ...


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

    def reference(self, layer: Layer, inputs: list[Any], ctx: RunContext) -> list[Any]:
        """Outputs computed with ``ctx.xp`` (NumPy or CuPy) following TensorRT's semantics."""
        raise NotImplementedError

    def lower(self, layer: Layer, inputs: list[Any], b: LoweringContext) -> list[Any]:
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
