"""TensorRT plugins made from the trtdsl Triton kernels with ``tensorrt.plugin`` (QDP), AOT.

``trtdsl::flash_attention_lse``: inputs q [B, H, Sq, D], k and v [B, H, Sk, D] (float16 or
bfloat16, D in 32/64/128/256); attributes ``causal`` (bool), ``q_offset``, ``k_offset`` (int),
``scale`` (float); outputs o [B, H, Sq, D] (q's dtype) and lse [B, H, Sq] float32 (natural-log
log-sum-exp of each query row, -inf for a row that sees no key). It is what the ``attention``
op lowers to when its log-sum-exp is asked for (Ring attention's merge needs it).

* ``@trtp.register`` describes the outputs from the input descriptors (shape expressions and
  dtypes only; TensorRT calls it with placeholder shapes first, then with symbolic ones).
* ``@trtp.aot_impl`` returns the kernel compiled ahead of time: the same Triton flash-attention
  forward as ``trtdsl.kernels`` (``attention_fwd``, inlined into ``attention_fwd_qdp``, whose
  parameters follow the QDP convention: input pointers, int32 scalars, output pointers), the
  same config table, the same JSON+cubin disk cache (with its PTX). It returns the PTX (the form
  the 11.4 docstring names), the launch parameters (grid ``(cdiv(Sq, BLOCK_M), B*H)``, block
  ``num_warps*32``, the kernel's shared memory) and the extra scalar arguments as
  ``SymInt32`` expressions of the symbolic shapes: 8 strides (elements, linear layout),
  ``seq_q``, ``seq_k``, ``q_offset``, ``k_offset``, the float32 bits of ``scale*log2(e)``
  (QDP extra arguments are 32-bit integers only; the kernel bit-casts them back) and
  ``write_lse = 1``. TensorRT embeds the kernel in the engine: no Python at run time.
* Triton 3.6 appends two pointer parameters (``global_scratch``, ``profile_scratch``) after the
  outputs; QDP passes exactly inputs, extra arguments and outputs. These kernels use no scratch
  (both sizes are 0, checked), so :func:`qdp_ptx` removes the two declarations from the PTX
  entry after checking the body never reads them: the kernel TensorRT loads takes exactly the
  arguments QDP passes (no reliance on how TensorRT fills missing parameters).

``trtdsl::flash_attention_lse_ws``: the same inputs, attributes, o and lse, from the
warp-specialized Gluon kernel (``attention_fwd_ws_qdp``: ``attention_fwd_ws``'s body in QDP's
order), plus a third output that nothing reads: int32, :data:`WS_SCRATCH_BYTES` per program,
the global scratch of the kernel's in-kernel TMA descriptors. It lands on Triton's
``global_scratch`` parameter (the one after the outputs), so only ``profile_scratch`` is cut.
Grid ``(cdiv(Sq, 2 * BLOCK_M), B*H)``, 384 threads. The lowering takes it where
:func:`ws_plugin_config` finds a tile (head_dim 64/128, a static key length, a causal query
chunk not before its keys); the pointer kernel's plugin serves the rest.

Registration is lazy: importing trtdsl imports neither ``tensorrt`` nor ``tensorrt.plugin``;
:func:`plugin_module` imports ``tensorrt.plugin`` when a network that needs the plugin is lowered
with the real module (the contract tests pass the fake's ``plugin`` attribute instead).
Nothing here has run inside a TensorRT engine (TensorRT's builder is not installable here).

This module has no ``from __future__ import annotations`` on purpose: ``tensorrt.plugin``
inspects the annotations of the decorated functions, which must be real objects.
"""

import functools
import importlib
import math
import re
import struct
from typing import Any

from ...kernels import configs as kconfigs
from ...kernels import ws_configs as W
from ...kernels.attention import MAX_GRID_Y
from .errors import LoweringError

