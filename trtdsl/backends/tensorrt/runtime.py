"""Running serialized TensorRT engines: NumPy in, NumPy out, through cuda-python.

:class:`Engine` deserializes a plan, creates an execution context, and for each :meth:`run`
sets the input shapes, copies the inputs to device buffers (kept across runs, reallocated when a
size changes), sizes the outputs from the context's shapes, binds every address, calls
``execute_async_v3`` on its stream and copies the outputs back. For engines with collectives it
attaches an NCCL communicator
(``IExecutionContext.set_communicator``, a collective call).

Teardown order (``close()``): wait for the stream; the execution context; the engine; the
runtime; the device buffers and the stream. The communicator is owned by the caller and must be
closed after the engine (TensorRT requires it to outlive the context).

TensorRT and cuda-python are imported inside the functions that need them.

>>> from trtdsl.backends.tensorrt.runtime import Engine          # doctest: +SKIP
>>> with Engine(plan) as engine:               # doctest: +SKIP
...     out = engine.run({"x": x})["y"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ... import dtypes
from ...errors import ExecutionError
from .errors import CudaError


# --- CUDA runtime (cuda.bindings.runtime) --------------------------------------------------
def cudart() -> Any:
    """``cuda.bindings.runtime`` (cuda-python), or :class:`CudaError` saying what to install."""
    try:
        from cuda.bindings import runtime
    except ImportError as e:
        raise CudaError(
            "the TensorRT runtime needs cuda-python (pip install 'trtdsl[trt-cu13]' or "
            f"'cuda-python>=12'): {e}"
        ) from e
    return runtime


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result; CudaError unless ``cudaSuccess``."""
    rt = cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != rt.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        try:
            text = rt.cudaGetErrorString(err)[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:
            text = ""
        raise CudaError(f"{what} failed: {name} {text}".rstrip())
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_count() -> int:
    """Number of visible CUDA devices."""
    return int(check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount"))


def select_device(rank: int | None = None) -> int:
    """Make device ``rank % device_count`` current (``rank`` None: keep the current one)."""
    rt = cudart()
    n = device_count()
    if n == 0:
        raise CudaError("no CUDA device is visible")
    if rank is None:
        return int(check(rt.cudaGetDevice(), "cudaGetDevice"))
    device = rank % n
    check(rt.cudaSetDevice(device), f"cudaSetDevice({device})")
    return device


def current_device_description() -> str:
    """'<name> sm<major><minor>' of the current device (part of the engine cache key)."""
    rt = cudart()
    device = check(rt.cudaGetDevice(), "cudaGetDevice")
    prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return f"{name.rstrip(chr(0))} sm{prop.major}{prop.minor}"


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``); ``free()`` it (or use ``with``)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        # TensorRT wants a valid address even for empty tensors
        self.ptr: int = int(check(cudart().cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def copy_from(self, host: np.ndarray, stream: Any) -> None:
        """Asynchronous host-to-device copy of a C-contiguous array on ``stream``."""
        if host.nbytes != self.nbytes:
            raise ValueError(f"copy of {host.nbytes} bytes into a buffer of {self.nbytes}")
        if self.nbytes:
            rt = cudart()
            kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            check(
                rt.cudaMemcpyAsync(self.ptr, host.ctypes.data, self.nbytes, kind, stream),
                "cudaMemcpyAsync (host to device)",
            )

    def copy_to(self, host: np.ndarray, stream: Any) -> None:
        """Asynchronous device-to-host copy into a C-contiguous array on ``stream``."""
        if host.nbytes != self.nbytes:
            raise ValueError(f"copy of {self.nbytes} bytes into an array of {host.nbytes}")
        if self.nbytes:
            rt = cudart()
            kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            check(
                rt.cudaMemcpyAsync(host.ctypes.data, self.ptr, self.nbytes, kind, stream),
                "cudaMemcpyAsync (device to host)",
            )

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(cudart().cudaFree(ptr), "cudaFree")

    def __enter__(self) -> DeviceBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


class Stream:
    """A CUDA stream (``cudaStreamCreate``); ``handle`` is the int TensorRT takes."""

    def __init__(self) -> None:
        self.stream: Any = check(cudart().cudaStreamCreate(), "cudaStreamCreate")

    @property
    def handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            check(cudart().cudaStreamDestroy(stream), "cudaStreamDestroy")


# --- TensorRT engine -----------------------------------------------------------------------
def _numpy_dtype(trt_dtype: Any) -> np.dtype:
    from .enums import dtype_from_trt

    return dtypes.as_dtype(dtype_from_trt(trt_dtype)).numpy


class Engine:
    """A deserialized TensorRT engine with one execution context, on the current device.

    ``communicator``: a :class:`trtdsl.backends.nccl.Communicator` for engines with collectives (it
    must stay open until this engine is closed). ``trt``: the tensorrt module (default:
    imported).
    """

    def __init__(self, plan: bytes, *, communicator: Any = None, trt: Any = None) -> None:
        from .module import get_logger, import_tensorrt

        self.trt = trt if trt is not None else import_tensorrt()
        self._closed = False
        self._stream: Stream | None = None
        self._context: Any = None
        self._engine: Any = None
        self._buffers: dict[str, DeviceBuffer] = {}  # kept across runs, per tensor name
        logger, self._logs = get_logger(self.trt)
        self._runtime = self.trt.Runtime(logger)
        try:
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise ExecutionError(
                    "TensorRT could not deserialize the engine (built by another TensorRT "
                    f"version or for another GPU?): {'; '.join(self._logs.errors[-5:])}"
                )
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise ExecutionError(
                    "TensorRT could not create an execution context: "
                    + "; ".join(self._logs.errors[-5:])
                )
            self._stream = Stream()
            mode = self.trt.TensorIOMode
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self.inputs = [n for n in names if self._engine.get_tensor_mode(n) == mode.INPUT]
            self.outputs = [n for n in names if self._engine.get_tensor_mode(n) == mode.OUTPUT]
            self.dtypes = {n: _numpy_dtype(self._engine.get_tensor_dtype(n)) for n in names}
            self.communicator = communicator
            if communicator is not None:
                self._capsule = communicator.capsule()
                # collective: blocks until every rank of the communicator has called it
                if not self._context.set_communicator(self._capsule):
                    raise ExecutionError(
                        "IExecutionContext.set_communicator returned False (does the engine "
                        "hold a collective with num_ranks > 1, and does the communicator have "
                        "that many ranks?): " + "; ".join(self._logs.errors[-5:])
                    )
        except BaseException:
            self.close()
            raise

    def _select_profile(self, shapes: Mapping[str, tuple]) -> None:
        n = self._engine.num_optimization_profiles
        if n <= 1:
            return
        for k in range(n):
            fits = True
            for name in self.inputs:
                mn, _, mx = self._engine.get_tensor_profile_shape(name, k)
                shape = shapes[name]
                if any(not lo <= d <= hi for d, lo, hi in zip(shape, mn, mx)):
                    fits = False
                    break
            if fits:
                if self._context.active_optimization_profile != k:
                    ok = self._context.set_optimization_profile_async(k, self._stream.handle)
                    if not ok:
                        raise ExecutionError(f"could not select optimization profile {k}")
                return
        raise ExecutionError(f"no optimization profile admits input shapes {dict(shapes)}")

    def _buffer(self, name: str, nbytes: int) -> DeviceBuffer:
        """The device buffer of tensor ``name``, reused while its size stays the same."""
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes != nbytes:
            if buf is not None:
                buf.free()
            buf = self._buffers[name] = DeviceBuffer(nbytes)
        return buf

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Execute once: ``{input name: array}`` -> ``{output name: array}``."""
        if self._closed:
            raise ExecutionError("the engine is closed")
        missing = sorted(set(self.inputs) - set(feeds))
        if missing:
            raise ExecutionError(f"missing input(s) {missing}; the engine takes {self.inputs}")
        arrays = {}
        for name in self.inputs:
            arr = np.ascontiguousarray(feeds[name])
            if arr.dtype != self.dtypes[name]:
                raise ExecutionError(
                    f"input '{name}': dtype {arr.dtype}, the engine takes {self.dtypes[name]}"
                )
            arrays[name] = arr
        self._select_profile({n: tuple(a.shape) for n, a in arrays.items()})
        stream = self._stream
        assert stream is not None
        try:
            for name, arr in arrays.items():
                if not self._context.set_input_shape(name, tuple(arr.shape)):
                    k = self._context.active_optimization_profile
                    ranges = list(self._engine.get_tensor_profile_shape(name, k))
                    raise ExecutionError(
                        f"input '{name}': shape {tuple(arr.shape)} is outside the engine's "
                        f"optimization profile {k} (min, opt, max) = {ranges}"
                    )
                buf = self._buffer(name, arr.nbytes)
                buf.copy_from(arr, stream.stream)
                self._context.set_tensor_address(name, buf.ptr)
            results: dict[str, tuple[np.ndarray, DeviceBuffer]] = {}
            for name in self.outputs:
                shape = tuple(self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ExecutionError(f"output '{name}' has unresolved shape {shape}")
                host = np.empty(shape, dtype=self.dtypes[name])
                buf = self._buffer(name, host.nbytes)
                self._context.set_tensor_address(name, buf.ptr)
                results[name] = (host, buf)
            if not self._context.execute_async_v3(stream.handle):
                raise ExecutionError(
                    "execute_async_v3 failed: " + "; ".join(self._logs.errors[-5:])
                )
            for host, buf in results.values():
                buf.copy_to(host, stream.stream)
            stream.synchronize()
            return {name: host for name, (host, _) in results.items()}
        finally:
            stream.synchronize()

    def close(self) -> None:
        """Release in order: stream work, context, engine, runtime, stream (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not None and self._stream.stream is not None:
                self._stream.synchronize()
        finally:
            self._context = None  # before the engine it belongs to
            self._engine = None
            self._runtime = None
            for buf in self._buffers.values():
                buf.free()
            self._buffers.clear()
            if self._stream is not None:
                self._stream.destroy()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() explicitly
        try:
            self.close()
        except Exception:
            pass
