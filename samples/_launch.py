"""Shared launcher for the samples: one rank per process under mpiexec, or simulated ranks.

Under a launcher (``mpiexec -n N``, ``torchrun --nproc_per_node=N``, ``srun -n N``, or
TensorRT's ``TRT_MY_RANK``/``TRT_WORLD_SIZE``/``TRT_NCCL_ID_FILE``) each process is a rank of
``td.world_from_env()`` (see docs/launching.md); ``--backend cupy`` runs the collectives through
NCCL on the GPU (``NcclWorld``, GPU = local rank) with that world as its control plane. Started
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


def launcher() -> str:
    """The launcher that started this process (``td.world_from_env``'s order): "mpi",
    "torchrun", "slurm", "trt", or "single" (started plainly: simulated ranks)."""
    from trtdsl.worlds.env import detect_launcher

    return detect_launcher(os.environ)


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
    """The number of ranks: the job's size under a launcher, else ``--world-size``."""
    if launcher() == "mpi":
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_size()
    if launcher() != "single":
        from trtdsl.worlds import detect_launch

        return detect_launch().size
    return args.world_size


def launch(args: argparse.Namespace, per_rank: Callable[[td.World], Any]) -> list[Any] | None:
    """Run ``per_rank(world)`` on every rank; returns the per-rank results on rank 0 (and
    in-process), None on the other MPI ranks.

    Where TensorRT is not installed, ``--backend tensorrt`` ends the program with TensorRT's
    message (exit status 2) instead of a traceback from every rank. Any other trtdsl error (a
    :class:`trtdsl.TrtDslError`: bad arguments, a layer that cannot be defined, a failed run)
    ends it with the error's message and exit status 1, also without a traceback; under
    mpiexec the rank that has it prints it and ends the job (``MPI_Abort``), so no other rank
    waits for it.
    """
    rank = 0
    try:
        if launcher() != "single":
            control = td.world_from_env()  # MPI, torchrun, srun or TRT_* variables
            rank = control.rank
            if args.backend == "cupy":
                from trtdsl.backends.cupy import NcclWorld

                try:
                    world: td.World = NcclWorld(world=control)  # selects GPU local_rank
                except td.ExecutionError as e:  # no CuPy here: the same on every rank
                    if rank == 0:
                        print(f"error: {e}", file=sys.stderr)
                    raise SystemExit(2) from None
            else:
                world = control
            try:
                result = per_rank(world)
            except Exception as e:  # without MPI: tell the other ranks before leaving
                notify = getattr(control, "notify_failure", None)
                if notify is not None:
                    notify(f"raised {type(e).__name__}: {e}")
                raise
            finally:
                if world is not control:
                    world.close()  # NCCL communicators (collective: every rank calls it)
            gathered = control.exchange(result, "gathering the samples' results")
            if hasattr(control, "close"):
                control.close()
            return gathered if rank == 0 else None
        if args.backend == "cupy":
            raise SystemExit(
                "--backend cupy needs one process per GPU: run it under mpirun, torchrun or srun"
            )
        return td.InProcessWorld(args.world_size).run(per_rank)
    except TensorRTUnavailableError as e:  # every rank gets it at net.run, before any exchange
        if rank == 0:
            print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except td.TrtDslError as e:
        where = f" on rank {rank}" if under_mpi() else ""
        print(f"error{where}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if under_mpi():
            from mpi4py import MPI

            if MPI.COMM_WORLD.Get_size() > 1:
                MPI.COMM_WORLD.Abort(1)  # the others may wait for this rank in a collective
        raise SystemExit(1) from None


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
