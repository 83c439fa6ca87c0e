"""The warp-specialized attention kernel (``attention_fwd_ws``, Gluon): every tile compiles for
sm_90 into warp-specialized TMA + wgmma code within the shared-memory limit, the configs are
consistent, and ``attention.py`` takes it exactly where it applies (switch, table, the call's
offsets, TMA-compatible arrays), launching it with the pointer kernel's arguments.

Its arithmetic needs a GPU (warp specialization and mbarriers have no interpreter):
``gpu/check_kernels.py`` checks it against float64. Compilation tests skip where Triton is not
importable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from kernel_modules import (
    fresh_triton_cache,  # noqa: F401  (autouse)
    import_without_gpu_stack,
    module,
    needs_triton,
)
from test_kernels_tma import SMEM_LIMIT, FakeArray, qkvo

A = module("attention")
C = module("compile")
CFG = module("configs")
T = module("tma_configs")
W = module("ws_configs")


def spec_id(spec: CFG.KernelSpec) -> str:
    c = spec.constexprs
    ty = next(iter(spec.signature.values()))
    cfg = W.WsConfig(c["BLOCK_M"], c["BLOCK_N"], c["NUM_STAGES"], c["OVERLAP"], c["PINGPONG"])
    mask = "causal" if c["CAUSAL"] else "full"
    qdp = "-qdp" if spec.fn_name.endswith("_qdp") else ""
    return f"{ty}-d{c['HEAD_DIM']}-{mask}-{cfg.label.replace(' ', '-')}-accum{c['ACCUM']}{qdp}"


#: The TensorRT plugin's entry at head_dim 128 (64 compiles in tests/test_trt_plugins.py).
QDP_SPECS = [W.ws_qdp_spec(128, dt, c) for dt in CFG.DTYPES for c in (False, True)]


# ---- compilation -------------------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("spec", W.ws_specs() + QDP_SPECS, ids=spec_id)
def test_ws_variant_compiles_to_warp_specialized_code(spec: CFG.KernelSpec, tmp_path: Path):
    ck = C.compile_kernel(spec, directory=tmp_path, with_ptx=True)
    assert ck.cubin[:4] == b"\x7fELF" and ck.name.encode() in ck.cubin
    # two consumer warpgroups and the loader's warpgroup: 3 x the 4 warps of a partition
    assert ck.arch == 90 and ck.num_warps == 3 * spec.options["num_warps"]
    assert ck.params == spec.runtime_params + ("global_scratch", "profile_scratch")
    assert 0 < ck.shared <= SMEM_LIMIT
    # in-kernel descriptors (128 bytes each) in per-program scratch: the loader's q, k, v and
    # each consumer's o (the accumulating epilogues store O by pointers)
    per_program = W.SCRATCH_PER_PROGRAM_ACCUM if spec.constexprs["ACCUM"] else W.SCRATCH_PER_PROGRAM
    assert ck.global_scratch_size == per_program and ck.profile_scratch_size == 0
    assert ck.global_scratch_align <= 256  # CuPy's pool hands out 256-byte aligned blocks
    ptx = ck.ptx
    assert "cp.async.bulk.tensor" in ptx, "no TMA copies"
    assert "wgmma.mma_async" in ptx and "mbarrier" in ptx
    assert "setmaxnreg" in ptx, "no register split between the loader and the consumers"


@needs_triton
def test_ws_cache_entry_round_trips(tmp_path: Path) -> None:
    spec = W.ws_spec(128, "bfloat16", False)
    first = C.compile_kernel(spec, directory=tmp_path)
    again = C.compile_kernel(spec, directory=tmp_path)
    assert again.from_cache and again.num_warps == first.num_warps == 12
    assert C.cache_key(W.ws_spec(128, "bfloat16", True)) != first.key
    assert C.cache_key(W.ws_spec(128, "float16", False)) != first.key


# ---- configs ------------------------------------------------------------------------------


def test_table_and_candidates_are_valid_variants() -> None:
    for (d, dt, c), cfg in W.WS_CONFIGS.items():
        assert d in CFG.HEAD_DIMS and dt in CFG.DTYPES and W.ws_config(d, dt, c) is cfg
        assert not (c and cfg.pingpong)  # pingpong is for full attention only
    for d, cands in W.CANDIDATES.items():
        assert cands and len(set(cands)) == len(cands) and d in CFG.HEAD_DIMS
    assert W.ws_config(32, "float16", False) is None and W.ws_config(256, "float16", True) is None
    specs = W.ws_specs()
    assert len({repr(s) for s in specs}) == len(specs)
    assert not any(s.constexprs["CAUSAL"] and s.constexprs["PINGPONG"] for s in specs)
    table = {repr(W.ws_spec(d, dt, c)) for (d, dt, c) in W.WS_CONFIGS}
    assert table <= {repr(s) for s in specs}
    assert table <= {repr(s) for s in CFG.all_specs()}  # CI compiles what the library runs


def test_ws_spec_matches_the_pointer_kernels_signature() -> None:
    spec = W.ws_spec(128, "bfloat16", True, W.WsConfig(64, 128, 3))
    ref = CFG.attention_spec(128, "bfloat16", True)
    assert spec.fn_name == "attention_fwd_ws"
    assert spec.runtime_params == ref.runtime_params
    assert spec.signature["O"] == "*bf16" and spec.signature["qk_scale"] == "fp32"
    assert spec.constexprs == {
        "HEAD_DIM": 128, "BLOCK_M": 64, "BLOCK_N": 128, "NUM_STAGES": 3, "CAUSAL": True,
        "OVERLAP": True, "PINGPONG": False, "ACCUM": 0,
    }  # fmt: skip
    assert spec.options == {"num_warps": 4} and set(spec.divisible) == {"Q", "K", "V", "O", "LSE"}
    merge = W.ws_spec(128, "bfloat16", True, W.WsConfig(64, 128, 3), accum=CFG.ACCUM_MERGE)
    ref = CFG.attention_spec(128, "bfloat16", True, accum=CFG.ACCUM_MERGE)
    assert merge.signature["O"] == ref.signature["O"] == "*fp32"  # the float32 running state
    assert merge.runtime_params == ref.runtime_params and merge.constexprs["ACCUM"] == 2
    assert {"stride_ob", "stride_om"} <= set(merge.divisible)
    with pytest.raises(KeyError, match="ACCUM=3"):
        W.ws_spec(128, "bfloat16", True, accum=3)
    with pytest.raises(ValueError, match="pingpong is for full attention"):
        W.ws_spec(128, "bfloat16", True, W.WsConfig(64, 128, 2, pingpong=True))
    with pytest.raises(KeyError):
        W.ws_spec(96, "bfloat16", False)


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"block_m": 32}, ["block_m", "64 or 128"]),
        ({"block_n": 256}, ["block_n"]),
        ({"num_stages": 1}, ["num_stages", "2 to 4"]),
        ({"num_stages": 5}, ["num_stages"]),
        ({"overlap": False, "pingpong": True}, ["pingpong needs overlap"]),
    ],
)
def test_ws_config_refuses_bad_tiles(kw: dict, words: list[str]) -> None:
    args = {"block_m": 64, "block_n": 128, "num_stages": 2, **kw}
    with pytest.raises(ValueError) as info:
        W.WsConfig(**args)
    for w in words:
        assert w in str(info.value)


def test_labels_and_rows() -> None:
    assert W.WsConfig(64, 128, 2, pingpong=True).label == "2x64x128 s2 ovl pp"
    assert W.WsConfig(128, 64, 3, overlap=False).label == "2x128x64 s3"
    assert W.WsConfig(64, 128, 2).rows_per_cta == 128


def test_use_ws_switch_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(W.WS_ENV, raising=False)
    monkeypatch.setattr(W, "USE_WS", False)
    assert not W.use_ws()
    monkeypatch.setattr(W, "USE_WS", True)
    assert W.use_ws()
    monkeypatch.setenv(W.WS_ENV, "off")
    assert not W.use_ws()
    monkeypatch.setattr(W, "USE_WS", False)
    monkeypatch.setenv(W.WS_ENV, "1")
    assert W.use_ws()
    monkeypatch.setenv(W.WS_ENV, "maybe")
    with pytest.raises(ValueError, match=W.WS_ENV):
        W.use_ws()


@pytest.mark.parametrize(
    "causal, q_off, k_off, sk, ok",
    [
        (False, 0, 512, 100, True),  # full attention: offsets do not matter
        (True, 0, 0, 100, True),
        (True, 512, 0, 1024, True),  # a later chunk against every earlier key
        (True, 0, 1, 100, False),  # row 0 would see no key
        (False, 0, 0, 0, False),  # no key at all
    ],
)
def test_ws_call_ok(causal: bool, q_off: int, k_off: int, sk: int, ok: bool) -> None:
    assert W.ws_call_ok(causal, q_off, k_off, sk) is ok


# ---- dispatch in attention.py (fake arrays and launcher: no GPU) --------------------------


def test_pick_ws_needs_switch_table_offsets_and_qualifying_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = W.WS_CONFIGS[(128, "bfloat16", True)]
    monkeypatch.setenv(W.WS_ENV, "0")
    assert A.pick_ws(*qkvo(), "bfloat16", True, 0, 0) is None
    monkeypatch.setenv(W.WS_ENV, "1")
    assert A.pick_ws(*qkvo(), "bfloat16", True, 0, 0) is table
    assert A.pick_ws(*qkvo(), "bfloat16", True, 100, 37) is table
    assert A.pick_ws(*qkvo(), "bfloat16", True, 37, 100) is None  # early rows see no key
    assert A.pick_ws(*qkvo(), "bfloat16", False, 37, 100) is W.WS_CONFIGS[(128, "bfloat16", False)]
    assert A.pick_ws(*qkvo(ptr=(1 << 20) + 8), "bfloat16", True, 0, 0) is None  # misaligned q
    assert A.pick_ws(*qkvo(strides_el=(300 * 132, 132, 1)), "bfloat16", True, 0, 0) is None
    assert A.pick_ws(*qkvo(d=32), "bfloat16", False, 0, 0) is None  # no tile for D=32
    q, _, _, o = qkvo()
    k0 = FakeArray((4, 0, 128), strides_el=(128, 128, 1))
    assert A.pick_ws(q, k0, k0, o, "bfloat16", False, 0, 0) is None


def test_attention_forward_launches_the_ws_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def fake_kernel(kind: str, *variant: Any) -> Any:
        calls.append((kind, variant))
        return type("CK", (), {"global_scratch_size": 512})()

    monkeypatch.setattr(A, "_kernel", fake_kernel)
    monkeypatch.setattr(A, "launch", lambda ck, grid, args, **kw: calls.append((grid, args)))
    ws = W.WsConfig(64, 128, 2)
    q, k, v, o = qkvo(sq=300, sk=200, d=64)
    A.attention_forward(q, k, v, o, None, scale=0.1, causal=True, q_offset=50, dtype="float16",
                        ws=ws)  # fmt: skip
    (kind, variant), (grid, args) = calls
    assert kind == "ws" and variant == (64, "float16", True, ws, 0)  # 0: O in q's dtype
    assert grid == (math.ceil(300 / 128), 4, 1) and len(args) == 19  # two 64-row warpgroups
    assert [int(a) for a in args[5:13]] == [300 * 64, 64] + [200 * 64, 64] * 2 + [300 * 64, 64]
    assert [int(a) for a in args[13:17]] == [300, 200, 50, 0]
    assert float(args[17]) == pytest.approx(0.1 * A.LOG2E) and int(args[-1]) == 0


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"causal": True, "q_offset": 0, "k_offset": 8}, ["q_offset >= k_offset", "k_offset 8"]),
        ({"causal": True, "accum": 2, "k_offset": 1}, ["every row sees a key", "q_offset 0"]),
    ],
)
def test_attention_forward_refuses_what_the_ws_kernel_cannot_do(
    monkeypatch: pytest.MonkeyPatch, kw: dict, words: list[str]
) -> None:
    monkeypatch.setattr(A, "_kernel", lambda *a: pytest.fail("compiled before the check"))
    q, k, v, o = qkvo()
    lse = FakeArray((4, 300, 1))
    args = {"scale": 0.1, "causal": False, "dtype": "bfloat16", "ws": W.WsConfig(64, 128, 2)}
    with pytest.raises(A.KernelArgumentError) as info:
        A.attention_forward(q, k, v, o, lse, **{**args, **kw})
    for w in words:
        assert w in str(info.value)


def test_attention_forward_refuses_ws_on_unaligned_arrays(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(A, "_kernel", lambda *a: pytest.fail("compiled before the check"))
    q, k, v, o = qkvo(strides_el=(300 * 132, 132, 1))
    with pytest.raises(A.KernelArgumentError, match="TMA") as info:
        A.attention_forward(q, k, v, o, None, scale=0.1, causal=False, dtype="bfloat16",
                            ws=W.WsConfig(64, 128, 2))  # fmt: skip
    assert "(39600, 132, 1)" in str(info.value)


def test_ws_modules_import_without_triton_or_cupy() -> None:
    modules = (".attention", ".gluon_attention", ".ws_configs")
    out = import_without_gpu_stack(modules, 'm.ws_spec(128, "float16", True).fn_name')
    assert out.returncode == 0, out.stderr
    assert "OK attention_fwd_ws" in out.stdout


# ---- launch limits: heads past grid y, int32 offsets, 32-bit scratch offsets -------------


def record_launches(monkeypatch: pytest.MonkeyPatch, scratch: int = 0) -> list[tuple]:
    """Stub out compilation and launching; returns the list of (grid, args) launched."""
    launches: list[tuple] = []
    ck = type("CK", (), {"global_scratch_size": scratch})()
    monkeypatch.setattr(A, "_kernel", lambda kind, *variant: ck)
    monkeypatch.setattr(A, "_on_stream", lambda stream: __import__("contextlib").nullcontext())

    def launch(ck: Any, grid: tuple, args: list, **kw: Any) -> list:
        launches.append((grid, args))
        return ["scratch"] if scratch else []

    monkeypatch.setattr(A, "launch", launch)
    return launches


def test_heads_past_grid_y_run_as_several_launches(monkeypatch: pytest.MonkeyPatch) -> None:
    launches = record_launches(monkeypatch)
    monkeypatch.setattr(A, "MAX_GRID_Y", 2)
    q, k, v, o = (FakeArray((5, s, 64)) for s in (300, 200, 200, 300))
    lse = FakeArray((5, 300, 1), item=4)
    A.attention_forward(q, k, v, o, lse, scale=0.1, causal=False, dtype="float16")
    assert [grid for grid, _ in launches] == [(3, 2, 1), (3, 2, 1), (3, 1, 1)]
    for i, (_, args) in enumerate(launches):  # each launch starts at its first head
        want = [x.data.ptr + 2 * i * x.strides[0] for x in (q, k, v, o, lse)]
        assert [int(a) for a in args[:5]] == want
        assert [int(a) for a in args[5:]] == [int(a) for a in launches[0][1][5:]]


@pytest.mark.parametrize(
    "causal, q_off, k_off, shift",
    [
        (True, 7, 3, 4),
        (True, 2**31 - 1, 0, 200),  # every key visible: the shift is clamped to Sk
        (True, 2**30, -(2**30), 200),  # 2**31 would wrap in int32
        (True, 0, 2**31 - 1, -300),  # no key visible: clamped to -Sq
        (False, 123, 456, 0),  # offsets mean nothing without the causal mask
    ],
)
def test_offsets_reach_the_kernel_as_a_clamped_shift(
    monkeypatch: pytest.MonkeyPatch, causal: bool, q_off: int, k_off: int, shift: int
) -> None:
    launches = record_launches(monkeypatch)
    q, k, v, o = qkvo(sq=300, sk=200, d=64)
    A.attention_forward(q, k, v, o, None, scale=0.1, causal=causal, q_offset=q_off,
                        k_offset=k_off, dtype="float16")  # fmt: skip
    ((_, args),) = launches
    assert [int(a) for a in args[13:17]] == [300, 200, shift, 0]


def test_scratch_past_32_bit_offsets_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(W.WS_ENV, "1")
    monkeypatch.setenv(T.TMA_ENV, "1")
    q, k, v, o = qkvo(sq=300, sk=200)  # 3 programs x 4 heads for the ws tile (128 rows each)
    assert A.pick_ws(q, k, v, o, "bfloat16", False, 0, 0) is not None
    monkeypatch.setattr(A, "MAX_SCRATCH", 3 * 4 * W.SCRATCH_PER_PROGRAM - 1)
    assert A.pick_ws(q, k, v, o, "bfloat16", False, 0, 0) is None
    assert A.pick_tma(q, k, v, o, "bfloat16", False) is not None  # 3 x 4 x 512 bytes fit
    monkeypatch.setattr(A, "MAX_SCRATCH", 3 * 4 * T.SCRATCH_PER_PROGRAM - 1)
    assert A.pick_tma(q, k, v, o, "bfloat16", False) is None
    launches = record_launches(monkeypatch, scratch=W.SCRATCH_PER_PROGRAM)
    with pytest.raises(A.KernelArgumentError, match="32-bit scratch offsets"):
        A.attention_forward(q, k, v, o, None, scale=0.1, causal=False, dtype="bfloat16",
                            ws=W.WsConfig(64, 128, 2))  # fmt: skip
    assert launches == []


@pytest.mark.parametrize("capturing", [False, True])
def test_scratch_of_a_captured_launch_is_kept(monkeypatch: pytest.MonkeyPatch, capturing: bool):
    record_launches(monkeypatch, scratch=W.SCRATCH_PER_PROGRAM)
    monkeypatch.setattr(A, "_capturing", lambda stream: capturing)
    monkeypatch.setattr(A, "_captured_scratch", [])
    q, k, v, o = qkvo()
    A.attention_forward(q, k, v, o, None, scale=0.1, causal=False, dtype="bfloat16",
                        ws=W.WsConfig(64, 128, 2))  # fmt: skip
    assert A._captured_scratch == (["scratch"] if capturing else [])


@pytest.mark.parametrize(
    "d, kw, words",
    [
        (32, {}, ["head_dim (64, 128)", "got 32"]),
        (128, {"tma": T.TmaConfig(128, 64, 8, 3)}, ["not both"]),
    ],
)
def test_attention_forward_refuses_a_bad_ws_request(
    monkeypatch: pytest.MonkeyPatch, d: int, kw: dict, words: list[str]
) -> None:
    monkeypatch.setattr(A, "_kernel", lambda *a: pytest.fail("compiled before the check"))
    q, k, v, o = qkvo(d=d)
    with pytest.raises(A.KernelArgumentError) as info:
        A.attention_forward(q, k, v, o, None, scale=0.1, causal=False, dtype="bfloat16",
                            ws=W.WsConfig(64, 128, 2), **kw)  # fmt: skip
    for w in words:
        assert w in str(info.value)
