"""NCCL for the GPU backends, through nccl4py (NVIDIA's bindings; ``import nccl.core``).

A thin adapter: the cupy world and backend and the TensorRT backend use only this package's
:class:`Communicator` (made over a trtdsl World, collectives on pointers/counts/dtypes/streams),
:func:`capsule` (for ``set_communicator``) and the dtype/op tables, never nccl4py itself.

>>> import numpy as np
>>> NCCL_DATA_TYPES["bfloat16"], nccl_dtype(np.float32), nccl_op("avg")
(9, 7, 4)
"""

from .adapter import (
    CAPSULE_NAME,
    NCCL_DATA_TYPES,
    NCCL_REDUCE_OPS,
    NcclError,
    NcclUnavailableError,
    capsule,
    capsule_pointer,
    get_unique_id,
    group,
    load,
    nccl4py_version,
    nccl_dtype,
    nccl_op,
    nccl_version,
    use_modules,
)
from .communicator import Communicator

__all__ = [
    "NCCL_DATA_TYPES",
    "NCCL_REDUCE_OPS",
    "CAPSULE_NAME",
    "NcclError",
    "NcclUnavailableError",
    "Communicator",
    "capsule",
    "capsule_pointer",
    "load",
    "nccl_version",
    "nccl4py_version",
    "get_unique_id",
    "nccl_dtype",
    "nccl_op",
    "group",
    "use_modules",
]
