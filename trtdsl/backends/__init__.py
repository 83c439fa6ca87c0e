"""Backends that run a recorded network: ``numpy`` (reference), ``cupy`` (GPU + NCCL) and
``tensorrt`` (TensorRT 11 engines)."""

from __future__ import annotations

import importlib
from typing import Any

_BACKENDS = {
    "numpy": "trtdsl.backends.numpy_backend",
    "cupy": "trtdsl.backends.cupy_backend",
    "tensorrt": "trtdsl.backends.tensorrt",
}


def get_backend(name: str) -> Any:
    """The backend module called ``name`` (it has ``run(network, feeds, **options)``)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_BACKENDS)}")
    return importlib.import_module(_BACKENDS[name])
