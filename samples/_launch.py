"""Shared launcher for the samples: one rank per process under mpiexec, or simulated ranks.

Under ``mpiexec -n N`` each process is a rank: ``MPIWorld`` for the numpy and tensorrt
backends, ``NcclWorld`` (collectives through NCCL on the GPU) for ``--backend cupy``. Started
plainly, ``--world-size N`` ranks run as threads of one process (``InProcessWorld``).

Each sample's ``per_rank(world)`` returns ``(rank, ok, line)``; :func:`finish` prints the lines
of every rank and one ``...: PASSED`` / ``...: FAILED`` line, and gives the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import trtdsl as td
from trtdsl.backends.tensorrt import TensorRTUnavailableError

_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def under_mpi() -> bool:
    """True when this process was started by mpiexec/mpirun."""
    return any(k in os.environ for k in _MPI_ENV)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="numpy",
        choices=("numpy", "cupy", "tensorrt"),
        help="numpy (reference, CPU), cupy (GPU + NCCL, under mpirun), tensorrt (TensorRT 11)",
    )
    parser.add_argument(
        "--world-size",
        type=int,
        default=4,
        help="simulated ranks when not started by mpiexec (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0)


def world_size(args: argparse.Namespace) -> int:
    """The number of ranks: the MPI job's size under mpiexec, else ``--world-size``."""
    if under_mpi():
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_size()
    return args.world_size


def launch(args: argparse.Namespace, per_rank: Callable[[td.World], Any]) -> list[Any] | None:
    """Run ``per_rank(world)`` on every rank; returns the per-rank results on rank 0 (and
    in-process), None on the other MPI ranks.

    Where TensorRT is not installed, ``--backend tensorrt`` ends the program with TensorRT's
    message (exit status 2) instead of a traceback from every rank.
    """
    rank = 0
    try:
        if under_mpi():
            from mpi4py import MPI

            rank = MPI.COMM_WORLD.Get_rank()
            if args.backend == "cupy":
                from trtdsl.backends.cupy import NcclWorld

                try:
                    world: td.World = NcclWorld()  # selects GPU rank % device_count
                except td.ExecutionError as e:  # no CuPy here: the same on every rank
                    if rank == 0:
                        print(f"error: {e}", file=sys.stderr)
                    raise SystemExit(2) from None
            else:
                world = td.MPIWorld()
            try:
                result = per_rank(world)
            finally:
                if hasattr(world, "close"):
                    world.close()  # NCCL communicators (collective: every rank calls it)
            gathered = world.comm.gather(result, root=0)
            return gathered if rank == 0 else None
        if args.backend == "cupy":
            raise SystemExit("--backend cupy needs one process per GPU: run it under mpirun")
        return td.InProcessWorld(args.world_size).run(per_rank)
    except TensorRTUnavailableError as e:  # every rank gets it at net.run, before any exchange
        if rank == 0:
            print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def finish(results: list[Any] | None, what: str, backend: str) -> int:
    """Print every rank's line and ``<what> over N ranks on the <backend> backend: PASSED``
    (or ``FAILED``); returns the exit status."""
    if results is None:  # MPI ranks other than 0: rank 0 reports for everyone
        return 0
    for _, _, line in sorted(results):
        print(line)
    ok = all(res[1] for res in results)
    verdict = "PASSED" if ok else "FAILED"
    ranks = f"{len(results)} rank{'s' if len(results) > 1 else ''}"
    print(f"{what} over {ranks} on the {backend} backend: {verdict}")
    return 0 if ok else 1
