"""The GPU backend we can run here: the same op references on CuPy arrays, collectives through
our NCCL binding (``trtdsl.backends.nccl``), one rank per GPU under ``mpirun``.

This is not TensorRT: it proves the graph, the collectives and the parallel blocks on real
GPUs and NCCL, where TensorRT itself is unavailable.

>>> import trtdsl as td
>>> from trtdsl.backends.cupy import NcclWorld         # doctest: +SKIP
>>> world = NcclWorld()                                   # doctest: +SKIP
>>> net = td.Network("ar", world=world)                   # doctest: +SKIP
>>> net.output(net.input("x", (1024,)).all_reduce(), "y") # doctest: +SKIP
>>> net.run({"x": x}, backend="cupy")                     # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from ... import dtypes
from ...errors import ExecutionError
from ..interpreter import RunContext
from .cublas import stream_gemm
from .device import cupy_module as _cupy
from .world import NcclWorld

_DEVICE_CONSTANTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GEMM16 = ("float16", "bfloat16")
_KERNEL_DEVICES: dict[int, bool] = {}


def kernels_fit_device(cp: Any) -> bool:
    """Whether CuPy's current device runs the prebuilt kernels (``trtdsl.kernels``: sm_90
    cubins, so compute capability 9.0, e.g. H100/H200); asked once per device. Elsewhere the
    op references run (``CupyContext.use_kernels`` starts False).

    >>> kernels_fit_device(cupy)                                    # doctest: +SKIP
    True
    """
    dev = cp.cuda.Device()
    fits = _KERNEL_DEVICES.get(int(dev.id))
    if fits is None:
        from ...kernels.compile import ARCH

        fits = _KERNEL_DEVICES[int(dev.id)] = str(dev.compute_capability) == str(ARCH)
    return fits


class CupyContext(RunContext):
    """Op references on CuPy arrays; constants are uploaded once per layer."""

    def __init__(self, network: Any, feeds: Mapping[str, Any], world: Any) -> None:
        super().__init__(network, feeds, world)
        self.xp = _cupy()
        #: run fused kernels (trtdsl.kernels, and 16-bit GEMMs through cuBLAS) where they
        #: apply: on devices the sm_90 kernels fit; False: op references only
        self.use_kernels = kernels_fit_device(self.xp)
        #: a CapturableGemm (sessions with cuda_graph=True): matrix products through cuBLAS
        #: on the session's stream, which a CUDA graph can capture (CuPy's matmul cannot)
        self.gemm: Any = None

    def matmul(self, a: Any, b: Any) -> Any:
        if self.gemm is not None:
            out = self.gemm.matmul(a, b)
            if out is not None:
                return out
        return self.xp.matmul(a, b)

    def matmul_rounded(self, a: Any, b: Any) -> Any | None:
        """fp16/bf16 ``a @ b`` through cuBLAS on the current stream: 16-bit operands, float32
        compute, one rounding (tensor cores; the reference's upcast to float32 would run a
        float32 GEMM without them). The session's capturable GEMM where it has one."""
        if not self.use_kernels or str(a.dtype) not in _GEMM16 or b.dtype != a.dtype:
            return None
        gemm = self.gemm if self.gemm is not None else stream_gemm(self.xp)
        return gemm.matmul(a, b)

    def constant(self, layer: Any) -> Any:
        """Constants are uploaded once per layer and kept while the layer lives."""
        dev = _DEVICE_CONSTANTS.get(layer)
        if dev is None:
            value = layer.attrs["value"]
            if value.dtype == dtypes.float8_e4m3.numpy:
                value = value.view(np.uint8)  # CuPy has no FP8: its bit patterns (ops/quantize)
            dev = _DEVICE_CONSTANTS[layer] = self.xp.asarray(value)
        return dev

    def erf(self, x: Any) -> Any:
        from cupyx.scipy.special import erf

        return erf(x)

    def fused_attention(self, layer: Any, inputs: list[Any]) -> list[Any] | None:
        """Fused attention for fp16/bf16 q, k, v of a head_dim the Triton kernel was compiled
        for, without a mask: the engine ``$TRTDSL_ATTENTION_ENGINE`` picks (the Triton kernel,
        or cuDNN where it can run the call: ``attention_engine.py``); None (the reference)
        otherwise."""
        from ...kernels.configs import DTYPES, HEAD_DIMS
        from .attention_engine import fused_attention

        a = layer.attrs
        q, k, v = inputs[:3]
        d = q.shape[-1]
        if (
            a["mask"] is not None
            or str(q.dtype) not in DTYPES
            or d not in HEAD_DIMS
            or v.shape[-1] != d
            or not self.use_kernels
        ):
            return None
        o, lse = fused_attention(
            q, k, v, scale=a["scale"], causal=a["causal"], q_offset=a["q_offset"],
            k_offset=a["k_offset"], return_lse=a["return_lse"],
        )  # fmt: skip
        return [o, lse] if a["return_lse"] else [o]

    def fused_modulated_norm(self, layer: Any, inputs: list[Any]) -> list[Any] | None:
        """The Triton adaLN kernel (trtdsl.kernels.norm: one pass over x, on the current
        stream, no host sync, so CUDA graphs capture it) for fp16/bf16/fp32 rows of up to
        ``NORM_MAX_D`` values and the shift/scale broadcasts it reads ([B, 1, D], [1, D],
        [S, D], ...: ``norm_checks.plan_rows``); None (the op reference) otherwise."""
        from ...kernels.configs import NORM_DTYPES, NORM_MAX_D
        from ...kernels.norm import modulated_norm
        from ...kernels.norm_checks import plan_rows
        from ...ops.adaln import ModulatedNorm

        x, shift, scale = inputs[:3]
        d = x.shape[-1]
        if (
            not self.use_kernels
            or str(x.dtype) not in NORM_DTYPES
            or not 1 <= d <= NORM_MAX_D
            or plan_rows(x.shape[:-1], [shift.shape[:-1], scale.shape[:-1]], d) is None
        ):
            return None
        w, b = ModulatedNorm.params(layer, inputs)
        a = layer.attrs
        y = modulated_norm(x, shift, scale, kind=a["kind"], eps=a["eps"], weight=w, bias=b)
        return [y]

    def fused_activation(self, layer: Any, inputs: list[Any]) -> list[Any] | None:
        """The Triton activation kernel (trtdsl.kernels.activations: x read once, y written
        once, float32 math, on the current stream, no host sync, so CUDA graphs capture it)
        for C-contiguous, 16-byte aligned fp16/bf16/fp32 x unless switched off
        (``TRTDSL_ACTIVATION_KERNEL=0``); None (the op reference) otherwise."""
        from ...kernels.activations import activation
        from ...kernels.configs import ACT_DTYPES, ACT_KINDS, use_activation_kernel

        (x,) = inputs
        kind = layer.attrs["kind"]
        if (
            not self.use_kernels
            or not use_activation_kernel()  # TRTDSL_ACTIVATION_KERNEL=0 (configs.py)
            or kind not in ACT_KINDS
            or str(x.dtype) not in ACT_DTYPES
            or not x.flags.c_contiguous
            or x.data.ptr % 16 != 0
        ):
            return None
        return [activation(x, kind)]


