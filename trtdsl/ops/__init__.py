"""Op declarations: each module declares its ops once - the OpDef (shape rule, NumPy
reference, TensorRT lowering) and the public builder functions (``@public``), from which
:mod:`trtdsl.functional`, the :class:`~trtdsl.Tensor` methods and ``docs/api.md`` come."""

from .adaln import MODULATED_NORM
from .api import REGISTRY, PublicOp, public
from .attention import ATTENTION
from .base import OpDef
from .collective import COLLECTIVE, COLLECTIVE_OPS, REDUCE_OPS
from .elementwise import ACTIVATION, ACTIVATIONS, BINARY_OPS, ELEMENTWISE, UNARY, UNARY_OPS
from .indexing import CONCAT, GATHER, SELECT, SLICE, SPLIT
from .layout import PAD, PATCHIFY, TOPK
from .linalg import MATMUL, NORMALIZATION, REDUCE, REDUCE_KINDS, SOFTMAX
from .position import ROPE
from .quantize import DEQUANTIZE, QUANTIZE
from .shape_ops import CAST, CONSTANT, IDENTITY, INPUT, RESHAPE, TRANSPOSE

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
    MODULATED_NORM,
    COLLECTIVE,
    ATTENTION,
    QUANTIZE,
    DEQUANTIZE,
    ROPE,
    PATCHIFY,
    PAD,
    TOPK,
)

__all__ = [
    "OpDef",
    "REGISTRY",
    "PublicOp",
    "public",
    "ALL_OPS",
    "COLLECTIVE_OPS",
    "REDUCE_OPS",
    "BINARY_OPS",
    "UNARY_OPS",
    "ACTIVATIONS",
    "REDUCE_KINDS",
]