PLUGIN_NAMESPACE = "trtdsl"
FLASH_ATTENTION_LSE = "flash_attention_lse"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{FLASH_ATTENTION_LSE}"
FLASH_ATTENTION_LSE_WS = "flash_attention_lse_ws"
PLUGIN_WS_ID = f"{PLUGIN_NAMESPACE}::{FLASH_ATTENTION_LSE_WS}"
PLUGINS = f"{PLUGIN_ID} / {FLASH_ATTENTION_LSE_WS}"  # errors of what both share
#: Bytes of the ws plugin's third output per program (its in-kernel TMA descriptors).
WS_SCRATCH_BYTES = W.SCRATCH_PER_PROGRAM
#: The fewest query rows a ws program covers (sizes the scratch for every tile of the table).
WS_MIN_ROWS = min(cfg.rows_per_cta for cfg in W.WS_CONFIGS.values())
#: Attributes in registration order (the AOT call passes all of them positionally in this order).
ATTRS = ("causal", "q_offset", "k_offset", "scale")
#: The kernel's int32 scalar parameters between the input and the output pointers.
EXTRA_ARGS = (
    "stride_qb", "stride_qm", "stride_kb", "stride_kn", "stride_vb", "stride_vn", "stride_ob",
    "stride_om", "seq_q", "seq_k", "q_offset", "k_offset", "qk_scale_bits", "write_lse",
)  # fmt: skip
LOG2E = 1.4426950408889634
DTYPES = {"HALF": "float16", "BF16": "bfloat16"}  # trt.DataType member -> kernel dtype
_INT32 = (-(2**31), 2**31 - 1)
_registered: dict[int, Any] = {}  # id(plugin module) -> the module (kept alive)


def supported(dtype: str, head_dim: Any) -> bool:
    """True if the kernels have a variant for ``dtype`` and a static ``head_dim``."""
    return dtype in kconfigs.DTYPES and head_dim in kconfigs.HEAD_DIMS


def plugin_module(trt: Any) -> Any:
    """``tensorrt.plugin`` of the module ``trt``: its ``plugin`` attribute (the fake has one;
    the real package has it once imported), else ``import <trt>.plugin``."""
    mod = getattr(trt, "plugin", None)
    if mod is not None:
        return mod
    try:
        return importlib.import_module(f"{trt.__name__}.plugin")
    except ImportError as e:
        raise LoweringError(
            f"the attention log-sum-exp plugin needs {trt.__name__}.plugin (TensorRT's Python "
            f"plugin package, TensorRT >= 10.7); lower with plugins=False to use primitive "
            f"layers instead: {e}"
        ) from e


def qk_scale_bits(scale: float) -> int:
    """The float32 bits of ``scale * log2(e)`` as a signed int32 (the kernel bit-casts)."""
    return struct.unpack("<i", struct.pack("<f", float(scale) * LOG2E))[0]


def _int32(name: str, value: int) -> int:
    if not _INT32[0] <= int(value) <= _INT32[1]:
        raise LoweringError(f"{PLUGINS}: {name}={value} does not fit the kernels' int32")
    return int(value)


def offset_args(trtp: Any, causal: bool, q_offset: int, k_offset: int, sq: Any, sk: Any) -> list:
    """The kernel's ``q_offset, k_offset`` arguments: the kernel only uses their difference
    ``shift`` (key j visible to row i iff j <= i + shift), and in int32. Causal: ``(sq +
    clamp(shift, -sq, sk), sq)`` as shape expressions, the same mask for every length, both in
    ``[0, sq + sk]``, so neither the difference nor ``i + shift`` can wrap; full: ``(0, 0)``.

    >>> import trtdsl.testing.fake_tensorrt.plugin as trtp    # static shapes: constants
    >>> value = lambda args: [getattr(a, "constant_value", lambda: a)() for a in args]
    >>> value(offset_args(trtp, True, 5, 2, 4, 6))            # shift 3: (4 + 3, 4)
    [7, 4]
    >>> value(offset_args(trtp, True, 2**31 - 1, -(2**31), 4, 6))  # clamped to sk: (4 + 6, 4)
    [10, 4]
    """
    _int32("q_offset", q_offset), _int32("k_offset", k_offset)
    if not causal:
        return [0, 0]
    shift = int(q_offset) - int(k_offset)
    return [trtp.min(trtp.max(sq + shift, 0), sq + sk), sq]


def qdp_ptx(ptx: str, name: str, n_params: int, keep_global_scratch: bool = False) -> str:
    """``ptx`` with the entry ``name`` cut to the parameters QDP passes: its first ``n_params``
    (inputs, int32 scalars, outputs), plus Triton's global-scratch pointer where
    ``keep_global_scratch`` (the ws plugin passes its third output there).

    Only Triton's trailing scratch pointers may go: the entry must have exactly two more
    parameters, 64-bit, and the PTX must never mention the dropped ones outside the declaration.
    """
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, re.S)
    if m is None:
        raise LoweringError(f"{PLUGINS}: no .entry {name}( ... ) in the kernel's PTX")
    decls = [d.strip() for d in m.group(1).split(",") if d.strip()]
    if len(decls) != n_params + 2:
        raise LoweringError(
            f"{PLUGINS}: {name} declares {len(decls)} parameters, expected {n_params} plus "
            "Triton's 2 scratch pointers"
        )
    keep = n_params + int(bool(keep_global_scratch))
    if ".u64" not in decls[n_params]:
        raise LoweringError(f"{PLUGINS}: {decls[n_params]!r} is not a scratch pointer")
    for d in decls[keep:]:
        pname = d.split()[-1]
        if ".u64" not in d or ptx.count(pname) != 1:
            raise LoweringError(f"{PLUGINS}: the scratch parameter {d!r} is used by {name}")
    params = ",\n\t".join(decls[:keep])
    return ptx[: m.start(1)] + "\n\t" + params + "\n" + ptx[m.end(1) :]


