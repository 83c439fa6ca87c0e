"""Launch configurations and the compile specs of every kernel variant (no Triton needed).

The attention table maps ``(head_dim, dtype, causal)`` to block sizes, warps and pipeline
stages. The values were chosen by timing candidates on one H200 (``benchmarks/attention_gpu.py
--sweep``, recorded in docs/gpu-runs.md); there is no run-time autotuner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DTYPES: tuple[str, ...] = ("float16", "bfloat16")
MERGE_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32")
HEAD_DIMS: tuple[int, ...] = (32, 64, 128, 256)
TRITON_DTYPE: dict[str, str] = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


@dataclass(frozen=True)
class AttentionConfig:
    """Tile of one attention program: BLOCK_M query rows x BLOCK_N keys per step."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# (head_dim, dtype, causal) -> config. fp16 and bf16 share tiles (same wgmma rates).
_BY_HEAD_DIM: dict[tuple[int, bool], AttentionConfig] = {
    (32, False): AttentionConfig(128, 64, 4, 3),
    (32, True): AttentionConfig(128, 64, 4, 3),
    (64, False): AttentionConfig(128, 64, 8, 3),
    (64, True): AttentionConfig(128, 64, 8, 3),
    (128, False): AttentionConfig(128, 128, 8, 3),
    (128, True): AttentionConfig(128, 128, 8, 3),
    (256, False): AttentionConfig(128, 64, 8, 2),
    (256, True): AttentionConfig(128, 64, 8, 2),
}
ATTENTION_CONFIGS: dict[tuple[int, str, bool], AttentionConfig] = {
    (d, dt, c): cfg for (d, c), cfg in _BY_HEAD_DIM.items() for dt in DTYPES
}
#: The attention kernels' epilogues (constexpr ``ACCUM``): O in q's dtype; float32 O and LSE
#: written fresh ("init"); merged into a float32 running (O, LSE) ("merge").
ACCUM_NONE, ACCUM_INIT, ACCUM_MERGE = 0, 1, 2
ACCUM_MODES: tuple[int, ...] = (ACCUM_NONE, ACCUM_INIT, ACCUM_MERGE)
MERGE_ROWS_PER_PROGRAM: dict[int, int] = {32: 128, 64: 64, 128: 32, 256: 16}
MERGE_NUM_WARPS = 4


@dataclass(frozen=True)
class KernelSpec:
    """Everything ``compile_kernel`` needs besides the Triton function (found by ``fn_name``).

    ``signature`` maps every parameter, in order, to a Triton type or ``"constexpr"``;
    ``divisible`` names the parameters promised to be multiples of 16 (pointers: 16-byte
    aligned), which lets Triton emit 16-byte loads.
    """

    fn_name: str
    signature: dict[str, str]
    constexprs: dict[str, Any]
    options: dict[str, Any]
    divisible: tuple[str, ...] = field(default=())

    @property
    def runtime_params(self) -> tuple[str, ...]:
        """The parameters passed at launch, in order (constexprs are compiled in)."""
        return tuple(k for k, v in self.signature.items() if v != "constexpr")


def attention_config(head_dim: int, dtype: str, causal: bool) -> AttentionConfig:
    """The table entry; KeyError for an unsupported combination."""
    return ATTENTION_CONFIGS[(head_dim, dtype, bool(causal))]


#: The stride arguments of both attention entry points, in order.
ATTENTION_STRIDES = (
    "stride_qb", "stride_qm", "stride_kb", "stride_kn",
    "stride_vb", "stride_vn", "stride_ob", "stride_om",
)  # fmt: skip


def _attention_kernel_spec(
    fn_name: str, sig: dict, cfg: AttentionConfig, head_dim: int, causal: bool, accum: int
) -> KernelSpec:
    """The spec of an attention entry point with runtime signature ``sig`` (the constexprs,
    compile options and divisibility hints are common to both)."""
    if accum not in ACCUM_MODES:
        raise KeyError(f"no attention epilogue ACCUM={accum!r}; use one of {ACCUM_MODES}")
    consts = {"HEAD_DIM": head_dim, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n}
    consts.update({"CAUSAL": bool(causal), "ACCUM": accum})
    sig.update({k: "constexpr" for k in consts})
    return KernelSpec(
        fn_name=fn_name,
        signature=sig,
        constexprs=consts,
        options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
        divisible=("Q", "K", "V", "O", "LSE") + ATTENTION_STRIDES,
    )


