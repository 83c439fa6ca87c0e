"""Shared launcher for the samples: one rank per process under mpiexec, or simulated ranks.

Under ``mpiexec -n N`` each process is a rank (``MPIWorld``, or ``NcclWorld`` for
``--backend cupy``/``tensorrt``); started plainly, ``--world-size N`` ranks run as threads of
one process (``InProcessWorld``, numpy backend only).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import trtdsl as td

_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def under_mpi() -> bool:
    """True when this process was started by mpiexec/mpirun."""
    return any(k in os.environ for k in _MPI_ENV)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="numpy",
        choices=("numpy", "cupy", "tensorrt"),
        help="numpy (reference, CPU), cupy (GPU + NCCL), tensorrt (TensorRT 11)",
    )
    parser.add_argument(
        "--world-size",
        type=int,
        default=4,
        help="simulated ranks when not started by mpiexec (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0)


def launch(args: argparse.Namespace, per_rank: Callable[[td.World], Any]) -> list[Any] | None:
    """Run ``per_rank(world)`` on every rank; returns the per-rank results where available."""
    if under_mpi():
        if args.backend == "numpy":
            world: td.World = td.MPIWorld()
        else:
            from trtdsl.backends.cupy_backend import NcclWorld

            world = NcclWorld()
        try:
            result = per_rank(world)
        finally:
            if hasattr(world, "close"):
                world.close()
        return (
            world.comm.gather(result, root=0)
            if world.rank == 0
            else (world.comm.gather(result, root=0) and None)
        )
    if args.backend != "numpy":
        raise SystemExit(f"--backend {args.backend} needs one process per GPU: run under mpirun")
    return td.InProcessWorld(args.world_size).run(per_rank)
