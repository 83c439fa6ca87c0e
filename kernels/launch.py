"""Load compiled cubins and launch them with ``cuda.core`` on a caller's stream (no torch).

Arguments are passed by the kernel's parameter types: pointers as Python ints (device
addresses), ``i32``/``i64``/``fp32`` as NumPy scalars; the two scratch pointers Triton 3.6
appends get a CuPy buffer when the kernel asks for scratch, else null.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .compile import CompiledKernel
from .errors import KernelLaunchError

_SMEM_DEFAULT = 48 * 1024
_lock = threading.Lock()
_loaded: dict[tuple[str, int], Any] = {}


def cuda_core() -> Any:
    """The ``cuda.core`` module with ObjectCode/LaunchConfig/launch (or its experimental one)."""
    try:
        import cuda.core as cc

        if hasattr(cc, "ObjectCode") and hasattr(cc, "launch"):
            return cc
    except ImportError:
        pass
    try:
        import cuda.core.experimental as cce
    except ImportError as e:
        raise KernelLaunchError(
            "launching the trtdsl kernels needs cuda.core (pip install 'cuda-core[cu13]')"
        ) from e
    return cce


class _StreamRef:
    """A raw ``CUstream`` handle speaking the ``__cuda_stream__`` protocol (for a cuda.core
    without ``Stream.from_handle``)."""

    def __init__(self, handle: int) -> None:
        self.handle = int(handle)

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)


_STREAMS_KEPT = 256
_streams: dict[int, Any] = {}  # raw handle -> borrowed cuda.core Stream


def core_stream(handle: int) -> Any:
    """A cuda.core ``Stream`` borrowing the raw ``CUstream`` ``handle`` (the caller keeps the
    stream alive); made once per handle (``from_handle`` costs microseconds: it defines a
    class per call) and passed to ``launch`` as a Stream, not through the stream protocol,
    which cuda.core deprecates for foreign objects. The wrapper holds the address only (its
    context and device are read lazily, and ``launch`` reads neither), so a handle that CuPy
    reuses for a new stream is still right."""
    s = _streams.get(handle)
    if s is None:
        from_handle = getattr(getattr(cuda_core(), "Stream", None), "from_handle", None)
        if from_handle is None:
            return _StreamRef(handle)
        if len(_streams) >= _STREAMS_KEPT:
            _streams.clear()
        s = _streams[handle] = from_handle(int(handle))
    return s


def as_stream(stream: Any) -> Any:
    """A stream for ``cuda.core.launch``: None (CuPy's current), an int (a raw handle), a CuPy
    stream, a cuda.core Stream (as is) or any object speaking ``__cuda_stream__``."""
    if stream is None:
        import cupy

        return core_stream(cupy.cuda.get_current_stream().ptr)
    if isinstance(stream, int):
        return core_stream(stream)
    if hasattr(stream, "ptr"):  # a CuPy stream
        return core_stream(stream.ptr)
    core = getattr(cuda_core(), "Stream", None)
    if core is not None and isinstance(stream, core):
        return stream
    if hasattr(stream, "__cuda_stream__"):
        return core_stream(int(stream.__cuda_stream__()[1]))
    raise KernelLaunchError(f"cannot use {type(stream).__name__} as a CUDA stream")


def _set_max_dynamic_smem(kernel: Any, nbytes: int, device: int) -> None:
    from cuda.bindings import driver

    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    handle = getattr(kernel, "handle", None) or kernel._handle
    if isinstance(handle, driver.CUkernel):
        dev = driver.CUdevice(device)
        (err,) = driver.cuKernelSetAttribute(attr, nbytes, handle, dev)
    else:
        (err,) = driver.cuFuncSetAttribute(handle, attr, nbytes)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise KernelLaunchError(f"setting {nbytes} B of dynamic shared memory failed: {err}")


def load(ck: CompiledKernel, device: int) -> Any:
    """The ``cuda.core`` Kernel of ``ck`` on ``device`` (loaded once per process)."""
    with _lock:
        hit = _loaded.get((ck.key, device))
        if hit is not None:
            return hit
        cc = cuda_core()
        cc.Device(device).set_current()
        kernel = cc.ObjectCode.from_cubin(ck.cubin).get_kernel(ck.name)
        if ck.shared > _SMEM_DEFAULT:
            _set_max_dynamic_smem(kernel, ck.shared, device)
        _loaded[(ck.key, device)] = kernel
        return kernel


def _scratch(size: int, grid: tuple[int, int, int], ck: CompiledKernel) -> tuple[int, Any]:
    if size <= 0:
        return 0, None
    import cupy

    buf = cupy.empty(grid[0] * grid[1] * grid[2] * ck.num_ctas * size, dtype=cupy.uint8)
    return int(buf.data.ptr), buf


def launch(
    ck: CompiledKernel,
    grid: tuple[int, int, int],
    args: Sequence[Any],
    *,
    device: int,
    stream: Any = None,
) -> list[Any]:
    """Launch ``ck`` over ``grid`` with ``args`` (the spec's run-time parameters, typed).

    Returns the scratch buffers it allocated (keep them alive until the stream passes).
    """
    expected = len(ck.params) - 2
    if len(args) != expected:
        raise KernelLaunchError(f"{ck.name} takes {expected} arguments, got {len(args)}")
    cc = cuda_core()
    kernel = load(ck, device)
    gs_ptr, gs_buf = _scratch(ck.global_scratch_size, grid, ck)
    ps_ptr, ps_buf = _scratch(ck.profile_scratch_size, grid, ck)
    cfg = cc.LaunchConfig(
        grid=(grid[0] * ck.num_ctas, grid[1], grid[2]),
        block=(32 * ck.num_warps, 1, 1),
        shmem_size=ck.shared,
    )
    try:
        cc.launch(as_stream(stream), cfg, kernel, *args, gs_ptr, ps_ptr)
    except Exception as e:
        raise KernelLaunchError(f"launch of {ck.name} over grid {grid} failed: {e}") from e
    return [b for b in (gs_buf, ps_buf) if b is not None]
