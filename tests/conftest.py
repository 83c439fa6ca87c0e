"""Hypothesis profiles and the run's seed, for every test under tests/ (tests/mpi too).

The profiles (``ci``, the default, and ``thorough``) are registered and loaded by
``strategies.py`` (imported first, so that the settings objects it makes see the profile);
select one with ``HYPOTHESIS_PROFILE=thorough``. See docs/testing.md.

Every run draws from one seed: ``--hypothesis-seed=N`` if given, else a fresh random one. It is
printed in the header and again after a failure, with the command that reproduces the run.
Under mpiexec, ``tests/mpi/conftest.py`` broadcasts rank 0's seed to every rank before any test
runs (the ranks must draw the same examples).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import strategies  # noqa: E402 - loads the Hypothesis profile before any test module


def reproduce_command(config: pytest.Config) -> str:
    """A one-line command that reruns this session with the same profile and seed."""
    seed, size = strategies.RUN["seed"], strategies.RUN["mpi_size"]
    args = [a for a in config.invocation_params.args if not str(a).startswith("--hypothesis-seed")]
    head = f"HYPOTHESIS_PROFILE={strategies.PROFILE} "
    if size:
        head += f"mpiexec -n {size} --oversubscribe "
    cmd = ["python", "-m", "pytest", *map(str, args), f"--hypothesis-seed={seed}"]
    return head + " ".join(shlex.quote(a) for a in cmd)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if strategies.RUN["seed"] is None:  # under MPI, tests/mpi/conftest.py has set rank 0's
        strategies.set_seed(strategies.choose_seed(config.getoption("hypothesis_seed", None)))


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"hypothesis profile '{strategies.PROFILE}', seed {strategies.RUN['seed']}; "
        f"reproduce with: {reproduce_command(config)}"
    ]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus not in (0, 5):  # 5: no tests collected
        terminalreporter.write_line(
            f"hypothesis profile '{strategies.PROFILE}', seed {strategies.RUN['seed']}. "
            f"To reproduce this run: {reproduce_command(config)}"
        )
