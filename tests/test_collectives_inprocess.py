"""Property tests of the eight collectives on an InProcessWorld of 1 to 4 ranks.

For every op x reduce op (None included) x dtype, Hypothesis draws the world size, the groups
(None, one ordered group, or a partition), the root, the shape and a seed; every rank rebuilds
all ranks' inputs from the seed and checks its own output against the independent reference in
``test_collectives_reference.py``. Invalid combinations must raise the DefinitionError instead.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_collectives_reference import DTYPES, OP_REDUCE, cases, run_rank_safely

import trtdsl as td

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, how", OP_REDUCE)
@SETTINGS
@given(data=st.data())
def test_collective_matches_reference(op, how, dtype, data):
    size = data.draw(st.integers(1, 4), label="world size")
    case = data.draw(cases(op, how, dtype, size), label="case")
    problems = td.InProcessWorld(size, timeout=20).run(run_rank_safely, case)
    failed = {r: p for r, p in enumerate(problems) if p is not None}
    assert not failed, "\n".join(f"[rank {r}] {p}" for r, p in failed.items())
