"""NCCL for the GPU backends: a ctypes binding of ``libnccl.so.2``.

Buffers are raw CUDA device pointers (ints; objects with ``__cuda_array_interface__``, such as
CuPy arrays, are accepted too), counts are element counts and streams are ``cudaStream_t``
handles as ints (0: the default stream).

>>> import numpy as np
>>> NCCL_DATA_TYPES["bfloat16"], nccl_dtype(np.float32), nccl_op("avg")
(9, 7, 4)
"""

from .communicator import Communicator
from .library import (
    CAPSULE_NAME,
    NCCL_DATA_TYPES,
    NCCL_REDUCE_OPS,
    NCCL_RESULTS,
    NcclError,
    NcclUnavailableError,
    UniqueId,
    get_unique_id,
    group,
    load_nccl,
    nccl_dtype,
    nccl_op,
    nccl_version,
)

__all__ = [
    "NCCL_DATA_TYPES",
    "NCCL_REDUCE_OPS",
    "NCCL_RESULTS",
    "CAPSULE_NAME",
    "NcclError",
    "NcclUnavailableError",
    "UniqueId",
    "Communicator",
    "load_nccl",
    "nccl_version",
    "get_unique_id",
    "nccl_dtype",
    "nccl_op",
    "group",
]
