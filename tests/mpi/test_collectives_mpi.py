"""The collectives' property tests under mpiexec, one process per rank::

    mpiexec -n 4 --oversubscribe python -m pytest -q -p no:cacheprovider tests/mpi

Same cases as ``tests/test_collectives_inprocess.py`` but on an ``MPIWorld`` whose size is the
one mpiexec gives, groups drawn as partitions of that world. Every rank draws from rank 0's
seed (tests/mpi/conftest.py broadcasts it) with no example database, so every rank draws the
same examples; each rank rebuilds every rank's input from the drawn seed, checks its own output
against the independent reference, and ``mpi.together`` turns any rank's failure into the same
failure on every rank, so Hypothesis shrinks identically everywhere.

Examples per op x dtype: 10 under the ``ci`` profile, 1000 under ``thorough``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples
from test_collectives_reference import DTYPES, OPS, REDUCE_CHOICES, cases, run_rank

import trtdsl as td
from trtdsl.testing import mpi

WORLD = td.MPIWorld(timeout=60)
SIZE = WORLD.size

# print_blob off: a rank's blob would differ in nothing but be printed by every rank
SETTINGS = settings(max_examples=examples(10, 1000), print_blob=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
@SETTINGS
@given(data=st.data())
def test_collective_matches_reference(op, dtype, data):
    how = data.draw(st.sampled_from(REDUCE_CHOICES), label="reduce")
    case = data.draw(cases(op, how, dtype, SIZE), label="case")
    with mpi.together(f"{op}({how}) {dtype}"):
        problem = run_rank(WORLD, case)
        assert problem is None, problem


def test_sequence_of_collectives_with_groups():
    """Several collectives in one network, over the whole world and over pairs."""
    net = td.Network("seq", world=WORLD)
    x = net.input("x", (2 * SIZE, 3))
    pairs = [[r, r + 1] if r + 1 < SIZE else [r] for r in range(0, SIZE, 2)]
    y = x.all_reduce("sum").reduce_scatter("max").all_gather(groups=pairs)
    net.output(y, "y")
    inputs = [np.full((2 * SIZE, 3), r + 1.0, "float32") for r in range(SIZE)]
    out = net.run({"x": inputs[WORLD.rank]})["y"]
    group = next(g for g in pairs if WORLD.rank in g)
    total = SIZE * (SIZE + 1) / 2
    expected = np.full((2 * len(group), 3), total, "float32")
    mpi.assert_all_ranks(np.array_equal(out, expected), f"got {out}", "sequence")


def test_mismatch_fails_on_every_rank():
    """Ranks defining different collectives all raise CollectiveMismatchError, and the run
    goes on (the fingerprint exchange completed, so nothing is out of step)."""
    net = td.Network("bad", world=WORLD)
    x = net.input("x", (SIZE,))
    net.output(x.all_gather() if WORLD.rank == SIZE - 1 else x.all_reduce("sum"), "y")
    if SIZE == 1:
        pytest.skip("needs two ranks")
    with pytest.raises(td.CollectiveMismatchError, match="disagree on collective #0") as info:
        net.run({"x": np.ones(SIZE, "float32")})
    assert f"rank {SIZE - 1}: all_gather" in str(info.value)


def test_world_still_works_after_a_mismatch():
    net = td.Network("ok", world=WORLD)
    net.output(net.input("x", (1,), "int32").all_reduce("max"), "y")
    out = net.run({"x": np.array([WORLD.rank], "int32")})["y"]
    mpi.assert_all_ranks(out.tolist() == [SIZE - 1], f"got {out}", "after mismatch")
