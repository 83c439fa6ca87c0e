"""The tensor element types trtdsl knows, and their NumPy equivalents.

>>> from trtdsl import dtypes
>>> dtypes.as_dtype("float16").itemsize
2
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    """One element type: its name, NumPy dtype and kind ('float', 'int' or 'bool')."""

    name: str
    numpy: np.dtype
    kind: str

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    def __repr__(self) -> str:
        return f"trtdsl.{self.name}"

    def __str__(self) -> str:
        return self.name


float32 = DType("float32", np.dtype(np.float32), "float")
float16 = DType("float16", np.dtype(np.float16), "float")
bfloat16 = DType("bfloat16", np.dtype(ml_dtypes.bfloat16), "float")
#: FP8 E4M3 (finite-only, max 448): TensorRT's DataType.FP8; made by ``quantize`` and read by
#: ``dequantize`` (other ops do not take it; TensorRT's FP8 is a quantized type).
float8_e4m3 = DType("float8_e4m3", np.dtype(ml_dtypes.float8_e4m3fn), "float")
int8 = DType("int8", np.dtype(np.int8), "int")
int32 = DType("int32", np.dtype(np.int32), "int")
int64 = DType("int64", np.dtype(np.int64), "int")
bool_ = DType("bool", np.dtype(np.bool_), "bool")

ALL: tuple[DType, ...] = (float32, float16, bfloat16, float8_e4m3, int8, int32, int64, bool_)
_BY_NAME = {d.name: d for d in ALL}
_BY_NAME["bool_"] = bool_
_BY_NUMPY = {d.numpy: d for d in ALL}

DTypeLike = "DType | str | np.dtype | type"


def as_dtype(value: DType | str | np.dtype | type) -> DType:
    """Convert a name ('float16'), NumPy dtype or DType to a DType; ValueError otherwise."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    try:
        npd = np.dtype(value)
    except TypeError:
        npd = None
    if npd is not None and npd in _BY_NUMPY:
        return _BY_NUMPY[npd]
    names = ", ".join(d.name for d in ALL)
    raise ValueError(f"unsupported dtype {value!r}; trtdsl supports {names}")


def compute_dtype(dtype: DType) -> np.dtype:
    """The NumPy dtype the reference computes in: float32 for 16-bit floats, else itself."""
    if dtype.is_float and dtype.itemsize < 4:
        return np.dtype(np.float32)
    return dtype.numpy
