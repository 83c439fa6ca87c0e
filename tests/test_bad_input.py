"""Bad input across the public API, drawn by Hypothesis: every public builder
(``trtdsl.ops.api.REGISTRY``, the functions of ``trtdsl.functional`` and the Tensor methods)
and ``Network.input`` / ``constant`` / ``output`` / ``run`` get wrong shapes, dtypes, groups,
roots, names, axes and junk values. Whatever happens must be either a result or a
``trtdsl.TrtDslError`` whose message names this file and the line of the call - never a bare
TypeError, ValueError, NumPy error or AttributeError.

Every call goes through :func:`call`, whose call line is known, so the asserted ``file:line`` is
exact. Cases that must fail (not merely "may") are checked by an independent predicate.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

import trtdsl as td
from trtdsl import functional as F
from trtdsl.errors import WorldError
from trtdsl.ops.api import REGISTRY

THIS_FILE = os.path.basename(__file__)
ROOT = Path(__file__).resolve().parent.parent
SETTINGS = settings(max_examples=examples(60, 1000))


def _call_line() -> int:
    src, start = inspect.getsourcelines(call)
    return start + next(i for i, line in enumerate(src) if "RESULT = fn(" in line)


def call(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, td.TrtDslError | None]:
    """``fn(*args, **kwargs)``: (result, None), or (None, the TrtDslError) after checking that
    its message names this file and the line of the call. Any other exception fails."""
    try:
        RESULT = fn(*args, **kwargs)  # noqa: N806 - the line _call_line finds
    except td.TrtDslError as e:
        msg = str(e)
        assert f"{THIS_FILE}:{CALL_LINE}" in msg, f"{type(e).__name__} without file:line: {msg}"
        return None, e
    return RESULT, None


CALL_LINE = _call_line()


# -- junk ----------------------------------------------------------------------------------------
def make_net(rank: int = 0, size: int = 4) -> tuple[td.Network, dict[str, td.Tensor]]:
    """A network of a StaticWorld with the tensors the valid templates use."""
    net = td.Network("bad", world=td.StaticWorld(size, rank))
    t = {
        "x": net.input("x", (4, 6)),
        "b": net.input("b", (4, 6), "bool"),
        "i": net.input("i", (4, 6), "int32"),
        "h": net.input("h", (4, 6), "float16"),
        "s": net.input("s", ()),
        "one": net.input("one", (1, 6)),
        "w": net.input("w", (6, 3)),
        "d": net.input("d", (None, 6)),
        "q": net.input("q", (2, 4, 6)),
        "i8": net.input("i8", (4, 6), "int8"),
        "img": net.input("img", (3, 4, 4)),
    }
    t["idx"] = net.constant(np.array([0, 2], np.int32), name="idx")
    return net, t


#: Values that are wrong for almost every parameter ("tensor:*" are resolved per network).
JUNK = (
    None,
    "",
    "bogus",
    1.5,
    -1,
    -7,
    7,
    10**12,
    True,
    float("nan"),
    float("inf"),
    1j,
    (),
    [],
    [[0, 1], [1]],
    [[0, 1], [2, 3, 4]],
    [0, 1.5],
    [0, 0],
    (0, 0, 0),
    ("a", "b"),
    Ellipsis,
    slice(None, None, -1),
    object(),
    np.ones((5, 7)),
    np.ones(3, complex),
    np.array(["a"]),
    np.float64(2.0),
    np.int64(-3),
    "tensor:b",
    "tensor:i",
    "tensor:h",
    "tensor:s",
    "tensor:one",
    "tensor:d",
    "tensor:other",
)


def resolve(value: Any, t: dict[str, td.Tensor]) -> Any:
    if isinstance(value, str) and value.startswith("tensor:"):
        key = value.split(":", 1)[1]
        if key == "other":  # a tensor of another network
            return td.Network("other", world=td.StaticWorld(4, 0)).input("o", (4, 6))
        return t[key]
    return value


def template(name: str, t: dict[str, td.Tensor]) -> tuple[tuple, dict]:
    """Valid arguments for the public builder ``name`` (a call that defines a layer)."""
    x, b = t["x"], t["b"]
    special = {
        "collective": ((x, "all_reduce"), {"reduce": "sum"}),
        "clip": ((x, 0.0, 1.0), {}),
        "reshape": ((x, (6, 4)), {}),
        "transpose": ((x, (1, 0)), {}),
        "expand_dims": ((x, 0), {}),
        "squeeze": ((t["one"], 0), {}),
        "cast": ((x, "float16"), {}),
        "concat": (([x, x],), {}),
        "slice": ((x, (0, 0), (2, 2)), {}),
        "getitem": ((x, 0), {}),
        "split": ((x, 2), {}),
        "gather": ((x, t["idx"]), {}),
        "select": ((b, x, x), {}),
        "matmul": ((x, t["w"]), {}),
        "layer_norm": ((x, np.ones(6, np.float32), np.zeros(6, np.float32)), {}),
        "rms_norm": ((x, np.ones(6, np.float32)), {}),
        "modulated_norm": ((x, np.zeros(6, np.float32), np.zeros((1, 6), np.float32)), {}),
        "attention": ((t["q"], t["q"], t["q"]), {}),
        "quantize": ((x, 0.5), {}),
        "dequantize": ((t["i8"], 0.5), {}),
        "embedding": ((t["idx"], np.ones((5, 6), np.float32)), {}),
        "pad": ((x, [(1, 1)]), {}),
        "patchify": ((t["img"], 2), {}),
        "unpatchify": ((x, 1, (2, 2)), {}),
        "rope": ((t["q"], np.ones((4, 3), np.float32), np.zeros((4, 3), np.float32)), {}),
        "rope_frequencies": ((np.arange(4), 6), {"net": x.network}),
        "topk": ((x, 2), {}),
    }
    if name in special:
        return special[name]
    params = list(inspect.signature(REGISTRY[name].function).parameters)
    if name.startswith("logical_"):
        return ((b,) * (2 if params[1] == "b" else 1)), {}
    if len(params) > 1 and params[1] == "b":  # binary elementwise
        return (x, x), {}
    return (x,), {}


def test_every_public_builder_has_a_valid_template():
    assert set(REGISTRY) <= set(F.__all__)
    for name, op in REGISTRY.items():
        net, t = make_net()
        args, kwargs = template(name, t)
        out, err = call(op.function, *args, **kwargs)
        assert err is None, (name, err)


@st.composite
def mutated_calls(draw: Any) -> tuple:
    """(builder name, rank, parameter, junk value, as a method?)."""
    name = draw(st.sampled_from(sorted(REGISTRY)), label="builder")
    params = list(inspect.signature(REGISTRY[name].function).parameters)
    param = draw(st.sampled_from(params), label="parameter")
    junk = draw(st.sampled_from(JUNK), label="junk")
    rank = draw(st.integers(0, 3), label="rank")
    as_method = REGISTRY[name].method is not None and param != params[0] and draw(st.booleans())
    return name, rank, param, junk, as_method


@SETTINGS
@given(mutated_calls())
def test_builders_with_one_bad_argument(case):
    """One argument of a valid call replaced by junk: a layer or a located TrtDslError."""
    name, rank, param, junk, as_method = case
    net, t = make_net(rank)
    args, kwargs = template(name, t)
    sig = inspect.signature(REGISTRY[name].function)
    bound = sig.bind(*args, **kwargs)
    bound.arguments[param] = resolve(junk, t)
    if as_method:
        first = next(iter(sig.parameters))
        x = bound.arguments.pop(first)
        rest = dict(bound.arguments)
        out, err = call(getattr(x, REGISTRY[name].method), **rest)
    else:
        out, err = call(REGISTRY[name].function, *bound.args, **bound.kwargs)
    assert err is None or isinstance(err, td.TrtDslError)


# builders and arguments that must fail, with a phrase the message must contain
MUST_FAIL = [
    ("matmul", lambda t: (t["x"], t["x"]), {}, "6 vs 4"),
    ("add", lambda t: (t["x"], t["w"]), {}, "do not broadcast"),
    ("reshape", lambda t: (t["x"], (5, 5)), {}, "cannot reshape"),
    ("softmax", lambda t: (t["x"],), {"axis": 2}, "axis 2"),
    ("reduce_sum", lambda t: (t["x"],), {"axis": (0, 0)}, "repeated axis"),
    ("split", lambda t: (t["x"], 5), {}, "does not split"),
    ("gather", lambda t: (t["x"], t["x"]), {}, "indices must be"),
    ("concat", lambda t: (t["x"],), {}, "list or tuple"),
    ("all_reduce", lambda t: (t["b"],), {}, "got bool"),
    ("all_reduce", lambda t: (t["i"], "avg"), {}, "'avg' needs a float"),
    ("all_reduce", lambda t: (t["x"], "mean"), {}, "unknown reduce op"),
    ("all_reduce", lambda t: (t["s"],), {}, "rank >= 1"),
    ("broadcast", lambda t: (t["x"], 4), {}, "outside the group"),
    ("reduce_to", lambda t: (t["x"], "sum", -1), {}, "outside the group"),
    ("all_gather", lambda t: (t["x"],), {"groups": [[0, 1], [1, 2, 3]]}, "more than once"),
    ("all_gather", lambda t: (t["x"],), {"groups": [[0, 1], [2]]}, "in no group"),
    ("reduce_scatter", lambda t: (t["w"],), {}, "not divisible by 4"),
    ("relu", lambda t: (t["x"],), {"name": ""}, "non-empty string"),
    ("relu", lambda t: (t["x"],), {"name": "x"}, "duplicate layer name"),
    ("rms_norm", lambda t: (t["x"], np.ones(6, np.float32)), {"eps": "small"}, "eps"),
    ("layer_norm", lambda t: (t["x"], np.ones(5, np.float32), 0.0), {}, "scale shape"),
    ("modulated_norm", lambda t: (t["x"], np.zeros(5, np.float32), 0.0), {}, "must broadcast"),
    # truthy stand-ins for flags, found by exploring: a bool is required
    ("reduce_sum", lambda t: (t["x"],), {"keepdims": 1}, "keepdims must be True or False"),
    ("reduce_max", lambda t: (t["x"],), {"keepdims": np.ones(3)}, "keepdims must be True"),
    ("matmul", lambda t: (t["x"], t["w"]), {"transpose_b": "no"}, "transpose_b must be True"),
    ("attention", lambda t: (t["q"], t["q"], t["q"]), {"causal": 1}, "causal must be True"),
    ("attention", lambda t: (t["q"],) * 3, {"return_lse": None}, "return_lse must be True"),
    ("split", lambda t: (t["x"], None), {}, "sections must be an int or a list"),
    ("split", lambda t: (t["x"], 1.5), {}, "sections must be an int or a list"),
    ("topk", lambda t: (t["x"], 2), {"largest": np.ones(2)}, "largest must be True"),
    ("rope", lambda t: template("rope", t)[0], {"interleaved": 1}, "interleaved must be True"),
    ("rope_frequencies", lambda t: (np.arange(4), 6), {"theta": None}, "theta must be"),
    ("rope_frequencies", lambda t: (np.arange(4), 6), {"net": ""}, "need net="),
    ("rope_frequencies", lambda t: (np.arange(4), 6), {"axes_dim": 1.5}, "TypeError"),
    ("rope_frequencies", lambda t: (np.arange(4), 10**12), {}, "dim must be an even int"),
    ("quantize", lambda t: (t["x"], np.array(["a"])), {}, "scale must be a number"),
]


@pytest.mark.parametrize("name, args, kwargs, phrase", MUST_FAIL, ids=lambda v: str(v)[:20])
def test_must_fail(name, args, kwargs, phrase):
    net, t = make_net(rank=1)
    _, err = call(REGISTRY[name].function, *args(t), **kwargs)
    assert isinstance(err, td.DefinitionError), f"{name} accepted {args(t)} {kwargs}"
    assert phrase in str(err), str(err)


# -- Network.input / constant / output ------------------------------------------------------------
SHAPES = st.one_of(
    st.lists(st.one_of(st.integers(-3, 4), st.none(), st.sampled_from(JUNK)), max_size=3),
    st.sampled_from(JUNK),
)
DTYPES = st.one_of(
    st.sampled_from(["float32", "bfloat16", "bool", "int8", "float64", "complex64", "uint8"]),
    st.sampled_from([np.float32, np.int16, np.dtype("int64"), td.float16, object, None]),
    st.sampled_from(JUNK),
)
NAMES = st.one_of(st.text(max_size=3), st.sampled_from(["x", "dup", *JUNK[:12]]))


def valid_input(name: Any, shape: Any, dtype: Any) -> bool:
    """The test's own reading of what Network.input accepts."""
    if not isinstance(name, str) or not name or name in ("x", "dup"):
        return False
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (list, tuple)):
        return False
    for d in shape:
        if d is None or (type(d) is int and d >= -1):
            continue
        return False
    names = {"float32", "float16", "bfloat16", "bool", "int8", "int32", "int64"}
    if isinstance(dtype, str):
        return dtype in names
    return dtype is td.float16 or dtype is np.float32


