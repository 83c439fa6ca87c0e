"""Data movement ops (reshape, transpose, expand_dims/squeeze, concat, slice and indexing,
split, gather, cast, select, constant, identity) on the NumPy backend; the expected values come
from plain NumPy indexing and float64 arithmetic on the same inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    FAST,
    FLOATS,
    FLOATS_BF16,
    QUICK,
    assert_equal,
    f64,
    np_dtype,
    random_array,
    seeds,
    shapes,
)

import trtdsl as td
from trtdsl import functional as F


def run(net, **feeds):
    return net.run(feeds, backend="numpy")


def with_dynamic(draw, shape):
    """``shape`` with some dims declared dynamic (None)."""
    return tuple(None if draw(st.booleans()) else d for d in shape)


# -- reshape ----------------------------------------------------------------------------------
@st.composite
def reshape_cases(draw):
    shape = draw(shapes(1, 4, 1, 4))
    total = int(np.prod(shape))
    # factor the element count into 1-4 target dims
    target, rest = [], total
    for _ in range(draw(st.integers(0, 3))):
        divs = [d for d in range(1, rest + 1) if rest % d == 0]
        d = draw(st.sampled_from(divs))
        target.append(d)
        rest //= d
    target.append(rest)
    target = draw(st.permutations(target))
    dims = list(target)
    for i, d in enumerate(target):  # 0 copies the input dim at the same position
        if i < len(shape) and shape[i] == d and draw(st.booleans()):
            dims[i] = 0
    if draw(st.booleans()):
        k = draw(st.integers(0, len(dims) - 1))
        if dims[k] != 0:
            dims[k] = -1
    return shape, tuple(dims), tuple(target)


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@FAST
@given(case=reshape_cases(), seed=seeds)
def test_reshape_with_zero_and_minus_one(dtype, case, seed):
    shape, dims, target = case
    x = random_array(np.random.default_rng(seed), shape, dtype)
    net = td.Network("rs")
    y = net.input("x", shape, dtype).reshape(dims)
    assert y.shape == target
    net.output(y, "y")
    out = run(net, x=x)["y"]
    assert_equal(out, x.reshape(target), dtype)
    assert out.flags.c_contiguous


@pytest.mark.parametrize(
    ("declared", "dims", "inferred", "fed"),
    [
        ((None, None, 8), (0, 0, 2, -1), (None, None, 2, 4), [(1, 3, 8), (4, 2, 8)]),
        ((None, 6), (-1, 3), (None, 3), [(1, 6), (5, 6)]),
        ((None, 6), (0, 2, 3), (None, 2, 3), [(2, 6), (3, 6)]),
        ((None, 4), (-1,), (None,), [(3, 4)]),
        ((2, None), (0, 0, 1), (2, None, 1), [(2, 7)]),
        ((None, 2, 3), (0, -1), (None, 6), [(1, 2, 3), (4, 2, 3)]),
        ((None, 2, 3), (6, -1), (6, None), [(4, 2, 3)]),
    ],
)
def test_reshape_dynamic(declared, dims, inferred, fed):
    net = td.Network("rsd")
    y = F.reshape(net.input("x", declared), dims)
    assert y.shape == inferred
    net.output(y, "y")
    for shape in fed:
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        expected = x.reshape([shape[i] if d == 0 else d for i, d in enumerate(dims)])
        np.testing.assert_array_equal(run(net, x=x)["y"], expected)


def test_reshape_int_shape_and_scalar():
    net = td.Network("r")
    x = net.input("x", (2, 3), "int32")
    flat = x.reshape(6)
    s = net.input("s", ())
    net.output(flat, "flat")
    net.output(s.reshape((1, 1)), "s11")
    xv = np.arange(6, dtype=np.int32).reshape(2, 3)
    out = run(net, x=xv, s=np.array(2.5, np.float32))
    assert out["flat"].tolist() == list(range(6))
    assert out["s11"].shape == (1, 1) and float(out["s11"][0, 0]) == 2.5


# -- transpose --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS_BF16 + ("int64", "bool"))
@FAST
@given(data=st.data(), seed=seeds)
def test_transpose(dtype, data, seed):
    shape = data.draw(shapes(1, 4))
    perm = data.draw(st.permutations(range(len(shape))))
    as_negative = [p - len(shape) if data.draw(st.booleans()) else p for p in perm]
    x = random_array(np.random.default_rng(seed), shape, dtype, -100, 100)
    net = td.Network("tp")
    t = net.input("x", shape, dtype)
    y, r = t.transpose(as_negative), F.transpose(t)
    assert y.shape == tuple(shape[p] for p in perm)
    net.output(y, "y")
    net.output(r, "reversed")
    net.output(t.permute(perm), "permute")
    out = run(net, x=x)
    expected = np.empty(y.shape, dtype=x.dtype)
    for i in itertools.product(*(range(d) for d in shape)):
        expected[tuple(i[p] for p in perm)] = x[i]
    assert_equal(out["y"], expected, dtype)
    assert_equal(out["permute"], expected, dtype)
    assert_equal(out["reversed"], x.T, dtype)


def test_transpose_dynamic_dims():
    net = td.Network("tp")
    y = net.input("x", (None, 3, None)).transpose((2, 0, 1))
    assert y.shape == (None, None, 3)
    net.output(y, "y")
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(run(net, x=x)["y"], np.moveaxis(x, 2, 0))


# -- expand_dims / squeeze --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@FAST
@given(data=st.data(), seed=seeds)
def test_expand_dims_then_squeeze(dtype, data, seed):
    shape = data.draw(shapes(0, 4))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    declared = with_dynamic(data.draw, shape)
    x = random_array(np.random.default_rng(seed), shape, dtype)
    net = td.Network("ed")
    e = net.input("x", declared, dtype).expand_dims(axis)
    pos = axis % (len(shape) + 1)
    assert e.shape == declared[:pos] + (1,) + declared[pos:]
    back = e.squeeze(axis)
    assert back.shape == declared
    net.output(e, "e")
    net.output(back, "back")
    out = run(net, x=x)
    assert_equal(out["e"], x.reshape(shape[:pos] + (1,) + shape[pos:]), dtype)
    assert_equal(out["back"], x, dtype)


@FAST
@given(data=st.data(), seed=seeds)
def test_squeeze_each_size1_axis(data, seed):
    shape = list(data.draw(shapes(1, 4, 1, 3)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    shape[axis] = 1
    shape = tuple(shape)
    declared = with_dynamic(data.draw, shape)
    declared = tuple(1 if i == axis % len(shape) else d for i, d in enumerate(declared))
    x = random_array(np.random.default_rng(seed), shape, "float32")
    net = td.Network("sq")
    y = F.squeeze(net.input("x", declared), axis)
    keep = [i for i in range(len(shape)) if i != axis % len(shape)]
    assert y.shape == tuple(declared[i] for i in keep)
    net.output(y, "y")
    assert_equal(run(net, x=x)["y"], x.reshape([shape[i] for i in keep]), "float32")


# -- concat -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS_BF16 + ("int32", "bool"))
@FAST
@given(data=st.data(), seed=seeds)
def test_concat(dtype, data, seed):
    shape = data.draw(shapes(1, 4))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    rng = np.random.default_rng(seed)
    parts = []
    for n in sizes:
        s = list(shape)
        s[axis] = n
        parts.append(random_array(rng, tuple(s), dtype, -50, 50))
    net = td.Network("cat")
    ins = [net.input(f"x{i}", p.shape, dtype) for i, p in enumerate(parts)]
    y = td.concat(ins, axis=axis)
    net.output(y, "y")
    out = run(net, **{f"x{i}": p for i, p in enumerate(parts)})["y"]
    # expected by copying blocks into place
    out_shape = list(shape)
    out_shape[axis] = sum(sizes)
    expected = np.zeros(out_shape, dtype=parts[0].dtype)
    lo = 0
    for p in parts:
        idx = [slice(None)] * len(shape)
        idx[axis] = slice(lo, lo + p.shape[axis])
        expected[tuple(idx)] = p
        lo += p.shape[axis]
    assert y.shape == tuple(out_shape)
    assert_equal(out, expected, dtype)


def test_concat_dynamic_dims_and_constants():
    net = td.Network("cat")
    x = net.input("x", (None, 2))
    c = net.constant(np.full((1, 2), 9.0))
    y = F.concat([c, x, c], axis=0)
    z = td.concat([x, x * 2.0], axis=-1)
    assert y.shape == (None, 2) and z.shape == (None, 4)
    net.output(y, "y")
    net.output(z, "z")
    for n in (1, 3):
        xv = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
        out = run(net, x=xv)
        assert out["y"].tolist() == [[9, 9]] + xv.tolist() + [[9, 9]]
        assert out["z"].tolist() == [r + [2 * v for v in r] for r in xv.tolist()]


# -- slice and indexing -----------------------------------------------------------------------
@st.composite
def slice_cases(draw):
    shape = draw(shapes(1, 4, 1, 7))
    start, size, stride = [], [], []
    for d in shape:
        s = draw(st.integers(0, d - 1))
        st_ = draw(st.integers(1, 3))
        n = draw(st.integers(0, (d - 1 - s) // st_ + 1))
        start.append(s)
        size.append(n)
        stride.append(st_)
    return shape, start, size, stride


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@FAST
@given(case=slice_cases(), seed=seeds)
def test_static_slice(dtype, case, seed):
    shape, start, size, stride = case
    x = random_array(np.random.default_rng(seed), shape, dtype)
    net = td.Network("sl")
    y = F.slice(net.input("x", shape, dtype), start, size, stride)
    assert y.shape == tuple(size)
    net.output(y, "y")
    expected = np.empty(size, dtype=x.dtype)
    for out_i in itertools.product(*(range(n) for n in size)):
        expected[out_i] = x[tuple(s + i * st_ for s, i, st_ in zip(start, out_i, stride))]
    assert_equal(run(net, x=x)["y"], expected, dtype)


@st.composite
def index_cases(draw):
    shape = draw(shapes(1, 4, 1, 6))
    entries = []
    for d in shape:
        kind = draw(st.sampled_from(["int", "slice", "full", "new"]))
        if kind == "int":
            entries.append(draw(st.integers(-d, d - 1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-d - 2, d + 2)
            entries.append(slice(draw(bound), draw(bound), draw(st.none() | st.integers(1, 3))))
        elif kind == "full":
            entries.append(slice(None))
        else:
            entries.append(None)
            entries.append(slice(None))
    if draw(st.booleans()):  # a run of full slices (maybe empty) becomes '...'
        i = draw(st.integers(0, len(entries)))
        j = i
        while j < len(entries) and entries[j] == slice(None) and draw(st.booleans()):
            j += 1
        entries[i:j] = [Ellipsis]
    elif draw(st.booleans()):  # trailing axes may be left out
        while entries and entries[-1] == slice(None):
            entries.pop()
    if draw(st.booleans()) and len(entries) == 1:
        return shape, entries[0]
    return shape, tuple(entries)


@pytest.mark.parametrize("dtype", FLOATS_BF16)
@FAST
@given(case=index_cases(), seed=seeds)
def test_getitem_matches_numpy_indexing(dtype, case, seed):
    shape, index = case
    x = random_array(np.random.default_rng(seed), shape, dtype)
    expected = np.asarray(x[index])
    net = td.Network("gi")
    y = net.input("x", shape, dtype)[index]
    assert y.shape == expected.shape, index
    net.output(y, "y")
    assert_equal(run(net, x=x)["y"], expected, dtype)


@pytest.mark.parametrize(
    ("declared", "index", "inferred"),
    [
        ((None, 4, 5), (slice(None), slice(1, 3), -1), (None, 2)),
        ((None, 4, 5), (Ellipsis, 0), (None, 4)),
        ((None, None, 5), (Ellipsis, 2), (None, None)),
        ((None, None, 5), (None, Ellipsis, slice(None, None, 2)), (1, None, None, 3)),
        ((3, None, None), (1,), (None, None)),
        ((3, None, None), (slice(None), None, slice(None), None), (3, 1, None, 1, None)),
    ],
)
def test_getitem_with_dynamic_dims(declared, index, inferred):
    net = td.Network("gid")
    y = net.input("x", declared)[index]
    assert y.shape == inferred
    net.output(y, "y")
    for fill in (2, 3):
        shape = tuple(fill if d is None else d for d in declared)
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        np.testing.assert_array_equal(run(net, x=x)["y"], x[index])


# -- split ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@FAST
@given(data=st.data(), seed=seeds)
def test_split(dtype, data, seed):
    shape = list(data.draw(shapes(1, 3, 1, 4)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    if data.draw(st.booleans()):
        pieces = data.draw(st.integers(1, 3))
        shape[axis] = pieces * data.draw(st.integers(1, 3))
        sections, sizes = pieces, [shape[axis] // pieces] * pieces
    else:
        sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
        shape[axis] = sum(sizes)
        sections = sizes
    x = random_array(np.random.default_rng(seed), tuple(shape), dtype)
    net = td.Network("sp")
    parts = net.input("x", tuple(shape), dtype).split(sections, axis=axis)
    assert len(parts) == len(sizes)
    for i, p in enumerate(parts):
        net.output(p, f"p{i}")
    out = run(net, x=x)
    lo = 0
    for i, n in enumerate(sizes):
        idx = [slice(None)] * len(shape)
        idx[axis] = slice(lo, lo + n)
        assert parts[i].shape == x[tuple(idx)].shape
        assert_equal(out[f"p{i}"], x[tuple(idx)], dtype)
        lo += n


def test_split_keeps_dynamic_dims_of_other_axes():
    net = td.Network("sp")
    q, k, v = F.split(net.input("x", (None, 6)), 3, axis=1)
    assert q.shape == k.shape == v.shape == (None, 2)
    net.output(q, "q")
    net.output(v, "v")
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    out = run(net, x=x)
    assert out["q"].tolist() == [[0, 1], [6, 7]] and out["v"].tolist() == [[4, 5], [10, 11]]


# -- gather -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS_BF16 + ("int32",))
@FAST
@given(data=st.data(), seed=seeds)
def test_gather_constant_indices(dtype, data, seed):
    shape = data.draw(shapes(1, 3, 1, 5))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    idx_shape = data.draw(shapes(0, 2, 1, 4))
    rng = np.random.default_rng(seed)
    idx = rng.integers(-n, n, size=idx_shape)  # negative constant indices count from the end
    as_list = data.draw(st.booleans())
    x = random_array(rng, shape, dtype, -50, 50)
    net = td.Network("ga")
    y = net.input("x", shape, dtype).gather(idx.tolist() if as_list else idx, axis=axis)
    ax = axis % len(shape)
    expected_shape = shape[:ax] + tuple(idx_shape) + shape[ax + 1 :]
    assert y.shape == expected_shape
    net.output(y, "y")
    expected = np.empty(expected_shape, dtype=x.dtype)
    for out_i in itertools.product(*(range(d) for d in expected_shape)):
        pre, mid, post = out_i[:ax], out_i[ax : ax + len(idx_shape)], out_i[ax + len(idx_shape) :]
        j = int(idx[mid]) % n
        expected[out_i] = x[pre + (j,) + post]
    assert_equal(run(net, x=x)["y"], expected, dtype)


@pytest.mark.parametrize("idx_dtype", ["int32", "int64"])
def test_gather_index_tensor_fed_at_run_time(idx_dtype):
    net = td.Network("emb")
    table = np.arange(20, dtype=np.float32).reshape(5, 4)
    ids = net.input("ids", (None,), idx_dtype)
    emb = F.gather(net.constant(table), ids, axis=0)
    assert emb.shape == (None, 4)
    net.output(emb, "emb")
    for ids_v in ([4, 0, 0], [2]):
        out = run(net, ids=np.array(ids_v, idx_dtype))["emb"]
        np.testing.assert_array_equal(out, [table[i] for i in ids_v])


# -- cast -------------------------------------------------------------------------------------
CAST_TYPES = ("float32", "float16", "bfloat16", "int32", "int64", "bool")


def _source(rng, shape, dtype):
    if dtype == "bool":
        return random_array(rng, shape, "bool")
    if dtype in ("int32", "int64"):
        return random_array(rng, shape, dtype, -100, 100)
    # fractions and negatives (to see truncation toward zero), some exact zeros
    x = rng.uniform(-100, 100, size=shape)
    x = np.where(rng.random(shape) < 0.15, 0.0, x)
    x = np.asarray(x).astype(np_dtype(dtype))
    if x.size and not np.any(f64(x)):
        x.flat[0] = np_dtype(dtype).type(1.5)
    return x


def _cast64(x, dst):
    """The value ``x`` (float64, exact) converted to ``dst`` by hand: float -> int truncates
    toward zero, anything -> bool is 'nonzero', floats round to nearest."""
    v = f64(x)
    if dst == "bool":
        return v != 0
    if dst in ("int32", "int64"):
        return np.trunc(v).astype(dst)
    return v.astype(np_dtype(dst))


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(CAST_TYPES, CAST_TYPES)))
@QUICK
@given(shape=shapes(0, 3), seed=seeds)
def test_cast(src, dst, shape, seed):
    x = _source(np.random.default_rng(seed), shape, src)
    net = td.Network("cast")
    y = net.input("x", shape, src).cast(dst)
    assert y.dtype == td.as_dtype(dst) and y.shape == shape
    net.output(y, "y")
    assert_equal(run(net, x=x)["y"], _cast64(x, dst), dst)


def test_cast_truncates_toward_zero_and_accepts_dtype_objects():
    net = td.Network("c")
    x = net.input("x", (6,))
    net.output(x.cast(td.int32), "i32")
    net.output(x.astype("int64"), "i64")
    net.output(F.cast(x, np.float16), "f16")
    xv = np.array([-2.7, -0.5, 0.5, 2.7, -3.0, 1e-3], np.float32)
    out = run(net, x=xv)
    assert out["i32"].tolist() == [-2, 0, 0, 2, -3, 0] and out["i32"].dtype == np.int32
    assert out["i64"].dtype == np.int64
    assert out["f16"].dtype == np.float16


# -- select -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS_BF16 + ("int32",))
@FAST
@given(data=st.data(), seed=seeds)
def test_select_broadcasts_three_ways(dtype, data, seed):
    full = data.draw(shapes(1, 3))
    sub = [tuple(1 if data.draw(st.booleans()) else d for d in full) for _ in range(3)]
    sub = [s[data.draw(st.integers(0, len(s))) :] for s in sub]
    rng = np.random.default_rng(seed)
    c = random_array(rng, sub[0], "bool")
    a, b = random_array(rng, sub[1], dtype, -9, 9), random_array(rng, sub[2], dtype, -9, 9)
    net = td.Network("sel")
    y = td.select(
        net.input("c", c.shape, "bool"),
        net.input("a", a.shape, dtype),
        net.input("b", b.shape, dtype),
    )
    net.output(y, "y")
    cf = f64(c)
    expected = (cf * f64(a) + (1 - cf) * f64(b)).astype(np_dtype(dtype))
    assert y.shape == expected.shape
    assert_equal(run(net, c=c, a=a, b=b)["y"], expected, dtype)


def test_select_with_scalar_branches():
    net = td.Network("sel")
    x = net.input("x", (4,), "float16")
    net.output(td.where(x > 1.0, x, -1.0), "a")
    net.output(F.select(x > 1.0, 0.5, x), "b")
    net.output(F.select(x > 1.0, 1.0, 0.0), "c")  # no tensor branch: float32 constants
    xv = np.array([0, 1, 2, 3], np.float16)
    out = run(net, x=xv)
    assert out["a"].tolist() == [-1, -1, 2, 3] and out["a"].dtype == np.float16
    assert out["b"].tolist() == [0, 1, 0.5, 0.5] and out["b"].dtype == np.float16
    assert out["c"].tolist() == [0, 0, 1, 1] and out["c"].dtype == np.float32


# -- constant and identity --------------------------------------------------------------------
def test_constants_keep_their_values_and_dtypes():
    net = td.Network("k")
    src = np.arange(6, dtype=np.float64).reshape(2, 3) / 4
    k64 = net.constant(src)  # float64 becomes float32
    src[0, 0] = 100.0  # the network keeps its own copy
    ints = net.constant(7)  # Python int becomes int32
    big = net.constant(2**40)  # ... unless int32 cannot hold it
    assert big.dtype == td.int64
    net.output(big, "big")
    flags = net.constant(np.array([True, False]))
    half = net.constant([1.5, -2.25], dtype="float16")
    bf = net.constant(np.ones((2,)), dtype=td.bfloat16)
    assert k64.dtype == td.float32 and ints.dtype == td.int32 and flags.dtype == td.bool_
    assert half.dtype == td.float16 and bf.dtype == td.bfloat16
    for name, t in {"k64": k64, "ints": ints, "flags": flags, "half": half, "bf": bf}.items():
        net.output(t, name)
    out = run(net)
    assert out["k64"].tolist() == [[0, 0.25, 0.5], [0.75, 1.0, 1.25]]
    assert out["ints"].shape == () and int(out["ints"]) == 7 and int(out["big"]) == 2**40
    assert out["flags"].tolist() == [True, False]
    assert out["half"].tolist() == [1.5, -2.25] and out["half"].dtype == np.float16
    assert out["bf"].dtype == np_dtype("bfloat16") and f64(out["bf"]).tolist() == [1, 1]


@pytest.mark.parametrize("dtype", FLOATS_BF16 + ("int64", "bool"))
@FAST
@given(shape=shapes(0, 3), seed=seeds)
def test_identity_copies(dtype, shape, seed):
    x = random_array(np.random.default_rng(seed), shape, dtype, -5, 5)
    net = td.Network("id")
    t = net.input("x", shape, dtype)
    net.output(t.identity(), "y")
    net.output(F.identity(t, name="named"), "z")
    out = run(net, x=x)
    assert_equal(out["y"], x, dtype)
    assert_equal(out["z"], x, dtype)
    assert not np.shares_memory(out["y"], x)
