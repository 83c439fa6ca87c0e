"""Ahead-of-time compilation of the Triton kernels to sm_90 cubins, with a disk cache.

``compile_kernel(spec)`` runs ``triton.compile`` (no GPU needed) and keeps the result under
``$TRTDSL_KERNEL_CACHE`` (default ``~/.cache/trtdsl/kernels``) as ``<key>.cubin`` plus
``<key>.json`` (plain JSON metadata, written last and atomically, so a present JSON means a
complete entry), plus ``<key>.ptx`` for callers that ask for the PTX (``with_ptx=True``: the
TensorRT plugin hands PTX to TensorRT). The key hashes the kernel module's source, the Triton
function's own cache key, the spec (signature, constexprs, options, alignment promises), the
Triton version and the target.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .configs import SOURCE_MODULES, KernelSpec
from .errors import KernelCompileError

ARCH = 90
CACHE_ENV = "TRTDSL_KERNEL_CACHE"
FORMAT = 1  # bump when the cached JSON layout changes


@dataclass(frozen=True)
class CompiledKernel:
    """A cubin and what a launcher needs to call it.

    ``params`` are the kernel's parameters in order: the spec's run-time parameters, then the
    ``global_scratch`` and ``profile_scratch`` pointers Triton 3.6 appends (pass a buffer of
    ``grid size * *_scratch_size`` bytes when the size is > 0, else a null pointer).
    """

    key: str
    name: str
    cubin: bytes
    num_warps: int
    num_ctas: int
    shared: int
    global_scratch_size: int
    global_scratch_align: int
    profile_scratch_size: int
    profile_scratch_align: int
    params: tuple[str, ...]
    triton_version: str
    arch: int
    from_cache: bool = False
    ptx: str = field(default="", repr=False)  # "" unless compiled or loaded with_ptx

    def metadata(self) -> dict[str, Any]:
        """The JSON-able part (everything but the cubin bytes, the PTX and ``from_cache``)."""
        d = asdict(self)
        del d["cubin"], d["from_cache"], d["ptx"]
        d["params"] = list(self.params)
        d["cubin_sha256"] = hashlib.sha256(self.cubin).hexdigest()
        d["format"] = FORMAT
        return d

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], cubin: bytes) -> CompiledKernel:
        """Inverse of ``metadata()``; checks the cubin against its recorded hash."""
        if meta.get("format") != FORMAT:
            raise KernelCompileError(f"cache entry format {meta.get('format')} != {FORMAT}")
        if hashlib.sha256(cubin).hexdigest() != meta["cubin_sha256"]:
            raise KernelCompileError(f"cubin of cache entry {meta['key']} does not match its hash")
        fields = {k: v for k, v in meta.items() if k not in ("cubin_sha256", "format")}
        fields["params"] = tuple(fields["params"])
        return cls(cubin=cubin, from_cache=True, **fields)


def cache_dir() -> Path:
    """Where cubins are kept: ``$TRTDSL_KERNEL_CACHE`` or ``~/.cache/trtdsl/kernels``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "trtdsl" / "kernels"


def _triton() -> Any:
    try:
        import triton
    except ImportError as e:
        raise KernelCompileError(
            "compiling the trtdsl kernels needs Triton 3.6 (pip install 'triton==3.6.*')"
        ) from e
    return triton


def _source_module(name: str) -> Any:
    """The Triton module defining entry point ``name`` (attention's unless configs says)."""
    return importlib.import_module(f".{SOURCE_MODULES.get(name, 'triton_attention')}", __package__)


def _kernel_fn(name: str) -> Any:
    return getattr(_source_module(name), name)


def _is_gluon(fn: Any) -> bool:
    """Whether ``fn`` is a Gluon kernel (compiled from a ``GluonASTSource``)."""
    try:
        from triton.experimental.gluon._runtime import GluonJITFunction
    except ImportError:  # pragma: no cover - a Triton without Gluon
        return False
    return isinstance(fn, GluonJITFunction)