@SETTINGS
@given(name=NAMES, shape=SHAPES, dtype=DTYPES)
def test_network_input(name, shape, dtype):
    net = td.Network("n")
    F.relu(net.input("x", (2,)), name="dup")
    out, err = call(net.input, name, shape, dtype)
    if isinstance(dtype, (str, td.dtypes.DType)) or dtype is np.float32:
        assert (err is None) == valid_input(name, shape, dtype), (name, shape, dtype, err)
    if err is None:
        dims = (shape,) if isinstance(shape, int) else shape
        assert out.type.shape == tuple(None if d in (None, -1) else d for d in dims)


@SETTINGS
@given(
    value=st.one_of(
        st.sampled_from(JUNK),
        st.lists(st.floats(allow_nan=False, width=64), max_size=3),
        st.floats(allow_infinity=False, allow_nan=False),
    ),
    dtype=st.one_of(st.none(), DTYPES),
    name=st.one_of(st.none(), NAMES),
)
def test_network_constant(value, dtype, name):
    net = td.Network("n")
    F.relu(net.input("x", (2,)), name="dup")
    out, err = call(net.constant, value, dtype=dtype, name=name)
    if err is None:
        assert isinstance(out, td.Tensor)
        arr = out.producer.attrs["value"]
        if arr.dtype.kind == "f" and np.isfinite(np.asarray(value, dtype=complex).real).all():
            assert np.isfinite(arr.astype(np.float64)).all(), (value, dtype, arr)


