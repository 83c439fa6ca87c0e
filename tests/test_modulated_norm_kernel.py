"""The fused adaLN kernel (kernels/norm.py, norm_checks.py, triton_norm.py) without a GPU:

- the row plan (how shift/scale broadcasts become ``o * so + i * si`` offsets) against NumPy's
  own broadcasting, on random shapes;
- every argument error of ``kernels.modulated_norm``;
- the launch table (block, rows, warps) and the spec's agreement with the kernel's parameters;
- the whole entry point end to end in a subprocess: Triton's interpreter (``TRITON_INTERPRET=1``)
  runs ``modulated_norm_fwd`` on host memory behind a stand-in for CuPy that offers only what a
  capturable launch may use (no synchronization, no host copies), with the launch arguments
  checked against the spec (types, count, every 16-byte alignment promise), against a float64
  formula for each dtype, kind, several D (1 to 8192, non-powers of two) and broadcast forms.

The compile of every spec for sm_90 is in tests/test_kernels_compile.py.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_modules import ROOT, K, module, needs_triton, run_interpreted

CFG = module("configs")
NC = module("norm_checks")

F16 = np.float16


# -- the row plan ----------------------------------------------------------------------------
@st.composite
def broadcast_forms(draw) -> tuple[tuple, list[tuple]]:
    lead = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(0, 4))))
    forms = []
    for _ in range(2):
        keep = lead[draw(st.integers(0, len(lead))) :]
        forms.append(tuple(1 if draw(st.booleans()) else n for n in keep))
    return lead, forms


@given(case=broadcast_forms(), d=st.integers(1, 5))
def test_row_plan_reads_what_numpy_broadcasting_reads(case, d) -> None:
    """For every row of x and column, the planned offset picks the element NumPy's broadcast
    puts there; a None plan only for forms with full and broadcast dims interleaved."""
    lead, forms = case
    plan = NC.plan_rows(lead, forms, d)
    if plan is None:  # must be a form no single split fits: check by brute force
        for t in range(len(lead) + 1):
            fits = True
            for f in forms:
                p = (1,) * (len(lead) - len(f)) + f
                for part in (range(t), range(t, len(lead))):
                    dims = [j for j in part if lead[j] != 1]
                    if not (all(p[j] == 1 for j in dims) or all(p[j] == lead[j] for j in dims)):
                        fits = False
            assert not fits, (lead, forms, t)
        return
    inner, strides = plan
    rows = math.prod(lead)
    r = np.arange(rows)
    o, i = r // inner, r % inner
    for f, (so, si) in zip(forms, strides):
        param = np.arange(math.prod(f) * d).reshape(f + (d,))
        want = np.broadcast_to(param, lead + (d,)).reshape(rows, d)
        got = param.reshape(-1)[(o * so + i * si)[:, None] + np.arange(d)[None, :]]
        np.testing.assert_array_equal(got, want)
        assert so % d == 0 and si % d == 0  # multiples of D: aligned when D is


def test_dit_plans() -> None:
    assert NC.plan_rows((2, 4096), [(2, 1), (2, 1)], 1152) == (4096, ((1152, 0), (1152, 0)))
    assert NC.plan_rows((4096,), [(1,), ()], 1152) == (4096, ((0, 0), (0, 0)))
    assert NC.plan_rows((2, 7), [(7,), (1, 7)], 8) == (7, ((0, 8), (0, 8)))
    assert NC.plan_rows((2, 3, 5), [(2, 1, 5)], 8) is None


# -- argument errors (NumPy arrays: the checks run before any GPU work) -----------------------
def z(*shape: int, dtype: object = F16) -> np.ndarray:
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "args, kw, err, words",
    [
        ((z(2, 8), z(8), z(8)), {"kind": "group"}, K.KernelArgumentError, ["kind", "'group'"]),
        ((z(2, 8), z(8), z(8)), {"eps": 0.0}, K.KernelArgumentError, ["eps", "0.0"]),
        ((z(2, 8), z(8), z(8)), {"eps": float("nan")}, K.KernelArgumentError, ["eps"]),
        ((z(2, 8), z(8), z(8)), {"eps": True}, K.KernelArgumentError, ["eps", "True"]),
        (([[0.0] * 8], z(8), z(8)), {}, K.KernelArgumentError, ["x must be an array", "list"]),
        ((z(2, 8), 0.0, z(8)), {}, K.KernelArgumentError, ["shift must be an array"]),
        ((z(2, 8), z(8), z(8)), {"weight": [1.0] * 8}, K.KernelArgumentError, ["weight"]),
        ((z(2, 8, dtype=np.float64),) * 3, {}, K.KernelDTypeError, ["float64"]),
        ((z(2, 8, dtype=np.int32),) * 3, {}, K.KernelDTypeError, ["int32"]),
        ((z(2, 8), z(8, dtype=np.float32), z(8)), {}, K.KernelDTypeError,
         ["shift dtype float32", "float16"]),
        ((z(2, 8), z(8), z(8)), {"bias": z(8, dtype=np.float32)}, K.KernelDTypeError,
         ["bias dtype float32"]),
        ((z(2, 0), z(0), z(0)), {}, K.KernelShapeError, ["(2, 0)", "1 <= D"]),
        ((z(2, 16385), z(16385), z(16385)), {}, K.KernelShapeError, ["(2, 16385)", "16384"]),
        ((z(), z(8), z(8)), {}, K.KernelShapeError, ["()", "[..., D]"]),
        ((z(2, 8), z(4), z(8)), {}, K.KernelShapeError, ["shift (4,)", "(2, 8)", "D=8"]),
        ((z(2, 8), z(8), z(3, 8)), {}, K.KernelShapeError, ["scale (3, 8)"]),
        ((z(2, 8), z(1, 2, 8), z(8)), {}, K.KernelShapeError, ["shift (1, 2, 8)"]),
        ((z(2, 8), z(8), z(8)), {"weight": z(1, 8)}, K.KernelShapeError, ["weight (1, 8)"]),
        ((z(2, 8), z(8), z(8)), {"bias": z(4)}, K.KernelShapeError, ["bias (4,)", "(8,)"]),
        ((z(2, 3, 5, 8), z(2, 1, 5, 8), z(8)), {}, K.KernelShapeError,
         ["shift (2, 1, 5, 8)", "(2, 3, 5, 8)", "expand it first"]),
        ((z(2, 8, dtype=np.float32),) * 3, {"as_dtype": "bfloat16"}, K.KernelDTypeError,
         ["16-bit"]),
        ((z(2, 8, dtype=np.uint16),) * 3, {"as_dtype": "int8"}, K.KernelDTypeError,
         ["as_dtype"]),
        ((z(2, 8, dtype=np.uint16), z(8), z(8, dtype=np.uint16)), {"as_dtype": "bfloat16"},
         K.KernelDTypeError, ["shift dtype float16", "uint16"]),
    ],
)  # fmt: skip
def test_argument_errors(args, kw, err, words) -> None:
    with pytest.raises(err) as info:
        K.modulated_norm(*args, **kw)
    assert isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_too_many_rows_is_refused_before_anything_is_allocated() -> None:
    x = np.lib.stride_tricks.as_strided(z(1, 8), shape=(2**16, 2**16, 8), strides=(0, 0, 2))
    with pytest.raises(K.KernelShapeError, match="rows; at most"):
        K.modulated_norm(x, z(8), z(8))


def test_valid_numpy_arrays_reach_the_gpu_check() -> None:
    with pytest.raises((K.KernelArgumentError, K.KernelLaunchError)) as info:
        K.modulated_norm(z(2, 3, 8), z(2, 1, 8), z(8))
    assert "CuPy" in str(info.value) or "cupy" in str(info.value)


# -- the launch table and the specs ----------------------------------------------------------
@pytest.mark.parametrize("d", [1, 7, 256, 257, 1000, 1152, 2048, 3072, 4097, 8192, 16384])
def test_norm_config_holds_a_row_and_fills_a_tile(d: int) -> None:
    cfg = CFG.norm_config(d)
    assert cfg.block_d >= d and cfg.block_d in CFG.NORM_BLOCKS
    assert cfg.block_d == 256 or cfg.block_d < 2 * d  # the smallest block that fits
    assert cfg.rows * cfg.block_d == max(CFG.NORM_TILE, cfg.block_d)
    assert 4 <= cfg.num_warps <= 16 and cfg.rows & (cfg.rows - 1) == 0
    with pytest.raises(KeyError):
        CFG.norm_config(CFG.NORM_MAX_D + 1)


def test_specs_cover_every_variant_and_match_the_kernel() -> None:
    specs = CFG.norm_specs()
    n = len(CFG.NORM_DTYPES) * len(CFG.NORM_KINDS) * len(CFG.NORM_BLOCKS) * 2
    assert len(specs) == n == len({repr(s) for s in specs})
    assert all(s in CFG.all_specs() for s in specs)
    src = (ROOT / "kernels" / "triton_norm.py").read_text()
    head = src[src.index("def modulated_norm_fwd(") : src.index('"""Grid')]
    params = [p.strip().split(":")[0] for p in head.split("(", 1)[1].split(",") if p.strip()]
    params = [p for p in params if p and not p.startswith(")")]
    for s in specs:
        assert list(s.signature) == params
        assert set(s.constexprs) == {"BLOCK_D", "ROWS", "RMS"}
        aligned = "D" in s.divisible
        assert set(s.divisible) >= {"X", "SHIFT", "SCALE", "W", "B", "Y"}
        assert aligned == ({"shift_so", "shift_si", "scale_so", "scale_si"} <= set(s.divisible))
        assert "n_rows" not in s.divisible and "inner" not in s.divisible
    with pytest.raises(KeyError):
        CFG.norm_spec("float16", "group", 256, True)
    with pytest.raises(KeyError):
        CFG.norm_spec("float64", "layer", 256, True)
    with pytest.raises(KeyError):  # a config made for another block
        CFG.norm_spec("float16", "layer", 512, True, CFG.norm_config(256))


