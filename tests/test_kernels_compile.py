"""The Triton kernels compile ahead of time for sm_90 on the CPU, the disk cache works, and the
public entry points refuse bad arguments before touching a GPU.

Compilation tests skip where Triton is not importable; the argument tests run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kernel_modules import (
    ROOT,
    K,
    fresh_triton_cache,  # noqa: F401  (autouse)
    module,
    needs_triton,
)

C = module("compile")
CFG = module("configs")

PKG = K.__name__  # "trtdsl.kernels" or "kernels"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kcache")


def spec_id(spec: CFG.KernelSpec) -> str:
    c = spec.constexprs
    ty = next(iter(spec.signature.values()))
    if spec.fn_name == "modulated_norm_fwd":
        kind = "rms" if c["RMS"] else "layer"
        aligned = "aligned" if "D" in spec.divisible else "unaligned"
        return f"{spec.fn_name}-{ty}-{kind}-d{c['BLOCK_D']}-{aligned}"
    if spec.fn_name == "activation_fwd":
        aligned = "aligned" if "n" in spec.divisible else "unaligned"
        return f"{spec.fn_name}-{ty}-{CFG.ACT_KINDS[c['KIND']]}-{aligned}"
    tag = "causal" if c.get("CAUSAL") else "full"
    accum = f"-accum{c['ACCUM']}" if c.get("ACCUM") else ""
    return f"{spec.fn_name}-{ty}-d{c['HEAD_DIM']}" + (f"-{tag}" if "CAUSAL" in c else "") + accum


@needs_triton
@pytest.mark.parametrize("spec", CFG.all_specs(), ids=spec_id)
def test_every_variant_compiles_for_sm90(spec: CFG.KernelSpec, cache: Path) -> None:
    ck = C.compile_kernel(spec, directory=cache)
    assert ck.cubin[:4] == b"\x7fELF", "not a cubin"
    assert ck.name.encode() in ck.cubin
    ws = spec.fn_name == "attention_fwd_ws"  # 3 warpgroups: two consumers and the loader
    assert ck.arch == 90 and ck.num_warps == spec.options["num_warps"] * (3 if ws else 1)
    assert ck.params == spec.runtime_params + ("global_scratch", "profile_scratch")
    assert 0 <= ck.shared <= 227 * 1024  # fits an H100/H200 block's opt-in shared memory
    # in-kernel TMA descriptors live in global scratch (the launcher provides it); the
    # accumulating epilogues store O by pointers (one descriptor fewer)
    tma = spec.fn_name == "attention_fwd_tma"
    descriptors = (3 if spec.constexprs.get("ACCUM") else 4) if tma else 0
    descriptors = (3 if spec.constexprs["ACCUM"] else 5) if ws else descriptors
    assert ck.global_scratch_size == 128 * descriptors and ck.profile_scratch_size == 0
    if spec.fn_name == "attention_fwd":
        assert ck.shared > 0  # the K/V pipeline lives in shared memory


@needs_triton
def test_disk_cache_hit_miss_and_invalidation(tmp_path: Path) -> None:
    spec = CFG.merge_spec(64, "float16")
    first = C.compile_kernel(spec, directory=tmp_path)
    assert not first.from_cache
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{first.key}.cubin", f"{first.key}.json"]  # no temp files left
    second = C.compile_kernel(spec, directory=tmp_path)
    assert second.from_cache and second.cubin == first.cubin and second.key == first.key
    # a changed key (other constexpr, other option, other target) misses
    other = CFG.merge_spec(128, "float16")
    assert C.cache_key(other) != first.key
    assert not C.compile_kernel(other, directory=tmp_path).from_cache
    slower = CFG.KernelSpec(
        spec.fn_name, spec.signature, spec.constexprs, {**spec.options, "num_warps": 8}
    )
    assert C.cache_key(slower) != first.key
    assert C.cache_key(spec, arch=100) != C.cache_key(spec, arch=90)
    # a corrupted cubin is not trusted: the entry is rebuilt
    (tmp_path / f"{first.key}.cubin").write_bytes(b"garbage")
    assert C.load_cached(first.key, tmp_path) is None
    rebuilt = C.compile_kernel(spec, directory=tmp_path)
    assert not rebuilt.from_cache and rebuilt.cubin == first.cubin


@needs_triton
def test_cache_key_covers_the_kernel_source(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = CFG.merge_spec(64, "float32")
    key = C.cache_key(spec)
    src_path = Path(importlib.import_module(f"{PKG}.triton_attention").__file__)
    real = Path.read_text

    def edited(self: Path, *a: object, **k: object) -> str:
        text = real(self, *a, **k)
        return text + "\n# edited\n" if self == src_path else text

    monkeypatch.setattr(Path, "read_text", edited)
    assert C.cache_key(spec) != key


@needs_triton
def test_metadata_json_round_trips(tmp_path: Path) -> None:
    ck = C.compile_kernel(CFG.merge_spec(32, "bfloat16"), directory=tmp_path)
    meta = json.loads((tmp_path / f"{ck.key}.json").read_text())  # plain JSON, no pickle
    assert meta == json.loads(json.dumps(ck.metadata()))
    back = C.CompiledKernel.from_metadata(meta, ck.cubin)
    assert back.from_cache and back.cubin == ck.cubin
    assert back.metadata() == ck.metadata()
    with pytest.raises(C.KernelCompileError):
        C.CompiledKernel.from_metadata(meta, ck.cubin + b"x")


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRTDSL_KERNEL_CACHE", str(tmp_path / "k"))
    assert C.cache_dir() == tmp_path / "k"
    monkeypatch.delenv("TRTDSL_KERNEL_CACHE")
    assert C.cache_dir() == Path.home() / ".cache" / "trtdsl" / "kernels"


def test_config_table_covers_every_variant() -> None:
    for d in CFG.HEAD_DIMS:
        for dt in CFG.DTYPES:
            for causal in (False, True):
                cfg = CFG.attention_config(d, dt, causal)
                assert cfg.block_m % 16 == 0 and cfg.block_n % 16 == 0
                spec = CFG.attention_spec(d, dt, causal)
                assert spec.constexprs["HEAD_DIM"] == d and spec.options["num_warps"] in (4, 8)
    with pytest.raises(KeyError):
        CFG.attention_config(96, "float16", False)


def test_package_imports_without_triton_cupy_or_cuda() -> None:
    """Every module imports in a Python where triton, cupy and cuda cannot be imported."""
    code = f"""
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("triton", "cupy", "cuda", "torch"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(ROOT)!r})
for m in ("", ".attention", ".compile", ".configs", ".errors", ".launch", ".prebuild",
          ".reference", ".triton_attention", ".validate", ".norm", ".norm_checks",
          ".triton_norm", ".activations", ".triton_activation", ".ws_configs",
          ".gluon_attention", ".tma_configs"):
    importlib.import_module({PKG!r} + m)
