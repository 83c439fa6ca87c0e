"""Find the world from the environment: mpirun, torchrun, srun, TensorRT's sample variables.

:func:`world_from_env` looks, in this order, for

1. **MPI** (``mpirun``/``mpiexec``/``srun --mpi``): ``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``,
   ``PMIX_RANK`` or ``MPI_LOCALNRANKS`` set (and mpi4py importable) -> :class:`MPIWorld`;
2. **torchrun**: ``RANK`` and ``WORLD_SIZE`` (``LOCAL_RANK``, ``MASTER_ADDR``,
   ``MASTER_PORT``) -> :class:`SocketWorld` at ``MASTER_ADDR:MASTER_PORT + 1`` (torchrun's own
   store holds ``MASTER_PORT``; ``TRTDSL_PORT`` sets the port outright);
3. **Slurm** (``srun``): ``SLURM_PROCID``, ``SLURM_NTASKS`` (``SLURM_LOCALID``) ->
   :class:`SocketWorld` at ``MASTER_ADDR`` (default: the first host of the step's node list)
   and ``MASTER_PORT`` (default: derived from ``SLURM_JOB_ID``);
4. **TensorRT's sample variables**: ``TRT_MY_RANK``, ``TRT_WORLD_SIZE`` and
   ``TRT_NCCL_ID_FILE`` -> :class:`FileWorld` beside that file (or a :class:`SocketWorld` when
   ``MASTER_ADDR``/``MASTER_PORT`` are set too);
5. nothing -> a 1-rank world.

Arguments override what the environment says; ``launcher=`` (or ``TRTDSL_LAUNCHER``) picks one
of ``"mpi"``, ``"torchrun"``, ``"slurm"``, ``"trt"``, ``"single"`` outright. Every world it
returns has ``local_rank``: the rank on this node, which is the GPU to use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ExecutionError
from .base import StaticWorld, World

MPI_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
LOCAL_RANK_VARS = (
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
    "MV2_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "LOCAL_RANK",
)
LAUNCHERS = ("mpi", "torchrun", "slurm", "trt", "single")
#: Variables naming one launch, mixed into the derived job token.
LAUNCH_ID_VARS = (
    "TRTDSL_LAUNCH_ID",
    "TORCHELASTIC_RUN_ID",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "PMIX_NAMESPACE",
    "OMPI_MCA_orte_ess_jobid",
)


@dataclass(frozen=True)
class Launch:
    """What the environment says about this process: the launcher, rank, size, rank on the
    node, where the ranks meet (``addr:port`` or ``id_file``) and the job token."""

    launcher: str
    rank: int
    size: int
    local_rank: int
    addr: str | None = None
    port: int | None = None
    id_file: str | None = None
    token: str = ""

    @property
    def channel(self) -> str:
        """``"mpi"``, ``"tcp"``, ``"file"`` or ``"none"`` (one rank)."""
        if self.launcher == "mpi":
            return "mpi"
        if self.size == 1:
            return "none"
        return "file" if self.addr is None else "tcp"


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ExecutionError(
            f"environment variable {name}={env[name]!r} is not an integer"
        ) from None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (``"gpu[07-09,12],cpu1"`` -> ``"gpu07"``).

    >>> first_host("gpu[07-09,12],cpu1"), first_host("node3,node4"), first_host("a-[1-2]b")
    ('gpu07', 'node3', 'a-1b')
    """
    m = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", nodelist.strip())
    if not m or not m.group(0):
        raise ExecutionError(f"cannot read the Slurm node list {nodelist!r}")
    head, ranges, tail = m.groups()
    first = ranges.split(",")[0].split("-")[0] if ranges else ""
    return head + first + (tail or "")


def local_rank_from_env(env: Mapping[str, str] | None = None, default: int = 0) -> int:
    """The rank on this node from the launcher's variables (Open MPI, MPICH, Slurm,
    torchrun), else ``default``."""
    env = os.environ if env is None else env
    for name in LOCAL_RANK_VARS:
        if name in env:
            return _int(env, name)
    return default


def job_token(env: Mapping[str, str], launcher: str, where: str, size: int) -> str:
    """``TRTDSL_JOB_TOKEN`` if set, else a token derived from where the ranks meet, the world
    size and the launch id (``TORCHELASTIC_RUN_ID``, ``SLURM_JOB_ID``...). A derived token
    keeps jobs apart; only a secret ``TRTDSL_JOB_TOKEN`` keeps strangers out."""
    if env.get("TRTDSL_JOB_TOKEN"):
        return env["TRTDSL_JOB_TOKEN"]
    ids = "|".join(f"{k}={env[k]}" for k in LAUNCH_ID_VARS if k in env)
    text = f"trtdsl|{launcher}|{where}|{size}|{ids}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def detect_launcher(env: Mapping[str, str]) -> str:
    """The launcher the environment shows, in :func:`world_from_env`'s order."""
    if env.get("TRTDSL_LAUNCHER"):
        name = env["TRTDSL_LAUNCHER"]
        if name not in LAUNCHERS:
            raise ExecutionError(f"TRTDSL_LAUNCHER={name!r}: expected one of {LAUNCHERS}")
        return name
    if any(k in env for k in MPI_VARS) and importlib.util.find_spec("mpi4py") is not None:
        return "mpi"
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torchrun"
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return "slurm"
    if "TRT_MY_RANK" in env and "TRT_WORLD_SIZE" in env:
        return "trt"
    return "single"