# -- end to end through Triton's interpreter ----------------------------------------------------
@needs_triton
def test_entry_point_through_the_triton_interpreter() -> None:
    run_interpreted(__file__, timeout=600)


TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}  # max |err| / max(1, |want|)


def _formula(x, shift, scale, w, b, kind, eps) -> np.ndarray:
    x = x.astype(np.float64)
    xc = x - x.mean(-1, keepdims=True) if kind == "layer" else x
    y = xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps)
    y = y if w is None else y * w.astype(np.float64)
    y = y if b is None else y + b.astype(np.float64)
    return y * (1 + scale.astype(np.float64)) + shift.astype(np.float64)


def _form(name: str, shape: tuple, rng: np.random.Generator) -> tuple:
    """A shift/scale shape for x ``shape`` (B, S, D as its first, second-last, last dims)."""
    b, s, d = shape[0], shape[-2], shape[-1]
    if name == "rand":
        keep = shape[int(rng.integers(0, len(shape))) : -1]
        return tuple(1 if rng.random() < 0.5 else n for n in keep) + (d,)
    table = {
        "b1d": (b, 1, d),
        "1d": (1, d),
        "d": (d,),
        "bsd": shape,
        "sd": (s, d),
        "1sd": (1, s, d),
    }
    return table[name]


