"""The cuDNN attention engine (trtdsl/backends/cupy/cudnn_attention.py) and the engine switch
(attention_engine.py) on the CPU, behind a fake ``cudnn`` module and a fake CuPy.

The fake cuDNN records the graph it is asked to build and, when executed, computes attention in
float64 from the raw pointers and the declared dims/strides, with the mask semantics the cuDNN
frontend documents (top-left diagonal band: key j masked for row i iff j > i + right_bound;
its own test reference is ``triu(ones, 1 + right_bound)``). Expected values come from
``kernels/reference.py`` (our causal rule with global offsets), never from the engine.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import types
import warnings
from contextlib import nullcontext
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest
import trtdsl.kernels.attention as kernels
from hypothesis import given
from hypothesis import strategies as st
from interp_host import DevArray, dev, poisoned_empty
from kernel_modules import module
from strategies import FAST, QUICK

from trtdsl.backends.cupy import attention_engine as AE
from trtdsl.backends.cupy import cudnn_attention as CA
from trtdsl.backends.cupy import device, ring
from trtdsl.backends.cupy.backend import CupyContext
from trtdsl.errors import ExecutionError

R = module("reference")
NP = {"HALF": np.float16, "BFLOAT16": ml_dtypes.bfloat16, "FLOAT": np.float32}
BUILD_STEPS = ["validate", "build_operation_graph", "plans", "check_support", "build_plans"]


class NotSupported(Exception):
    """Stands in for cudnn.cudnnGraphNotSupportedError."""


class FakeTensor:
    def __init__(self, name: str, dim=None, stride=None, data_type=None) -> None:
        self.name, self.dim, self.stride, self.data_type = name, dim, stride, data_type
        self.output = False

    def set_output(self, value):
        self.output = value
        return self

    def set_dim(self, dim):
        self.dim = list(dim)
        return self

    def set_stride(self, stride):
        self.stride = list(stride)
        return self

    def set_data_type(self, dt):
        self.data_type = dt
        return self


def memory(ptr: int, t: FakeTensor) -> np.ndarray:
    """The array a pointer and a declared tensor describe (writable, no copy)."""
    dt = np.dtype(NP[t.data_type])
    span = 1 + sum((n - 1) * s for n, s in zip(t.dim, t.stride))
    flat = np.frombuffer((ctypes.c_char * (span * dt.itemsize)).from_address(ptr), dtype=dt)
    strides = tuple(s * dt.itemsize for s in t.stride)
    return np.lib.stride_tricks.as_strided(flat, shape=tuple(t.dim), strides=strides)


class FakeGraph:
    def __init__(self, lib: FakeCudnn, **kw) -> None:
        self.lib, self.kw, self.steps, self.inputs = lib, kw, [], {}
        self.sdpa_kw: dict = {}
        lib.graphs.append(self)

    def tensor(self, *, name, dim, stride, data_type):
        t = self.inputs[name] = FakeTensor(name, list(dim), list(stride), data_type)
        return t

    def sdpa(self, *, name, q, k, v, **kw):
        self.sdpa_kw = kw
        self.o, self.stats = FakeTensor("o"), FakeTensor("stats")
        return [self.o, self.stats if kw["generate_stats"] else None]

    def _step(self, name: str) -> None:
        self.steps.append(name)
        if self.lib.fail_at == name:
            raise NotSupported(f"{name} refused")

    def validate(self):
        self._step("validate")

    def build_operation_graph(self):
        self._step("build_operation_graph")

    def create_execution_plans(self, modes):
        assert modes == ["A", "FALLBACK"]
        self._step("plans")

    def check_support(self):
        self._step("check_support")

    def build_plans(self):
        self._step("build_plans")

    def get_workspace_size(self):
        assert self.steps == BUILD_STEPS
        return self.lib.workspace_size

    def execute(self, pack, workspace, handle):
        assert self.steps == BUILD_STEPS and handle in self.lib.handles
        self.lib.log.append(("execute", self, workspace, handle))
        if self.lib.fail_at == "execute":
            raise NotSupported("CUDNN_STATUS_EXECUTION_FAILED")
        q, k, v = (memory(pack[self.inputs[n]], self.inputs[n]).astype(float) for n in "qkv")
        s = self.sdpa_kw["attn_scale"] * np.einsum("bhid,bhjd->bhij", q, k)
        if "diagonal_band_right_bound" in self.sdpa_kw:
            assert self.sdpa_kw["diagonal_alignment"] == "TOP_LEFT"
            bound = self.sdpa_kw["diagonal_band_right_bound"]
            s = np.where(np.triu(np.ones(s.shape[-2:], bool), 1 + bound), -np.inf, s)
        m = s.max(-1, keepdims=True)
        e = np.exp(s - m)
        total = e.sum(-1, keepdims=True)
        for t, val in ((self.o, (e / total) @ v), (self.stats, m + np.log(total))):
            if t in pack:
                assert t.output and t.dim and t.stride and t.data_type
                memory(pack[t], t)[...] = val


class FakeCudnn:
    """The parts of ``import cudnn`` the engine uses, recording what it is asked."""

    def __init__(self) -> None:
        self.graphs: list[FakeGraph] = []
        self.handles: list[object] = []
        self.log: list = []
        self.workspace_size, self.fail_at = 0, None
        m = self.module = types.ModuleType("cudnn")
        m.data_type = SimpleNamespace(HALF="HALF", BFLOAT16="BFLOAT16", FLOAT="FLOAT")
        m.diagonal_alignment = SimpleNamespace(TOP_LEFT="TOP_LEFT", BOTTOM_RIGHT="BOTTOM_RIGHT")
        m.heur_mode = SimpleNamespace(A="A", FALLBACK="FALLBACK")
        m.pygraph = lambda **kw: FakeGraph(self, **kw)
        m.create_handle = self.create_handle
        m.set_stream = lambda *, handle, stream: self.log.append(("set_stream", handle, stream))

    def create_handle(self):
        self.handles.append(object())
        return self.handles[-1]


class FakeStream:
    def __init__(self, ptr: int) -> None:
        self.ptr, self.capturing = ptr, False

    def is_capturing(self) -> bool:
        return self.capturing


class FakeCupy:
    """CuPy as the engine uses it: empty (NaN-poisoned, recorded), the current stream."""

    float32, uint8 = np.float32, np.uint8

    def __init__(self) -> None:
        self.allocs: list = []
        self.stream = FakeStream(7)
        self.cuda = SimpleNamespace(
            Device=lambda i: nullcontext(), get_current_stream=lambda: self.stream
        )

    def empty(self, shape, dtype):
        self.allocs.append((tuple(shape), np.dtype(dtype)))
        return poisoned_empty(tuple(shape), dtype)


@pytest.fixture
def fake(monkeypatch):
    lib, cp = FakeCudnn(), FakeCupy()
    monkeypatch.setitem(sys.modules, "cudnn", lib.module)
    monkeypatch.setattr(device, "cupy_module", lambda: cp)
    monkeypatch.setattr(AE, "_warned", set())
    monkeypatch.delenv(AE.ENGINE_ENV, raising=False)
    CA.reset()
    yield SimpleNamespace(lib=lib, cp=cp)
    CA.reset()


@pytest.fixture
def kernel_calls(monkeypatch):
    calls: list = []

    def flash(q, k, v, **kw):
        calls.append(kw)
        return "triton-o", "triton-lse"

    monkeypatch.setattr(kernels, "flash_attention", flash)
    return calls


def make(rng, lead, sq, sk, d=64, dtype="float16", layout="contiguous"):
    """q [*lead, Sq, D], k/v [*lead, Sk, D] as fake device arrays; ``bshd``: views of
    [*lead[:-1], S, H, D] buffers; ``padded``: rows of D + 8 elements."""
    npdt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)

    def one(s):
        x = rng.standard_normal((*lead, s, d)).astype(npdt)
        if layout == "bshd":
            return dev(np.swapaxes(x, -2, -3)).swapaxes(-2, -3)
        if layout == "padded":
            buf = dev(np.zeros((*lead, s, d + 8), npdt))
            buf[..., :d] = x
            return buf[..., :d]
        return dev(x)

    return one(sq), one(sk), one(sk)


def ref(q, k, v, scale, causal, q_off, k_off):
    f = [np.asarray(x, dtype=np.float64) for x in (q, k, v)]
    return R.attention(*f, scale, causal, q_off, k_off)


# -- the causal rule as cuDNN's band -------------------------------------------------------------


@FAST
@given(st.integers(1, 40), st.integers(1, 40), st.integers(-50, 50), st.integers(-50, 50),
       st.booleans())  # fmt: skip
def test_right_bound_is_our_causal_rule(sq, sk, q_off, k_off, causal):
    ours = R.attention_mask(sq, sk, causal, q_off, k_off)
    if causal and q_off < k_off:
        assert not ours[0].any()  # why it is refused: row 0 sees no key
        with pytest.raises(ValueError, match="row 0 sees no key"):
            CA.right_bound(causal, q_off - k_off, sk)
        return
    bound = CA.right_bound(causal, q_off - k_off, sk)
    band = np.ones((sq, sk), bool)
    if bound is not None:
        assert 0 <= bound < sk - 1
        band = ~np.triu(band, 1 + bound)  # cuDNN: masked where j > i + bound (top-left)
    assert np.array_equal(band, ours) and ours.any(axis=1).all()


@QUICK
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 2)), min_size=1, max_size=3),
       st.sampled_from(["bhsd", "bshd", "strided"]))  # fmt: skip
def test_as_4d_addresses_the_same_elements(lead_steps, layout):
    """Every element's offset (the values of ``base`` are their own offsets) through the
    [B, H, S, D] description equals the array's; None exactly where NumPy cannot merge the
    leading dims without a copy."""
    lead, steps = [n for n, _ in lead_steps], [st for _, st in lead_steps]
    h, s, d = 2, 3, 4
    inner = {"bhsd": (h, s, d + 2), "bshd": (s, h, d), "strided": (2 * h, 2 * s, d)}[layout]
    outer = [2 * n for n in lead]
    base = np.arange(np.prod(outer) * np.prod(inner)).reshape(*outer, *inner)
    x = {"bhsd": base[..., :d], "bshd": base.swapaxes(-2, -3), "strided": base[..., ::2, ::2, :]}
    x = x[layout][tuple(slice(0, n * k, k) for n, k in zip(lead, steps))]
    assert x.shape == (*lead, h, s, d)
    geo = CA.as_4d(x.shape, tuple(b // x.itemsize for b in x.strides))
    mergeable = np.shares_memory(x.reshape(-1, h, s, d), base)
    assert (geo is not None) == mergeable
    if geo is not None:
        dims, strides = geo
        assert dims == (int(np.prod(lead)), h, s, d)
        offsets = x.reshape(-1)[0] + (
            np.array(strides)[:, None] * np.indices(dims).reshape(4, -1)
        ).sum(0)
        assert np.array_equal(offsets, x.reshape(-1))


# -- supported(): every refusal -------------------------------------------------------------------


def refusals(rng):
    q, k, v = make(rng, (2, 3), 16, 24)
    row_pad = dev(np.zeros((2, 3, 16, 68), np.float16))[..., :64]
    flat = dev(np.zeros(2 * 3 * 16 * 64 + 1, np.float16))
    odd = flat[1:].reshape(2, 3, 16, 64)
    lead = dev(np.zeros((2, 4, 3, 16, 64), np.float16))[:, :2]
    other = dev(np.zeros((2, 3, 24, 64), np.float16)).view(type("Dev1", (DevArray,), {
        "device": property(lambda self: SimpleNamespace(id=1))}))  # fmt: skip
    f32 = [dev(np.asarray(x, np.float32)) for x in (q, k, v)]
    bf = make(rng, (2, 3), 16, 24, dtype="bfloat16")[1]
    d80 = make(rng, (2, 3), 16, 24, d=80)
    return [
        ((list(q), k, v), {}, "not a CuPy array"),
        ((q[0, 0], k, v), {}, "must be [..., heads"),
        (tuple(f32), {}, "dtypes"),
        ((q, bf, v), {}, "dtypes"),
        ((f32[0], k, v), {"as_dtype": "bfloat16"}, "16-bit"),
        (d80, {}, "head_dim 80"),
        ((q, k, v[:, :, :20]), {}, "do not agree"),
        ((q[:1], k, v), {}, "do not agree"),
        ((q[:, :, :0], k, v), {}, "empty"),
        ((dev(np.zeros((2, 3, 16, 128), np.float16))[..., ::2], k, v), {}, "last stride"),
        ((odd, k, v), {}, "multiples of 16 bytes"),
        ((q[:, :, ::-1], k, v), {}, "positive multiples"),
        (
            (
                np.lib.stride_tricks.as_strided(
                    flat, (2, 3, 16, 64), (6144, 2048, 128, 1), subok=True
                ),
                k,
                v,
            ),
            {},
            "not whole elements",
        ),
        ((row_pad, k, v), {}, "multiples of 16 bytes"),
        ((lead, k[None].repeat(2, 0), v[None].repeat(2, 0)), {}, "do not merge"),
        ((q, other, other), {}, "different devices"),
        ((q, k, v), {"q_offset": 1.5}, "int32"),
        ((q, k, v), {"k_offset": True}, "int32"),
        ((q, k, v), {"k_offset": 2**31}, "int32"),
        ((q, k, v), {"causal": True, "q_offset": 3, "k_offset": 4}, "row 0 sees no key"),
        ((q, k, v), {"scale": 0.0}, "scale"),
        ((q, k, v), {"scale": float("nan")}, "scale"),
        ((q, k, v), {"scale": float("inf")}, "scale"),
    ]


def test_supported_refuses_what_cudnn_cannot_run(fake):
    rng = np.random.default_rng(0)
    for args, kw, words in refusals(rng):
        kw = {"causal": False, **kw}
        why = CA.supported(*args, **kw)
        assert why is not None and words in why, (words, why)
        with pytest.raises(CA.CudnnAttentionError, match="cannot run this call"):
            CA.attention(*args, **{"scale": 0.5, **kw})
    q, k, v = make(rng, (2, 3), 16, 24)
    assert CA.supported(q, k, v, causal=True, q_offset=9, k_offset=4, scale=0.3) is None
    assert CA.supported(q, k, v, causal=False, q_offset=0, k_offset=99) is None  # no mask
    bits = [dev(np.asarray(x).view(np.uint16)) for x in make(rng, (3,), 8, 8, dtype="bfloat16")]
    assert CA.supported(*bits, causal=False, as_dtype="bfloat16") is None
    assert fake.lib.graphs == []


def test_supported_says_when_the_cudnn_frontend_is_missing(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "cudnn", None)  # import cudnn -> ImportError
    CA.reset()
    q, k, v = make(np.random.default_rng(1), (2,), 8, 8)
    why = CA.supported(q, k, v, causal=False)
    assert "not importable" in why and "nvidia-cudnn-frontend" in why
    assert CA.import_error() == why and CA.cudnn_module() is None


# -- attention(): numbers, graphs, streams ---------------------------------------------------------


@QUICK
@given(st.integers(0, 2**32 - 1), st.sampled_from([(1,), (2, 3), (2, 1, 2)]),
       st.integers(1, 33), st.integers(1, 33), st.sampled_from(["float16", "bfloat16"]),
       st.sampled_from([64, 128]), st.sampled_from(["contiguous", "bshd", "padded"]),
       st.booleans(), st.booleans(), st.integers(0, 40), st.integers(-20, 20))  # fmt: skip
def test_attention_matches_the_float64_reference(seed, lead, sq, sk, dtype, d, layout, causal,
                                                 return_lse, shift, k_off):  # fmt: skip
    lib, cp = FakeCudnn(), FakeCupy()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "cudnn", lib.module)
        mp.setattr(device, "cupy_module", lambda: cp)
        CA.reset()
        rng = np.random.default_rng(seed)
        q, k, v = make(rng, lead, sq, sk, d, dtype, layout)
        scale = float(rng.uniform(0.5, 1.5) / np.sqrt(d))
        q_off = k_off + shift
        o, lse = CA.attention(q, k, v, scale=scale, causal=causal, q_offset=q_off,
                              k_offset=k_off, return_lse=return_lse)  # fmt: skip
        CA.reset()
    want_o, want_lse = ref(q, k, v, scale, causal, q_off, k_off)
    assert o.shape == q.shape and o.dtype == q.dtype
    tol = 1e-3 if dtype == "float16" else 8e-3
    np.testing.assert_allclose(np.asarray(o, np.float64), want_o, rtol=tol, atol=tol)
    if return_lse:
        assert lse.shape == q.shape[:-1] and lse.dtype == np.float32
        np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)
    else:
        assert lse is None
    (g,) = lib.graphs
    assert g.sdpa_kw["attn_scale"] == scale and g.sdpa_kw["generate_stats"] == return_lse
    assert g.kw["io_data_type"] == {"float16": "HALF", "bfloat16": "BFLOAT16"}[dtype]
    assert g.kw["intermediate_data_type"] == g.kw["compute_data_type"] == "FLOAT"


def call(q, k, v, **kw):
    args = {"scale": 0.25, "causal": True, "q_offset": 0, "k_offset": 0, "return_lse": True}
    return CA.attention(q, k, v, **{**args, **kw})


def test_one_graph_per_key(fake):
    rng = np.random.default_rng(2)
    q, k, v = make(rng, (2, 3), 20, 30)
    call(q, k, v)
    call(*make(rng, (2, 3), 20, 30))  # new arrays, same key
    assert len(fake.lib.graphs) == 1
    call(q, k, v, q_offset=7, k_offset=2)  # shift 5: another band
    call(q, k, v, q_offset=15, k_offset=10)  # shift 5 again, other offsets: the same graph
    assert (
        len(fake.lib.graphs) == 2 and fake.lib.graphs[1].sdpa_kw["diagonal_band_right_bound"] == 5
    )
    call(q, k, v, q_offset=29)  # every row sees every key: the full graph
    call(q, k, v, causal=False)
    assert (
        len(fake.lib.graphs) == 3 and "diagonal_band_right_bound" not in fake.lib.graphs[2].sdpa_kw
    )
    call(*make(rng, (2, 3), 20, 30, layout="bshd"))  # other strides
    call(q, k, v, return_lse=False)
    call(q, k, v, scale=0.5)
    assert len(fake.lib.graphs) == 6
    assert [g.steps for g in fake.lib.graphs] == [BUILD_STEPS] * 6
    assert len(fake.lib.handles) == 1  # one handle for the device and thread


def test_cache_is_bounded_and_keeps_captured_graphs(monkeypatch, fake):
    monkeypatch.setattr(CA, "CACHE_SIZE", 3)
    q, k, v = make(np.random.default_rng(3), (2,), 8, 8)
    call(q, k, v, scale=1.0)
    fake.cp.stream.capturing = True
    call(q, k, v, scale=1.0)  # replayed inside a capture: pinned
    fake.cp.stream.capturing = False
    for s in (2.0, 3.0, 4.0, 5.0):
        call(q, k, v, scale=s)
    assert len(fake.lib.graphs) == 5
    call(q, k, v, scale=1.0)  # still cached
    call(q, k, v, scale=5.0)
    assert len(fake.lib.graphs) == 5
    call(q, k, v, scale=2.0)  # evicted: rebuilt
    assert len(fake.lib.graphs) == 6 and len(CA.graphs()) == 3
    for s in (6.0, 7.0, 8.0):
        call(q, k, v, scale=s)
    kept = [e.graph for e in CA.graphs().values()]
    assert len(kept) == 3 and fake.lib.graphs[0] in kept  # the pinned graph is never evicted
    assert fake.lib.graphs[0] is next(iter(CA.graphs().values())).graph  # though least recent


def test_streams_and_workspaces(fake):
    fake.lib.workspace_size = 4096
    q, k, v = make(np.random.default_rng(4), (2,), 8, 8)
    call(q, k, v)
    call(q, k, v)
    ws = [a for a in fake.cp.allocs if a[1] == np.uint8]
    assert ws == [((4096,), np.dtype(np.uint8))]  # allocated once, at build
    ex = [e for e in fake.lib.log if e[0] == "execute"]
    assert ex[0][2] == ex[1][2] is not None
    assert [e[2] for e in fake.lib.log if e[0] == "set_stream"] == [7, 7]
    fake.cp.stream = FakeStream(9)  # another current stream: its own workspace, set per call
    call(q, k, v)
    assert fake.lib.log[-2][:1] == ("set_stream",) and fake.lib.log[-2][2] == 9
    assert len([a for a in fake.cp.allocs if a[1] == np.uint8]) == 2
    fake.cp.stream = FakeStream(11)
    fake.cp.stream.capturing = True  # no allocation while capturing
    with pytest.raises(CA.CudnnAttentionError, match="while capturing"):
        call(q, k, v)
    with pytest.raises(CA.CudnnAttentionError, match="none is built while a stream is capturing"):
        call(q, k, v, scale=3.0)
    assert len(fake.lib.graphs) == 1


def test_workspaces_per_graph_are_bounded_and_keep_captured_ones(fake):
    fake.lib.workspace_size = 256
    q, k, v = make(np.random.default_rng(15), (2,), 8, 8)
    for ptr in (1, 2, 3):
        fake.cp.stream = FakeStream(ptr)
        call(q, k, v)
    fake.cp.stream.capturing = True  # stream 3 runs it inside a capture
    call(q, k, v)
    for ptr in (4, 5, 6, 2):  # 5 drops 1, 6 drops 2 (not 3: captured), 2 comes back and drops 4
        fake.cp.stream = FakeStream(ptr)
        call(q, k, v)
    (entry,) = CA.graphs().values()
    assert list(entry.workspaces) == [3, 5, 6, 2] and entry.captured == {3}
    assert len([a for a in fake.cp.allocs if a[1] == np.uint8]) == 7  # 1, 2, 3, 4, 5, 6, 2
    assert len(fake.lib.graphs) == 1


def threads_run(fake, fn, n=2):
    """``fn(i)`` in ``n`` real threads at once, each with its own current stream of ptr 2
    (CuPy's per-thread default stream has the same ptr in every thread); their results."""
    per = threading.local()
    fake.cp.cuda.get_current_stream = lambda: per.__dict__.setdefault("s", FakeStream(2))
    out: list = [None] * n
    both = threading.Barrier(n, timeout=30)

    def body(i: int) -> None:
        try:
            out[i] = fn(i)
        finally:
            both.wait()  # every thread's cuDNN state is alive until all have run

    ts = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts) and None not in out
    return out


