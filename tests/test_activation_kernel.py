"""The activation kernel (kernels/activations.py, triton_activation.py) and its routing, no GPU:

- every argument error of ``kernels.activation``;
- the specs (one per dtype x kind x aligned) against the kernel's parameters;
- the entry point end to end in a subprocess: Triton's interpreter (``TRITON_INTERPRET=1``)
  runs ``activation_fwd`` on host memory behind a stand-in for CuPy that offers only what a
  capturable launch may use, with the launch arguments checked against the spec (types, count,
  16-byte alignment promises), against the float64 formulas of ``kernels/reference.py`` for
  every kind and dtype, odd sizes, ranks 0-3, inf/NaN/huge inputs, ``out=``, in place, a
  non-contiguous x and bf16 bits in uint16 storage;
- the Activation op: a run context's ``fused_activation`` hook is used when it answers, the
  reference otherwise; the cupy context's hook takes the kernel only where it fits.

The compile of every spec for sm_90 is in tests/test_kernels_compile.py.
"""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from kernel_modules import ROOT, K, module, needs_triton, run_interpreted

import trtdsl as td

CFG = module("configs")

F16 = np.float16


# -- argument errors (NumPy arrays: the checks run before any GPU work) -----------------------
def z(*shape: int, dtype: object = F16) -> np.ndarray:
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "args, kw, err, words",
    [
        ((z(4), "gelu"), {}, K.KernelArgumentError, ["kind", "'gelu'"]),
        ((z(4), "tanh"), {}, K.KernelArgumentError, ["kind", "'tanh'"]),
        (([0.0] * 4, "relu"), {}, K.KernelArgumentError, ["x must be an array", "list"]),
        ((z(2, 3, dtype=np.float64), "relu"), {}, K.KernelDTypeError, ["float64", "(2, 3)"]),
        ((z(2, 3, dtype=np.int32), "silu"), {}, K.KernelDTypeError, ["int32"]),
        ((z(2, 3), "silu"), {"out": [0.0] * 6}, K.KernelArgumentError, ["out must be an array"]),
        ((z(2, 3), "silu"), {"out": z(3, 2)}, K.KernelShapeError, ["out", "(3, 2)", "(2, 3)"]),
        ((z(2, 3), "silu"), {"out": z(2, 3, dtype=np.float32)}, K.KernelShapeError,
         ["out float32", "float16"]),
        ((z(2, 3, dtype=np.float32), "relu"), {"as_dtype": "bfloat16"}, K.KernelDTypeError,
         ["16-bit"]),
        ((z(2, 3, dtype=np.uint16), "relu"), {"as_dtype": "int8"}, K.KernelDTypeError,
         ["as_dtype"]),
        ((z(2, 3, dtype=np.uint16), "relu"), {}, K.KernelDTypeError, ["uint16"]),
    ],
)  # fmt: skip
def test_argument_errors(args, kw, err, words) -> None:
    with pytest.raises(err) as info:
        K.activation(*args, **kw)
    assert isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_too_many_elements_is_refused_before_anything_is_allocated() -> None:
    x = np.lib.stride_tricks.as_strided(z(1), shape=(2**22, 2**22), strides=(0, 0))
    with pytest.raises(K.KernelShapeError, match="elements; at most"):
        K.activation(x, "relu")


def test_valid_numpy_arrays_reach_the_gpu_check() -> None:
    with pytest.raises((K.KernelArgumentError, K.KernelLaunchError)) as info:
        K.activation(z(2, 3), "gelu_tanh")
    assert "CuPy" in str(info.value) or "cupy" in str(info.value)


