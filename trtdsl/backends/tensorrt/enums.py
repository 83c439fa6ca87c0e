"""The one place that maps trtdsl names to TensorRT enum members.

Tables hold member *names*; :func:`resolve` looks them up on a given ``tensorrt`` module (the
real one, or the manifest-checked fake of the contract tests) when a network is lowered.

>>> TABLES["ElementWiseOperation"]["add"], TABLES["ReduceOperation"]["mean"]
('SUM', 'AVG')
>>> dtype_name("bfloat16")
'BF16'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import LoweringError

#: trtdsl dtype name -> ``tensorrt.DataType`` member.
DATA_TYPES: dict[str, str] = {
    "float32": "FLOAT",
    "float16": "HALF",
    "bfloat16": "BF16",
    "float8_e4m3": "FP8",
    "int8": "INT8",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}

#: trtdsl elementwise kind -> ``tensorrt.ElementWiseOperation`` member.
ELEMENTWISE: dict[str, str] = {
    "add": "SUM",
    "sub": "SUB",
    "mul": "PROD",
    "div": "DIV",
    "floor_div": "FLOOR_DIV",
    "pow": "POW",
    "min": "MIN",
    "max": "MAX",
    "equal": "EQUAL",
    "less": "LESS",
    "greater": "GREATER",
    "and": "AND",
    "or": "OR",
    "xor": "XOR",
}

#: trtdsl unary kind -> ``tensorrt.UnaryOperation`` member (tanh is an activation in TensorRT).
UNARY: dict[str, str] = {
    "exp": "EXP",
    "log": "LOG",
    "sqrt": "SQRT",
    "recip": "RECIP",
    "abs": "ABS",
    "neg": "NEG",
    "erf": "ERF",
    "sin": "SIN",
    "cos": "COS",
    "floor": "FLOOR",
    "ceil": "CEIL",
    "not": "NOT",
}

#: trtdsl activation kind -> ``tensorrt.ActivationType`` member (silu is lowered as
#: x * sigmoid(x), so it has no entry).
ACTIVATION: dict[str, str] = {
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "tanh": "TANH",
    "gelu_erf": "GELU_ERF",
    "gelu_tanh": "GELU_TANH",
}

#: trtdsl reduction (reduce layers and collectives) -> ``tensorrt.ReduceOperation`` member.
REDUCE: dict[str, str] = {
    "sum": "SUM",
    "mean": "AVG",
    "avg": "AVG",
    "max": "MAX",
    "min": "MIN",
    "prod": "PROD",
    "none": "NONE",
}

#: ``tensorrt.MatrixOperation``.
MATRIX: dict[str, str] = {"none": "NONE", "transpose": "TRANSPOSE", "vector": "VECTOR"}

#: trtdsl collective -> ``tensorrt.CollectiveOperation`` member.
COLLECTIVE: dict[str, str] = {
    "all_reduce": "ALL_REDUCE",
    "broadcast": "BROADCAST",
    "reduce": "REDUCE",
    "all_gather": "ALL_GATHER",
    "reduce_scatter": "REDUCE_SCATTER",
    "all_to_all": "ALL_TO_ALL",
    "gather": "GATHER",
    "scatter": "SCATTER",
}

#: ``tensorrt.AttentionNormalizationOp`` (IAttention's normalization).
ATTENTION_NORMALIZATION: dict[str, str] = {"softmax": "SOFTMAX", "none": "NONE"}

#: ``tensorrt.CausalMaskKind``: UPPER_LEFT = query i sees keys <= i; LOWER_RIGHT = the diagonal
#: anchored at the bottom-right corner (query i sees keys <= i + seq_k - seq_q).
CAUSAL_MASK: dict[str, str] = {
    "none": "NONE",
    "upper_left": "UPPER_LEFT",
    "lower_right": "LOWER_RIGHT",
}

#: ``tensorrt.TopKOperation``: largest or smallest k.
TOPK: dict[str, str] = {"max": "MAX", "min": "MIN"}

#: ``tensorrt.SampleMode`` (slice sampling): FILL pads with the fill value (input 4).
SAMPLE_MODE: dict[str, str] = {"strict": "STRICT_BOUNDS", "fill": "FILL"}

#: TensorRT enum class name -> its table.
TABLES: dict[str, Mapping[str, str]] = {
    "DataType": DATA_TYPES,
    "ElementWiseOperation": ELEMENTWISE,
    "UnaryOperation": UNARY,
    "ActivationType": ACTIVATION,
    "ReduceOperation": REDUCE,
    "MatrixOperation": MATRIX,
    "CollectiveOperation": COLLECTIVE,
    "AttentionNormalizationOp": ATTENTION_NORMALIZATION,
    "CausalMaskKind": CAUSAL_MASK,
    "TopKOperation": TOPK,
    "SampleMode": SAMPLE_MODE,
}


def member_name(enum_name: str, key: str) -> str:
    """The TensorRT member name for trtdsl ``key`` of ``enum_name``; LoweringError if unmapped.

    >>> member_name("CollectiveOperation", "reduce_scatter")
    'REDUCE_SCATTER'
    """
    table = TABLES.get(enum_name)
    if table is None:
        raise LoweringError(
            f"no trtdsl mapping for TensorRT enum {enum_name!r}; mapped enums: {sorted(TABLES)}"
        )
    try:
        return table[key]
    except (KeyError, TypeError):
        raise LoweringError(
            f"{key!r} has no tensorrt.{enum_name} member in trtdsl's table; "
            f"known keys: {sorted(table)}"
        ) from None


def dtype_name(dtype: Any) -> str:
    """``tensorrt.DataType`` member name of a trtdsl dtype (a DType or its name)."""
    return member_name("DataType", getattr(dtype, "name", dtype))


def resolve(trt: Any, enum_name: str, key: str) -> Any:
    """The member of ``trt.<enum_name>`` that trtdsl ``key`` maps to.

    Errors name the key, the enum and, when the module lacks the member, its version.
    """
    member = member_name(enum_name, key)
    enum_cls = getattr(trt, enum_name, None)
    if enum_cls is None:
        version = getattr(trt, "__version__", "?")
        raise LoweringError(f"TensorRT {version} has no enum {enum_name} (needed for {key!r})")
    try:
        return getattr(enum_cls, member)
    except AttributeError:
        version = getattr(trt, "__version__", "?")
        raise LoweringError(
            f"TensorRT {version} has no {enum_name}.{member} (trtdsl {key!r})"
        ) from None


def dtype_from_trt(trt_dtype: Any) -> str:
    """The trtdsl dtype name of a ``tensorrt.DataType`` member; LoweringError if unmapped."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    for dsl, member in DATA_TYPES.items():
        if member == name:
            return dsl
    raise LoweringError(f"tensorrt.DataType.{name} has no trtdsl dtype ({sorted(DATA_TYPES)})")