def _aot(spec: Any, scratch_bytes: int, plugin_id: str) -> tuple[str, str, Any]:
    """(kernel name, PTX for QDP, CompiledKernel) of the plugin entry ``spec``, from
    trtdsl.kernels' ahead-of-time compile (disk cache; needs Triton on a miss). The kernel may
    use at most ``scratch_bytes`` of global scratch a program (a plugin that gives any keeps the
    parameter after the outputs, the others cut it), no profile scratch and one CTA a program."""
    from ...kernels.compile import compile_kernel

    ck = compile_kernel(spec, with_ptx=True)
    if ck.profile_scratch_size or ck.num_ctas != 1 or ck.global_scratch_size > scratch_bytes:
        raise LoweringError(
            f"{plugin_id}: {ck.name} asks for {ck.global_scratch_size} B of global scratch "
            f"(the plugin gives {scratch_bytes} B a program), {ck.profile_scratch_size} B of "
            f"profile scratch or {ck.num_ctas} CTAs"
        )
    keep = scratch_bytes > 0  # the plugin passes an output there: the parameter must stay
    return ck.name, qdp_ptx(ck.ptx, ck.name, len(spec.runtime_params), keep), ck


@functools.cache
def aot_kernel(head_dim: int, dtype: str, causal: bool) -> tuple[str, str, Any]:
    """:func:`_aot` of ``attention_fwd_qdp`` (the pointer kernel, no scratch) for one variant."""
    return _aot(kconfigs.attention_qdp_spec(head_dim, dtype, causal), 0, PLUGIN_ID)


@functools.cache
def aot_kernel_ws(head_dim: int, dtype: str, causal: bool) -> tuple[str, str, Any]:
    """:func:`_aot` of ``attention_fwd_ws_qdp`` (the warp-specialized kernel) for one variant;
    its PTX keeps the global-scratch parameter, which receives the plugin's third output."""
    return _aot(W.ws_qdp_spec(head_dim, dtype, causal), WS_SCRATCH_BYTES, PLUGIN_WS_ID)


def shapes_fit(q_shape: tuple, k_shape: tuple) -> bool:
    """Whether the static dims of q [..., H, Sq, D] and k [..., H, Sk, D] are within both
    kernels' launch and int32 limits: (batch x heads) <= 65535 (grid y), Sq >= 1 (grid x),
    Sq*D and Sk*D < 2**31 (the int32 strides). Dynamic dims (None) are taken on trust: the
    launch fails past them.

    >>> shapes_fit((2, 8, 4096, 128), (2, 8, 4096, 128)), shapes_fit((70000, 1, 64), (70000, 1, 64))
    (True, False)
    """
    lead = list(q_shape[:-2])
    if None not in lead and math.prod(lead) > MAX_GRID_Y:
        return False
    sq, sk, d = q_shape[-2], k_shape[-2], q_shape[-1]
    if sq is not None and sq < 1:
        return False
    return all(s is None or d is None or s * d <= _INT32[1] for s in (sq, sk))