k = importlib.import_module({PKG!r})
try:
    k.compile.compile_kernel(k.configs.merge_spec(64, "float16"))
except k.KernelCompileError as e:
    print("OK", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout and "triton" in out.stdout


# ---- argument errors (NumPy arrays stand in for CuPy ones: checks run before any GPU work)

F16 = np.float16


def z(*shape: int, dtype: object = F16) -> np.ndarray:
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "q, k, v, kw, err, words",
    [
        (z(2, 64, 96), z(2, 64, 96), z(2, 64, 96), {}, K.KernelShapeError, ["96", "(2, 64, 96)"]),
        (z(64, 64), z(64, 64), z(64, 64), {}, K.KernelShapeError, ["(64, 64)", ">= 3"]),
        (z(2, 8, 64, dtype=np.float32),) * 3 + ({}, K.KernelDTypeError, ["float32"]),
        (z(2, 8, 64), z(2, 8, 64), z(2, 8, 64, dtype=np.float32), {}, K.KernelDTypeError,
         ["float16", "float32"]),
        (z(2, 8, 64), z(2, 9, 64), z(2, 10, 64), {}, K.KernelShapeError, ["(2, 9, 64)",
         "(2, 10, 64)"]),
        (z(2, 8, 64), z(3, 9, 64), z(3, 9, 64), {}, K.KernelShapeError, ["(2, 8, 64)",
         "(3, 9, 64)"]),
        (z(2, 8, 64), z(2, 9, 128), z(2, 9, 128), {}, K.KernelShapeError, ["(2, 9, 128)"]),
        (z(2, 8, 64),) * 3 + ({"scale": 0.0}, K.KernelArgumentError, ["scale"]),
        (z(2, 8, 64),) * 3 + ({"scale": float("nan")}, K.KernelArgumentError, ["scale"]),
        (z(2, 8, 64),) * 3 + ({"q_offset": 1.5}, K.KernelArgumentError, ["q_offset"]),
        (z(2, 8, 64),) * 3 + ({"k_offset": True}, K.KernelArgumentError, ["k_offset"]),
        (z(2, 8, 64),) * 3 + ({"k_offset": 2**31}, K.KernelArgumentError, ["k_offset"]),
        (z(2, 8, 64, dtype=np.float32),) * 3 + ({"as_dtype": "bfloat16"}, K.KernelDTypeError,
         ["16-bit"]),
        (z(2, 8, 64, dtype=np.uint16),) * 3 + ({"as_dtype": "int8"}, K.KernelDTypeError,
         ["as_dtype"]),
    ],
)  # fmt: skip
def test_flash_attention_argument_errors(q, k, v, kw, err, words) -> None:
    kw = {"scale": 0.125, **kw}
    with pytest.raises(err) as info:
        K.flash_attention(q, k, v, **kw)
    assert isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value)


