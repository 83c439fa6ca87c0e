"""The ``tensorrt`` module, imported on demand with a clear error, and its logger."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .errors import INSTALL_HINT, TensorRTUnavailableError

MIN_TENSORRT_MAJOR = 11


def import_tensorrt() -> Any:
    """``import tensorrt`` (TensorRT >= 11), or :class:`TensorRTUnavailableError` saying why."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError when libnvinfer is missing
        raise TensorRTUnavailableError(
            f"TensorRT 11 is not installed here (import tensorrt failed: "
            f"{type(e).__name__}: {e}); {INSTALL_HINT}"
        ) from e
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_TENSORRT_MAJOR:
        raise TensorRTUnavailableError(
            f"TensorRT {version} is installed but trtdsl needs TensorRT >= {MIN_TENSORRT_MAJOR} "
            f"(IDistCollectiveLayer, strongly typed networks); {INSTALL_HINT}"
        )
    return trt


class LogBuffer:
    """What a TensorRT logger keeps: errors (for exceptions) and printed warnings."""

    def __init__(self, stream: TextIO | None = None, keep: int = 50) -> None:
        self.stream = stream
        self.errors: list[str] = []
        self.keep = keep

    def log(self, level: int, msg: str) -> None:
        if level <= 1:  # INTERNAL_ERROR, ERROR
            self.errors = (self.errors + [msg])[-self.keep :]
        if level <= 2:  # and WARNING
            stream = self.stream if self.stream is not None else sys.stderr
            stream.write(f"[TensorRT] {msg}\n")


_LOGGERS: dict[int, tuple[Any, Any, LogBuffer]] = {}


def get_logger(trt: Any) -> tuple[Any, LogBuffer]:
    """One ``trt.ILogger`` per TensorRT module (TensorRT keeps the first one it is given)."""
    found = _LOGGERS.get(id(trt))
    if found is not None and found[0] is trt:
        return found[1], found[2]
    buffer = LogBuffer()

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            buffer.log(int(severity), msg)

    logger = _Logger()
    _LOGGERS[id(trt)] = (trt, logger, buffer)  # the module reference keeps its id unique
    return logger, buffer