def ws_scratch_words(batch: Any, heads: Any, seq_q: Any, cdiv: Any) -> Any:
    """int32 words of the ws plugin's third output: :data:`WS_SCRATCH_BYTES` for each program of
    :data:`WS_MIN_ROWS` query rows of each (batch, head); ``cdiv`` is ``trtp.cdiv`` for shape
    expressions, or any ceiling division for numbers (the emulator).

    >>> ws_scratch_words(2, 3, 300, lambda a, b: -(-a // b))  # 3 programs x 6 heads x 160
    2880
    """
    return cdiv(seq_q, WS_MIN_ROWS) * batch * heads * (WS_SCRATCH_BYTES // 4)


def ws_plugin_config(layer: Any) -> W.WsConfig | None:
    """The warp-specialized tile for ``layer`` (an attention with LSE that the plugins lower),
    or None for the pointer kernel's plugin: it needs a head_dim and dtype of the ws table, a
    static key length >= 1 (the kernel needs a key; TMA descriptors need a non-empty tensor)
    and, causal, ``q_offset >= k_offset`` (no row without a key). ``TRTDSL_ATTENTION_WS=0``
    (``ws_configs.use_ws``) while lowering keeps the pointer kernel: the engine keeps the choice."""
    if not W.use_ws():  # TRTDSL_ATTENTION_WS=0 while lowering: fixed into the engine built
        return None
    a, q_t, k_t = layer.attrs, layer.input_types[0], layer.input_types[1]
    cfg = W.ws_config(q_t.shape[-1], q_t.dtype.name, bool(a["causal"]))
    s_k = k_t.shape[-2]
    if cfg is None or s_k is None:
        return None
    return cfg if W.ws_call_ok(a["causal"], a["q_offset"], a["k_offset"], s_k) else None


def assemble_cubin(ptx: str, arch: int = 90) -> bytes:
    """The PTX assembled by Triton's bundled ``ptxas`` for ``sm_{arch}a`` (checks that the
    PTX :func:`qdp_ptx` rewrote is valid; TensorRT itself gets the PTX)."""
    import subprocess
    import tempfile
    from pathlib import Path

    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "k.ptx", Path(d) / "k.cubin"
        src.write_text(ptx)
        cmd = [ptxas, f"-arch=sm_{arch}a", str(src), "-o", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise LoweringError(f"ptxas failed on the plugin's PTX: {res.stderr.strip()}")
        return out.read_bytes()


def _dtype_of(trt: Any, desc: Any, plugin_id: str) -> str:
    for member, name in DTYPES.items():
        if desc.dtype == getattr(trt.DataType, member):
            return name
    raise LoweringError(f"{plugin_id}: needs float16 or bfloat16 inputs, got {desc.dtype}")


def _constant(expr: Any, what: str, plugin_id: str) -> int:
    if not expr.is_constant:
        raise LoweringError(f"{plugin_id}: {what} must be static")
    return int(expr.constant_value())


def _variant(trt: Any, q: Any, k: Any, v: Any, plugin_id: str) -> tuple[str, int]:
    """(dtype, head_dim) of the AOT call's inputs; LoweringError unless one 16-bit dtype and a
    static head_dim."""
    dtype = _dtype_of(trt, q, plugin_id)
    if _dtype_of(trt, k, plugin_id) != dtype or _dtype_of(trt, v, plugin_id) != dtype:
        raise LoweringError(f"{plugin_id}: q, k and v need one dtype")
    return dtype, _constant(q.shape_expr[3], "head_dim", plugin_id)


def _launch(trtp: Any, q: Any, k: Any, d: int, rows: int, ck: Any, offsets: tuple, scale: float):
    """(KernelLaunchParams, SymIntExprs) of both plugins' kernels: a program per ``rows`` query
    rows of each (batch, head); the int32 arguments in the QDP entries' order."""
    bsz, heads, sq, sk = q.shape_expr[0], q.shape_expr[1], q.shape_expr[2], k.shape_expr[2]
    launch = trtp.KernelLaunchParams()
    launch.grid_x = trtp.cdiv(sq, rows)
    launch.grid_y = bsz * heads
    launch.block_x = ck.num_warps * 32
    launch.shared_mem = ck.shared
    values = [sq * d, d, sk * d, d, sk * d, d, sq * d, d, sq, sk]
    values += offset_args(trtp, *offsets, sq, sk)
    values += [qk_scale_bits(scale), 1]
    extra = trtp.SymIntExprs(len(values))
    for i, value in enumerate(values):
        extra[i] = trtp.SymInt32(value)
    return launch, extra


def _define(trt: Any, trtp: Any, names: list[str]) -> None:
    """Register the plugins ``names`` (of :data:`FLASH_ATTENTION_LSE` and
    :data:`FLASH_ATTENTION_LSE_WS`) and their AOT implementations with the plugin module ``trtp``
    (one already there, from an earlier registration, is not registered twice)."""
    TD = trtp.TensorDesc

    def lse_like(q: TD) -> TD:
        return trtp.from_shape_expr(
            (q.shape_expr[0], q.shape_expr[1], q.shape_expr[2]), dtype=trt.float32
        )

    if FLASH_ATTENTION_LSE in names:

        @trtp.register(PLUGIN_ID, lazy_register=True)
        def flash_attention_lse_desc(
            q: TD, k: TD, v: TD, causal: bool, q_offset: int, k_offset: int, scale: float
        ) -> tuple[TD, TD]:
            """o like q; lse [B, H, Sq] float32."""
            return q.like(), lse_like(q)

        @trtp.aot_impl(PLUGIN_ID)
        def flash_attention_lse_aot(
            q: TD,
            k: TD,
            v: TD,
            causal: bool,
            q_offset: int,
            k_offset: int,
            scale: float,
            outputs: tuple[TD, TD],
            tactic: int,
        ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
            """The pointer kernel, its launch parameters and its int32 scalar arguments."""
            dtype, d = _variant(trt, q, k, v, PLUGIN_ID)
            if not supported(dtype, d):
                raise LoweringError(f"{PLUGIN_ID}: no kernel for {dtype} head_dim {d}")
            cfg = kconfigs.attention_config(d, dtype, bool(causal))
            name, ptx, ck = aot_kernel(d, dtype, bool(causal))
            offsets = (bool(causal), q_offset, k_offset)
            launch, extra = _launch(trtp, q, k, d, cfg.block_m, ck, offsets, scale)
            return name, ptx, launch, extra

    if FLASH_ATTENTION_LSE_WS in names:

        @trtp.register(PLUGIN_WS_ID, lazy_register=True)
        def flash_attention_lse_ws_desc(
            q: TD, k: TD, v: TD, causal: bool, q_offset: int, k_offset: int, scale: float
        ) -> tuple[TD, TD, TD]:
            """o like q; lse [B, H, Sq] float32; the kernel's scratch: int32, WS_SCRATCH_BYTES per
            program of WS_MIN_ROWS query rows (no one reads it)."""
            dims = q.shape_expr[0], q.shape_expr[1], q.shape_expr[2]  # B, H, Sq
            words = ws_scratch_words(*dims, trtp.cdiv)
            return q.like(), lse_like(q), trtp.from_shape_expr((words,), dtype=trt.int32)

        @trtp.aot_impl(PLUGIN_WS_ID)
        def flash_attention_lse_ws_aot(
            q: TD,
            k: TD,
            v: TD,
            causal: bool,
            q_offset: int,
            k_offset: int,
            scale: float,
            outputs: tuple[TD, TD, TD],
            tactic: int,
        ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
            """The warp-specialized kernel (its global scratch is the third output)."""
            dtype, d = _variant(trt, q, k, v, PLUGIN_WS_ID)
            cfg = W.ws_config(d, dtype, bool(causal))
            if cfg is None or (causal and q_offset < k_offset):
                raise LoweringError(
                    f"{PLUGIN_WS_ID}: no warp-specialized kernel for {dtype} head_dim {d} "
                    f"causal={bool(causal)} q_offset={q_offset} k_offset={k_offset}"
                )
            name, ptx, ck = aot_kernel_ws(d, dtype, bool(causal))
            offsets = (bool(causal), q_offset, k_offset)
            launch, extra = _launch(trtp, q, k, d, cfg.rows_per_cta, ck, offsets, scale)
            return name, ptx, launch, extra


def register(trt: Any) -> Any:
    """Define the trtdsl plugins in ``trt``'s plugin module once; returns that module."""
    trtp = plugin_module(trt)
    if id(trtp) in _registered:
        return trtp
    ns = getattr(trtp.op, PLUGIN_NAMESPACE, None) if hasattr(trtp.op, PLUGIN_NAMESPACE) else None
    missing = [n for n in (FLASH_ATTENTION_LSE, FLASH_ATTENTION_LSE_WS) if not hasattr(ns, n)]
    if missing:
        _define(trt, trtp, missing)
    _registered[id(trtp)] = trtp
    return trtp


def add_flash_attention_lse(b: Any, layer: Any, q: Any, k: Any, v: Any) -> list[Any]:
    """Insert the plugin for ``layer`` (q, k, v: 4-D ITensors): the warp-specialized kernel's
    where :func:`ws_plugin_config` allows it, else the pointer kernel's; returns [o, lse]."""
    a = layer.attrs
    trtp = register(b.trt)
    ws = ws_plugin_config(layer) is not None
    name = FLASH_ATTENTION_LSE_WS if ws else FLASH_ATTENTION_LSE
    plugin_def = getattr(getattr(trtp.op, PLUGIN_NAMESPACE), name)
    create = plugin_def(
        q, k, v,
        causal=bool(a["causal"]), q_offset=_int32("q_offset", a["q_offset"]),
        k_offset=_int32("k_offset", a["k_offset"]), scale=float(a["scale"]),
    )  # fmt: skip
    lay = b.network.add_plugin(create, aot=True)
    b.name(lay, layer, name)
    return [lay.get_output(0), lay.get_output(1)]