def _interpreted_cases(seed: int) -> int:  # pragma: no cover - runs in the subprocess
    """Fake CuPy + interpreted launch; prints PASS/FAIL per case, returns the failures."""
    from types import SimpleNamespace

    import ml_dtypes
    import triton.language as tl
    from interp_host import dev, install_fake_cupy

    install_fake_cupy()

    import kernels.norm as knorm
    from kernels import triton_norm

    tl_types = {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32}
    scalar = {"i32": np.int32, "i64": np.int64, "fp32": np.float32}

    from interp_host import RawPointer as Ptr

    launches = []

    def fake_launch(ck, grid, args, *, device, stream=None):
        spec = ck.spec
        assert stream is None and device == 0, (stream, device)  # CuPy's current stream
        params = spec.runtime_params
        assert len(args) == len(params), (len(args), params)
        call = []
        for name, a in zip(params, args):
            ty = spec.signature[name]
            if ty.startswith("*"):
                assert isinstance(a, np.uint64), (name, type(a))
                call.append(Ptr(int(a), tl_types[ty[1:]]))
            else:
                assert isinstance(a, scalar[ty]), (name, ty, type(a))
                call.append(float(a) if ty == "fp32" else int(a))
            if name in spec.divisible:
                assert int(a) % 16 == 0, f"{name}={int(a)} breaks its divisibility promise"
        launches.append(spec)
        triton_norm.modulated_norm_fwd[grid](*call, **spec.constexprs)

    knorm.launch = fake_launch
    knorm.compile_kernel = lambda spec: SimpleNamespace(spec=spec)
    np_dt = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
    rng = np.random.default_rng(seed)
    cases = []
    forms = ["b1d", "1d", "d", "bsd", "sd", "1sd"]
    k = 0
    for dt in ("float16", "bfloat16", "float32"):
        for kind in ("layer", "rms"):
            for d in (1, 7, 40, 64, 200, 1152, 3000, 8192):
                cases.append((dt, kind, (2, 3, d), forms[k % 6], forms[(k + 2) % 6], k % 4))
                k += 1
    for _ in range(100):  # random ranks 2-4, any D up to 300
        lead = tuple(int(n) for n in rng.integers(1, 4, size=int(rng.integers(1, 4))))
        shape = lead + (int(rng.integers(1, 300)),)
        dt, kind = str(rng.choice(list(np_dt))), str(rng.choice(["layer", "rms"]))
        cases.append((dt, kind, shape, "rand", "rand", int(rng.integers(4))))
    failed = 0
    for dt, kind, shape, f_sh, f_sc, wb in cases:
        d = shape[-1]
        sh_shape, sc_shape = _form(f_sh, shape, rng), _form(f_sc, shape, rng)
        if NC.plan_rows(shape[:-1], [sh_shape[:-1], sc_shape[:-1]], d) is None:
            continue
        t = np_dt[dt]
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(t)
        sh, sc = (rng.standard_normal(s).astype(t) for s in (sh_shape, sc_shape))
        w = (rng.random(d) + 0.5).astype(t) if wb & 1 else None
        b = rng.standard_normal(d).astype(t) if wb & 2 else None
        eps = float(rng.choice([1e-6, 1e-5, 1e-2]))
        xin = dev(x)
        if len(launches) % 5 == 1:  # a non-contiguous x (a transposed copy's transpose)
            xin = dev(np.ascontiguousarray(np.swapaxes(x, 0, -1)))
            xin = np.swapaxes(xin, 0, -1)
        y = knorm.modulated_norm(
            xin, dev(sh), dev(sc), kind=kind, eps=eps, weight=None if w is None else dev(w),
            bias=None if b is None else dev(b),
        )  # fmt: skip
        want = _formula(x, sh, sc, w, b, kind, eps)
        got = np.asarray(y).view(np.ndarray).astype(np.float64)
        err = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
        ok = y.dtype == x.dtype and y.shape == x.shape and err <= TOL[dt]
        spec = launches[-1]
        tag = f"{dt} {kind} x{shape} shift{sh_shape} scale{sc_shape} w={w is not None} "
        c = spec.constexprs
        tag += f"b={b is not None} block {c['BLOCK_D']} rows {c['ROWS']}"
        print(f"{'PASS' if ok else 'FAIL'} {tag} aligned={'D' in spec.divisible}: err {err:.1e}")
        failed += not ok
    # a misaligned view (offset by one element) is copied, keeping the alignment promises
    base = dev(rng.standard_normal(2 * 64 + 1).astype(np.float16))
    x = base[1:].reshape(2, 64)
    zero = dev(np.zeros(64, np.float16))
    y = knorm.modulated_norm(x, zero, zero)
    want = _formula(x, zero, zero, None, None, "layer", 1e-6)
    err = float(np.abs(y.view(np.ndarray) - want).max())
    print(f"{'PASS' if err < 4e-3 else 'FAIL'} misaligned x copied: err {err:.1e}")
    failed += err >= 4e-3
    # bf16 bits in uint16 storage (CuPy without bfloat16), read through as_dtype
    xb = rng.standard_normal((3, 5, 24)).astype(ml_dtypes.bfloat16)
    sb = rng.standard_normal((3, 1, 24)).astype(ml_dtypes.bfloat16)
    u16 = [dev(a.view(np.uint16)) for a in (xb, sb)]
    y = knorm.modulated_norm(u16[0], u16[1], u16[1], kind="rms", as_dtype="bfloat16")
    got = y.view(np.ndarray).view(ml_dtypes.bfloat16).astype(np.float64)
    want = _formula(xb, sb, sb, None, None, "rms", 1e-6)
    err = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
    ok = y.dtype == np.uint16 and launches[-1].signature["X"] == "*bf16" and err <= TOL["bfloat16"]
    print(f"{'PASS' if ok else 'FAIL'} bf16 as uint16 storage (as_dtype): err {err:.1e}")
    failed += not ok
    empty = knorm.modulated_norm(dev(np.zeros((0, 3, 8), np.float16)), zero[:8], zero[:8])
    print(f"{'PASS' if empty.shape == (0, 3, 8) else 'FAIL'} empty x: no launch")
    return failed


if __name__ == "__main__":  # the interpreted run (TRITON_INTERPRET=1 set by the test)
    sys.exit(1 if _interpreted_cases(int(sys.argv[1])) else 0)
