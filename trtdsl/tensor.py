"""``Tensor``: a value in a network, with NumPy-like operators and one method per DSL op.

>>> import trtdsl as td
>>> net = td.Network("t")
>>> x = net.input("x", (2, 8))
>>> y = (-x + 1.0).softmax(axis=-1)[:, :4]
>>> y.shape, y.dtype
((2, 4), trtdsl.float32)
"""

from __future__ import annotations

from typing import Any

from . import functional as F
from .errors import TensorUsageError
from .ir import Value, format_shape
from .ops.api import REGISTRY


class Tensor(Value):
    """A value in a network: output ``index`` of layer ``producer``, of type ``type``.

    Operators (``+``, ``@``, ``[...]``, comparisons) and one method per op; the methods are
    registered from the op declarations in :mod:`trtdsl.ops` (see :func:`trtdsl.ops.api.public`).
    """

    __array_priority__ = 1000  # make ndarray <op> Tensor defer to Tensor's reflected operators

    def __repr__(self) -> str:
        return f"Tensor('{self.name}', shape={format_shape(self.shape)}, dtype={self.dtype})"

    def __bool__(self) -> bool:
        raise TensorUsageError(
            f"the truth value of tensor '{self.name}' is unknown while the network is being "
            "defined; use trtdsl.select or comparisons to build conditions"
        )

    def __iter__(self):
        raise TensorUsageError(f"tensor '{self.name}' is not iterable; use .split() or indexing")

    def __len__(self) -> int:
        if self.ndim == 0 or self.shape[0] is None:
            raise TensorUsageError(f"tensor '{self.name}' has no static length")
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


def _install_methods() -> None:
    """One Tensor method per registered builder (and its aliases), from the op declarations."""
    for op in REGISTRY.values():
        if op.method is None:
            continue
        for method in (op.method, *op.aliases):
            if method in Tensor.__dict__:
                raise RuntimeError(f"Tensor.{method} is defined twice (op '{op.name}')")
            setattr(Tensor, method, op.function)


_install_methods()
