"""Rank worlds: who the ranks are and how they exchange data.

- :class:`World` - the interface: ``size``, ``rank``, ``exchange`` (an all-gather of plain data).
- :class:`StaticWorld` - size and rank only, for defining and lowering networks.
- :class:`InProcessWorld` - a launcher: ``run(fn)`` calls ``fn(world)`` on N threads, each with
  its own :class:`ThreadWorld` (fast tests, simulated ranks).
- :class:`MPIWorld` - one rank per process under ``mpiexec -n N`` (mpi4py).
- :class:`SocketWorld`, :class:`FileWorld` - one rank per process without MPI: ranks meet over
  TCP (torchrun, srun) or through files (TensorRT's ``TRT_NCCL_ID_FILE``); plain-JSON messages
  with a job token (:mod:`trtdsl.worlds.wire`).
- :func:`world_from_env` - the world this process belongs to, from the launcher's variables
  (MPI, torchrun, Slurm, ``TRT_*``, else one rank); see docs/launching.md.

No rank ever waits forever:

- before a network runs, the ranks exchange their collective fingerprints (op, reduce op, root,
  groups, dtype, shape of every collective, in order) and all raise
  :class:`~trtdsl.errors.CollectiveMismatchError` together if they differ (:func:`first_mismatch`
  names the first differing collective and which ranks hold what);
- in an :class:`InProcessWorld`, a rank that raises or returns early stops the ranks waiting for
  it (:class:`~trtdsl.errors.RankFailedError`), and a wait longer than ``timeout`` fails;
- in an :class:`MPIWorld`, an uncaught exception on one rank aborts the job with a report, a rank
  waiting for a collective stops when another rank sends a failure notice (the test helpers of
  :mod:`trtdsl.testing.mpi` do), and a wait longer than ``timeout`` prints where it waited and
  aborts the job.

>>> import trtdsl as td
>>> def per_rank(world):
...     net = td.Network("ar", world=world)
...     net.output(net.input("x", (2,)).all_reduce("sum"), "y")
...     return net.run({"x": __import__("numpy").full(2, world.rank + 1.0, "float32")})["y"]
>>> td.InProcessWorld(3).run(per_rank)[0].tolist()
[6.0, 6.0]
"""

from .agreement import Entry, agree_on_collective, check_split, first_mismatch
from .base import StaticWorld, World
from .env import Launch, detect_launch, local_rank_from_env, world_from_env
from .files import FileWorld
from .inprocess import InProcessWorld, ThreadWorld
from .mpi import MPIWorld
from .notices import (
    emit,
    mark_world_broken,
    report_stream,
    send_failure_notice,
    set_report_stream,
    timed_allgather,
    wait_request,
    world_broken,
)
from .rendezvous import RendezvousError, SocketWorld
from .wire import ChannelWorld, WireError

__all__ = [
    "World",
    "StaticWorld",
    "InProcessWorld",
    "ThreadWorld",
    "MPIWorld",
    "ChannelWorld",
    "SocketWorld",
    "FileWorld",
    "world_from_env",
    "detect_launch",
    "Launch",
    "local_rank_from_env",
    "RendezvousError",
    "WireError",
    "Entry",
    "agree_on_collective",
    "check_split",
    "first_mismatch",
    "emit",
    "mark_world_broken",
    "report_stream",
    "send_failure_notice",
    "set_report_stream",
    "timed_allgather",
    "wait_request",
    "world_broken",
]
