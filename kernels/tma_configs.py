"""The TMA variant of the attention forward (``attention_fwd_tma``): when it runs, its tiles,
its sweep candidates and its compile specs (no Triton needed).

``flash_attention`` uses it only when :func:`use_tma` says so (the module switch
:data:`USE_TMA`, or ``TRTDSL_ATTENTION_TMA=1``/``0`` for A/B runs), the variant has an entry in
:data:`TMA_CONFIGS`, and the arrays qualify for TMA (:func:`tma_compatible`: 16-byte aligned
bases, unit last stride, other strides multiples of 16 bytes); otherwise the pointer kernel
(``kernels/configs.py``) runs. The switch is on since ``benchmarks/attention_gpu.py
--sweep-tma`` showed the TMA kernel faster on an H200.

    >>> spec = tma_spec(128, "bfloat16", causal=True)
    >>> spec.fn_name, spec.constexprs["SPLIT"]
    ('attention_fwd_tma', 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .configs import ACCUM_NONE, DTYPES, AttentionConfig, KernelSpec, attention_spec, env_switch

#: Environment override of :data:`USE_TMA` ("1" on, "0" off), read at each call.
TMA_ENV = "TRTDSL_ATTENTION_TMA"
#: Module switch: the TMA kernel for the variants in :data:`TMA_CONFIGS` (on: faster than the
#: pointer kernel in every swept case on an H200).
USE_TMA = True
#: Bytes of global scratch one program of ``attention_fwd_tma`` needs (4 descriptors; 3 in the
#: accumulating epilogues, which store O by pointers).
SCRATCH_PER_PROGRAM = 512
SCRATCH_PER_PROGRAM_ACCUM = 384


@dataclass(frozen=True)
class TmaConfig:
    """BLOCK_M query rows per program (as ``split`` row-blocks of BLOCK_M / split sharing each
    K/V tile) x BLOCK_N keys per step, warps and pipeline stages."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    split: int = 1
    maxnreg: int | None = None  # register cap per thread (e.g. 128: two 8-warp CTAs per SM)

    def __post_init__(self) -> None:
        rows = self.block_m // max(1, self.split)
        if self.split not in (1, 2) or rows * self.split != self.block_m or rows % 16:
            raise ValueError(f"{self}: split must be 1 or 2 and BLOCK_M / split a multiple of 16")

    @property
    def label(self) -> str:
        """``128x128 w8 s3`` (``2x64x128 w4 s3``: two row-blocks of 64; ``... r128``: at most
        128 registers a thread)."""
        rows = f"{self.split}x{self.block_m // self.split}" if self.split > 1 else f"{self.block_m}"
        cap = f" r{self.maxnreg}" if self.maxnreg else ""
        return f"{rows}x{self.block_n} w{self.num_warps} s{self.num_stages}{cap}"


#: Candidates per head_dim (timed by the sweep, compiled by CI for both dtypes and masks).
CANDIDATES: dict[int, tuple[TmaConfig, ...]] = {
    64: (
        TmaConfig(128, 64, 8, 3),
        TmaConfig(128, 64, 8, 4),
        TmaConfig(128, 128, 8, 3),
        TmaConfig(128, 128, 8, 3, maxnreg=128),
        TmaConfig(64, 64, 4, 4),
        TmaConfig(64, 128, 4, 3),
        TmaConfig(128, 64, 4, 4, split=2),
        TmaConfig(256, 64, 8, 3, split=2),
    ),
    128: (
        TmaConfig(128, 128, 8, 2),
        TmaConfig(128, 128, 8, 3),
        TmaConfig(128, 64, 8, 3),
        TmaConfig(128, 64, 8, 4),
        TmaConfig(128, 64, 8, 2, maxnreg=128),
        TmaConfig(64, 128, 4, 3),
        TmaConfig(64, 64, 4, 3),
        TmaConfig(128, 64, 4, 2, split=2),
    ),
}

