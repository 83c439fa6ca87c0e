"""The warp-specialized attention forward (``attention_fwd_ws``, Gluon, Hopper only): when it
runs, its tiles and its compile specs (no Triton needed).

The kernel (``kernels/gluon_attention.py``) gives each CTA two consumer warpgroups of
``block_m`` query rows each and a one-warp TMA loader feeding a ``num_stages``-deep ring of K/V
tiles; ``overlap`` issues the next block's QK^T before the softmax of the current one,
``pingpong`` makes the two consumers take turns on the tensor cores (full attention only).

``flash_attention`` takes it when :func:`use_ws` says so (the module switch :data:`USE_WS`, or
``TRTDSL_ATTENTION_WS=1``/``0``), the variant has an entry in :data:`WS_CONFIGS` and the call
qualifies (:func:`ws_call_ok`: TMA-compatible arrays, and for causal calls a query offset at or
after the key offset, so every row sees a key); otherwise the TMA or pointer kernel runs. Like
the pointer kernel it has the ``ACCUM`` epilogues (``configs.ACCUM_MODES``: O in q's dtype, or a
float32 running (O, LSE) written or merged into), so ``flash_attention_into`` takes it too.

    >>> spec = ws_spec(128, "bfloat16", causal=False)
    >>> spec.fn_name, spec.constexprs["PINGPONG"], spec.options["num_warps"]
    ('attention_fwd_ws', True, 4)
"""

from __future__ import annotations

from dataclasses import dataclass

from .configs import (
    ACCUM_MODES,
    ACCUM_NONE,
    DTYPES,
    KernelSpec,
    attention_signature,
    env_switch,
    qdp_signature,
)

#: Environment override of :data:`USE_WS` ("1" on, "0" off), read at each call.
WS_ENV = "TRTDSL_ATTENTION_WS"
#: Module switch: the warp-specialized kernel for the variants in :data:`WS_CONFIGS`.
USE_WS = True
#: Query rows a CTA covers per consumer warpgroup: a CTA holds two.
CONSUMERS = 2
#: The head dims the kernel is written for.
HEAD_DIMS: tuple[int, ...] = (64, 128)
#: Bytes of global scratch one program needs: five in-kernel TMA descriptors (the loader's q,
#: k, v and each consumer's o); the accumulating epilogues store O by pointers (three).
SCRATCH_PER_PROGRAM = 5 * 128
SCRATCH_PER_PROGRAM_ACCUM = 3 * 128


@dataclass(frozen=True)
class WsConfig:
    """``block_m`` query rows per consumer warpgroup (two a CTA) x ``block_n`` keys per step,
    a ``num_stages``-deep K/V ring, and the two schedules (see the module docstring)."""

    block_m: int
    block_n: int
    num_stages: int
    overlap: bool = True
    pingpong: bool = False

    def __post_init__(self) -> None:
        if self.block_m not in (64, 128) or self.block_n not in (64, 128):
            raise ValueError(f"{self}: block_m and block_n must be 64 or 128")
        if not 2 <= self.num_stages <= 4:
            raise ValueError(f"{self}: num_stages must be 2 to 4")
        if self.pingpong and not self.overlap:
            raise ValueError(f"{self}: pingpong needs overlap")

    @property
    def rows_per_cta(self) -> int:
        return CONSUMERS * self.block_m

    @property
    def label(self) -> str:
        """``2x64x128 s2 ovl pp``: two consumers of 64 rows, 128 keys a step, 2 stages."""
        flags = (" ovl" if self.overlap else "") + (" pp" if self.pingpong else "")
        return f"{CONSUMERS}x{self.block_m}x{self.block_n} s{self.num_stages}{flags}"


#: (head_dim, causal) -> tile, fp16 and bf16 alike: the best of ``benchmarks/attention_gpu.py
#: --sweep-ws`` on one H200 (docs/gpu-runs.md, 2026-11-29, bf16, 16k and 64k tokens): head_dim
#: 128 1.09-1.11x cuDNN's TFLOP/s full, 1.17-1.21x causal (the TMA kernel: 0.81-0.94);
#: head_dim 64 0.99-1.00x full, 1.04-1.08x causal.
_BY_HEAD_DIM: dict[tuple[int, bool], WsConfig] = {
    (64, False): WsConfig(64, 128, 2),
    (64, True): WsConfig(64, 128, 2),
    (128, False): WsConfig(64, 128, 2, pingpong=True),
    (128, True): WsConfig(64, 128, 3),
}
WS_CONFIGS: dict[tuple[int, str, bool], WsConfig] = {
    (d, dt, c): cfg for (d, c), cfg in _BY_HEAD_DIM.items() for dt in DTYPES
}
#: Other tiles the benchmark's sweep times (compiled by CI too); a 64-key tile (2x64x64 s4) was
#: 0.88-0.99x cuDNN at head_dim 128 and is left out.
CANDIDATES: dict[int, tuple[WsConfig, ...]] = {
    64: (WsConfig(64, 128, 2, pingpong=True), WsConfig(64, 128, 3, pingpong=True)),
    128: (WsConfig(64, 128, 3, pingpong=True), WsConfig(64, 128, 3), WsConfig(64, 128, 2)),
}