def test_threads_share_no_graph_handle_or_workspace(fake):
    fake.lib.workspace_size = 512
    rng = np.random.default_rng(16)
    qkv = [make(rng, (2, 3), 12, 10) for _ in range(2)]

    def run(i: int):
        o, lse = call(*qkv[i], q_offset=3, k_offset=1)
        (entry,) = CA.graphs().values()
        return o, lse, entry, dict(entry.workspaces)

    got = threads_run(fake, run)
    for (o, lse, _, _), (q, k, v) in zip(got, qkv):
        want_o, want_lse = ref(q, k, v, 0.25, True, 3, 1)
        np.testing.assert_allclose(np.asarray(o, float), want_o, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)
    (_, _, e0, w0), (_, _, e1, w1) = got
    assert e0 is not e1 and e0.graph is not e1.graph and len(fake.lib.graphs) == 2
    assert list(w0) == list(w1) == [2] and w0[2] is not w1[2]
    ex = {(e[1], e[2], e[3]) for e in fake.lib.log if e[0] == "execute"}
    want = {(e.graph, int(w[2].data.ptr)) for e, w in ((e0, w0), (e1, w1))}
    assert {x[:2] for x in ex} == want and len(ex) == 2  # each thread: its graph and workspace
    assert {x[2] for x in ex} == set(fake.lib.handles) and len(fake.lib.handles) == 2
    assert len(CA.graphs()) == 0  # the main thread's cache saw none of it