def check_world(network: Any) -> None:
    """Collectives over several ranks need an :class:`NcclWorld`."""
    world = network.world
    if (
        world is not None
        and world.size > 1
        and network.collectives
        and not isinstance(world, NcclWorld)
    ):
        raise ExecutionError(
            f"network '{network.name}': the cupy backend runs collectives through NCCL; create "
            "the network with world=NcclWorld() under mpirun"
        )


def compile(network: Any, **options: Any) -> Any:  # noqa: A001 - the backend's verb
    """A session (:mod:`trtdsl.backends.session_cupy`): options ``cuda_graph``, ``check``,
    ``return_device``, ``stream``."""
    from ..session_cupy import CupySession, validate_cupy_options

    validate_cupy_options(network, options)  # before importing CuPy: clear errors anywhere
    check_world(network)
    return CupySession(network, CupyContext, **options)


def run(network: Any, feeds: Mapping[str, Any], *, return_device: bool = False) -> dict[str, Any]:
    """Run ``network`` on the current GPU. Feeds may be NumPy or CuPy arrays; outputs are NumPy
    arrays (CuPy arrays with ``return_device=True``). Collectives need an :class:`NcclWorld`."""
    from ..session import run_once
    from ..session_cupy import CupySession

    cp = _cupy()
    check_world(network)
    return run_once(
        lambda: CupySession(network, CupyContext, return_device=return_device),
        network,
        feeds,
        cp.asarray,
    )