@SETTINGS
@given(tensor=st.sampled_from(["x", "y", "y", "other", *JUNK[:8]]), name=NAMES)
def test_network_output(tensor, name):
    net = td.Network("n")
    x = net.input("x", (2,))
    y = F.relu(x, name="dup")
    net.output(y, "taken")
    target = {"x": x, "y": y, "other": td.Network("o").input("o", (2,))}.get(tensor, tensor)
    out, err = call(net.output, target, name)
    must_fail = (
        not isinstance(target, td.Tensor)
        or target.network is not net
        or target is y  # already an output
        or (name is not None and (not isinstance(name, str) or name in ("", "taken")))
    )
    if must_fail:
        assert err is not None, (tensor, name)


@pytest.mark.parametrize("value", [1j, np.ones(3, complex), [1.0, 2 + 1j]])
def test_complex_constant_is_refused(value):
    """A cast to a real dtype would drop the imaginary part silently (found by exploring)."""
    net = td.Network("n")
    _, err = call(net.constant, value, dtype="float32")
    assert isinstance(err, td.DefinitionError) and "complex" in str(err), err


# -- worlds ----------------------------------------------------------------------------------------
WORLD_ARGS = st.one_of(st.integers(-2, 5), st.sampled_from(JUNK))


def _count(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@SETTINGS
@given(size=WORLD_ARGS, rank=WORLD_ARGS, timeout=st.one_of(st.floats(-1, 5), WORLD_ARGS))
def test_world_arguments(size, rank, timeout):
    """StaticWorld / InProcessWorld with junk size, rank, timeout: a world, or a WorldError
    (a TrtDslError and a ValueError) naming this file and line."""
    for make, args, valid in (
        (td.StaticWorld, (size, rank), _count(size) and _count(rank) and 0 <= rank < size),
        (
            td.InProcessWorld,
            (size, timeout),
            _count(size)
            and size >= 1
            and isinstance(timeout, (int, float, np.number))
            and not isinstance(timeout, bool)
            and timeout > 0,
        ),
    ):
        world, err = call(make, *args)
        assert (err is None) == bool(valid), (make.__name__, args, err)
        if err is not None:
            assert isinstance(err, WorldError) and isinstance(err, ValueError), err
        else:
            assert world.size == size


@pytest.mark.parametrize("make", [td.StaticWorld, td.InProcessWorld])
@pytest.mark.parametrize("size", [0, -1, True, "2", 2.0])
def test_world_of_no_ranks(make, size):
    _, err = call(make, size)
    assert isinstance(err, WorldError) and isinstance(err, ValueError), err
    assert f"{make.__name__}: the world size must be an int >= 1, got {size!r}" in str(err), err


# -- Network.run feeds ---------------------------------------------------------------------------
FEED_VALUES = st.one_of(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 4),
        st.sampled_from(["float32", "float64", "float16", "int32", "bool"]),
    ).map(lambda a: np.ones(a[:2], a[2])),
    st.sampled_from(JUNK),
    st.just([[1.0, 2.0, 3.0]]),
    st.just(np.ones(3, np.float32)),
    st.just(np.ones((2, 3, 1), np.float32)),
)