def cache_key(spec: KernelSpec, arch: int = ARCH) -> str:
    """sha256 over source, spec, Triton version and target (needs Triton for the fn's key)."""
    triton = _triton()
    source = Path(_source_module(spec.fn_name).__file__).read_text()
    fn = _kernel_fn(spec.fn_name)
    blob = json.dumps(
        {
            "format": FORMAT,
            "source": hashlib.sha256(source.encode()).hexdigest(),
            "fn": fn.cache_key,
            "spec": asdict(spec),
            "triton": triton.__version__,
            "target": ["cuda", arch, 32],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_cached(
    key: str, directory: Path | None = None, with_ptx: bool = False
) -> CompiledKernel | None:
    """The cache entry for ``key`` (with its PTX if asked), or None when absent or unreadable."""
    d = directory or cache_dir()
    meta_path, cubin_path = d / f"{key}.json", d / f"{key}.cubin"
    try:
        meta = json.loads(meta_path.read_text())
        ck = CompiledKernel.from_metadata(meta, cubin_path.read_bytes())
        return replace(ck, ptx=(d / f"{key}.ptx").read_text()) if with_ptx else ck
    except (OSError, ValueError, KeyError, TypeError, KernelCompileError):
        return None


def store(kernel: CompiledKernel, directory: Path | None = None) -> None:
    """Write ``<key>.cubin`` then ``<key>.json``, each through a temp file and ``os.replace``."""
    d = directory or cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    _atomic_write(d / f"{kernel.key}.cubin", kernel.cubin)
    if kernel.ptx:
        _atomic_write(d / f"{kernel.key}.ptx", kernel.ptx.encode())
    meta = json.dumps(kernel.metadata(), indent=1, sort_keys=True).encode()
    _atomic_write(d / f"{kernel.key}.json", meta)


def _triton_compile(spec: KernelSpec, key: str, arch: int, with_ptx: bool) -> CompiledKernel:
    triton = _triton()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _kernel_fn(spec.fn_name)
    names = list(spec.signature)
    attrs = {(names.index(p),): [["tt.divisibility", 16]] for p in spec.divisible}
    source_type = ASTSource
    if _is_gluon(fn):
        from triton.experimental.gluon._runtime import GluonASTSource as source_type
    sig, consts = dict(spec.signature), spec.constexprs
    src = source_type(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    try:
        ck = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(spec.options))
    except Exception as e:
        raise KernelCompileError(f"triton.compile failed for {spec}: {e}") from e
    md = ck.metadata
    return CompiledKernel(
        key=key,
        name=md.name,
        cubin=bytes(ck.asm["cubin"]),
        num_warps=int(md.num_warps),
        num_ctas=int(md.num_ctas),
        shared=int(md.shared),
        global_scratch_size=int(md.global_scratch_size or 0),
        global_scratch_align=int(md.global_scratch_align or 1),
        profile_scratch_size=int(md.profile_scratch_size or 0),
        profile_scratch_align=int(md.profile_scratch_align or 1),
        params=spec.runtime_params + ("global_scratch", "profile_scratch"),
        triton_version=triton.__version__,
        arch=arch,
        ptx=str(ck.asm["ptx"]) if with_ptx else "",
    )


def compile_kernel(
    spec: KernelSpec,
    arch: int = ARCH,
    directory: Path | None = None,
    use_cache: bool = True,
    with_ptx: bool = False,
) -> CompiledKernel:
    """The cubin of ``spec`` for ``sm_{arch}``: from the disk cache, else compiled and stored.
    ``with_ptx``: also the PTX (an entry stored without it is compiled again)."""
    key = cache_key(spec, arch)
    if use_cache:
        hit = load_cached(key, directory, with_ptx)
        if hit is not None:
            return hit
    kernel = _triton_compile(spec, key, arch, with_ptx)
    if use_cache:
        store(kernel, directory)
    return kernel
