"""A small launcher for tests: start N ranks as subprocesses with the environment that
torchrun, srun or TensorRT's sample would give them, wait with a timeout, kill what is left.

>>> env = rank_env("torchrun", 1, 2, port=5000, token="t")
>>> env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_PORT"]
('1', '2', '1', '5000')
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Variables of launchers that must not leak from the test's own environment into a rank.
LAUNCH_VARS = (
    "OMPI_",
    "PMI",
    "PMIX_",
    "MPI_LOCALNRANKS",
    "MPI_LOCALRANKID",
    "PRTE_",
    "HYDRA_",
    "SLURM_",
    "TRT_",
    "TORCHELASTIC_",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_",
    "TRTDSL_",
)
STYLES = ("torchrun", "slurm", "trt", "trt-tcp")


def free_port() -> int:
    """A TCP port that is free now, with the next one free too (torchrun's store takes the
    first, our rendezvous the second)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of ports")


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARS)}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def rank_env(
    style: str, rank: int, size: int, port: int, token: str | None, id_file: str = ""
) -> dict[str, str]:
    """The variables a launcher of ``style`` gives rank ``rank`` of ``size`` on one node."""
    env: dict[str, str] = {}
    if style == "torchrun":
        env.update(
            RANK=str(rank),
            WORLD_SIZE=str(size),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            TORCHELASTIC_RUN_ID="test",
        )
    elif style == "slurm":
        env.update(
            SLURM_PROCID=str(rank),
            SLURM_NTASKS=str(size),
            SLURM_LOCALID=str(rank),
            SLURM_JOB_ID="4242",
            SLURM_STEP_NODELIST="localhost",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port + 1),
        )
    elif style in ("trt", "trt-tcp"):
        env.update(TRT_MY_RANK=str(rank), TRT_WORLD_SIZE=str(size), TRT_NCCL_ID_FILE=id_file)
        if style == "trt-tcp":
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port + 1))
    else:
        raise ValueError(f"unknown launcher style {style!r}")
    if token is not None:
        env["TRTDSL_JOB_TOKEN"] = token
    return env


@dataclass
class Result:
    rank: int
    returncode: int | None  # None: killed after the time limit
    out: str

    def __str__(self) -> str:
        return f"--- rank {self.rank} (exit {self.returncode})\n{self.out}"


def write_script(tmp: Path, body: str, name: str = "rank.py") -> Path:
    head = "import os, sys, time\nimport numpy as np\nimport trtdsl as td\n"
    path = tmp / name
    path.write_text(head + textwrap.dedent(body))
    return path


def launch(
    tmp: Path,
    body: str,
    size: int,
    style: str = "torchrun",
    limit: float = 30.0,
    ranks: list[int] | None = None,
    extra_env: dict[int, dict[str, str]] | None = None,
    token: str | None = "",
    port: int | None = None,
) -> list[Result]:
    """Run ``body`` (after ``import numpy as np, trtdsl as td``) as ranks ``ranks`` (default:
    all) of a ``size``-rank job started like ``style``; every rank gets ``limit`` seconds in all,
    then whatever still runs is killed. ``token=""``: a fresh random job token."""
    script = write_script(tmp, body)
    port = free_port() if port is None else port
    token = secrets.token_hex(16) if token == "" else token
    id_file = str(tmp / "nccl.id")
    procs = []
    for r in range(size) if ranks is None else ranks:
        env = {**base_env(), **rank_env(style, r, size, port, token, id_file)}
        env.update((extra_env or {}).get(r, {}))
        procs.append(
            (
                r,
                subprocess.Popen(
                    [sys.executable, str(script)],
                    cwd=tmp,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
            )
        )
    deadline = time.monotonic() + limit
    results = []
    try:
        for r, p in procs:
            try:
                out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
                results.append(Result(r, p.returncode, out))
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                results.append(Result(r, None, out))
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def show(results: list[Result]) -> str:
    return "\n".join(map(str, results))
