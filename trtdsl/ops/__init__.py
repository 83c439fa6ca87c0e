"""Op definitions. Each op declares its shape rule, NumPy reference and TensorRT lowering."""

from .base import OpDef
from .collective import COLLECTIVE, COLLECTIVE_OPS, REDUCE_OPS
from .elementwise import ACTIVATION, ACTIVATIONS, BINARY_OPS, ELEMENTWISE, UNARY, UNARY_OPS
from .linalg import MATMUL, NORMALIZATION, REDUCE, REDUCE_KINDS, SOFTMAX
from .shape_ops import (
    CAST,
    CONCAT,
    CONSTANT,
    GATHER,
    IDENTITY,
    INPUT,
    RESHAPE,
    SELECT,
    SLICE,
    SPLIT,
    TRANSPOSE,
)

ALL_OPS: tuple[OpDef, ...] = (
    INPUT,
    CONSTANT,
    IDENTITY,
    CAST,
    RESHAPE,
    TRANSPOSE,
    CONCAT,
    SLICE,
    SPLIT,
    GATHER,
    SELECT,
    ELEMENTWISE,
    UNARY,
    ACTIVATION,
    MATMUL,
    SOFTMAX,
    REDUCE,
    NORMALIZATION,
    COLLECTIVE,
)

__all__ = [
    "OpDef",
    "ALL_OPS",
    "COLLECTIVE_OPS",
    "REDUCE_OPS",
    "BINARY_OPS",
    "UNARY_OPS",
    "ACTIVATIONS",
    "REDUCE_KINDS",
]
