"""``NcclWorld``: an MPI world whose collectives run on the GPU through NCCL (CuPy arrays)."""

from __future__ import annotations

from typing import Any

from ...errors import ExecutionError
from ...ops.collective import CollectiveSpec, output_shape, poison
from ...worlds import MPIWorld, agree_on_collective
from .device import cupy_module as _cupy


class NcclWorld(MPIWorld):
    """An MPI world whose collectives run on the GPU through NCCL.

    Each rank selects GPU ``rank % device_count`` (unless ``device`` is given), makes one NCCL
    communicator per group partition it meets, and before every NCCL call agrees with the other
    ranks (over MPI, with a timeout) on what is about to run, so a mismatch fails instead of
    hanging the GPU. ``close()`` frees the communicators (collective).
    """

    def __init__(
        self,
        comm: Any = None,
        device: int | None = None,
        timeout: float = 120.0,
        check_each: bool = True,
    ) -> None:
        super().__init__(comm, timeout)
        cp = _cupy()
        self.device = self.rank % cp.cuda.runtime.getDeviceCount() if device is None else device
        cp.cuda.Device(self.device).use()
        self.check_each = check_each
        self._comms: dict[tuple, Any] = {}

    def communicator(self, spec: CollectiveSpec) -> Any:
        """The NCCL communicator of this rank's group in ``spec.partition`` (made once)."""
        from .. import nccl

        key = spec.partition
        if key not in self._comms:
            color = next(i for i, g in enumerate(key) if self.rank in g)
            sub = self.comm.Split(color, spec.group.index(self.rank))
            self._comms[key] = nccl.Communicator.from_mpi(sub)
            sub.Free()
        return self._comms[key]

    def collective(self, layer: Any, x: Any) -> Any:
        cp = _cupy()
        spec: CollectiveSpec = layer.spec
        if self.check_each:  # agree over MPI before NCCL runs, so a mismatch cannot hang
            agree_on_collective(self, layer, x.shape)
        x = cp.ascontiguousarray(x)
        n = spec.n
        if n == 1:
            return x.copy()
        comm = self.communicator(spec)
        stream = cp.cuda.get_current_stream().ptr
        out_shape = output_shape(spec.op, x.shape, n)
        dt = x.dtype
        op = spec.op
        if op in ("reduce", "gather"):
            recv = poison(cp, out_shape, dt)
        else:
            recv = cp.empty(out_shape, dtype=dt)
        if op == "all_reduce":
            comm.all_reduce(x, recv, x.size, dt, spec.reduce, stream)
        elif op == "broadcast":
            comm.broadcast(x, recv, x.size, dt, spec.root, stream)
        elif op == "reduce":
            comm.reduce(x, recv, x.size, dt, spec.reduce, spec.root, stream)
        elif op == "all_gather":
            comm.all_gather(x, recv, x.size, dt, stream)
        elif op == "reduce_scatter":
            comm.reduce_scatter(x, recv, x.size // n, dt, spec.reduce, stream)
        elif op == "all_to_all":
            comm.all_to_all(x, recv, x.size // n, dt, stream)
        elif op == "gather":
            comm.gather(x, recv, x.size, dt, spec.root, stream)
        elif op == "scatter":
            comm.scatter(x, recv, x.size // n, dt, spec.root, stream)
        else:  # pragma: no cover - validated at definition time
            raise ExecutionError(f"unknown collective {op!r}")
        return recv

    def close(self) -> None:
        """Free every NCCL communicator (collective: all ranks call it)."""
        for comm in self._comms.values():
            comm.close()
        self._comms.clear()