def valid_feeds(feeds: Any) -> bool:
    if not isinstance(feeds, dict) or set(feeds) != {"a"}:
        return False
    v = feeds["a"]
    return (
        isinstance(v, np.ndarray)
        and v.dtype == np.float32
        and v.ndim == 2
        and v.shape[1] == 3
        and v.shape[0] >= 1
    )


@SETTINGS
@given(
    feeds=st.one_of(
        st.dictionaries(st.sampled_from(["a", "b", "x"]), FEED_VALUES, max_size=2),
        st.sampled_from(JUNK),
        st.just([np.ones((2, 3), np.float32)]),
    )
)
def test_network_run_feeds(feeds):
    net = td.Network("r")
    net.output(F.relu(net.input("a", (None, 3))), "y")
    out, err = call(net.run, feeds)
    assert (err is None) == valid_feeds(feeds), (feeds, err)
    if err is None:
        assert out["y"].shape == feeds["a"].shape
    else:
        assert isinstance(err, td.ExecutionError), err


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0, 0)])
def test_zero_size_feed_is_a_clear_error(shape):
    net = td.Network("z")
    net.output(F.relu(net.input("a", (None, None))), "y")
    _, err = call(net.run, {"a": np.ones(shape, np.float32)})
    assert isinstance(err, td.ExecutionError) and "has no elements" in str(err), err
    assert f"shape {shape}" in str(err), err