# -- the specs ----------------------------------------------------------------------------------
def test_specs_cover_every_variant_and_match_the_kernel() -> None:
    specs = CFG.act_specs()
    assert len(specs) == len(CFG.ACT_DTYPES) * len(CFG.ACT_KINDS) * 2 == len(set(map(repr, specs)))
    every = CFG.all_specs()
    assert all(s in every for s in specs)
    assert CFG.SOURCE_MODULES["activation_fwd"] == "triton_activation"
    src = (ROOT / "kernels" / "triton_activation.py").read_text()
    head = src[src.index("def activation_fwd(") : src.index('"""Grid')]
    params = [p.strip().split(":")[0] for p in head.split("(", 1)[1].split(")")[0].split(",")]
    for s in specs:
        assert list(s.signature) == params == ["X", "Y", "n", "BLOCK", "KIND"]
        assert s.runtime_params == ("X", "Y", "n")
        assert s.signature["X"] == s.signature["Y"]
        assert set(s.divisible) in ({"X", "Y"}, {"X", "Y", "n"})
        assert 0 <= s.constexprs["KIND"] < len(CFG.ACT_KINDS)
    assert {(s.signature["X"], s.constexprs["KIND"], "n" in s.divisible) for s in specs} == {
        (f"*{t}", k, a) for t in ("fp16", "bf16", "fp32") for k in range(5) for a in (True, False)
    }
    with pytest.raises(KeyError):
        CFG.act_spec("float16", "tanh", True)
    with pytest.raises(KeyError):
        CFG.act_spec("float64", "relu", True)


# -- end to end through Triton's interpreter ----------------------------------------------------
@needs_triton
def test_entry_point_through_the_triton_interpreter() -> None:
    run_interpreted(__file__, timeout=300)


#: |got - want| <= ATOL + RTOL * |want| (one rounding of float32 math, float32 erf/exp)
TOL = {"float32": (1e-6, 1e-5), "float16": (1e-5, 1.5e-3), "bfloat16": (1e-5, 1e-2)}


def close(got: np.ndarray, want: np.ndarray, dtype: str) -> tuple[bool, float]:
    """Within TOL where finite; NaN and infinities exactly where the reference has them."""
    atol, rtol = TOL[dtype]
    fin = np.isfinite(want)
    err = np.abs(got[fin] - want[fin]) / (atol + rtol * np.abs(want[fin]))
    worst = float(err.max()) if err.size else 0.0
    same_special = np.array_equal(got[~fin], want[~fin], equal_nan=True)
    return worst <= 1.0 and same_special, worst