def test_a_captured_graph_outlives_its_thread(fake):
    fake.lib.workspace_size = 128
    q, k, v = make(np.random.default_rng(17), (2,), 8, 8)

    def run(i: int):
        call(q, k, v, scale=1.0 + i)
        stream = fake.cp.cuda.get_current_stream()
        stream.capturing = i == 0  # thread 0 captures, thread 1 does not
        call(q, k, v, scale=1.0 + i)
        (handle,) = CA._local.handles.values()
        return next(iter(CA.graphs().values())), handle

    (captured, handle), (plain, _) = threads_run(fake, run)
    assert captured.captured == {2} and not plain.pinned
    (kept,) = CA._captured  # kept after join, with the handle its plan was built with
    assert kept == (captured, handle) and len(set(map(id, fake.lib.handles))) == 2
    assert list(captured.workspaces) == [2]
    CA.reset()
    assert CA._captured == []


def test_no_workspace_when_none_is_needed(fake):
    q, k, v = make(np.random.default_rng(5), (2,), 8, 8)
    call(q, k, v)
    assert [e[2] for e in fake.lib.log if e[0] == "execute"] == [None]
    assert not [a for a in fake.cp.allocs if a[1] == np.uint8]


def test_a_graph_that_fails_to_build_is_not_tried_again(fake):
    fake.lib.fail_at = "check_support"
    q, k, v = make(np.random.default_rng(6), (2,), 8, 8)
    for _ in range(2):
        with pytest.raises(CA.CudnnBuildError, match="check_support refused"):
            call(q, k, v)
    assert len(fake.lib.graphs) == 1 and not fake.lib.log


