"""Shared hypothesis strategies and helpers for the op tests.

Every expected value in the op tests is computed independently of trtdsl: plain NumPy in
float64 (or math.erf) on the same, already rounded, input values. Tolerances are per dtype and
stated here once.
"""

from __future__ import annotations

import math
import os

import ml_dtypes
import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

# -- Hypothesis profiles ------------------------------------------------------------------------
# Loaded here, before any settings object below is made (a settings object takes the values it
# does not set from the profile loaded when it is made). tests/conftest.py and
# tests/mpi/conftest.py import this module first; they also pick the run's seed and print it.
#
#   ci        (default; HYPOTHESIS_PROFILE unset or "ci"): a new random seed every run (printed
#             with a one-line reproduction command), few examples, a per-example deadline, so
#             `bash tools/run_tests.sh` stays around two minutes on two cores.
#   thorough  (HYPOTHESIS_PROFILE=thorough): >= 1000 examples for every collective op x dtype
#             (see test_collectives_inprocess.py / tests/mpi), 10x the ci examples elsewhere,
#             no deadline.
#
# Neither uses the example database: under MPI every rank must draw the same examples, which
# only the (broadcast) seed guarantees, and a failure is reproduced from the printed seed.
PROFILES = ("ci", "thorough")
settings.register_profile(
    "ci",
    derandomize=False,
    database=None,
    deadline=10_000,  # ms per example: a hung or pathologically slow example fails the test
    max_examples=20,
    print_blob=True,
)
settings.register_profile(
    "thorough",
    derandomize=False,
    database=None,
    deadline=None,
    max_examples=200,
    print_blob=True,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci") or "ci"
if PROFILE not in PROFILES:
    raise RuntimeError(f"HYPOTHESIS_PROFILE={PROFILE!r}: choose one of {', '.join(PROFILES)}")
settings.load_profile(PROFILE)
THOROUGH = PROFILE == "thorough"


#: The run's seed (set by the conftests: ``--hypothesis-seed`` or a random one, rank 0's under
#: MPI) and the MPI job size, for the reproduction command they print.
RUN: dict = {"seed": None, "mpi_size": None}


def choose_seed(given: object = None) -> int:
    """``given`` (the ``--hypothesis-seed`` option) as an int, or a new random seed."""
    import random

    return int(given) if given is not None else random.SystemRandom().randrange(2**32)


def set_seed(seed: int, mpi_size: int | None = None) -> None:
    """Force ``seed`` on every Hypothesis test of this process."""
    from hypothesis import core

    core.global_force_seed = seed
    RUN["seed"], RUN["mpi_size"] = seed, mpi_size


def examples(ci: int, thorough: int | None = None) -> int:
    """``max_examples`` for a test: ``ci`` under the ci profile, ``thorough`` (default 10x)
    under the thorough one."""
    if not THOROUGH:
        return ci
    return 10 * ci if thorough is None else thorough


#: Hypothesis settings for the op tests (the profile gives derandomize, database, deadline).
#: ``too_slow``/``data_too_large`` stay enabled: the strategies draw small shapes.
FAST = settings(max_examples=examples(30))
#: Fewer examples, for tests that are parametrized many times over.
QUICK = settings(FAST, max_examples=examples(15))

FLOATS = ("float32", "float16")
FLOATS_BF16 = ("float32", "float16", "bfloat16")
INTS = ("int32", "int64")

#: Tolerances for a result computed in float32 (or exactly) and rounded once to the dtype:
#: float16 has an 11-bit significand (half ulp 4.9e-4 relative), bfloat16 an 8-bit one
#: (half ulp 3.9e-3); float32 results carry a few float32 ulps of library error.
TOL = {
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "float16": {"rtol": 1.5e-3, "atol": 1e-3},
    "bfloat16": {"rtol": 1e-2, "atol": 1e-2},
}
#: Tolerances for results that accumulate (matmul, reductions, normalizations, chains).
TOL_ACC = {
    "float32": {"rtol": 1e-4, "atol": 1e-5},
    "float16": {"rtol": 1e-2, "atol": 1e-2},
    "bfloat16": {"rtol": 5e-2, "atol": 5e-2},
}

seeds = st.integers(0, 2**32 - 1)


def np_dtype(name: str) -> np.dtype:
    """The NumPy dtype for a trtdsl dtype name (bfloat16 comes from ml_dtypes)."""
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    if name == "bool":
        return np.dtype(np.bool_)
    return np.dtype(name)


def f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


@st.composite
def shapes(draw, min_rank: int = 1, max_rank: int = 4, min_side: int = 1, max_side: int = 5):
    rank = draw(st.integers(min_rank, max_rank))
    return tuple(draw(st.integers(min_side, max_side)) for _ in range(rank))


@st.composite
def broadcast_pairs(draw, max_rank: int = 4, max_side: int = 5):
    """Two shapes that broadcast against each other: equal shapes, rank differences, size-1
    dims on either side, and scalars (rank 0)."""
    full = draw(shapes(1, max_rank, 1, max_side))

    def derive():
        drop = draw(st.integers(0, len(full)))
        s = list(full[drop:])
        for i in range(len(s)):
            if draw(st.integers(0, 3)) == 0:
                s[i] = 1
        return tuple(s)

    a, b = derive(), derive()
    # make sure at least one side carries the full shape sometimes, and keep both non-trivial
    if draw(st.booleans()):
        a = full
    return a, b


def broadcast_np(a: tuple, b: tuple) -> tuple:
    """NumPy's broadcast shape (an independent check of the shape trtdsl infers)."""
    return np.broadcast_shapes(a, b)


def random_array(
    rng: np.random.Generator,
    shape: tuple,
    dtype: str,
    low: float = -3.0,
    high: float = 3.0,
    *,
    away_from_zero: float = 0.0,
) -> np.ndarray:
    """Uniform random values in [low, high] rounded to ``dtype``; never all zero.

    ``away_from_zero``: draw magnitudes in [away_from_zero, high] with random signs instead.
    """
    dt = np_dtype(dtype)
    if dt.kind == "b":
        x = np.asarray(rng.random(shape) < 0.5)
        if x.size and not x.any():
            x.flat[0] = True
        return x
    if away_from_zero:
        mag = rng.uniform(away_from_zero, high, size=shape)
        x = np.where(rng.random(shape) < 0.5, -mag, mag)
    else:
        x = rng.uniform(low, high, size=shape)
    if dt.kind in "iu":
        x = np.round(x)
        if away_from_zero:
            x = np.where(x == 0, 1.0, x)
    x = np.asarray(x).astype(dt)
    if x.size and not np.any(f64(x) != 0):
        x.flat[0] = dt.type(high if high else 1)
    return x


def integer_grid(rng: np.random.Generator, shape: tuple, dtype: str, k: int = 2) -> np.ndarray:
    """Values from {-k, ..., k} (so that comparisons meet equal elements), never all zero."""
    x = np.asarray(rng.integers(-k, k + 1, size=shape), dtype=np.float64)
    if x.size and not x.any():
        x.flat[0] = 1.0
    return x.astype(np_dtype(dtype))


def assert_close(actual, expected, dtype: str, tol: dict | None = None) -> None:
    """``actual`` has the dtype and shape of ``expected`` and is within the dtype's tolerance."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == np_dtype(dtype), (actual.dtype, dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(f64(actual), f64(expected), **(tol or TOL[dtype]))


def assert_equal(actual, expected, dtype: str) -> None:
    actual = np.asarray(actual)
    assert actual.dtype == np_dtype(dtype), (actual.dtype, dtype)
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_array_equal(actual, expected)


erf64 = np.vectorize(math.erf, otypes=[np.float64])


# -- parallel blocks (tests/test_parallel_linear.py, tests/test_parallel_mlp_attention.py) ----
PARALLEL_SETTINGS = settings(max_examples=examples(40))
#: Block outputs vs float64 on one rank (every layer rounds to the 16-bit type; values O(1)).
PARALLEL_TOL = {
    "float32": {"rtol": 1e-4, "atol": 1e-4},
    "float16": {"rtol": 2e-2, "atol": 2e-2},
    "bfloat16": {"rtol": 6e-2, "atol": 6e-2},
}
PARALLEL_DTYPES = st.sampled_from(["float32", "float16", "bfloat16"])
