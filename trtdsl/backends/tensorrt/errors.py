"""Errors of the TensorRT backend."""

from __future__ import annotations

from ...errors import ExecutionError, TrtDslError

INSTALL_HINT = (
    "install TensorRT 11 with its builder library: pip install 'trtdsl[trt]' (tensorrt-cu12, "
    "CUDA 12) or 'trtdsl[trt-cu13]' (tensorrt-cu13, CUDA 13); the tensorrt-cu1x-bindings wheel "
    "alone is not enough, it needs libnvinfer. Without TensorRT, run networks with "
    "backend='numpy' (CPU) or backend='cupy' (GPU)"
)


class TensorRTUnavailableError(TrtDslError, ImportError):
    """TensorRT 11 cannot be imported here (not installed, libnvinfer missing, or too old)."""


class LoweringError(TrtDslError, ValueError):
    """A layer could not be lowered to TensorRT network calls (names the DSL layer)."""


class BuildOptionError(TrtDslError, ValueError):
    """Bad build options: workspace, timing cache path, or optimization profiles (e.g. a dynamic
    input with no range)."""


class BuildError(ExecutionError):
    """TensorRT failed to build an engine; the message carries TensorRT's error log."""


class CudaError(ExecutionError):
    """A CUDA runtime call failed, or cuda-python is not installed."""