def test_zero_size_feed_on_one_rank_stops_every_rank():
    seen = {}

    def per_rank(world):
        net = td.Network("z", world=world)
        net.output(net.input("a", (None, 2)).all_reduce("sum"), "y")
        n = 0 if world.rank == 1 else 2
        try:
            return net.run({"a": np.ones((n, 2), np.float32)})
        except td.TrtDslError as e:
            seen[world.rank] = e
            raise

    with pytest.raises(td.ExecutionError, match="has no elements"):
        td.InProcessWorld(3, timeout=10).run(per_rank)
    assert "has no elements" in str(seen[1])
    for r in (0, 2):  # stopped at the collective check instead of waiting for rank 1
        assert isinstance(seen[r], td.RankFailedError) and "rank 1 failed" in str(seen[r])


def test_network_without_outputs_is_a_clear_error():
    net = td.Network("empty")
    net.input("a", (2,))
    _, err = call(net.run, {"a": np.ones(2, np.float32)})
    assert isinstance(err, td.ExecutionError) and "has no outputs" in str(err), err


@pytest.mark.parametrize("bad", [3, "name", None])
def test_network_world_and_backend(bad):
    _, err = call(td.Network, "n", world=bad) if bad is not None else (None, None)
    if bad is not None:
        assert isinstance(err, td.DefinitionError)
    net = td.Network("n")
    net.output(F.relu(net.input("a", (2,))), "y")
    _, err = call(net.run, {"a": np.ones(2, np.float32)}, backend=bad or "")
    assert isinstance(err, td.ExecutionError) and "unknown backend" in str(err)


# -- samples print the message, not a traceback --------------------------------------------------
@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["dist_collective.py", "--op", "broadcast", "--root", "5", "--world-size", "2"], "root 5"),
        (["dist_collective.py", "--op", "scatter", "--rows", "0", "--world-size", "2"], "error"),
    ],
)
def test_samples_print_the_error_message(argv, phrase):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "samples" / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and phrase in proc.stderr, proc.stderr
