"""The TensorRT 11 backend: lowering to ``INetworkDefinition``, engine build, execution.

Nothing here imports ``tensorrt`` or cuda-python at import time; where TensorRT 11 is missing,
:func:`build_engine` and :func:`run` raise :class:`TensorRTUnavailableError`.

- :mod:`.enums` - trtdsl names -> TensorRT enum members (the one table)
- :mod:`.lowering` - :class:`LoweringContext` and :func:`lower_network`
- :mod:`.build` - :func:`build_engine`: options, optimization profiles, engine cache, progress
- :mod:`.module` - ``import tensorrt`` with a clear error, the TensorRT logger
- :mod:`.runtime` - :class:`~.runtime.Engine`: deserialize, execution context, buffers (cuda-python)
- :mod:`.backend` - :func:`run`: build (cached) + execute with :class:`~.runtime.Engine`
"""

from .backend import compile, needs_communicator, run
from .build import (
    BuildOptions,
    build_engine,
    cache_key,
    normalize_profiles,
    validate_options,
)
from .errors import BuildError, CudaError, LoweringError, TensorRTUnavailableError
from .lowering import LoweringContext, lower_network
from .module import import_tensorrt

__all__ = [
    "compile",
    "run",
    "build_engine",
    "lower_network",
    "LoweringContext",
    "BuildOptions",
    "cache_key",
    "import_tensorrt",
    "needs_communicator",
    "normalize_profiles",
    "validate_options",
    "TensorRTUnavailableError",
    "LoweringError",
    "BuildError",
    "CudaError",
]
