"""``Tensor``: a value in a network, with NumPy-like operators and one method per DSL op.

>>> import trtdsl as td
>>> net = td.Network("t")
>>> x = net.input("x", (2, 8))
>>> y = (-x + 1.0).softmax(axis=-1)[:, :4]
>>> y.shape, y.dtype
((2, 4), trtdsl.float32)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .dtypes import DType
from .ir import Layer, TensorType, format_shape

if TYPE_CHECKING:
    from .network import Network


class Tensor:
    """Output ``index`` of layer ``producer`` in ``network``, of type ``type``."""

    __array_priority__ = 1000  # make ndarray <op> Tensor defer to Tensor's reflected operators

    def __init__(
        self, network: Network, producer: Layer, index: int, type: TensorType, name: str
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

    def __repr__(self) -> str:
        return f"Tensor('{self.name}', shape={format_shape(self.shape)}, dtype={self.dtype})"

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of tensor '{self.name}' is unknown while the network is being "
            "defined; use trtdsl.select or comparisons to build conditions"
        )

    def __iter__(self):
        raise TypeError(f"tensor '{self.name}' is not iterable; use .split() or indexing")

    def __len__(self) -> int:
        if self.ndim == 0 or self.shape[0] is None:
            raise TypeError(f"tensor '{self.name}' has no static length")
        return self.shape[0]

    # -- operators ---------------------------------------------------------------------------
    def __add__(self, o: Any) -> Tensor:
        return F.add(self, o)

    def __radd__(self, o: Any) -> Tensor:
        return F.add(o, self)

    def __sub__(self, o: Any) -> Tensor:
        return F.sub(self, o)

    def __rsub__(self, o: Any) -> Tensor:
        return F.sub(o, self)

    def __mul__(self, o: Any) -> Tensor:
        return F.mul(self, o)

    def __rmul__(self, o: Any) -> Tensor:
        return F.mul(o, self)

    def __truediv__(self, o: Any) -> Tensor:
        return F.div(self, o)

    def __rtruediv__(self, o: Any) -> Tensor:
        return F.div(o, self)

    def __floordiv__(self, o: Any) -> Tensor:
        return F.floor_div(self, o)

    def __rfloordiv__(self, o: Any) -> Tensor:
        return F.floor_div(o, self)

    def __pow__(self, o: Any) -> Tensor:
        return F.pow(self, o)

    def __rpow__(self, o: Any) -> Tensor:
        return F.pow(o, self)

    def __matmul__(self, o: Any) -> Tensor:
        return F.matmul(self, o)

    def __rmatmul__(self, o: Any) -> Tensor:
        return F.matmul(o, self)

    def __neg__(self) -> Tensor:
        return F.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return F.abs(self)

    def __lt__(self, o: Any) -> Tensor:
        return F.less(self, o)

    def __gt__(self, o: Any) -> Tensor:
        return F.greater(self, o)

    def __le__(self, o: Any) -> Tensor:
        return F.less_equal(self, o)

    def __ge__(self, o: Any) -> Tensor:
        return F.greater_equal(self, o)

    def __and__(self, o: Any) -> Tensor:
        return F.logical_and(self, o)

    def __or__(self, o: Any) -> Tensor:
        return F.logical_or(self, o)

    def __xor__(self, o: Any) -> Tensor:
        return F.logical_xor(self, o)

    def __invert__(self) -> Tensor:
        return F.logical_not(self)

    def __getitem__(self, index: Any) -> Tensor:
        return F.getitem(self, index)

    # -- one method per op (see trtdsl.functional for documentation) -------------------------
    def exp(self, name: str | None = None) -> Tensor:
        return F.exp(self, name=name)

    def log(self, name: str | None = None) -> Tensor:
        return F.log(self, name=name)

    def sqrt(self, name: str | None = None) -> Tensor:
        return F.sqrt(self, name=name)

    def recip(self, name: str | None = None) -> Tensor:
        return F.recip(self, name=name)

    def tanh(self, name: str | None = None) -> Tensor:
        return F.tanh(self, name=name)

    def erf(self, name: str | None = None) -> Tensor:
        return F.erf(self, name=name)

    def sin(self, name: str | None = None) -> Tensor:
        return F.sin(self, name=name)

    def cos(self, name: str | None = None) -> Tensor:
        return F.cos(self, name=name)

    def relu(self, name: str | None = None) -> Tensor:
        return F.relu(self, name=name)

    def sigmoid(self, name: str | None = None) -> Tensor:
        return F.sigmoid(self, name=name)

    def gelu(self, approximate: str = "none", name: str | None = None) -> Tensor:
        return F.gelu(self, approximate=approximate, name=name)

    def silu(self, name: str | None = None) -> Tensor:
        return F.silu(self, name=name)

    def softmax(self, axis: int = -1, name: str | None = None) -> Tensor:
        return F.softmax(self, axis=axis, name=name)

    def sum(self, axis: Any = None, keepdims: bool = False, name: str | None = None) -> Tensor:
        return F.reduce_sum(self, axis=axis, keepdims=keepdims, name=name)

    def mean(self, axis: Any = None, keepdims: bool = False, name: str | None = None) -> Tensor:
        return F.reduce_mean(self, axis=axis, keepdims=keepdims, name=name)

    def max(self, axis: Any = None, keepdims: bool = False, name: str | None = None) -> Tensor:
        return F.reduce_max(self, axis=axis, keepdims=keepdims, name=name)

    def min(self, axis: Any = None, keepdims: bool = False, name: str | None = None) -> Tensor:
        return F.reduce_min(self, axis=axis, keepdims=keepdims, name=name)

    def prod(self, axis: Any = None, keepdims: bool = False, name: str | None = None) -> Tensor:
        return F.reduce_prod(self, axis=axis, keepdims=keepdims, name=name)

    def floor(self, name: str | None = None) -> Tensor:
        return F.floor(self, name=name)

    def ceil(self, name: str | None = None) -> Tensor:
        return F.ceil(self, name=name)

    def clip(self, low: Any, high: Any, name: str | None = None) -> Tensor:
        return F.clip(self, low, high, name=name)

    def reshape(self, shape: Any, name: str | None = None) -> Tensor:
        return F.reshape(self, shape, name=name)

    def transpose(self, perm: Any = None, name: str | None = None) -> Tensor:
        return F.transpose(self, perm, name=name)

    permute = transpose

    def expand_dims(self, axis: int, name: str | None = None) -> Tensor:
        return F.expand_dims(self, axis, name=name)

    def squeeze(self, axis: int, name: str | None = None) -> Tensor:
        return F.squeeze(self, axis, name=name)

    def split(self, sections: Any, axis: int = 0, name: str | None = None) -> list[Tensor]:
        return F.split(self, sections, axis=axis, name=name)

    def gather(self, indices: Any, axis: int = 0, name: str | None = None) -> Tensor:
        return F.gather(self, indices, axis=axis, name=name)

    def cast(self, dtype: Any, name: str | None = None) -> Tensor:
        return F.cast(self, dtype, name=name)

    astype = cast

    def identity(self, name: str | None = None) -> Tensor:
        return F.identity(self, name=name)

    def layer_norm(
        self, scale: Any, bias: Any, axes: Any = -1, eps: float = 1e-5, name: str | None = None
    ) -> Tensor:
        return F.layer_norm(self, scale, bias, axes=axes, eps=eps, name=name)

    def rms_norm(
        self, scale: Any, axes: Any = -1, eps: float = 1e-6, name: str | None = None
    ) -> Tensor:
        return F.rms_norm(self, scale, axes=axes, eps=eps, name=name)

    # -- collectives -------------------------------------------------------------------------
    def collective(
        self,
        op: str,
        reduce: str | None = None,
        root: int | None = None,
        groups: Any = None,
        name: str | None = None,
    ) -> Tensor:
        return F.collective(self, op, reduce=reduce, root=root, groups=groups, name=name)

    def all_reduce(
        self, reduce: str = "sum", groups: Any = None, name: str | None = None
    ) -> Tensor:
        return F.all_reduce(self, reduce, groups=groups, name=name)

    def broadcast(self, root: int = 0, groups: Any = None, name: str | None = None) -> Tensor:
        return F.broadcast(self, root, groups=groups, name=name)

    def reduce(
        self, reduce: str = "sum", root: int = 0, groups: Any = None, name: str | None = None
    ) -> Tensor:
        return F.reduce(self, reduce, root, groups=groups, name=name)

    def all_gather(self, groups: Any = None, name: str | None = None) -> Tensor:
        return F.all_gather(self, groups=groups, name=name)

    def reduce_scatter(
        self, reduce: str = "sum", groups: Any = None, name: str | None = None
    ) -> Tensor:
        return F.reduce_scatter(self, reduce, groups=groups, name=name)

    def all_to_all(self, groups: Any = None, name: str | None = None) -> Tensor:
        return F.all_to_all(self, groups=groups, name=name)

    def gather_to(self, root: int = 0, groups: Any = None, name: str | None = None) -> Tensor:
        """The GATHER collective (``gather`` is the indexing op)."""
        return F.gather_collective(self, root, groups=groups, name=name)

    def scatter(self, root: int = 0, groups: Any = None, name: str | None = None) -> Tensor:
        return F.scatter(self, root, groups=groups, name=name)


from . import functional as F  # noqa: E402  (circular: functional needs Tensor)
