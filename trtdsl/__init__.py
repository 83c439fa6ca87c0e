"""trtdsl: a fluent DSL for hand-authored TensorRT 11 networks with NCCL collectives.

>>> import numpy as np, trtdsl as td
>>> net = td.Network("mlp")
>>> x = net.input("x", (2, 4))
>>> y = (x @ np.ones((4, 3), "float32")).gelu()
>>> net.output(y, "y")
>>> net.run({"x": np.ones((2, 4), "float32")})["y"].shape
(2, 3)
"""

from . import functional, parallel
from .dtypes import (
    DType,
    as_dtype,
    bfloat16,
    bool_,
    float8_e4m3,
    float16,
    float32,
    int8,
    int32,
    int64,
)
from .errors import (
    CollectiveMismatchError,
    DefinitionError,
    ExecutionError,
    RankFailedError,
    TrtDslError,
)
from .functional import concat, select, where
from .network import Network
from .ops.collective import COLLECTIVE_OPS, REDUCE_OPS
from .tensor import Tensor
from .worlds import InProcessWorld, MPIWorld, StaticWorld, World, world_from_env

__version__ = "0.1.0"

__all__ = [
    "Network",
    "Tensor",
    "functional",
    "parallel",
    "concat",
    "select",
    "where",
    "DType",
    "as_dtype",
    "float32",
    "float16",
    "bfloat16",
    "float8_e4m3",
    "int8",
    "int32",
    "int64",
    "bool_",
    "TrtDslError",
    "DefinitionError",
    "ExecutionError",
    "CollectiveMismatchError",
    "RankFailedError",
    "World",
    "StaticWorld",
    "InProcessWorld",
    "MPIWorld",
    "world_from_env",
    "COLLECTIVE_OPS",
    "REDUCE_OPS",
]