def attention_signature(dtype: str, accum: int = ACCUM_NONE) -> dict[str, str]:
    """The run-time signature the attention forward kernels share (``attention_fwd``, its TMA
    and warp-specialized variants): Q/K/V in ``dtype``, O in it too or float32 for the
    accumulating epilogues, LSE float32, the strides, lengths, offsets, scale and LSE flag."""
    ty = TRITON_DTYPE[dtype]
    o_ty = ty if accum == ACCUM_NONE else "fp32"
    sig = {"Q": f"*{ty}", "K": f"*{ty}", "V": f"*{ty}", "O": f"*{o_ty}", "LSE": "*fp32"}
    sig.update({s: "i64" for s in ATTENTION_STRIDES})
    sig.update({"seq_q": "i32", "seq_k": "i32", "q_offset": "i32", "k_offset": "i32"})
    sig.update({"qk_scale": "fp32", "write_lse": "i32"})
    return sig


def attention_spec(
    head_dim: int,
    dtype: str,
    causal: bool,
    config: AttentionConfig | None = None,
    accum: int = ACCUM_NONE,
) -> KernelSpec:
    """Spec of ``attention_fwd`` for one variant (``config`` overrides the table, for sweeps;
    ``accum`` 1/2: the float32-O epilogues of :data:`ACCUM_MODES`).

    >>> attention_spec(128, "bfloat16", True, accum=ACCUM_MERGE).signature["O"]
    '*fp32'
    """
    cfg = config or attention_config(head_dim, dtype, causal)
    sig = attention_signature(dtype, accum)
    return _attention_kernel_spec("attention_fwd", sig, cfg, head_dim, causal, accum)


def qdp_signature(dtype: str) -> dict[str, str]:
    """The run-time signature of the TensorRT plugin entries (``attention_fwd_qdp``,
    ``attention_fwd_ws_qdp``) in QDP's order: input pointers, int32 scalars (the only extra
    arguments a QDP kernel gets: strides, lengths, offsets, the scale's float32 bits, the LSE
    flag), output pointers."""
    ty = TRITON_DTYPE[dtype]
    sig = {"Q": f"*{ty}", "K": f"*{ty}", "V": f"*{ty}"}
    sig.update({s: "i32" for s in ATTENTION_STRIDES})
    for s in ("seq_q", "seq_k", "q_offset", "k_offset", "qk_scale_bits", "write_lse"):
        sig[s] = "i32"
    sig.update({"O": f"*{ty}", "LSE": "*fp32"})
    return sig


def attention_qdp_spec(head_dim: int, dtype: str, causal: bool) -> KernelSpec:
    """Spec of ``attention_fwd_qdp`` (the TensorRT plugin's entry: inputs, i32 scalars,
    outputs), with the table's config for ``attention_fwd``."""
    cfg = attention_config(head_dim, dtype, causal)
    sig = qdp_signature(dtype)
    return _attention_kernel_spec("attention_fwd_qdp", sig, cfg, head_dim, causal, ACCUM_NONE)


def merge_spec(head_dim: int, dtype: str, o2_dtype: str | None = None) -> KernelSpec:
    """Spec of ``attention_merge`` for rows of ``head_dim`` values of ``dtype`` (O1 and the
    output); ``o2_dtype`` (default ``dtype``) may be a 16-bit dtype when ``dtype`` is float32:
    a 16-bit partial merged straight into a float32 running state (Ring with cuDNN blocks)."""
    o2 = o2_dtype or dtype
    if o2 != dtype and (dtype != "float32" or o2 not in DTYPES):
        raise ValueError(f"merge of {o2} into {dtype}: only 16-bit into float32 mixes")
    ty = TRITON_DTYPE[dtype]
    sig = {"O1": f"*{ty}", "LSE1": "*fp32", "O2": f"*{TRITON_DTYPE[o2]}", "LSE2": "*fp32"}
    sig.update({"O_out": f"*{ty}", "LSE_out": "*fp32", "n_rows": "i64"})
    consts = {"HEAD_DIM": head_dim, "BLOCK_R": MERGE_ROWS_PER_PROGRAM[head_dim]}
    sig.update({k: "constexpr" for k in consts})
    return KernelSpec(
        fn_name="attention_merge",
        signature=sig,
        constexprs=consts,
        options={"num_warps": MERGE_NUM_WARPS, "num_stages": 1},
        divisible=("O1", "LSE1", "O2", "LSE2", "O_out", "LSE_out"),
    )


