"""An independent NumPy reference of the eight collectives, the Hypothesis strategies and the
per-rank check shared by the in-process and the MPI property tests; plus hand-worked examples
that check the reference itself.

Nothing here calls trtdsl's own ``simulate``: the expected output of every rank is computed
from every rank's input, following the NCCL / TensorRT 11 definitions (axis 0, ``root`` an
index into the rank's group, groups a partition of the ranks).
"""

from __future__ import annotations

import traceback
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import trtdsl as td

try:  # tests/ is on sys.path (tests/conftest.py, tests/mpi/conftest.py)
    from strategies import np_dtype
except ImportError:  # pragma: no cover
    from tests.strategies import np_dtype

OPS = (
    "all_reduce",
    "broadcast",
    "reduce",
    "all_gather",
    "reduce_scatter",
    "all_to_all",
    "gather",
    "scatter",
)
REDUCES = ("sum", "prod", "min", "max", "avg")
#: Every dtype the DSL accepts for a collective (checked against the library below).
DTYPES = ("float32", "float16", "bfloat16", "int8", "int32", "int64")
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
REDUCING = {"all_reduce", "reduce", "reduce_scatter"}
ROOTED = {"broadcast", "reduce", "gather", "scatter"}
SPLITTING = {"reduce_scatter", "all_to_all", "scatter"}
#: (op, reduce) pairs, every op with every reduce op and with None: invalid pairs included.
OP_REDUCE = [(op, red) for op in OPS for red in (None, *REDUCES)]
#: What a property test draws the reduce op from (None and the invalid ones included).
REDUCE_CHOICES = (None, *REDUCES)
UNDEFINED = None  # the expected value of an output the collective leaves undefined


# -- the reference ---------------------------------------------------------------------------
def partition_of(groups: Any, size: int) -> list[list[int]]:
    """The test's own reading of ``groups``: None -> all ranks; a flat list -> one group."""
    if groups is None:
        return [list(range(size))]
    if all(isinstance(g, int) for g in groups):
        return [list(groups)]
    return [list(g) for g in groups]


def _wide(x: np.ndarray) -> np.ndarray:
    """int64 for integer inputs, float64 otherwise (bfloat16's NumPy kind is 'V', not 'f')."""
    return x.astype(np.int64 if x.dtype.kind in "iu" else np.float64)


def _combine(xs: list[np.ndarray], how: str) -> np.ndarray:
    """Element-wise reduction in float64 / int64, one rank after another."""
    wide = [_wide(x) for x in xs]
    acc = wide[0].copy()
    for x in wide[1:]:
        if how in ("sum", "avg"):
            acc = acc + x
        elif how == "prod":
            acc = acc * x
        elif how == "min":
            acc = np.minimum(acc, x)
        elif how == "max":
            acc = np.maximum(acc, x)
        else:
            raise AssertionError(how)
    return acc / len(xs) if how == "avg" else acc


def expected_outputs(
    op: str, how: str | None, root: int | None, partition: list[list[int]], inputs: list
) -> list[Any]:
    """Every global rank's expected output (float64 / int64), or UNDEFINED."""
    out: list[Any] = [None] * len(inputs)
    for group in partition:
        xs = [inputs[r] for r in group]
        n = len(group)
        for i, r in enumerate(group):
            if op == "all_reduce":
                out[r] = _combine(xs, how)
            elif op == "broadcast":
                out[r] = _wide(xs[root])
            elif op == "reduce":
                out[r] = _combine(xs, how) if i == root else UNDEFINED
            elif op == "all_gather":
                out[r] = np.concatenate(xs, axis=0)
            elif op == "gather":
                out[r] = np.concatenate(xs, axis=0) if i == root else UNDEFINED
            elif op == "reduce_scatter":
                out[r] = np.array_split(_combine(xs, how), n, axis=0)[i]
            elif op == "scatter":
                out[r] = np.array_split(xs[root], n, axis=0)[i]
            elif op == "all_to_all":
                out[r] = np.concatenate([np.array_split(x, n, axis=0)[i] for x in xs], axis=0)
            else:
                raise AssertionError(op)
    return out


def expected_errors(case: dict, size: int) -> list[list[str]]:
    """For every rank, the messages one of which its DefinitionError must contain ([] = the
    layer is valid on that rank)."""
    op, how, dtype, root = case["op"], case["reduce"], case["dtype"], case["root"]
    d0 = case["shape"][0]
    common = []
    if op in REDUCING and how is None:
        common.append("needs a reduce op")
    if op not in REDUCING and how is not None:
        common.append("does not reduce")
    if how == "avg" and dtype not in FLOAT_DTYPES and op in REDUCING:
        common.append("'avg' needs a float")
    if dtype == "int8" and op in REDUCING and how is not None:
        common.append("int8 is TensorRT's quantized type")  # reducing quantized codes
    out = []
    for r in range(size):
        group = next(g for g in partition_of(case["groups"], size) if r in g)
        errs = list(common)
        if op in ROOTED and not 0 <= root < len(group):
            errs.append("outside the group")
        if op in SPLITTING and d0 % len(group):
            errs.append("not divisible")
        out.append(errs)
    return out