#: (head_dim, causal) -> the tile the TMA kernel runs with, fp16 and bf16 alike: the best of
#: ``--sweep-tma`` on one H200 (docs/gpu-runs.md, 2026-11-28: 0.83-0.98 of cuDNN at head_dim
#: 128 and 16k-64k tokens, against the pointer kernel's 0.74-0.93); a variant missing here runs
#: the pointer kernel.
_BY_HEAD_DIM: dict[tuple[int, bool], TmaConfig] = {
    (64, False): TmaConfig(128, 128, 8, 3, maxnreg=128),
    (64, True): TmaConfig(64, 128, 4, 3),
    (128, False): TmaConfig(128, 64, 4, 2, split=2),
    (128, True): TmaConfig(64, 64, 4, 3),
}
TMA_CONFIGS: dict[tuple[int, str, bool], TmaConfig] = {
    (d, dt, c): cfg for (d, c), cfg in _BY_HEAD_DIM.items() for dt in DTYPES
}


def use_tma() -> bool:
    """Whether ``flash_attention`` may take the TMA kernel: ``$TRTDSL_ATTENTION_TMA`` ("1" or
    "0") when set, else :data:`USE_TMA`."""
    return env_switch(TMA_ENV, USE_TMA)


def tma_config(head_dim: int, dtype: str, causal: bool) -> TmaConfig | None:
    """The table's tile for the variant, or None (no TMA kernel for it: the pointer one runs)."""
    return TMA_CONFIGS.get((head_dim, dtype, bool(causal)))


def tma_compatible(ptrs: Sequence[int], strides: Sequence[Sequence[int]], itemsize: int) -> bool:
    """Whether arrays with these base addresses and element strides ([BH, S, D] each) can be
    TMA descriptors: 16-byte aligned bases, unit last stride, the other strides multiples of
    16 bytes (and positive: a TMA stride cannot be 0 or negative).

    >>> tma_compatible([256], [(64 * 8, 64, 1)], 2), tma_compatible([256], [(64, 4, 1)], 2)
    (True, False)
    """
    if len(ptrs) != len(strides):
        raise ValueError(f"{len(ptrs)} base addresses but {len(strides)} stride triples")
    for p, st in zip(ptrs, strides, strict=True):
        if p % 16 or len(st) != 3 or st[2] != 1:
            return False
        if any(s <= 0 or (s * itemsize) % 16 for s in st[:2]):
            return False
    return True


def tma_spec(
    head_dim: int,
    dtype: str,
    causal: bool,
    config: TmaConfig | None = None,
    accum: int = ACCUM_NONE,
) -> KernelSpec:
    """Spec of ``attention_fwd_tma`` for one variant (``config`` overrides the table; ``accum``
    as in ``attention_spec``): the run-time signature of ``attention_fwd`` plus the ``SPLIT``
    constexpr. Only the pointers are promised 16-byte aligned: the strides (multiples of 16
    bytes, as TMA needs) only feed the descriptors; the accumulating epilogues' float32 O is
    contiguous with D a multiple of 16, so its strides are promised too (16-byte stores)."""
    cfg = config or TMA_CONFIGS[(head_dim, dtype, bool(causal))]
    base = attention_spec(
        head_dim,
        dtype,
        causal,
        AttentionConfig(cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages),
        accum,
    )
    options = dict(base.options)
    if cfg.maxnreg:
        options["maxnreg"] = cfg.maxnreg
    return KernelSpec(
        fn_name="attention_fwd_tma",
        signature={**base.signature, "SPLIT": "constexpr"},
        constexprs={**base.constexprs, "SPLIT": cfg.split},
        options=options,
        divisible=("Q", "K", "V", "O", "LSE")
        + (() if accum == ACCUM_NONE else ("stride_ob", "stride_om")),
    )


def tma_specs(head_dims: Sequence[int] = tuple(CANDIDATES)) -> list[KernelSpec]:
    """Every candidate x dtype x mask for ``head_dims`` (what CI compiles and the sweep times),
    plus the table's entries."""
    specs: dict[str, KernelSpec] = {}
    for d in head_dims:
        for dt in DTYPES:
            for c in (False, True):
                table = TMA_CONFIGS.get((d, dt, c))
                for cfg in CANDIDATES.get(d, ()) + ((table,) if table else ()):
                    spec = tma_spec(d, dt, c, cfg)
                    specs.setdefault(repr(spec), spec)
    return list(specs.values())
