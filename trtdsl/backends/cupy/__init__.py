"""The GPU backend: op references on CuPy arrays, collectives through NCCL (:class:`NcclWorld`),
one rank per GPU."""

from .backend import CupyContext, compile, run
from .world import NcclWorld

__all__ = ["CupyContext", "NcclWorld", "compile", "run"]
