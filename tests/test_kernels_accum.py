"""The accumulating attention epilogues (``ACCUM`` 1 "init" and 2 "merge" of ``attention_fwd``
and ``attention_fwd_tma``) and their entry point ``flash_attention_into``, without a GPU:

- the specs: float32 O, the ``ACCUM`` constexpr, the table's tiles (only) in every mode, the
  TMA variants' O stored by pointers (PTX: TMA loads, no TMA store, 16-byte stores);
- the kernels under Triton's CPU interpreter (tests/interp_attention.py): a float32 running
  (O, LSE) built from one to three key blocks (init, then merge; or merge into a given state)
  equals attention over all their keys by an independent float64 formula with the keys'
  positions written out; causal offsets with rows that see no key in a block and in all; the
  memory after O and LSE untouched;
- ``flash_attention_into``'s argument errors, its launch arguments (fake launcher), and the
  whole entry point end to end in a subprocess: a stand-in CuPy, the interpreted kernels,
  pointer and TMA, every divisibility promise checked.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_modules import ROOT, K, module, needs_triton, run_interpreted
from strategies import examples

A = module("attention")
C = module("compile")
CFG = module("configs")
T = module("tma_configs")
W = module("ws_configs")

#: ||o - ref|| / ||ref||: only p is rounded (to the inputs' dtype, for the PV product); the
#: float32 O is not (flash_attention's fp16/bf16 O: 2e-3 / 8e-3)
TOL_O = {"float16": 5e-4, "bfloat16": 4e-3}
TOL_LSE = 1e-4  # |lse - ref| / max(1, |ref|)


# ---- the float64 formula ------------------------------------------------------------------


def ref_attention(q, k, v, scale: float, causal: bool, q_pos, k_pos) -> tuple:
    """(o, lse) in float64 with each key at its own position ``k_pos[j]`` (row i at
    ``q_pos[i]``; causal: key j allowed iff k_pos[j] <= q_pos[i]); rows with no key: 0, -inf."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    s = scale * np.einsum("bid,bjd->bij", q, k)
    if causal:
        s = np.where(np.asarray(k_pos)[None, None, :] <= np.asarray(q_pos)[None, :, None], s,
                     -np.inf)  # fmt: skip
    m = s.max(-1, keepdims=True) if s.shape[-1] else np.full(s.shape[:-1] + (1,), -np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    den = e.sum(-1, keepdims=True)
    safe = np.where(den == 0, 1.0, den)
    o = np.einsum("bij,bjd->bid", e, v) / safe
    lse = np.where(den == 0, -np.inf, m + np.log(safe))[..., 0]
    return o, lse


def expected(case: dict, q, k, v, prior: tuple | None) -> tuple:
    """Attention over the prior keys (if any) and every block's keys together."""
    ks, vs, pos = [], [], []
    if prior is not None:
        kp, vp, p_off = prior
        ks.append(kp), vs.append(vp), pos.append(p_off + np.arange(kp.shape[1]))
    for start, length, k_off in case["blocks"]:
        ks.append(k[:, start : start + length]), vs.append(v[:, start : start + length])
        pos.append(k_off + np.arange(length))
    q_pos = case["q_off"] + np.arange(q.shape[1])
    kk, vv, kpos = np.concatenate(ks, 1), np.concatenate(vs, 1), np.concatenate(pos)
    return ref_attention(q, kk, vv, case["scale"], case["causal"], q_pos, kpos)


def check_state(what: str, o, lse, ref: tuple, tol: float, tails: tuple = ()) -> float:
    """O/LSE against the reference (O within ``tol``): no NaN left, rows with no key exactly
    0 / -inf, the tails untouched (NaN); returns the O error."""
    ref_o, ref_lse = ref
    assert o.dtype == np.float32 and lse.dtype == np.float32, what
    assert np.isfinite(o).all(), f"unwritten or non-finite O: {what}"
    err = np.linalg.norm(o - ref_o) / max(np.linalg.norm(ref_o), 1e-30)
    assert err <= tol or np.linalg.norm(o - ref_o) <= 1e-6, f"o err {err:.2e}: {what}"
    empty = np.isneginf(ref_lse)
    assert np.array_equal(np.isneginf(lse), empty), f"-inf rows differ: {what}"
    assert (o[empty] == 0).all(), f"rows with no key are not 0: {what}"
    fin = ~empty
    e = np.abs(lse[fin] - ref_lse[fin]) / np.maximum(1.0, np.abs(ref_lse[fin]))
    assert e.size == 0 or e.max() <= TOL_LSE, f"lse err {e.max():.2e}: {what}"
    for t in tails:
        assert np.isnan(t).all(), f"memory past O/LSE written: {what}"
    return float(err)


# ---- the kernels under the interpreter (tests/interp_attention.py) ------------------------


def acase(kernel: str, split: int, causal: bool, q_off: int, blocks: list, **kw: Any) -> dict:
    c = {"kernel": kernel, "split": split, "causal": causal, "q_off": q_off, "k_off": 0,
         "blocks": blocks, "block_m": 32, "block_n": 16, "write_lse": 1, "pad": 0,
         "scale": 0.3, "prior": None}  # fmt: skip
    c.update(kw)
    return c


def interpret_accum(cases: list[dict], dims: list[tuple], seed: int, tmp: Path) -> None:
    """Draw inputs for ``cases`` (dims: (BH, Sq, Sk total, D)), run them through the
    interpreter, check each against :func:`expected`."""
    rng = np.random.default_rng(seed)
    arrays, prior = {}, {}
    for i, (c, (bh, sq, sk, d)) in enumerate(zip(cases, dims, strict=True)):
        q, k, v = (rng.standard_normal((bh, s, d)).astype(np.float16) for s in (sq, sk, sk))
        arrays.update({f"q{i}": q, f"k{i}": k, f"v{i}": v})
        if c["prior"] is not None:  # a running state: attention over keys of its own
            sp, p_off = c["prior"]
            kp, vp = (rng.standard_normal((bh, sp, d)).astype(np.float16) for _ in "kv")
            prior[i] = (kp, vp, p_off)
            o0, lse0 = ref_attention(q, kp, vp, c["scale"], c["causal"],
                                     c["q_off"] + np.arange(sq), p_off + np.arange(sp))  # fmt: skip
            arrays[f"o0{i}"], arrays[f"lse0{i}"] = o0.astype(np.float32), lse0.astype(np.float32)
    (tmp / "cases.json").write_text(json.dumps(cases))
    np.savez(tmp / "inputs.npz", **arrays)
    helper = str(ROOT / "tests" / "interp_attention.py")
    out = subprocess.run(
        [sys.executable, helper, str(tmp)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = np.load(tmp / "outputs.npz")
    for i, c in enumerate(cases):
        q, k, v = (arrays[f"{n}{i}"] for n in "qkv")
        ref = expected(c, q, k, v, prior.get(i))
        tails = (res[f"otail{i}"], res[f"lsetail{i}"])
        what = f"case {i} {c} dims {dims[i]}"
        check_state(what, res[f"o{i}"], res[f"lse{i}"], ref, TOL_O["float16"], tails)


#: (BH, Sq, Sk total, D, causal, q_off, blocks [start, length, k_off], extra): what each shows.
EDGES = [
    (2, 77, 100, 32, False, 0, [[0, 40, 0], [40, 60, 40]], {}),  # two blocks, no mask
    (2, 70, 100, 32, True, 30, [[0, 50, 0], [50, 50, 50]], {}),  # rows < 20: none in block 2
    # rows 0-19 see no key in either block, rows 20-59 only block 1
    (1, 70, 70, 16, True, 0, [[0, 40, 20], [40, 30, 60]], {}),
    (1, 40, 60, 32, True, 0, [[0, 30, 200], [30, 30, 0]], {}),  # init block sees no key at all
    (2, 64, 96, 16, True, 64, [[0, 32, 64], [32, 32, 0], [64, 32, 32]], {}),  # ring order
    (2, 50, 47, 32, True, 5, [[0, 20, 0], [20, 27, 20]], {"pad": 8, "write_lse": 0}),
    (1, 1, 2, 16, True, 0, [[0, 1, 0], [1, 1, 1]], {}),  # one row, one key a block
    (3, 64, 64, 16, False, 0, [[0, 64, 0]], {"block_m": 64, "pad": 16}),  # init only
    # merging into a given state: prior keys at 30.. (rows < 30 have none), block at 50..
    (2, 60, 40, 32, True, 0, [[0, 40, 50]], {"prior": [40, 30]}),
    (1, 45, 33, 16, False, 0, [[0, 33, 0]], {"prior": [20, 0]}),
]


@needs_triton
@pytest.mark.parametrize(
    "kernel, split", [("ptr", 1), ("tma", 1), ("tma", 2)], ids=["pointer", "tma", "tma-split2"]
)
def test_accumulated_blocks_equal_attention_over_all_keys(
    kernel: str, split: int, tmp_path: Path
) -> None:
    cases, dims = [], []
    for bh, sq, sk, d, causal, q_off, blocks, kw in EDGES:
        cases.append(acase(kernel, split, causal, q_off, blocks, **kw))
        dims.append((bh, sq, sk, d))
    interpret_accum(cases, dims, 11, tmp_path)


@st.composite
def random_accum_case(draw: st.DrawFn) -> tuple[dict, tuple]:
    kernel, split = draw(st.sampled_from([("tma", 1), ("tma", 2), ("ptr", 1)]))
    blocks, start = [], 0
    for _ in range(draw(st.integers(1, 3))):
        length = draw(st.integers(1, 50))
        blocks.append([start, length, draw(st.integers(0, 130))])
        start += length
    prior = draw(st.none() | st.tuples(st.integers(0, 40), st.integers(0, 130)).map(list))
    c = acase(
        kernel, split, draw(st.booleans()), draw(st.integers(0, 130)), blocks,
        block_m=draw(st.sampled_from([32, 64] if split == 2 else [16, 32, 64])),
        block_n=draw(st.sampled_from([16, 32])), write_lse=int(draw(st.booleans())),
        pad=draw(st.sampled_from([0, 8])), scale=draw(st.floats(0.05, 0.5)), prior=prior,
    )  # fmt: skip
    dims = (draw(st.integers(1, 3)), draw(st.integers(1, 90)), start)
    return c, dims + (draw(st.sampled_from([16, 32])),)


@needs_triton
@settings(max_examples=examples(1, 5), deadline=None)
@given(batch=st.lists(random_accum_case(), min_size=8, max_size=8), seed=st.integers(0, 2**32 - 1))
def test_accumulation_on_random_cases(
    batch: list, seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """One interpreter run over a batch of drawn cases (a process start per case is slow)."""
    interpret_accum([c for c, _ in batch], [d for _, d in batch], seed,
                    tmp_path_factory.mktemp("accum"))  # fmt: skip


def test_the_float64_formula_is_attention() -> None:
    """The test's formula against a per-row loop with Python floats (so a shared mistake with
    the kernels cannot hide)."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, n, 4)) for n in (5, 7, 7))
    q_pos, k_pos = np.arange(5) + 2, np.array([0, 9, 3, 1, 4, 8, 2])
    o, lse = ref_attention(q, k, v, 0.7, True, q_pos, k_pos)
    for i in range(5):
        keys = [j for j in range(7) if k_pos[j] <= q_pos[i]]
        s = [0.7 * float(q[0, i] @ k[0, j]) for j in keys]
        tot = sum(math.exp(x) for x in s)
        assert math.isclose(lse[0, i], math.log(tot), rel_tol=1e-12)
        want = sum(math.exp(x) / tot * v[0, j] for x, j in zip(s, keys))
        np.testing.assert_allclose(o[0, i], want, rtol=1e-12)
    o, lse = ref_attention(q, k, v, 0.7, True, q_pos - 10, k_pos)
    assert (o == 0).all() and np.isneginf(lse).all()


# ---- specs and compilation ----------------------------------------------------------------


def test_specs_of_the_accumulating_epilogues() -> None:
    for accum in CFG.ACCUM_MODES:
        spec = CFG.attention_spec(64, "bfloat16", True, accum=accum)
        assert spec.constexprs["ACCUM"] == accum
        assert spec.signature["O"] == ("*bf16" if accum == 0 else "*fp32")
        assert spec.signature["Q"] == "*bf16" and spec.signature["LSE"] == "*fp32"
        tma = T.tma_spec(64, "bfloat16", True, accum=accum)
        assert tma.signature["O"] == spec.signature["O"] and tma.constexprs["ACCUM"] == accum
        strides = {"stride_ob", "stride_om"}
        assert strides <= set(tma.divisible) if accum else not strides & set(tma.divisible)
    with pytest.raises(KeyError, match="ACCUM=3"):
        CFG.attention_spec(64, "float16", False, accum=3)
    assert CFG.attention_qdp_spec(64, "float16", True).constexprs["ACCUM"] == 0


def test_every_table_tile_has_every_epilogue_and_no_candidate_does() -> None:
    specs = CFG.all_specs()
    attn = [s for s in specs if s.fn_name == "attention_fwd"]
    tma = [s for s in specs if s.fn_name == "attention_fwd_tma"]
    modes = len(CFG.ACCUM_MODES)
    assert len(attn) == len(CFG.ATTENTION_CONFIGS) * modes
    assert len(tma) == len(T.TMA_CONFIGS) * modes
    for (d, dt, c), cfg in T.TMA_CONFIGS.items():
        for a in CFG.ACCUM_MODES:
            assert T.tma_spec(d, dt, c, cfg, accum=a) in tma
    assert len({repr(s) for s in specs}) == len(specs)
    assert all(s.constexprs["ACCUM"] == 0 for s in T.tma_specs())  # the sweep's candidates


@needs_triton
@pytest.mark.parametrize("accum", [1, 2])
@pytest.mark.parametrize("d, dt, causal", [(64, "float16", True), (128, "bfloat16", False)])
def test_tma_accum_variants_load_by_tma_and_store_o_by_pointers(
    d: int, dt: str, causal: bool, accum: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    ck = C.compile_kernel(T.tma_spec(d, dt, causal, accum=accum), directory=tmp_path,
                          with_ptx=True)  # fmt: skip
    ptx = ck.ptx
    assert "cp.async.bulk.tensor.3d.shared::cluster.global" in ptx  # Q/K/V by TMA
    assert "cp.async.bulk.tensor.3d.global.shared" not in ptx  # no TMA store of O
    assert "st.global.v4.b32" in ptx  # float32 O in 16-byte stores
    assert ("ld.global.v4.b32" in ptx) == (accum == 2)  # merge reads the running O
    assert ck.global_scratch_size == T.SCRATCH_PER_PROGRAM_ACCUM  # three descriptors
    assert 0 < ck.shared <= 227 * 1024


# ---- flash_attention_into: arguments and launch -------------------------------------------


def z(*shape: int, dtype: Any = np.float16) -> np.ndarray:
    return np.zeros(shape, dtype)


Q = z(2, 3, 40, 64)
KV = z(2, 3, 50, 64)
O32, L32 = z(2, 3, 40, 64, dtype=np.float32), z(2, 3, 40, dtype=np.float32)


@pytest.mark.parametrize(
    "o, lse, kw, err, words",
    [
        (z(2, 3, 41, 64, dtype=np.float32), L32, {}, K.KernelShapeError, ["(2, 3, 41, 64)",
         "(2, 3, 40, 64)"]),
        (O32, z(2, 3, 40, 1, dtype=np.float32), {}, K.KernelShapeError, ["(2, 3, 40, 1)"]),
        (O32.astype(np.float16), L32, {}, K.KernelDTypeError, ["float16", "float32"]),
        (O32, L32.astype(np.float64), {}, K.KernelDTypeError, ["float64"]),
        (np.swapaxes(z(2, 3, 64, 40, dtype=np.float32), -1, -2), L32, {}, K.KernelArgumentError,
         ["o_acc", "C-contiguous", "(2, 3, 40, 64)", "(30720, 10240, 4, 160)"]),
        (O32, z(2, 3, 80, dtype=np.float32)[..., ::2], {}, K.KernelArgumentError,
         ["lse_acc", "C-contiguous", "(960, 320, 8)"]),
        ([[0.0]], L32, {}, K.KernelArgumentError, ["o_acc", "list"]),
        (O32, L32, {"first": 1}, K.KernelArgumentError, ["first", "bool"]),
        (O32, L32, {"scale": -1.0}, K.KernelArgumentError, ["scale"]),
    ],
)  # fmt: skip
def test_flash_attention_into_argument_errors(o, lse, kw, err, words) -> None:
    kw = {"scale": 0.125, "first": True, **kw}
    with pytest.raises(err) as info:
        K.flash_attention_into(Q, KV, KV, o, lse, **kw)
    assert isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def _fake_cupy(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stand-in CuPy of tests/interp_host.py, removed again after the test."""
    from interp_host import dev, install_fake_cupy

    monkeypatch.setitem(sys.modules, "cupy", None)  # restored (absent) afterwards
    cp = install_fake_cupy()
    cp.ascontiguousarray = dev
    return cp


def test_flash_attention_into_needs_cupy_arrays_16_byte_aligned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from interp_host import dev

    _fake_cupy(monkeypatch)
    monkeypatch.setattr(A, "_kernel", lambda *a: pytest.fail("compiled before the checks"))
    q, kv = dev(Q), dev(KV)
    with pytest.raises(K.KernelArgumentError, match="o_acc must be a CuPy array"):
        K.flash_attention_into(q, kv, kv, O32, dev(L32), scale=0.1, first=True)
    base = dev(np.zeros(O32.size + 4, np.float32))
    off = 1 if (base.data.ptr + 4) % 16 else 2  # 4 or 8 bytes past a 16-byte boundary
    skewed = base[off : off + O32.size].reshape(O32.shape)
    with pytest.raises(K.KernelArgumentError) as info:
        K.flash_attention_into(q, kv, kv, skewed, dev(L32), scale=0.1, first=False)
    for w in ("o_acc", "16-byte aligned", "(2, 3, 40, 64)", "(30720, 10240, 256, 4)"):
        assert w in str(info.value)


@pytest.mark.parametrize("tma_on, ws_on", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("first", [True, False])
def test_flash_attention_into_launches_the_accumulating_variant(
    first: bool, tma_on: bool, ws_on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interp_host import dev

    _fake_cupy(monkeypatch)
    monkeypatch.setenv(T.TMA_ENV, "1" if tma_on else "0")
    monkeypatch.setenv(W.WS_ENV, "1" if ws_on else "0")
    calls: list = []

    def fake_kernel(kind: str, *variant: Any) -> Any:
        calls.append((kind, variant))
        return SimpleNamespace(global_scratch_size=0)

    monkeypatch.setattr(A, "_kernel", fake_kernel)
    monkeypatch.setattr(A, "launch", lambda ck, grid, args, **kw: calls.append((grid, args)))
    q, kv = dev(z(2, 3, 40, 128)), dev(z(2, 3, 50, 128))
    o, lse = dev(z(2, 3, 40, 128, dtype=np.float32)), dev(L32)
    got = K.flash_attention_into(q, kv, kv, o, lse, scale=0.1, causal=True, q_offset=7,
                                 k_offset=3, first=first)  # fmt: skip
    assert got[0] is o and got[1] is lse
    (kind, variant), (grid, args) = calls
    accum = CFG.ACCUM_INIT if first else CFG.ACCUM_MERGE
    if ws_on:  # causal with q_offset 7 >= k_offset 3: the warp-specialized kernel takes it
        cfg = W.WS_CONFIGS[(128, "float16", True)]
        assert kind == "ws" and variant == (128, "float16", True, cfg, accum)
    elif tma_on:
        cfg = T.TMA_CONFIGS[(128, "float16", True)]
        assert kind == "tma" and variant == (128, "float16", True, cfg, accum)
    else:
        cfg = CFG.attention_config(128, "float16", True)
        assert kind == "attn" and variant == (128, "float16", True, None, accum)
    assert grid == (math.ceil(40 / getattr(cfg, "rows_per_cta", cfg.block_m)), 6, 1)
    assert [int(a) for a in args[:5]] == [int(x.data.ptr) for x in (q, kv, kv, o, lse)]
    # strides in elements of each array: O's are float32 elements
    assert [int(a) for a in args[5:13]] == [40 * 128, 128] + [50 * 128, 128] * 2 + [40 * 128, 128]
    # causal offsets (7, 3) arrive as their shift (4, 0): the same mask
    assert [int(a) for a in args[13:17]] == [40, 50, 4, 0] and int(args[-1]) == 1


def test_attention_forward_refuses_an_accumulation_without_lse() -> None:
    arr = SimpleNamespace(shape=(2, 8, 64))
    for accum, lse in ((1, None), (2, None), (3, arr)):
        with pytest.raises(K.KernelArgumentError, match="accum must be one of"):
            A.attention_forward(arr, arr, arr, arr, lse, scale=0.1, causal=False,
                                dtype="float16", accum=accum)  # fmt: skip


# ---- the entry point end to end (subprocess: stand-in CuPy, interpreted kernels) ----------


@needs_triton
def test_entry_point_through_the_triton_interpreter() -> None:
    run_interpreted(__file__, timeout=900, min_passes=len(ENTRY_CASES) * 2)


#: (dtype, BH-lead, Sq, D, causal, q_off, [(Sk, k_off), ...]): blocks chained first, merge...
ENTRY_CASES = [
    ("float16", (2,), 70, 64, True, 64, [(64, 64), (64, 0)]),  # ring: diagonal, then earlier
    ("bfloat16", (1, 2), 50, 64, True, 0, [(40, 20), (30, 60), (20, 0)]),  # empty rows
    ("float16", (2,), 33, 128, False, 0, [(45, 0), (17, 45)]),
    ("bfloat16", (1,), 20, 64, True, 0, [(16, 100), (16, 0)]),  # init sees no key
]


def _entry_cases(seed: int) -> int:  # pragma: no cover - runs in the subprocess
    """Fake CuPy + interpreted launch; prints PASS/FAIL per case, returns the failures."""
    import os

    import ml_dtypes
    import triton.language as tl
    from interp_attention import _patch_interpreter
    from interp_host import RawPointer, dev, install_fake_cupy

    _patch_interpreter()
    install_fake_cupy().ascontiguousarray = dev
    ka, ta = A, module("triton_attention")

    tl_types = {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32}
    launched: list = []

    def fake_launch(ck, grid, args, *, device, stream=None):
        spec = ck.spec
        assert stream is None and device == 0, (stream, device)
        call = []
        for name, a in zip(spec.runtime_params, args, strict=True):
            ty = spec.signature[name]
            if ty.startswith("*"):
                call.append(RawPointer(int(a), tl_types[ty[1:]]))
            else:
                call.append(float(a) if ty == "fp32" else int(a))
            if name in spec.divisible:
                assert int(a) % 16 == 0, f"{name}={int(a)} breaks its divisibility promise"
        launched.append(spec)
        getattr(ta, spec.fn_name)[grid](*call, **spec.constexprs)

    ka.launch = fake_launch
    ka.compile_kernel = lambda spec: SimpleNamespace(spec=spec, global_scratch_size=0)
    np_dt = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
    rng = np.random.default_rng(seed)
    failed = 0
    os.environ[W.WS_ENV] = "0"  # Gluon's warp-specialized kernel has no interpreter
    for tma in ("0", "1"):
        os.environ[T.TMA_ENV] = tma
        for dtype, lead, sq, d, causal, q_off, blocks in ENTRY_CASES:
            t = np_dt[dtype]
            q = rng.standard_normal(lead + (sq, d)).astype(t)
            kv = [tuple(rng.standard_normal(lead + (n, d)).astype(t) for _ in "kv")
                  for n, _ in blocks]  # fmt: skip
            o, lse = np.empty(lead + (sq, d), np.float32), np.empty(lead + (sq,), np.float32)
            o, lse = dev(o), dev(lse)
            launched.clear()
            for i, ((kb, vb), (_, k_off)) in enumerate(zip(kv, blocks, strict=True)):
                ka.flash_attention_into(
                    dev(q), dev(kb), dev(vb), o, lse, scale=0.15, causal=causal,
                    q_offset=q_off, k_offset=k_off, first=i == 0,
                )  # fmt: skip
            flat = (-1, sq, d)
            ks, vs = (np.concatenate([x[j].reshape(-1, *x[j].shape[-2:]) for x in kv], 1)
                      for j in (0, 1))  # fmt: skip
            k_pos = np.concatenate([off + np.arange(n) for n, off in blocks])
            ref = ref_attention(q.reshape(flat), ks, vs, 0.15, causal, q_off + np.arange(sq),
                                k_pos)  # fmt: skip
            want = "attention_fwd_tma" if tma == "1" and T.tma_config(d, dtype, causal) else (
                "attention_fwd")  # fmt: skip
            modes = [s.constexprs["ACCUM"] for s in launched]
            what = f"{dtype} lead={lead} Sq={sq} D={d} causal={causal} q_off={q_off} {blocks}"
            try:
                assert modes == [1] + [2] * (len(blocks) - 1), modes
                assert {s.fn_name for s in launched} == {want}, launched
                err = check_state(what, o.reshape(flat), lse.reshape(flat[:2]), ref, TOL_O[dtype])
                print(f"PASS {want} {what}: o err {err:.1e}")
            except AssertionError as e:
                print(f"FAIL {want} {what}: {e}")
                failed += 1
    return failed


if __name__ == "__main__":  # the interpreted run (TRITON_INTERPRET=1 set by the test)
    sys.exit(1 if _entry_cases(int(sys.argv[1])) else 0)