# -- the fused adaLN norm (kernels/triton_norm.py) --------------------------------------------
NORM_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32")
NORM_KINDS: tuple[str, ...] = ("layer", "rms")
#: Row widths the kernel holds in registers (powers of two); D up to the largest.
NORM_BLOCKS: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384)
NORM_MAX_D = NORM_BLOCKS[-1]
#: Elements one program holds: small rows are packed several to a program.
NORM_TILE = 4096
#: The Triton module of each entry point other than the attention ones.
SOURCE_MODULES: dict[str, str] = {
    "modulated_norm_fwd": "triton_norm",
    "activation_fwd": "triton_activation",
    "attention_fwd_ws": "gluon_attention",
    "attention_fwd_ws_qdp": "gluon_attention",
}


@dataclass(frozen=True)
class NormConfig:
    """``rows`` rows of ``block_d`` columns per program, ``num_warps`` warps."""

    block_d: int
    rows: int
    num_warps: int


def norm_block(d: int) -> int:
    """The smallest table width >= ``d``; KeyError past :data:`NORM_MAX_D`."""
    for b in NORM_BLOCKS:
        if d <= b:
            return b
    raise KeyError(f"row width {d} exceeds the norm kernel's {NORM_MAX_D}")


def norm_config(d: int) -> NormConfig:
    """Rows of ``d`` values: ``NORM_TILE`` elements a program (one row from 4096 on), about
    16 float32 values a thread (4 warps at least, 16 at most)."""
    block = norm_block(d)
    rows = max(1, NORM_TILE // block)
    return NormConfig(block, rows, max(4, min(16, rows * block // 512)))


def norm_spec(
    dtype: str, kind: str, block_d: int, aligned: bool, config: NormConfig | None = None
) -> KernelSpec:
    """Spec of ``modulated_norm_fwd`` for one variant. ``aligned``: D and the shift/scale
    strides are multiples of 16 (16-byte vector loads); otherwise only the pointers are
    promised 16-byte aligned. ``config`` overrides the table (for sweeps)."""
    cfg = config or norm_config(block_d)
    if kind not in NORM_KINDS or dtype not in NORM_DTYPES or cfg.block_d != block_d:
        raise KeyError(f"no norm kernel for {dtype} {kind} block {block_d} ({cfg})")
    ty = TRITON_DTYPE[dtype]
    ptrs = ("X", "SHIFT", "SCALE", "W", "B", "Y")
    strides = ("shift_so", "shift_si", "scale_so", "scale_si")
    sig = {p: f"*{ty}" for p in ptrs}
    sig.update({"n_rows": "i64", "D": "i32", "inner": "i64"})
    sig.update({s: "i64" for s in strides})
    sig.update({"eps": "fp32", "has_w": "i32", "has_b": "i32"})
    consts = {"BLOCK_D": block_d, "ROWS": cfg.rows, "RMS": kind == "rms"}
    sig.update({k: "constexpr" for k in consts})
    return KernelSpec(
        fn_name="modulated_norm_fwd",
        signature=sig,
        constexprs=consts,
        options={"num_warps": cfg.num_warps, "num_stages": 1},
        divisible=ptrs + (("D",) + strides if aligned else ()),
    )


def norm_specs() -> list[KernelSpec]:
    """Every norm variant: dtype x kind x row width x aligned or not."""
    return [
        norm_spec(dt, kind, b, aligned)
        for dt in NORM_DTYPES
        for kind in NORM_KINDS
        for b in NORM_BLOCKS
        for aligned in (True, False)
    ]


# -- the elementwise activation (kernels/triton_activation.py) --------------------------------
ACT_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32")
#: The activation kernel is on (gpu/check_activation.py: 138/138 against float64 on an H200,
#: docs/gpu-runs.md); ``TRTDSL_ACTIVATION_KERNEL=0`` turns it off (``1`` on; :func:`env_switch`),
#: read at each call.
ACTIVATION_KERNEL_ENV = "TRTDSL_ACTIVATION_KERNEL"
USE_ACTIVATION_KERNEL = True


_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def env_switch(name: str, default: bool) -> bool:
    """An on/off environment switch: 1/true/on/yes or 0/false/off/no (any case), ``default``
    when unset or empty; ValueError naming the variable otherwise.

    >>> env_switch("TRTDSL_NO_SUCH_SWITCH", True)  # unset: the default
    True
    """
    raw = os.environ.get(name, "")
    val = raw.strip().lower()
    if not val:
        return default
    if val in _ON or val in _OFF:
        return val in _ON
    raise ValueError(f"{name}={raw!r}: use one of {', '.join(_ON + _OFF)}")


def use_activation_kernel() -> bool:
    """Whether the cupy backend runs activations through the kernel (see above)."""
    return env_switch(ACTIVATION_KERNEL_ENV, USE_ACTIVATION_KERNEL)


#: The kinds in the order of the kernel's ``KIND`` codes.
ACT_KINDS: tuple[str, ...] = ("relu", "sigmoid", "gelu_erf", "gelu_tanh", "silu")
#: Elements per program and warps: 16 a thread (two 16-byte vectors at 16 bits).
ACT_BLOCK = 4096
ACT_NUM_WARPS = 8


def act_spec(dtype: str, kind: str, aligned: bool) -> KernelSpec:
    """Spec of ``activation_fwd`` for one variant. ``aligned``: the element count is a multiple
    of 16 (the tail mask then allows 16-byte vector loads); pointers are always promised
    16-byte aligned."""
    if kind not in ACT_KINDS or dtype not in ACT_DTYPES:
        raise KeyError(f"no activation kernel for {dtype} {kind}")
    ty = TRITON_DTYPE[dtype]
    sig = {"X": f"*{ty}", "Y": f"*{ty}", "n": "i64", "BLOCK": "constexpr", "KIND": "constexpr"}
    return KernelSpec(
        fn_name="activation_fwd",
        signature=sig,
        constexprs={"BLOCK": ACT_BLOCK, "KIND": ACT_KINDS.index(kind)},
        options={"num_warps": ACT_NUM_WARPS, "num_stages": 1},
        divisible=("X", "Y") + (("n",) if aligned else ()),
    )


def act_specs() -> list[KernelSpec]:
    """Every activation variant: dtype x kind x aligned or not."""
    return [act_spec(dt, k, a) for dt in ACT_DTYPES for k in ACT_KINDS for a in (True, False)]


def all_specs() -> list[KernelSpec]:
    """Every variant the public entry points can launch (what the compile test builds): the
    table's attention tiles in every epilogue (:data:`ACCUM_MODES`), the warp-specialized
    attention's tiles, merge, norm, activation."""
    specs = [
        attention_spec(d, dt, c, accum=a) for (d, dt, c) in ATTENTION_CONFIGS for a in ACCUM_MODES
    ]
    specs += [merge_spec(d, dt) for d in HEAD_DIMS for dt in MERGE_DTYPES]
    specs += [merge_spec(d, "float32", o2) for d in HEAD_DIMS for o2 in DTYPES]
    from .tma_configs import TMA_CONFIGS, tma_spec  # imports this module

    specs += [
        tma_spec(d, dt, c, cfg, accum=a)
        for (d, dt, c), cfg in TMA_CONFIGS.items()
        for a in ACCUM_MODES
    ]
    from .ws_configs import WS_CONFIGS, ws_spec  # imports this module

    specs += [
        ws_spec(d, dt, c, cfg, accum=a)
        for (d, dt, c), cfg in WS_CONFIGS.items()
        for a in ACCUM_MODES
    ]
    return specs + norm_specs() + act_specs()