def make_inputs(
    seed: int, size: int, shape: tuple, dtype: str, how: str | None = None
) -> list[np.ndarray]:
    """Every rank's input, the same on every rank for a seed: no zeros, random signs.

    Floats: magnitudes 0.5..2, rounded to the dtype. int8/int32: magnitudes 1..5 (1..3 for
    int8, so a product of 4 ranks fits). int64: magnitudes up to 2**58 with random low bits
    (a reduction through float64 would lose them), up to 2**15 for a product.
    """
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(size):
        sign = rng.choice([-1, 1], size=shape)
        if dtype in FLOAT_DTYPES:
            xs.append((sign * rng.uniform(0.5, 2.0, size=shape)).astype(np_dtype(dtype)))
        elif dtype == "int64":
            top = 2**15 if how == "prod" else 2**58
            xs.append((sign * rng.integers(1, top, size=shape, dtype=np.int64)).astype(np.int64))
        else:
            top = 4 if dtype == "int8" else 6
            xs.append((sign * rng.integers(1, top, size=shape)).astype(np_dtype(dtype)))
    return xs


#: Float tolerances: the library reduces 16-bit floats in float32 and rounds once (half an ulp:
#: 4.9e-4 relative for float16, 3.9e-3 for bfloat16); float32 reduces in float32.
FLOAT_TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}


def compare(out: np.ndarray, expected: Any, dtype: str, shape: tuple) -> str | None:
    """None if ``out`` matches, else a message."""
    if out.dtype != np_dtype(dtype):
        return f"dtype {out.dtype}, expected {dtype}"
    if expected is UNDEFINED:
        if tuple(out.shape) != tuple(shape):
            return f"undefined output has shape {out.shape}, expected {shape}"
        if dtype in FLOAT_DTYPES:
            poisoned = np.isnan(out.astype(np.float64))
        else:
            poisoned = out == np.iinfo(np_dtype(dtype)).min
        return None if poisoned.all() else f"undefined output is not poisoned: {out}"
    if tuple(out.shape) != tuple(expected.shape):
        return f"shape {out.shape}, expected {expected.shape}"
    if dtype in FLOAT_DTYPES:
        tol = FLOAT_TOL[dtype]
        ok = np.allclose(out.astype(np.float64), _wide(expected), rtol=tol, atol=tol)
    else:  # exact, compared as Python ints (no float64 on the way)
        ok = out.astype(np.int64).tolist() == np.asarray(expected, np.int64).tolist()
    return None if ok else f"got\n{out!r}\nexpected\n{expected!r}"