def _interpreted_cases(seed: int) -> int:  # pragma: no cover - runs in the subprocess
    """Fake CuPy + interpreted launch; prints PASS/FAIL per case, returns the failures."""
    import ml_dtypes
    import triton.language as tl
    from interp_host import dev, install_fake_cupy
    from interp_host import poisoned_empty as empty

    from kernels import reference as R

    install_fake_cupy()

    import kernels.activations as kact
    from kernels import triton_activation
    from kernels.errors import KernelArgumentError

    np.seterr(all="ignore")  # inf/NaN inputs: the interpreter's float32 math warns

    tl_types = {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32}

    from interp_host import RawPointer as Ptr

    launches = []

    def fake_launch(ck, grid, args, *, device, stream=None):
        spec = ck.spec
        assert stream is None and device == 0, (stream, device)  # CuPy's current stream
        params = spec.runtime_params
        assert len(args) == len(params) == 3, (len(args), params)
        assert isinstance(args[0], np.uint64) and isinstance(args[1], np.uint64)
        assert isinstance(args[2], np.int64)
        for name, a in zip(params, args):
            if name in spec.divisible:
                assert int(a) % 16 == 0, f"{name}={int(a)} breaks its divisibility promise"
        assert grid == (math.ceil(int(args[2]) / spec.constexprs["BLOCK"]), 1, 1), grid
        ty = tl_types[spec.signature["X"][1:]]
        launches.append(spec)
        call = [Ptr(int(args[0]), ty), Ptr(int(args[1]), ty), int(args[2])]
        triton_activation.activation_fwd[grid](*call, **spec.constexprs)

    kact.launch = fake_launch
    kact.compile_kernel = lambda spec: SimpleNamespace(spec=spec)
    np_dt = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
    big = {"float16": 60000.0, "bfloat16": 1e30, "float32": 1e30}
    rng = np.random.default_rng(seed)
    failed = 0

    def record(ok: bool, line: str) -> None:
        nonlocal failed
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {line}")

    shapes = [(), (1,), (15,), (16,), (3, 5), (4095,), (2, 2048), (4097,), (3, 7, 601)]
    for dt, t in np_dt.items():
        for kind in CFG.ACT_KINDS:
            for shape in shapes:
                x = np.asarray(rng.standard_normal(shape) * 4).astype(t)
                flat = x.reshape(-1)
                specials = [0.0, -0.0, np.inf, -np.inf, np.nan, big[dt], -big[dt], -90.0, 90.0]
                k = min(flat.size, len(specials))
                flat[:k] = np.array(specials[:k]).astype(t)  # first elements: edge values
                y = kact.activation(dev(x), kind)
                got = np.asarray(y).view(np.ndarray).astype(np.float64)
                ok, worst = close(got, R.activation(x, kind), dt)
                spec = launches[-1]
                ok = ok and y.dtype == x.dtype and y.shape == x.shape
                ok = ok and spec.constexprs["KIND"] == CFG.ACT_KINDS.index(kind)
                ok = ok and ("n" in spec.divisible) == (x.size % 16 == 0)
                record(ok, f"{dt} {kind} x{shape} aligned={'n' in spec.divisible}: {worst:.2f}")
    # a non-contiguous x (a transpose) is copied; out= and in place write the given array
    x = dev(rng.standard_normal((40, 33)).astype(np.float16)).T
    y = kact.activation(x, "silu")
    ok, worst = close(np.asarray(y).astype(np.float64), R.activation(x, "silu"), "float16")
    record(ok and not x.flags.c_contiguous, f"non-contiguous x copied: {worst:.2f}")
    x = dev(rng.standard_normal((7, 9)).astype(np.float32))
    want = R.activation(x, "gelu_erf")
    out = empty((7, 9), np.float32)
    y = kact.activation(x, "gelu_erf", out=out)
    ok, worst = close(np.asarray(out).astype(np.float64), want, "float32")
    record(ok and y is out, f"out= is written and returned: {worst:.2f}")
    y = kact.activation(x, "gelu_erf", out=x)
    ok, worst = close(np.asarray(x).astype(np.float64), want, "float32")
    record(ok and y is x, f"in place (out=x): {worst:.2f}")
    try:
        kact.activation(x, "relu", out=dev(np.zeros((9, 7), np.float32)).T)
        record(False, "a non-contiguous out was accepted")
    except KernelArgumentError as e:
        record("C-contiguous" in str(e) and "(7, 9)" in str(e), f"non-contiguous out: {e}")
    # bf16 bits in uint16 storage (CuPy without bfloat16), read through as_dtype
    xb = rng.standard_normal((3, 50)).astype(ml_dtypes.bfloat16)
    y = kact.activation(dev(xb.view(np.uint16)), "gelu_tanh", as_dtype="bfloat16")
    got = np.asarray(y).view(np.ndarray).view(ml_dtypes.bfloat16).astype(np.float64)
    ok, worst = close(got, R.activation(xb, "gelu_tanh"), "bfloat16")
    ok = ok and y.dtype == np.uint16 and launches[-1].signature["X"] == "*bf16"
    record(ok, f"bf16 as uint16 storage (as_dtype): {worst:.2f}")
    n = len(launches)
    empty_y = kact.activation(dev(np.zeros((0, 3), np.float16)), "relu")
    record(empty_y.shape == (0, 3) and len(launches) == n, "empty x: no launch")
    return failed


# -- the op's hook and the cupy context's routing ----------------------------------------------
def _gelu_net(dtype: str = "float32") -> td.Network:
    net = td.Network("act")
    net.output(net.input("x", (3, 5), dtype).gelu(approximate="tanh"), "y")
    return net