def detect_launch(
    env: Mapping[str, str] | None = None,
    *,
    launcher: str | None = None,
    rank: int | None = None,
    size: int | None = None,
    local_rank: int | None = None,
    addr: str | None = None,
    port: int | None = None,
    id_file: str | None = None,
    token: str | None = None,
) -> Launch:
    """Read the environment (default ``os.environ``) as :func:`world_from_env` does, without
    connecting anything. Arguments override the environment."""
    env = dict(os.environ if env is None else env)
    if launcher is not None and launcher not in LAUNCHERS:
        raise ExecutionError(f"launcher={launcher!r}: expected one of {LAUNCHERS}")
    name = launcher or detect_launcher(env)
    if name == "mpi":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        r, n = comm.Get_rank(), comm.Get_size()
        if (rank is not None and rank != r) or (size is not None and size != n):
            raise ExecutionError(
                f"under MPI this is rank {r} of {n}; rank={rank}, size={size} disagree"
            )
        return Launch("mpi", r, n, local_rank if local_rank is not None else _mpi_local(env))

    r, n, lr = 0, 1, None
    e_addr, e_port, e_file = env.get("MASTER_ADDR"), env.get("MASTER_PORT"), None
    if name == "torchrun":
        r, n = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        lr = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else None
        if e_port is not None and "TRTDSL_PORT" not in env:
            e_port = str(int(e_port) + 1)  # torchrun's TCPStore listens on MASTER_PORT
    elif name == "slurm":
        r, n = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        lr = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else None
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if e_addr is None and nodes and addr is None:
            e_addr = first_host(nodes)
        if e_port is None and "SLURM_JOB_ID" in env:
            e_port = str(20000 + _int(env, "SLURM_JOB_ID") % 20000)
    elif name == "trt":
        r, n = _int(env, "TRT_MY_RANK"), _int(env, "TRT_WORLD_SIZE")
        e_file = env.get("TRT_NCCL_ID_FILE")
        if e_addr is None or e_port is None:
            e_addr = e_port = None  # the file channel, unless both are given
    if "TRTDSL_PORT" in env:
        e_port = env["TRTDSL_PORT"]
    r = r if rank is None else rank
    n = n if size is None else size
    lr = local_rank if local_rank is not None else lr
    if lr is None:
        lr = local_rank_from_env(env, default=r)
    the_file = id_file if id_file is not None else e_file
    the_addr = addr if addr is not None else (None if id_file is not None else e_addr)
    if port is not None:
        the_port: int | None = int(port)
    elif e_port is not None and the_addr is not None:
        try:
            the_port = int(e_port)
        except ValueError:
            raise ExecutionError(f"MASTER_PORT/TRTDSL_PORT={e_port!r} is not a port") from None
    else:
        the_port = None
    if n < 1 or not 0 <= r < n:
        raise ExecutionError(f"{name}: rank {r} of world size {n} is not a valid rank")
    if n > 1 and the_addr is not None and the_port is None:
        raise ExecutionError(
            f"{name}: {n} ranks meet at {the_addr}, but no port: set MASTER_PORT (or TRTDSL_PORT)"
        )
    if n > 1 and the_addr is None and the_file is None:
        raise ExecutionError(
            f"{name}: {n} ranks need a place to meet: set MASTER_ADDR and MASTER_PORT (rank 0's "
            "host and a free port), or TRT_NCCL_ID_FILE (a path on a shared file system)"
        )
    where = f"{the_addr}:{the_port}" if the_addr is not None else str(the_file)
    tok = token if token is not None else job_token(env, name, where, n)
    return Launch(name, r, n, lr, the_addr, the_port, None if the_addr else the_file, tok)


def _mpi_local(env: Mapping[str, str]) -> int:
    for name in LOCAL_RANK_VARS[:4]:
        if name in env:
            return _int(env, name)
    from mpi4py import MPI

    shared = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return shared.Get_rank()
    finally:
        shared.Free()


def world_from_env(
    *,
    launcher: str | None = None,
    rank: int | None = None,
    size: int | None = None,
    local_rank: int | None = None,
    addr: str | None = None,
    port: int | None = None,
    id_file: str | None = None,
    token: str | None = None,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> World:
    """The world this process belongs to, found from the environment (see the module's order:
    MPI, torchrun, Slurm, TensorRT's ``TRT_*`` variables, else one rank).

    Under MPI: an :class:`MPIWorld`; otherwise a :class:`SocketWorld` (ranks meet at
    ``addr:port``), a :class:`FileWorld` (beside ``TRT_NCCL_ID_FILE``) or, for one rank, a
    ``StaticWorld(1)``. Every world it returns has ``local_rank``. ``timeout`` bounds the
    rendezvous and every exchange. Arguments override the environment.

    >>> w = world_from_env(env={})
    >>> w.size, w.rank, w.local_rank
    (1, 0, 0)
    >>> world_from_env(env={"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}).size
    1
    """
    info = detect_launch(
        env,
        launcher=launcher,
        rank=rank,
        size=size,
        local_rank=local_rank,
        addr=addr,
        port=port,
        id_file=id_file,
        token=token,
    )
    world: Any
    if info.channel == "mpi":
        from .mpi import MPIWorld

        world = MPIWorld(timeout=timeout)
    elif info.channel == "none":
        world = StaticWorld(1, 0)
    elif info.channel == "tcp":
        from .rendezvous import SocketWorld

        assert info.addr is not None and info.port is not None
        world = SocketWorld(
            info.rank, info.size, info.addr, info.port, info.token, timeout, info.local_rank
        )
    else:
        from .files import FileWorld

        assert info.id_file is not None
        world = FileWorld(info.rank, info.size, info.id_file, info.token, timeout, info.local_rank)
    world.local_rank = info.local_rank
    world.launcher = info.launcher
    return world