# -- the engine switch -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,want",
    [(None, "triton"), ("", "triton"), ("triton", "triton"), ("cudnn", "cudnn"),
     ("auto", "auto"), (" CuDNN ", "cudnn")],
)  # fmt: skip
def test_engine_reads_the_environment_at_each_call(monkeypatch, value, want):
    monkeypatch.delenv(AE.ENGINE_ENV, raising=False)
    if value is not None:
        monkeypatch.setenv(AE.ENGINE_ENV, value)
    assert AE.engine() == want
    assert AE.DEFAULT_ENGINE == "triton"


@pytest.mark.parametrize("value", ["cudnn9", "flash", "1"])
def test_an_unknown_engine_is_a_clear_error(monkeypatch, kernel_calls, value):
    monkeypatch.setenv(AE.ENGINE_ENV, value)
    q, k, v = make(np.random.default_rng(7), (2,), 8, 8)
    with pytest.raises(AE.AttentionEngineError) as e:
        AE.fused_attention(q, k, v, scale=1.0, causal=False, q_offset=0, k_offset=0,
                           return_lse=False)  # fmt: skip
    assert isinstance(e.value, ExecutionError) and isinstance(e.value, ValueError)
    msg = str(e.value)
    assert AE.ENGINE_ENV in msg and repr(value) in msg and "triton, cudnn, auto" in msg
    assert kernel_calls == []