def test_op_uses_the_hook_when_it_answers_and_the_reference_otherwise() -> None:
    from trtdsl.backends.interpreter import RunContext
    from trtdsl.ops.elementwise import FusedActivationContext

    net = _gelu_net()
    (layer,) = [lay for lay in net.layers if lay.op.name == "activation"]
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    asked = []

    class Fused(RunContext):
        def __init__(self, answer):
            super().__init__(net, {}, None)
            self.answer = answer

        def fused_activation(self, lay, inputs):
            asked.append((lay, inputs))
            return self.answer

    sentinel = [np.full((3, 5), 7.0, np.float32)]
    assert isinstance(Fused(None), FusedActivationContext)
    assert not isinstance(RunContext(net, {}, None), FusedActivationContext)
    assert layer.op.reference(layer, [x], Fused(sentinel)) is sentinel
    assert asked[-1][0] is layer and asked[-1][1][0] is x
    u = math.sqrt(2 / math.pi) * (x.astype(np.float64) + 0.044715 * x.astype(np.float64) ** 3)
    want = 0.5 * x * (1 + np.tanh(u))
    for ctx in (Fused(None), RunContext(net, {}, None)):  # None: the reference
        (got,) = layer.op.reference(layer, [x], ctx)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert len(asked) == 2
    np.testing.assert_allclose(net.run({"x": x})["y"], want, rtol=2e-6, atol=1e-7)


class FakeGpuArray:
    """Shape, dtype, flags and address: what the cupy context's hook reads."""

    def __init__(self, dtype: str, contiguous: bool = True, ptr: int = 4096) -> None:
        self.dtype = _Dt(dtype)  # str() gives the name, as CuPy's dtypes (bfloat16 included)
        self.shape = (3, 5)
        self.flags = SimpleNamespace(c_contiguous=contiguous)
        self.data = SimpleNamespace(ptr=ptr)


class _Dt:
    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


def test_cupy_context_routes_to_the_kernel_where_it_fits(monkeypatch) -> None:
    import trtdsl.kernels.activations as kact

    from trtdsl.backends.cupy.backend import CupyContext

    calls = []

    def fake_kernel(x, kind):
        calls.append((x, kind))
        return "from-kernel"

    monkeypatch.setattr(kact, "activation", fake_kernel)
    ctx = CupyContext.__new__(CupyContext)  # no CuPy here: only the routing is under test
    ctx.use_kernels = True
    net0 = td.Network("off")
    off = F_act(net0.input("x", (3, 5), "float16"), "gelu_tanh").producer
    monkeypatch.setenv(CFG.ACTIVATION_KERNEL_ENV, "0")
    assert ctx.fused_activation(off, [FakeGpuArray("float16")]) is None  # switched off
    assert calls == []
    monkeypatch.delenv(CFG.ACTIVATION_KERNEL_ENV, raising=False)  # on by default
    net = td.Network("route")
    x = net.input("x", (3, 5), "float16")
    layers = {k: F_act(x, k).producer for k in CFG.ACT_KINDS}
    for kind, lay in layers.items():
        for dt in CFG.ACT_DTYPES:
            a = FakeGpuArray(dt)
            assert ctx.fused_activation(lay, [a]) == ["from-kernel"]
            assert calls[-1] == (a, kind)
    n = len(calls)
    lay = layers["gelu_tanh"]
    not_for_the_kernel = [
        FakeGpuArray("float64"),
        FakeGpuArray("float16", contiguous=False),
        FakeGpuArray("float16", ptr=4098),  # a view two bytes into a buffer
    ]
    for a in not_for_the_kernel:
        assert ctx.fused_activation(lay, [a]) is None
    ctx.use_kernels = False
    assert ctx.fused_activation(lay, [FakeGpuArray("float16")]) is None
    assert len(calls) == n


def F_act(x, kind: str):
    """The DSL call of each activation kind."""
    from trtdsl import functional as F

    calls = {
        "relu": lambda: x.relu(),
        "sigmoid": lambda: x.sigmoid(),
        "gelu_erf": lambda: x.gelu(),
        "gelu_tanh": lambda: x.gelu(approximate="tanh"),
        "silu": lambda: F.silu(x),
    }
    out = calls[kind]()
    assert out.producer.attrs["kind"] == kind
    return out


if __name__ == "__main__":  # the interpreted run (TRITON_INTERPRET=1 set by the test)
    sys.exit(1 if _interpreted_cases(int(sys.argv[1])) else 0)