def output_shape(case: dict, group_size: int) -> tuple:
    d0, rest = case["shape"][0], tuple(case["shape"][1:])
    if case["op"] in ("all_gather", "gather"):
        return (d0 * group_size,) + rest
    if case["op"] in ("reduce_scatter", "scatter"):
        return (d0 // group_size,) + rest
    return (d0,) + rest


# -- building the layer the ways a user can ----------------------------------------------------
def add_collective(x: td.Tensor, case: dict) -> td.Tensor:
    op, how, root, groups = case["op"], case["reduce"], case["root"], case["groups"]
    if not case["helper"]:
        return x.collective(op, reduce=how, root=root, groups=groups)
    if op == "all_reduce":
        return x.all_reduce(how, groups=groups)
    if op == "broadcast":
        return x.broadcast(root, groups=groups)
    if op == "reduce":
        return x.reduce_to(how, root, groups=groups)
    if op == "all_gather":
        return x.all_gather(groups=groups)
    if op == "reduce_scatter":
        return x.reduce_scatter(how, groups=groups)
    if op == "all_to_all":
        return x.all_to_all(groups=groups)
    if op == "gather":
        return td.functional.gather_to(x, root, groups=groups)
    return x.scatter(root, groups=groups)


def run_rank(world: Any, case: dict) -> str | None:
    """Define and run ``case`` on this rank; None if it behaved as the reference says, else
    what went wrong. Every rank reaches the same decision about running (it knows every rank's
    expected errors), so no rank waits for one that stopped at definition time."""
    size, rank = world.size, world.rank
    errors = expected_errors(case, size)
    mine = errors[rank]
    net = td.Network("case", world=world)
    x = net.input("x", case["shape"], case["dtype"])
    try:
        y = add_collective(x, case)
    except td.DefinitionError as e:
        msg = str(e)
        if not mine:
            return f"unexpected DefinitionError: {msg}"
        if not any(m in msg for m in mine):
            return f"DefinitionError should say one of {mine}: {msg}"
        if "layer '" not in msg or f"{__name__.split('.')[-1]}.py:" not in msg:
            return f"DefinitionError should name the layer and the user's file:line: {msg}"
        return None
    if mine:
        return f"expected a DefinitionError ({' or '.join(mine)}), but the layer was defined"
    if any(errors):
        return None  # another rank cannot define it: nobody runs
    net.output(y, "y")
    partition = partition_of(case["groups"], size)
    group = next(g for g in partition if rank in g)
    if y.type.shape != output_shape(case, len(group)):
        return f"inferred shape {y.type.shape}, expected {output_shape(case, len(group))}"
    inputs = make_inputs(case["seed"], size, case["shape"], case["dtype"], case["reduce"])
    out = net.run({"x": inputs[rank]})["y"]
    root = case["root"] if case["op"] in ROOTED else None
    expected = expected_outputs(case["op"], case["reduce"], root, partition, inputs)[rank]
    problem = compare(out, expected, case["dtype"], output_shape(case, len(group)))
    return None if problem is None else f"rank {rank}: {problem}"


def run_rank_safely(world: Any, case: dict) -> str | None:
    try:
        return run_rank(world, case)
    except Exception as e:  # noqa: BLE001 - reported as the rank's outcome
        return "".join(traceback.format_exception(type(e), e, e.__traceback__))


# -- strategies --------------------------------------------------------------------------------
@st.composite
def groups_for(draw: Any, size: int) -> Any:
    """None, one ordered group of all ranks, or a partition (groups in any order)."""
    kind = draw(st.sampled_from(["none", "ordered", "partition"]))
    if kind == "none":
        return None
    perm = draw(st.permutations(list(range(size))))
    if kind == "ordered":
        return list(perm)
    cuts = sorted(draw(st.sets(st.integers(1, size - 1)))) if size > 1 else []
    bounds = [0, *cuts, size]
    return [list(perm[a:b]) for a, b in zip(bounds, bounds[1:])]


@st.composite
def cases(draw: Any, op: str, how: str | None, dtype: str, size: int) -> dict:
    groups = draw(groups_for(size))
    sizes = [len(g) for g in partition_of(groups, size)]
    if op in ROOTED:
        valid = draw(st.sampled_from([True, True, True, False]))
        root = draw(st.integers(0, min(sizes) - 1) if valid else st.integers(-1, size))
    else:
        root = None
    lcm = int(np.lcm.reduce(sizes))
    divisible = draw(st.sampled_from([True, True, True, False]))
    d0 = draw(
        st.integers(1, 3).map(lambda k: k * lcm)
        if op in SPLITTING and divisible
        else st.integers(1, 5)
    )
    rest = draw(st.lists(st.integers(1, 3), max_size=2))
    return {
        "op": op,
        "reduce": how,
        "dtype": dtype,
        "groups": groups,
        "root": root,
        "shape": (d0, *rest),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "helper": draw(st.booleans()) and (how is None) == (op not in REDUCING),
    }


# -- the reference checked on hand-worked examples ---------------------------------------------
def test_dtypes_are_every_dtype_the_dsl_accepts_for_collectives():
    from trtdsl.ops.collective import ALLOWED_DTYPES

    assert sorted(DTYPES) == sorted(d.name for d in ALLOWED_DTYPES)


def test_int64_inputs_need_more_than_float64():
    xs = make_inputs(7, 4, (64,), "int64", "sum")
    wide = expected_outputs("all_reduce", "sum", None, [[0, 1, 2, 3]], xs)[0]
    assert (wide.astype(np.float64).astype(np.int64) != wide).any()
    assert compare(wide.astype(np.float64).astype(np.int64), wide, "int64", (64,)) is not None


A = [np.array([[1], [2]]), np.array([[10], [20]])]  # two ranks, shape (2, 1)


@pytest.mark.parametrize(
    "op, how, root, expected",
    [
        ("all_reduce", "sum", None, [[[11], [22]], [[11], [22]]]),
        ("all_reduce", "max", None, [[[10], [20]], [[10], [20]]]),
        ("broadcast", None, 1, [[[10], [20]], [[10], [20]]]),
        ("reduce", "prod", 1, [UNDEFINED, [[10], [40]]]),
        ("all_gather", None, None, [[[1], [2], [10], [20]]] * 2),
        ("gather", None, 0, [[[1], [2], [10], [20]], UNDEFINED]),
        ("reduce_scatter", "sum", None, [[[11]], [[22]]]),
        ("scatter", None, 1, [[[10]], [[20]]]),
        ("all_to_all", None, None, [[[1], [10]], [[2], [20]]]),
    ],
)
def test_reference_by_hand(op, how, root, expected):
    got = expected_outputs(op, how, root, [[0, 1]], A)
    for g, e in zip(got, expected):
        assert (g is UNDEFINED) == (e is UNDEFINED)
        if e is not UNDEFINED:
            assert g.tolist() == e


def test_reference_groups_by_hand():
    xs = [np.array([float(r + 1)]) * np.ones((2,)) for r in range(4)]
    got = expected_outputs("all_gather", None, None, [[3, 1], [0, 2]], xs)
    assert got[3].tolist() == [4, 4, 2, 2] and got[1].tolist() == [4, 4, 2, 2]
    assert got[0].tolist() == [1, 1, 3, 3]
    got = expected_outputs("broadcast", None, 1, [[3, 1], [0, 2]], xs)  # root = index 1
    assert [g.tolist() for g in got] == [[3, 3], [2, 2], [3, 3], [2, 2]]
    got = expected_outputs("all_reduce", "avg", None, [[0, 1, 2, 3]], xs)
    assert got[0].tolist() == [2.5, 2.5]