def test_flash_attention_needs_gpu_arrays() -> None:
    """Valid NumPy inputs pass the checks and then fail for not being CuPy arrays."""
    with pytest.raises((K.KernelArgumentError, K.KernelLaunchError)):
        K.flash_attention(z(2, 8, 64), z(2, 9, 64), z(2, 9, 64), scale=0.125)


@pytest.mark.parametrize(
    "o1, l1, o2, l2, err, words",
    [
        (z(4, 64), z(4, dtype=np.float32), z(5, 64), z(5, dtype=np.float32), K.KernelShapeError,
         ["(4, 64)", "(5, 64)"]),
        (z(4, 64), z(5, dtype=np.float32), z(4, 64), z(4, dtype=np.float32), K.KernelShapeError,
         ["(5,)"]),
        (z(4, 64), z(4, dtype=np.float16), z(4, 64), z(4, dtype=np.float32), K.KernelDTypeError,
         ["float32"]),
        (z(4, 64, dtype=np.int32), z(4, dtype=np.float32), z(4, 64, dtype=np.int32),
         z(4, dtype=np.float32), K.KernelDTypeError, ["int32"]),
        (z(4, 48), z(4, dtype=np.float32), z(4, 48), z(4, dtype=np.float32), K.KernelShapeError,
         ["48"]),
        # mixed dtypes: only a 16-bit o2 into a float32 o1
        (z(4, 64), z(4, dtype=np.float32), z(4, 64, dtype=np.float32), z(4, dtype=np.float32),
         K.KernelDTypeError, ["float16/float32", "o1 float32 and o2 one of"]),
        (z(4, 64, dtype=np.float32), z(4, dtype=np.float32), z(4, 64, dtype=np.uint16),
         z(4, dtype=np.float32), K.KernelDTypeError, ["float32/uint16"]),
    ],
)  # fmt: skip
def test_merge_attention_argument_errors(o1, l1, o2, l2, err, words) -> None:
    with pytest.raises(err) as info:
        K.merge_attention(o1, l1, o2, l2)
    assert isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize(
    "o1, o2, words",
    [  # as_dtype reinterprets uint16 storage; it never turns one typed array into another
        (z(4, 64, dtype=np.uint16), z(4, 64), ["uint16/float16"]),
        (z(4, 64, dtype=np.float32), z(4, 64), ["float32/float16", "uint16 storage only"]),
        (z(4, 64), z(4, 64, dtype=np.uint16), ["float16/uint16"]),
    ],
)  # fmt: skip
def test_merge_as_dtype_reads_storage_only(o1, o2, words) -> None:
    lse = z(4, dtype=np.float32)
    with pytest.raises(K.KernelDTypeError) as info:
        K.merge_attention(o1, lse, o2, lse, as_dtype="bfloat16")
    assert isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("o2", ["float16", "bfloat16"])
def test_merge_takes_a_16_bit_partial_into_float32(o2) -> None:
    """check_merge accepts fp16/bf16 o2 with a float32 o1 (and bf16 bits in uint16 with
    as_dtype); the spec then types O2 16-bit and O1/O_out float32; nothing else mixes."""
    from trtdsl.kernels.validate import check_merge

    npdt = {"float16": np.float16, "bfloat16": np.uint16}[o2]
    as_dt = "bfloat16" if o2 == "bfloat16" else None
    got = check_merge(z(3, 5, 64, dtype=np.float32), z(3, 5, dtype=np.float32),
                      z(3, 5, 64, dtype=npdt), z(3, 5, dtype=np.float32), as_dt)  # fmt: skip
    assert got == (15, 64, "float32", o2)
    sig = CFG.merge_spec(64, "float32", o2).signature
    want = {"float16": "*fp16", "bfloat16": "*bf16"}[o2]
    assert (sig["O1"], sig["O2"], sig["O_out"]) == ("*fp32", want, "*fp32")
    assert CFG.merge_spec(64, "float32", o2) in CFG.all_specs()
    with pytest.raises(ValueError, match="only 16-bit into float32"):
        CFG.merge_spec(64, o2, "float32")
