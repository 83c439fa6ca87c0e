"""Which engine runs fused attention on the cupy backend: the Triton flash kernel
(``kernels/attention.py``, the default and the fallback) or cuDNN's fused SDPA
(:mod:`.cudnn_attention`, where the ``nvidia-cudnn-frontend`` package is installed).

Both call sites go through :func:`fused_attention`: the attention op
(``CupyContext.fused_attention``) and Ring attention's per-block attention
(``ring.KernelBlockOps.attend``). ``$TRTDSL_ATTENTION_ENGINE``, read at each call, picks:

- ``triton`` (default, :data:`DEFAULT_ENGINE`): our kernel;
- ``cudnn``: cuDNN where :func:`.cudnn_attention.supported` says it can run the call, our kernel
  otherwise (one warning per process when the cuDNN frontend is missing, from
  :func:`fused_attention` or :func:`picks_cudnn`, whichever asks first);
- ``auto``: the same, without that warning.

A cuDNN graph that fails to build or to run warns once and runs our kernel (never an error).

    >>> os.environ[ENGINE_ENV] = "cudnn"                                    # doctest: +SKIP
    >>> o, lse = fused_attention(q, k, v, scale=0.125, causal=True, q_offset=0, k_offset=0,
    ...                          return_lse=True)                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from ...errors import ExecutionError
from . import cudnn_attention

#: Environment variable naming the engine, read at each call.
ENGINE_ENV = "TRTDSL_ATTENTION_ENGINE"
#: The engines :data:`ENGINE_ENV` may name.
ENGINES: tuple[str, ...] = ("triton", "cudnn", "auto")
#: The engine when :data:`ENGINE_ENV` is unset or empty.
DEFAULT_ENGINE = "triton"
_warned: set[str] = set()


class AttentionEngineError(ExecutionError, ValueError):
    """``$TRTDSL_ATTENTION_ENGINE`` names no engine."""


def engine() -> str:
    """The engine ``$TRTDSL_ATTENTION_ENGINE`` names (case and spaces ignored), or
    :data:`DEFAULT_ENGINE` when it is unset or empty; AttentionEngineError otherwise."""
    raw = os.environ.get(ENGINE_ENV)
    name = (raw or "").strip().lower() or DEFAULT_ENGINE
    if name not in ENGINES:
        raise AttentionEngineError(
            f"{ENGINE_ENV}={raw!r} names no attention engine; use one of {', '.join(ENGINES)}"
        )
    return name


def _warn_once(message: str, stacklevel: int = 3) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


def _cudnn_refusal(
    choice: str, q: Any, k: Any, v: Any, *, scale: float, causal: bool, q_offset: int,
    k_offset: int,
) -> str | None:  # fmt: skip
    """None when engine ``choice`` sends this call to cuDNN, else why not (warning once per
    process where ``cudnn`` was asked for and the frontend is missing)."""
    if choice == "triton":
        return f"{ENGINE_ENV} picks triton"
    why = cudnn_attention.supported(
        q, k, v, causal=causal, q_offset=q_offset, k_offset=k_offset, scale=scale
    )
    if why is not None and choice == "cudnn" and why == cudnn_attention.import_error():
        _warn_once(f"{ENGINE_ENV}=cudnn: {why}; the Triton kernel runs instead", stacklevel=4)
    return why


def picks_cudnn(
    q: Any, k: Any, v: Any, *, scale: float, causal: bool, q_offset: int, k_offset: int
) -> bool:
    """Whether :func:`fused_attention` sends this call to cuDNN (a graph that then fails to
    build or run still falls back to the Triton kernel), for callers that run the kernel their
    own way otherwise (Ring's accumulating block attention); warns as it does."""
    kw = dict(scale=scale, causal=causal, q_offset=q_offset, k_offset=k_offset)
    return _cudnn_refusal(engine(), q, k, v, **kw) is None


def fused_attention(
    q: Any, k: Any, v: Any, *, scale: float, causal: bool, q_offset: int, k_offset: int,
    return_lse: bool,
) -> tuple[Any, Any | None]:  # fmt: skip
    """softmax(scale q k^T, masked) v on CuPy arrays q [..., H, Sq, D], k/v [..., H, Sk, D]:
    ``(o [..., H, Sq, D] in q's dtype, lse [..., H, Sq] float32 or None)`` from the engine
    :func:`engine` picks (see the module docstring); causal offsets as ``flash_attention``."""
    choice = engine()
    kw = dict(scale=scale, causal=causal, q_offset=q_offset, k_offset=k_offset)
    why = _cudnn_refusal(choice, q, k, v, **kw)
    if why is None:
        try:
            return cudnn_attention.attention(q, k, v, return_lse=return_lse, checked=True, **kw)
        except (cudnn_attention.CudnnBuildError, cudnn_attention.CudnnRunError) as e:
            _warn_once(f"{e}; the Triton kernel runs instead")
        except cudnn_attention.CudnnAttentionError:
            pass  # e.g. no graph yet while capturing: ours runs
    from ...kernels import attention as kernels  # looked up per call: tests patch it

    return kernels.flash_attention(q, k, v, return_lse=return_lse, **kw)


__all__ = [
    "DEFAULT_ENGINE", "ENGINES", "ENGINE_ENV", "AttentionEngineError", "engine",
    "fused_attention", "picks_cudnn",
]  # fmt: skip