def use_ws() -> bool:
    """Whether ``flash_attention`` may take the warp-specialized kernel: ``$TRTDSL_ATTENTION_WS``
    ("1" or "0") when set, else :data:`USE_WS`."""
    return env_switch(WS_ENV, USE_WS)


def ws_config(head_dim: int, dtype: str, causal: bool) -> WsConfig | None:
    """The table's tile for the variant, or None (no warp-specialized kernel for it)."""
    return WS_CONFIGS.get((head_dim, dtype, bool(causal)))


def ws_call_ok(causal: bool, q_offset: int, k_offset: int, seq_k: int) -> bool:
    """The kernel's conditions beyond the arrays: at least one key, and for causal calls
    ``q_offset >= k_offset`` (row 0 then sees key 0: no row is empty, which the kernel
    assumes).

    >>> ws_call_ok(True, 0, 512, 1024), ws_call_ok(True, 512, 0, 1024)
    (False, True)
    """
    return seq_k > 0 and (not causal or q_offset >= k_offset)


def ws_spec(
    head_dim: int,
    dtype: str,
    causal: bool,
    config: WsConfig | None = None,
    accum: int = ACCUM_NONE,
) -> KernelSpec:
    """Spec of ``attention_fwd_ws`` (``config`` overrides the table; ``accum`` as in
    ``configs.attention_spec``): the run-time signature of ``attention_fwd``, compiled with 4
    warps a partition (12 in all). The pointers are promised 16-byte aligned; Q/K/V strides only
    feed the TMA descriptors, while the accumulating epilogues' float32 O is contiguous with D a
    multiple of 16, so its strides are promised too (16-byte stores)."""
    cfg = config or WS_CONFIGS[(head_dim, dtype, bool(causal))]
    if causal and cfg.pingpong:
        raise ValueError(f"{cfg.label}: pingpong is for full attention only")
    if accum not in ACCUM_MODES:
        raise KeyError(f"no attention epilogue ACCUM={accum!r}; use one of {ACCUM_MODES}")
    sig = attention_signature(dtype, accum)
    consts = {
        "HEAD_DIM": head_dim, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n,
        "NUM_STAGES": cfg.num_stages, "CAUSAL": bool(causal), "OVERLAP": cfg.overlap,
        "PINGPONG": cfg.pingpong, "ACCUM": accum,
    }  # fmt: skip
    sig.update({k: "constexpr" for k in consts})
    return KernelSpec(
        fn_name="attention_fwd_ws",
        signature=sig,
        constexprs=consts,
        options={"num_warps": 4},
        divisible=("Q", "K", "V", "O", "LSE")
        + (() if accum == ACCUM_NONE else ("stride_ob", "stride_om")),
    )


def ws_qdp_spec(head_dim: int, dtype: str, causal: bool) -> KernelSpec:
    """Spec of ``attention_fwd_ws_qdp`` (the TensorRT plugin's entry for this kernel: QDP's
    argument order, ``configs.qdp_signature``) with the table's tile, O in q's dtype.

    >>> spec = ws_qdp_spec(64, "float16", causal=True)
    >>> spec.fn_name, spec.signature["stride_qm"], list(spec.signature)[-10:-8]
    ('attention_fwd_ws_qdp', 'i32', ['O', 'LSE'])
    """
    base = ws_spec(head_dim, dtype, causal)
    sig = qdp_signature(dtype)
    sig.update({k: "constexpr" for k in base.constexprs})
    return KernelSpec(
        fn_name="attention_fwd_ws_qdp", signature=sig, constexprs=base.constexprs,
        options=base.options, divisible=base.divisible,
    )  # fmt: skip


def ws_specs(head_dims: tuple[int, ...] = tuple(CANDIDATES)) -> list[KernelSpec]:
    """The table's entries in every epilogue and every candidate x dtype x mask they allow (what
    CI compiles and the sweep times)."""
    specs: dict[str, KernelSpec] = {}
    for d in head_dims:
        for dt in DTYPES:
            for c in (False, True):
                table = WS_CONFIGS.get((d, dt, c))
                variants = [(table, a) for a in ACCUM_MODES] if table else []
                variants += [(cfg, ACCUM_NONE) for cfg in CANDIDATES.get(d, ())]
                for cfg, accum in variants:
                    if c and cfg.pingpong:
                        continue
                    spec = ws_spec(d, dt, c, cfg, accum)
                    specs.setdefault(repr(spec), spec)
    return list(specs.values())
