"""pytest plugin for the MPI-only tests: run them as
``mpiexec -n N python -m pytest -q -p no:cacheprovider tests/mpi``.

Under mpiexec it registers :class:`trtdsl.testing.mpi.MPIPlugin`: rank 0 alone prints the
terminal output (reporting the other ranks' failures with their rank), outcomes are compared
after every test (ranks that disagree end the job with the failing rank's report and
``MPI_Abort`` instead of deadlocking), and a per-test watchdog dumps the stacks and ends the job
when a test hangs.

A plain ``python -m pytest`` (no mpiexec) skips this directory: the tests here only make sense
with several ranks. Naming the directory explicitly (``python -m pytest tests/mpi``) runs them
as a world of one rank, for debugging.

Hypothesis: the profile (``HYPOTHESIS_PROFILE``, default ``ci``) is loaded by
``tests/strategies.py``; rank 0's seed is broadcast to every rank before the first test, and
rank 0 prints it with the command that reproduces the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trtdsl.testing import mpi

_HERE = Path(__file__).parent.resolve()
# the MPI tests share the NumPy reference of tests/test_collectives_reference.py
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))


def _named_explicitly(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(str(arg).split("::")[0])
        if not path.is_absolute():
            path = Path(config.invocation_params.dir) / path
        try:
            path.resolve().relative_to(_HERE)
        except ValueError:
            continue
        return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if mpi.under_mpiexec() or _named_explicitly(config):
        return None
    return True


def _share_the_seed(config: pytest.Config) -> None:
    """Every rank draws from rank 0's Hypothesis seed (``--hypothesis-seed`` or a random one),
    so every rank runs the same examples (the profiles come from tests/strategies.py; a copy
    of this file elsewhere, without it, leaves Hypothesis as the tests configure it)."""
    try:
        import strategies
    except ImportError:
        return
    seed = strategies.choose_seed(config.getoption("hypothesis_seed", None))
    strategies.set_seed(mpi.shared_seed(seed), mpi.size())


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if mpi.under_mpiexec() and not config.pluginmanager.has_plugin("trtdsl-mpi"):
        _share_the_seed(config)
        config.pluginmanager.register(mpi.MPIPlugin(config), "trtdsl-mpi")
