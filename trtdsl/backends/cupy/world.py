"""``NcclWorld``: a world whose collectives run on the GPU through NCCL (CuPy arrays); the
control plane (agreement, the NCCL unique ids) is any World: MPI, sockets or files."""

from __future__ import annotations

from typing import Any

from ...errors import TrtDslError
from ...ops.collective import CollectiveSpec, output_shape, poison
from ...worlds import MPIWorld, World, agree_on_collective, local_rank_from_env
from ...worlds.notices import at_abort, emit
from .device import cupy_module as _cupy

#: Collectives whose NCCL count is the per-rank block (input elements / group size).
_BLOCK_COUNT = frozenset({"reduce_scatter", "all_to_all", "scatter"})


class BoundCollective:
    """One collective layer's NCCL call, bound once (communicator, codes, root, output rule);
    ``bound(x)`` runs it on the contiguous CuPy array ``x`` on the current stream and returns
    a new output array.

    Outputs that NCCL leaves unwritten (reduce and gather off the root) are poisoned (NaN, or
    the integer minimum); with ``reuse_undefined`` one poisoned buffer per shape is made once
    and returned on every call (NCCL never writes it), so those ranks pay no fill per call.
    Treat such an output as read-only.
    """

    __slots__ = ("cp", "spec", "dtype", "call", "undefined", "_block", "_reuse", "_poisoned")

    def __init__(
        self, cp: Any, comm: Any, spec: CollectiveSpec, dtype: Any, reuse_undefined: bool = False
    ) -> None:
        self.cp, self.spec, self.dtype = cp, spec, cp.dtype(dtype)
        self.call = comm.prepare(spec.op, self.dtype, spec.reduce, spec.root)
        self.undefined = spec.op in ("reduce", "gather") and comm.rank != spec.root
        self._block = spec.op in _BLOCK_COUNT
        self._reuse = reuse_undefined
        self._poisoned: dict[tuple, Any] = {}

    def __call__(self, x: Any) -> Any:
        cp, spec = self.cp, self.spec
        shape = output_shape(spec.op, x.shape, spec.n)
        if not self.undefined:
            recv = cp.empty(shape, self.dtype)
        elif not self._reuse:
            recv = poison(cp, shape, self.dtype)
        else:
            recv = self._poisoned.get(shape)
            if recv is None:
                recv = self._poisoned[shape] = poison(cp, shape, self.dtype)
        count = x.size // spec.n if self._block else x.size
        self.call(x.data.ptr, recv.data.ptr, count, cp.cuda.get_current_stream().ptr)
        return recv


def run_collective(cp: Any, comm: Any, spec: CollectiveSpec, x: Any) -> Any:
    """One NCCL collective of ``spec`` on the contiguous CuPy array ``x`` (group size > 1), on
    the current stream; outputs that are undefined off the root come back poisoned."""
    return BoundCollective(cp, comm, spec, x.dtype)(x)


class NcclWorld(World):
    """A world whose collectives run on the GPU through NCCL.

    ``world`` is the control plane: any World (default: ``MPIWorld(comm, timeout)``, or pass
    ``td.world_from_env()`` to run under torchrun, srun or TensorRT's ``TRT_*`` variables
    without MPI). Each rank selects GPU ``local_rank`` (the rank on its node, from the control
    world or the launcher's variables) unless ``device`` is given, makes one NCCL communicator
    per group partition it meets (the unique id travels over the control plane as bytes), and
    before every NCCL call agrees with the other ranks (with a timeout) on what is about to run,
    so a mismatch fails instead of hanging the GPU. ``close()`` frees the communicators
    (collective). Other attributes (``comm``, ``abort``...) are the control world's.
    """

    def __init__(
        self,
        comm: Any = None,
        device: int | None = None,
        timeout: float = 120.0,
        check_each: bool = True,
        world: World | None = None,
    ) -> None:
        self.control = MPIWorld(comm, timeout) if world is None else world
        self.size, self.rank = self.control.size, self.control.rank
        self.local_rank = getattr(self.control, "local_rank", None)
        if self.local_rank is None:
            self.local_rank = local_rank_from_env(default=-1)
        if self.local_rank < 0 and hasattr(self.control, "comm"):
            from mpi4py import MPI

            shared = self.control.comm.Split_type(MPI.COMM_TYPE_SHARED)
            self.local_rank = shared.Get_rank()
            shared.Free()
        if self.local_rank < 0:
            self.local_rank = self.rank
        cp = _cupy()
        count = cp.cuda.runtime.getDeviceCount()
        self.device = self.local_rank % count if device is None else device
        cp.cuda.Device(self.device).use()
        self.check_each = check_each
        at_abort(self.abort_communicators)
        self._comms: dict[tuple, Any] = {}

    def __getattr__(self, name: str) -> Any:  # comm, timeout, abort, wait_for_all...
        if name == "control":
            raise AttributeError(name)
        return getattr(self.control, name)

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        return self.control.exchange(obj, what, key)

    def communicator(self, spec: CollectiveSpec) -> Any:
        """The NCCL communicator of this rank's group in ``spec.partition`` (made once)."""
        from .. import nccl

        key = spec.partition
        if key not in self._comms:  # the unique ids travel over the control world (timed)
            self._comms[key] = nccl.Communicator.for_partition(self.control, key)
        return self._comms[key]

    def collective(self, layer: Any, x: Any) -> Any:
        cp = _cupy()
        spec: CollectiveSpec = layer.spec
        if self.check_each:  # agree over MPI before NCCL runs, so a mismatch cannot hang
            try:
                agree_on_collective(self, layer, x.shape)
            except TrtDslError:  # another rank failed or is out of step: NCCL would hang
                self.abort_communicators()
                raise
        x = cp.ascontiguousarray(x)
        n = spec.n
        if n == 1:
            return x.copy()
        return run_collective(cp, self.communicator(spec), spec, x)

    def abort_communicators(self) -> int:
        """``ncclCommAbort`` (through the nccl adapter) on every communicator, without waiting
        for the other ranks; returns how many. Called before this process aborts the job (an
        uncaught exception, a timeout) and when another rank's failure stops a collective."""
        n = 0
        for comm in self._comms.values():
            try:
                comm.abort()
                n += 1
            except Exception as e:  # noqa: BLE001 - aborting anyway
                emit(f"[trtdsl] rank {self.rank}: ncclCommAbort failed: {e}\n")
        self._comms.clear()
        if n:
            emit(f"[trtdsl] rank {self.rank}: aborted {n} NCCL communicator(s) (ncclCommAbort)\n")
        return n

    def close(self) -> None:
        """Free every NCCL communicator (collective: all ranks call it)."""
        for comm in self._comms.values():
            comm.close()
        self._comms.clear()