def run_engine(q, k, v, **kw):
    args = {"scale": 0.5, "causal": True, "q_offset": 3, "k_offset": 1, "return_lse": True}
    return AE.fused_attention(q, k, v, **{**args, **kw})


@pytest.mark.parametrize("engine", ["cudnn", "auto"])
def test_the_switch_runs_cudnn_where_it_can(monkeypatch, fake, kernel_calls, engine):
    monkeypatch.setenv(AE.ENGINE_ENV, engine)
    q, k, v = make(np.random.default_rng(8), (2, 2), 12, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        o, lse = run_engine(q, k, v)
    want_o, want_lse = ref(q, k, v, 0.5, True, 3, 1)
    np.testing.assert_allclose(np.asarray(o, float), want_o, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)
    assert kernel_calls == [] and len(fake.lib.graphs) == 1
    kw = dict(scale=0.5, causal=True, q_offset=3, k_offset=1)
    assert AE.picks_cudnn(q, k, v, **kw)
    d32 = make(np.random.default_rng(9), (2,), 8, 8, d=32)  # not a cuDNN head dim here
    assert not AE.picks_cudnn(*d32, **kw)
    assert not AE.picks_cudnn(q, k, v, **{**kw, "q_offset": 0, "k_offset": 5})
    assert run_engine(*d32) == ("triton-o", "triton-lse")
    early = run_engine(q, k, v, q_offset=0, k_offset=5)  # row 0 sees no key: ours
    assert early == ("triton-o", "triton-lse") and len(kernel_calls) == 2
    assert kernel_calls[-1] == dict(scale=0.5, causal=True, q_offset=0, k_offset=5,
                                    return_lse=True)  # fmt: skip
    assert len(fake.lib.graphs) == 1


def test_triton_is_the_default_and_ignores_cudnn(fake, kernel_calls):
    q, k, v = make(np.random.default_rng(10), (2,), 8, 8)
    assert run_engine(q, k, v) == ("triton-o", "triton-lse")
    assert not AE.picks_cudnn(q, k, v, scale=0.5, causal=True, q_offset=3, k_offset=1)
    assert len(kernel_calls) == 1 and fake.lib.graphs == []


@pytest.mark.parametrize("engine,warns", [("cudnn", 1), ("auto", 0)])
def test_a_missing_cudnn_falls_back_to_triton(monkeypatch, fake, kernel_calls, engine, warns):
    monkeypatch.setitem(sys.modules, "cudnn", None)
    CA.reset()
    monkeypatch.setenv(AE.ENGINE_ENV, engine)
    q, k, v = make(np.random.default_rng(11), (2,), 8, 8)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for _ in range(3):
            assert run_engine(q, k, v) == ("triton-o", "triton-lse")
    assert len(kernel_calls) == 3
    assert len(got) == warns and all("not importable" in str(w.message) for w in got)


@pytest.mark.parametrize("engine,warns", [("cudnn", 1), ("auto", 0)])
def test_ring_accumulating_path_warns_of_a_missing_cudnn(monkeypatch, fake, engine, warns):
    """Ring's accumulating block attention asks only ``picks_cudnn`` (the Triton kernel then
    runs as ``flash_attention_into``): the warning comes from there, once per process."""
    monkeypatch.setitem(sys.modules, "cudnn", None)
    CA.reset()
    monkeypatch.setenv(AE.ENGINE_ENV, engine)
    into: list = []
    monkeypatch.setattr(kernels, "flash_attention_into", lambda *a, **kw: into.append(kw))
    q, k, v = make(np.random.default_rng(18), (2,), 8, 8)
    acc_o, acc_lse = np.zeros(q.shape, np.float32), np.zeros(q.shape[:-1], np.float32)
    ops = ring.KernelBlockOps(fake.cp, None, True)
    kw = dict(scale=0.5, causal=True, q_offset=3, k_offset=1)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for first in (True, False, False):
            ops.attend_into(acc_o, acc_lse, q, k, v, first=first, **kw)
        assert not AE.picks_cudnn(q, k, v, **kw)
        with monkeypatch.context() as mp:
            mp.setattr(kernels, "flash_attention", lambda *a, **kw: ("triton-o", None))
            assert run_engine(q, k, v)[0] == "triton-o"  # fused_attention: no second warning
    assert len(into) == 3 and [c["first"] for c in into] == [True, False, False]
    assert len(got) == warns
    for w in got:
        assert f"{AE.ENGINE_ENV}=cudnn" in str(w.message) and "not importable" in str(w.message)
        assert w.category is RuntimeWarning and "ring.py" in w.filename  # the asking caller


def test_a_build_failure_or_a_capture_falls_back_to_triton(monkeypatch, fake, kernel_calls):
    monkeypatch.setenv(AE.ENGINE_ENV, "cudnn")
    fake.lib.fail_at = "build_plans"
    q, k, v = make(np.random.default_rng(12), (2,), 8, 8)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for _ in range(2):
            assert run_engine(q, k, v) == ("triton-o", "triton-lse")
    assert len(got) == 1 and "could not build" in str(got[0].message)
    assert len(fake.lib.graphs) == 1
    fake.lib.fail_at = None
    fake.cp.stream.capturing = True  # no graph yet for this key: none is built now
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_engine(q, k, v, scale=0.25) == ("triton-o", "triton-lse")
    assert len(fake.lib.graphs) == 1 and len(kernel_calls) == 3


def test_a_graph_that_fails_to_run_is_an_error_naming_the_call(fake):
    fake.lib.fail_at = "execute"
    q, k, v = make(np.random.default_rng(19), (2, 3), 8, 6, dtype="bfloat16")
    for _ in range(2):  # the graph is kept: run again (no rebuild), failing again
        with pytest.raises(CA.CudnnRunError) as e:
            call(q, k, v, q_offset=2)
        assert isinstance(e.value, CA.CudnnAttentionError) and isinstance(e.value, ExecutionError)
        assert isinstance(e.value.__cause__, NotSupported)
        words = ["failed to run", "(2, 3, 8, 64)", "(2, 3, 6, 64)", "bfloat16",
                 "band right bound 2", "NotSupported: CUDNN_STATUS_EXECUTION_FAILED"]  # fmt: skip
        assert all(w in str(e.value) for w in words), str(e.value)
    assert len(fake.lib.graphs) == 1 and len(fake.lib.log) == 4  # set_stream, execute: twice


def test_a_run_failure_falls_back_to_triton_warning_once(monkeypatch, fake, kernel_calls):
    monkeypatch.setenv(AE.ENGINE_ENV, "auto")
    fake.lib.fail_at = "execute"
    q, k, v = make(np.random.default_rng(20), (2,), 8, 8)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for _ in range(2):
            assert run_engine(q, k, v) == ("triton-o", "triton-lse")
    (w,) = got
    assert "failed to run" in str(w.message) and "Triton kernel runs instead" in str(w.message)
    assert w.filename == __file__  # points at the caller of fused_attention
    assert len(kernel_calls) == 2 and len(fake.lib.graphs) == 1
    assert [e[0] for e in fake.lib.log].count("execute") == 2


def test_both_call_sites_use_the_switch(monkeypatch, fake, kernel_calls):
    monkeypatch.setenv(AE.ENGINE_ENV, "cudnn")
    q, k, v = make(np.random.default_rng(13), (3,), 9, 9)
    o, lse = ring.KernelBlockOps(fake.cp, None, True).attend(
        q, k, v, scale=0.5, causal=True, q_offset=4, k_offset=2
    )
    want_o, want_lse = ref(q, k, v, 0.5, True, 4, 2)
    np.testing.assert_allclose(np.asarray(o, float), want_o, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)
    ctx = object.__new__(CupyContext)
    ctx.use_kernels = True
    attrs = dict(mask=None, scale=0.5, causal=False, q_offset=0, k_offset=0, return_lse=False)
    (o2,) = ctx.fused_attention(SimpleNamespace(attrs=attrs), [q, k, v])
    np.testing.assert_allclose(np.asarray(o2, float), ref(q, k, v, 0.5, False, 0, 0)[0],
                               rtol=1e-3, atol=1e-3)  # fmt: skip
    assert kernel_calls == [] and len(fake.lib.graphs) == 2
    monkeypatch.setenv(AE.ENGINE_ENV, "triton")
    assert ctx.fused_attention(SimpleNamespace(attrs=attrs), [q, k, v]) == ["triton-o"]


def test_a_handle_that_cannot_be_made_counts_as_no_cudnn(monkeypatch, fake, kernel_calls):
    def no_library():
        raise RuntimeError("libcudnn.so.9: cannot open shared object file")

    fake.lib.module.create_handle = no_library
    monkeypatch.setenv(AE.ENGINE_ENV, "auto")
    q, k, v = make(np.random.default_rng(14), (2,), 8, 8)
    with pytest.warns(RuntimeWarning, match="create_handle.*libcudnn"):
        assert run_engine(q, k, v) == ("triton-o", "triton-lse")
    why = CA.supported(q, k, v, causal=False)
    assert "create_handle" in why and CA.cudnn_module() is None
    assert run_engine(q, k, v) == ("triton-o", "triton-lse")
    assert len(kernel_calls) == 2 and fake.lib.graphs == []
