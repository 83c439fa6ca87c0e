"""Property tests of the eight collectives on an InProcessWorld of 1 to 4 ranks.

For every op x dtype the DSL accepts, Hypothesis draws the reduce op (None and invalid ones
included), the world size, the groups (None, one ordered group, or a partition), the root, the
shape and a seed; every rank rebuilds all ranks' inputs from the seed and checks its own output
against the independent reference in ``test_collectives_reference.py``. Invalid combinations
must raise the DefinitionError instead.

Examples per op x dtype: 12 under the ``ci`` profile, 1000 under ``thorough``
(``HYPOTHESIS_PROFILE=thorough``; see docs/testing.md).
"""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from strategies import examples
from test_collectives_reference import DTYPES, OPS, REDUCE_CHOICES, cases, run_rank_safely

import trtdsl as td

SETTINGS = settings(max_examples=examples(12, 1000))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
@SETTINGS
@given(data=st.data())
def test_collective_matches_reference(op, dtype, data):
    how = data.draw(st.sampled_from(REDUCE_CHOICES), label="reduce")
    size = data.draw(st.integers(1, 4), label="world size")
    case = data.draw(cases(op, how, dtype, size), label="case")
    event(f"world size {size}")
    problems = td.InProcessWorld(size, timeout=20).run(run_rank_safely, case)
    failed = {r: p for r, p in enumerate(problems) if p is not None}
    assert not failed, "\n".join(f"[rank {r}] {p}" for r, p in failed.items())
