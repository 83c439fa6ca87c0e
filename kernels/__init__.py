"""GPU kernels written in Triton, compiled ahead of time for sm_90, launched with cuda.core.

Installed as ``trtdsl.kernels``. Importing it needs neither Triton, CuPy nor CUDA; those are
imported when a kernel is compiled or launched.
"""

from .activations import activation
from .attention import flash_attention, flash_attention_into, merge_attention
from .errors import (
    KernelArgumentError,
    KernelCompileError,
    KernelDTypeError,
    KernelLaunchError,
    KernelShapeError,
)
from .norm import modulated_norm

__all__ = [
    "activation",
    "flash_attention",
    "flash_attention_into",
    "merge_attention",
    "modulated_norm",
    "KernelArgumentError",
    "KernelCompileError",
    "KernelDTypeError",
    "KernelLaunchError",
    "KernelShapeError",
]
