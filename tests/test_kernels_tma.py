"""The TMA attention kernel (``attention_fwd_tma``): every sweep candidate compiles for sm_90
into TMA code within the shared-memory and scratch limits, the kernel (and the pointer one)
computes the float64 reference under Triton's CPU interpreter, the configs are consistent, and
``attention.py`` takes it only when switched on and the arrays qualify.

Compilation and interpreter tests skip where Triton is not importable.
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
from kernel_modules import (
    ROOT,
    fresh_triton_cache,  # noqa: F401  (autouse)
    import_without_gpu_stack,
    module,
    needs_triton,
)
from strategies import examples

A = module("attention")
C = module("compile")
CFG = module("configs")
R = module("reference")
T = module("tma_configs")

SMEM_LIMIT = 227 * 1024  # an H100/H200 block's opt-in shared memory


def spec_id(spec: CFG.KernelSpec) -> str:
    c, o = spec.constexprs, spec.options
    ty = next(iter(spec.signature.values()))
    cap = f"-r{o['maxnreg']}" if "maxnreg" in o else ""
    return (
        f"{ty}-d{c['HEAD_DIM']}-{'causal' if c['CAUSAL'] else 'full'}-{c['SPLIT']}x"
        f"{c['BLOCK_M'] // c['SPLIT']}x{c['BLOCK_N']}-w{o['num_warps']}-s{o['num_stages']}{cap}"
    )


# ---- compilation -------------------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("spec", T.tma_specs(), ids=spec_id)
def test_tma_variant_compiles_to_tma_for_sm90(spec: CFG.KernelSpec, tmp_path: Path) -> None:
    ck = C.compile_kernel(spec, directory=tmp_path, with_ptx=True)
    assert ck.cubin[:4] == b"\x7fELF" and ck.name.encode() in ck.cubin
    assert ck.arch == 90 and ck.num_warps == spec.options["num_warps"]
    assert ck.params == spec.runtime_params + ("global_scratch", "profile_scratch")
    assert 0 < ck.shared <= SMEM_LIMIT
    # four in-kernel descriptors a program, in scratch the launcher allocates per program
    assert ck.global_scratch_size == T.SCRATCH_PER_PROGRAM
    assert T.SCRATCH_PER_PROGRAM % ck.global_scratch_align == 0
    assert ck.global_scratch_align <= 256  # CuPy's pool hands out 256-byte aligned blocks
    assert ck.profile_scratch_size == 0
    ptx = ck.ptx
    assert "cp.async.bulk.tensor" in ptx, "no TMA copies: the descriptors were lowered to loads"
    assert "tensormap.replace" in ptx or "tensormap" in ptx
    assert "wgmma.mma_async" in ptx
    if "maxnreg" in spec.options:
        assert f".maxnreg {spec.options['maxnreg']}" in ptx


@needs_triton
def test_tma_cache_entry_round_trips_with_scratch(tmp_path: Path) -> None:
    spec = T.tma_spec(64, "float16", True, T.CANDIDATES[64][0])
    first = C.compile_kernel(spec, directory=tmp_path)
    again = C.compile_kernel(spec, directory=tmp_path)
    assert again.from_cache and again.global_scratch_size == first.global_scratch_size > 0
    other = T.tma_spec(64, "float16", True, T.CANDIDATES[64][1])
    assert C.cache_key(other) != first.key
    assert C.cache_key(CFG.attention_spec(64, "float16", True)) != first.key


# ---- the kernels' arithmetic under Triton's interpreter -----------------------------------


def interpret(cases: list[dict], inputs: list[tuple], tmp: Path) -> list[tuple]:
    """Run ``cases`` (q, k, v from ``inputs``) through tests/interp_attention.py."""
    (tmp / "cases.json").write_text(json.dumps(cases))
    arrays = {f"{n}{i}": x for i, qkv in enumerate(inputs) for n, x in zip("qkv", qkv)}
    np.savez(tmp / "inputs.npz", **arrays)
    helper = str(ROOT / "tests" / "interp_attention.py")
    out = subprocess.run(
        [sys.executable, helper, str(tmp)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = np.load(tmp / "outputs.npz")
    return [(res[f"o{i}"], res[f"lse{i}"]) for i in range(len(cases))]


def make_inputs(rng: np.random.Generator, bh: int, sq: int, sk: int, d: int) -> tuple:
    q, k, v = (rng.standard_normal((bh, s, d)).astype(np.float16) for s in (sq, sk, sk))
    return q, k, v


def check_case(case: dict, qkv: tuple, got: tuple) -> None:
    """O and LSE against the float64 reference; rows with no key exactly 0 / -inf; the
    padding around a strided O untouched (stores stay inside [Sq, D] of each head)."""
    q, k, v = (x.astype(np.float64) for x in qkv)
    ref_o, ref_lse = R.attention(q, k, v, case["scale"], case["causal"], case["q_off"],
                                 case["k_off"])  # fmt: skip
    o, lse = got
    what = f"{case} shapes q {q.shape} k {k.shape}"
    assert np.isfinite(o).all(), f"unwritten or non-finite O: {what}"
    o64 = o.astype(np.float64)
    err = np.linalg.norm(o64 - ref_o) / max(np.linalg.norm(ref_o), 1e-30)
    assert err <= 2e-3 or np.linalg.norm(o64 - ref_o) <= 1e-6, f"o err {err:.2e}: {what}"
    empty = np.isneginf(ref_lse)
    assert (o64[empty] == 0).all(), f"rows with no key are not 0: {what}"
    if case["write_lse"]:
        assert np.array_equal(np.isneginf(lse), empty), f"-inf rows differ: {what}"
        fin = ~empty
        e = np.abs(lse[fin] - ref_lse[fin]) / np.maximum(1.0, np.abs(ref_lse[fin]))
        assert e.size == 0 or e.max() <= 1e-4, f"lse err {e.max():.2e}: {what}"
    else:
        assert np.isnan(lse).all(), f"LSE written with write_lse=0: {what}"


def case(kernel: str, causal: bool, q_off: int, k_off: int, **kw: Any) -> dict:
    c = {"kernel": kernel, "causal": causal, "q_off": q_off, "k_off": k_off, "block_m": 32,
         "block_n": 16, "split": 1, "write_lse": 1, "pad": 0, "scale": 0.3}  # fmt: skip
    c.update(kw)
    return c


#: (bh, sq, sk, d, case kwargs): what each one exercises.
EDGES = [
    (2, 77, 100, 32, {"causal": False, "q_off": 0, "k_off": 0}),  # no block multiple
    (2, 70, 70, 32, {"causal": True, "q_off": 0, "k_off": 0}),  # self-attention
    (1, 40, 100, 32, {"causal": True, "q_off": 120, "k_off": 0}),  # q after k: all keys
    (1, 40, 50, 32, {"causal": True, "q_off": 0, "k_off": 200}),  # q before k: all empty
    (2, 50, 60, 16, {"causal": True, "q_off": 0, "k_off": 20}),  # first 20 rows empty
    (1, 45, 71, 32, {"causal": True, "q_off": 30, "k_off": 7}),  # overlapping chunks
    (2, 1, 33, 16, {"causal": False, "q_off": 0, "k_off": 0}),  # one query row
    (2, 33, 1, 16, {"causal": True, "q_off": 0, "k_off": 0}),  # one key
    (2, 50, 47, 32, {"causal": True, "q_off": 5, "k_off": 0, "pad": 8, "write_lse": 0}),
    (3, 64, 64, 16, {"causal": False, "q_off": 0, "k_off": 0, "pad": 16, "block_m": 64}),
]


@needs_triton
@pytest.mark.parametrize(
    "kernel, split", [("tma", 1), ("tma", 2), ("ptr", 1)], ids=["tma", "tma-split2", "pointer"]
)
def test_kernels_match_reference_on_edge_cases(kernel: str, split: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    cases, inputs = [], []
    for bh, sq, sk, d, kw in EDGES:
        cases.append(case(kernel, split=split, **kw))
        inputs.append(make_inputs(rng, bh, sq, sk, d))
    for c, qkv, got in zip(cases, inputs, interpret(cases, inputs, tmp_path), strict=True):
        check_case(c, qkv, got)


@st.composite
def random_case(draw: st.DrawFn) -> tuple[dict, tuple[int, int, int, int]]:
    kernel, split = draw(st.sampled_from([("tma", 1), ("tma", 2), ("ptr", 1)]))
    block_m = draw(st.sampled_from([32, 64] if split == 2 else [16, 32, 64]))
    c = case(
        kernel,
        draw(st.booleans()),
        draw(st.integers(0, 130)),
        draw(st.integers(0, 130)),
        block_m=block_m,
        block_n=draw(st.sampled_from([16, 32])),
        split=split,
        write_lse=int(draw(st.booleans())),
        pad=draw(st.sampled_from([0, 8])),
        scale=draw(st.floats(0.05, 0.5)),
    )
    dims = (draw(st.integers(1, 3)), draw(st.integers(1, 90)), draw(st.integers(1, 90)))
    return c, dims + (draw(st.sampled_from([16, 32])),)


@needs_triton
@settings(max_examples=examples(1, 5), deadline=None)
@given(batch=st.lists(random_case(), min_size=8, max_size=8), seed=st.integers(0, 2**32 - 1))
def test_kernels_match_reference_on_random_cases(
    batch: list, seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """One interpreter run over a batch of drawn cases (a process start per case is slow)."""
    rng = np.random.default_rng(seed)
    cases = [c for c, _ in batch]
    inputs = [make_inputs(rng, *dims) for _, dims in batch]
    got = interpret(cases, inputs, tmp_path_factory.mktemp("interp"))
    for i, (c, qkv, g) in enumerate(zip(cases, inputs, got, strict=True)):
        check_case({**c, "batch_index": i}, qkv, g)


# ---- configs ------------------------------------------------------------------------------


def test_candidates_and_table_are_valid_variants() -> None:
    for d, cands in T.CANDIDATES.items():
        assert d in CFG.HEAD_DIMS and 4 <= len(cands) <= 8 and len(set(cands)) == len(cands)
        for cfg in cands:
            assert cfg.num_warps in (4, 8) and 2 <= cfg.num_stages <= 4
            assert cfg.block_m % (16 * cfg.split) == 0 and cfg.block_n % 16 == 0
    for (d, dt, c), cfg in T.TMA_CONFIGS.items():
        assert d in CFG.HEAD_DIMS and dt in CFG.DTYPES and isinstance(c, bool)
        assert T.tma_config(d, dt, c) is cfg
    assert T.tma_config(96, "float16", False) is None
    assert T.tma_config(32, "float16", False) is None  # no TMA entry: the pointer kernel


def test_tma_spec_matches_the_pointer_kernels_signature() -> None:
    cfg = T.TmaConfig(128, 64, 4, 2, split=2, maxnreg=168)
    spec = T.tma_spec(128, "bfloat16", True, cfg)
    ref = CFG.attention_spec(128, "bfloat16", True, CFG.AttentionConfig(128, 64, 4, 2))
    assert spec.fn_name == "attention_fwd_tma"
    assert spec.runtime_params == ref.runtime_params
    assert list(spec.signature) == list(ref.signature) + ["SPLIT"]
    assert spec.constexprs == {**ref.constexprs, "SPLIT": 2}
    assert spec.options == {"num_warps": 4, "num_stages": 2, "maxnreg": 168}
    assert set(spec.divisible) == {"Q", "K", "V", "O", "LSE"}  # strides: 16 bytes suffice
    assert T.tma_spec(64, "float16", False).constexprs["BLOCK_M"] == (
        T.TMA_CONFIGS[(64, "float16", False)].block_m
    )
    specs = T.tma_specs()
    assert len({repr(s) for s in specs}) == len(specs)
    n = sum(len(c) for c in T.CANDIDATES.values()) * len(CFG.DTYPES) * 2
    assert n <= len(specs) <= n + len(T.TMA_CONFIGS)


@pytest.mark.parametrize(
    "kw, words",
    [({"split": 3}, ["split"]), ({"split": 2, "block_m": 48}, ["split"]),
     ({"block_m": 40}, ["multiple of 16"])],
)  # fmt: skip
def test_tma_config_refuses_bad_tiles(kw: dict, words: list[str]) -> None:
    args = {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3, **kw}
    with pytest.raises(ValueError) as info:
        T.TmaConfig(**args)
    for w in words:
        assert w in str(info.value)


def test_labels() -> None:
    assert T.TmaConfig(128, 128, 8, 3).label == "128x128 w8 s3"
    assert T.TmaConfig(128, 64, 4, 2, split=2).label == "2x64x64 w4 s2"
    assert T.TmaConfig(128, 64, 8, 2, maxnreg=128).label == "128x64 w8 s2 r128"


def test_use_tma_switch_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(T.TMA_ENV, raising=False)
    monkeypatch.setattr(T, "USE_TMA", False)
    assert not T.use_tma()
    monkeypatch.setattr(T, "USE_TMA", True)
    assert T.use_tma()
    monkeypatch.setenv(T.TMA_ENV, "0")
    assert not T.use_tma()
    monkeypatch.setattr(T, "USE_TMA", False)
    monkeypatch.setenv(T.TMA_ENV, "1")
    assert T.use_tma()


@pytest.mark.parametrize(
    "ptrs, strides, item, ok",
    [
        ([256, 512], [(64 * 128, 128, 1), (8 * 128, 128, 1)], 2, True),
        ([256], [(64 * 72, 72, 1)], 2, True),  # 144-byte rows: a 16-byte multiple
        ([256], [(64 * 68, 68, 1)], 2, False),  # 136-byte rows
        ([264], [(64 * 128, 128, 1)], 2, False),  # base 8 bytes off
        ([256], [(64 * 128, 128, 2)], 2, False),  # last dim not contiguous
        ([256], [(0, 128, 1)], 2, False),  # broadcast heads
        ([256], [(64 * 128, -128, 1)], 2, False),  # reversed rows
        ([256], [(64 * 4, 4, 1)], 4, True),  # float32: 4 elements are 16 bytes
        ([256], [(64 * 4, 4, 1)], 2, False),
    ],
)  # fmt: skip
def test_tma_compatible(ptrs: list, strides: list, item: int, ok: bool) -> None:
    assert T.tma_compatible(ptrs, strides, item) is ok


def test_tma_compatible_needs_a_stride_triple_per_array() -> None:
    with pytest.raises(ValueError, match="2 base addresses but 1 stride"):
        T.tma_compatible([256, 512], [(128, 128, 1)], 2)


# ---- dispatch in attention.py (fake arrays and launcher: no GPU) --------------------------


class FakeArray:
    """A [BH, S, D] device array as attention.py sees it: shape, strides, pointer, device."""

    def __init__(self, shape: tuple, strides_el: tuple | None = None, ptr: int = 1 << 20,
                 item: int = 2) -> None:  # fmt: skip
        self.shape, self.itemsize = shape, item
        st = strides_el or (shape[1] * shape[2], shape[2], 1)
        self.strides = tuple(s * item for s in st)
        self.data = SimpleNamespace(ptr=ptr)
        self.device = SimpleNamespace(id=0)

    def __getitem__(self, heads: slice) -> FakeArray:
        """The heads ``heads`` (a slice of the first dim), as CuPy's basic slicing gives."""
        start, stop, step = heads.indices(self.shape[0])
        assert step == 1
        st = tuple(x // self.itemsize for x in self.strides)
        ptr = self.data.ptr + start * self.strides[0]
        return FakeArray((stop - start,) + tuple(self.shape[1:]), st, ptr, self.itemsize)


def qkvo(sq: int = 300, sk: int = 200, d: int = 128, **kw: Any) -> tuple:
    return (
        FakeArray((4, sq, d), **kw),
        FakeArray((4, sk, d)),
        FakeArray((4, sk, d)),
        FakeArray((4, sq, d)),
    )


def test_pick_tma_needs_switch_table_and_qualifying_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(T.TMA_ENV, "0")
    assert A.pick_tma(*qkvo(), "bfloat16", True) is None
    monkeypatch.setenv(T.TMA_ENV, "1")
    assert A.pick_tma(*qkvo(), "bfloat16", True) == T.TMA_CONFIGS[(128, "bfloat16", True)]
    assert A.pick_tma(*qkvo(ptr=(1 << 20) + 8), "bfloat16", True) is None  # misaligned q
    assert A.pick_tma(*qkvo(strides_el=(300 * 132, 132, 1)), "bfloat16", True) is None
    assert A.pick_tma(*qkvo(d=32), "bfloat16", False) is None  # no TMA tile for D=32
    q, _, _, o = qkvo()
    k0 = FakeArray((4, 0, 128), strides_el=(128, 128, 1))  # aligned, but no key
    assert A.pick_tma(q, k0, k0, o, "bfloat16", False) is None  # a TMA dim cannot be 0


def test_attention_forward_launches_the_chosen_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def fake_kernel(kind: str, *variant: Any) -> Any:
        calls.append((kind, variant))
        return SimpleNamespace(global_scratch_size=512 if kind == "tma" else 0)

    monkeypatch.setattr(A, "_kernel", fake_kernel)
    monkeypatch.setattr(A, "launch", lambda ck, grid, args, **kw: calls.append((grid, args)))
    tma = T.TmaConfig(128, 64, 4, 2, split=2)
    q, k, v, o = qkvo(sq=300, sk=200, d=64)
    A.attention_forward(q, k, v, o, None, scale=0.1, causal=True, dtype="float16", tma=tma)
    (kind, variant), (grid, args) = calls
    assert kind == "tma" and variant == (64, "float16", True, tma, 0)  # 0: O in q's dtype
    assert grid == (math.ceil(300 / 128), 4, 1) and len(args) == 19
    assert [int(a) for a in args[5:13]] == [300 * 64, 64] + [200 * 64, 64] * 2 + [300 * 64, 64]
    assert int(args[-1]) == 0  # no LSE
    calls.clear()
    A.attention_forward(q, k, v, o, None, scale=0.1, causal=False, dtype="float16")
    (kind, variant), (grid, _) = calls
    ptr_cfg = CFG.attention_config(64, "float16", False)
    assert kind == "attn" and variant == (64, "float16", False, None, 0)
    assert grid == (math.ceil(300 / ptr_cfg.block_m), 4, 1)


def test_attention_forward_refuses_tma_on_unaligned_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(A, "_kernel", lambda *a: pytest.fail("compiled before the check"))
    q, k, v, o = qkvo(strides_el=(300 * 132, 132, 1))
    with pytest.raises(A.KernelArgumentError) as info:
        A.attention_forward(q, k, v, o, None, scale=0.1, causal=False, dtype="bfloat16",
                            tma=T.TmaConfig(128, 64, 8, 3))  # fmt: skip
    assert "TMA" in str(info.value) and "(39600, 132, 1)" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_modules_import_without_triton_or_cupy() -> None:
    modules = (".attention", ".triton_attention", ".tma_configs")
    out = import_without_gpu_stack(modules, 'm.tma_spec(128, "float16", True).fn_name')
    assert out.returncode == 0, out.stderr
    assert "OK attention_fwd_tma" in out.stdout
