"""Ring attention for real on the cupy backend: the ``ring_attention`` region of
:class:`~trtdsl.parallel.RingAttention` (N broadcasts in the graph) runs as a ring.

At step ``t`` rank ``i`` of the group attends to the K/V block it holds (rank ``i - t``'s) on
the compute stream (the session's), while a communication stream of its own sends that block
to rank ``i + 1`` and receives rank ``i - 1``'s into the other of two buffers (one NCCL group of
``ncclSend`` + ``ncclRecv``); CUDA events order the two streams
(:func:`~trtdsl.backends.ring_schedule.ring_plan`). Blocks ``[2H, s, Dh]`` (k rows, v rows).

- Attention of a block: the Triton flash-attention kernel with its log-sum-exp
  (``trtdsl.kernels``, fp16/bf16 and its head dims; cuDNN's where ``attention_engine.py``
  picks it); otherwise (float32, other head dims, ``use_kernels=False``) float32 attention
  from array ops, with the context's matmul (cuBLAS bound to the session's stream under
  ``cuda_graph=True``).
- Running state: float32 (o, lse) per query piece. Where our kernels run a block
  (``attention_engine`` picks Triton, the default) it accumulates in the kernel's epilogue
  (``flash_attention_into``: the warp-specialized kernel where it applies, else the TMA or
  pointer one; the first block writes the state, the others merge into it; no o in q's dtype,
  no separate merge); otherwise the block's (o, lse) is merged into it by the Triton merge
  kernel where the head dim is a kernel's, by array ops otherwise.
- NCCL: the group's communicator of the world (``world.communicator(spec)`` with the region's
  broadcast spec: the same partition). A new input signature first agrees with every rank
  (``agree_on_collective``), so a mismatch fails instead of hanging.
- CUDA graphs: the fork (the comm stream waits for an event recorded on the capturing stream)
  and join (the reverse) put the comm stream's NCCL calls into the captured graph; the double
  buffers are made on the first, eager call and kept.

>>> from trtdsl.backends.cupy.ring import cupy_fusions      # doctest: +SKIP
>>> Program(network, fusions=cupy_fusions())              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import ExecutionError
from ..interpreter import Fusion
from ..ring_exec import BlockOps, ReferenceBlockOps, RingFusion, attend_then_merge
from ..ring_schedule import COMM


class CupyStreams:
    """The compute stream (CuPy's current one when an op is issued) and a non-blocking
    communication stream, with one reusable event per name (no timing)."""

    def __init__(self, cp: Any, events: Sequence[str]) -> None:
        self.cp = cp
        self.comm = cp.cuda.Stream(non_blocking=True)
        self.events = {e: cp.cuda.Event(block=False, disable_timing=True) for e in events}
        self._switch = cp.cuda.Event(block=False, disable_timing=True)
        self._last: Any = None  # the compute stream of the last op

    def _stream(self, name: str) -> Any:
        return self.comm if name == COMM else self._compute()

    def _compute(self) -> Any:
        """CuPy's current stream. When it changed since the last op (the caller switched streams
        between calls), it first waits for all work so far on the previous one: the double
        buffers outlive a call, and the previous call may still be reading them there."""
        s = self.cp.cuda.get_current_stream()
        last = self._last
        if last is not None and last.ptr != s.ptr and not s.is_capturing():
            last.record(self._switch)
            s.wait_event(self._switch)
        self._last = s
        return s

    def record(self, stream: str, event: str) -> None:
        self._stream(stream).record(self.events[event])

    def wait(self, stream: str, event: str) -> None:
        self._stream(stream).wait_event(self.events[event])


class NcclTransport:
    """``ncclGroupStart; ncclSend(block -> next); ncclRecv(prev -> other buffer);
    ncclGroupEnd`` on the communication stream."""

    def __init__(self, comm: Any, stream: Any) -> None:
        self.comm, self.stream = comm, stream

    def sendrecv(self, send: Any, recv: Any, to: int, source: int) -> None:
        ptr = self.stream.ptr
        with self.comm.group():
            self.comm.send(send, send.size, send.dtype, to, ptr)
            self.comm.recv(recv, recv.size, recv.dtype, source, ptr)


class KernelBlockOps:
    """Block attention and merge with the Triton kernels where they apply, else
    :class:`ReferenceBlockOps` (float32 from array ops)."""

    def __init__(self, cp: Any, matmul: Any, use_kernels: bool) -> None:
        from ...kernels.configs import DTYPES, HEAD_DIMS

        self.cp, self.use_kernels = cp, use_kernels
        self.dtypes, self.head_dims = DTYPES, HEAD_DIMS
        self.reference = ReferenceBlockOps(cp, matmul)

    def _fused(self, q: Any, scale: float) -> bool:
        """Whether a fused engine (Triton kernel or cuDNN) takes the block: kernels on, a
        kernel dtype and head dim, a positive scale; else array ops (``self.reference``)."""
        return (
            self.use_kernels
            and str(q.dtype) in self.dtypes
            and q.shape[-1] in self.head_dims
            and scale > 0
        )

    def attend(
        self, q: Any, k: Any, v: Any, *, scale: float, causal: bool, q_offset: int, k_offset: int
    ) -> tuple[Any, Any]:
        if self._fused(q, scale):
            from .attention_engine import fused_attention  # Triton, or cuDNN if switched on

            return fused_attention(
                q, k, v, scale=scale, causal=causal, q_offset=q_offset, k_offset=k_offset,
                return_lse=True,
            )  # fmt: skip
        return self.reference.attend(
            q, k, v, scale=scale, causal=causal, q_offset=q_offset, k_offset=k_offset
        )

    def merge(self, acc_o: Any, acc_lse: Any, o: Any, lse: Any) -> None:
        if self.use_kernels and acc_o.shape[-1] in self.head_dims:
            from ...kernels.attention import merge_attention

            if o.dtype != acc_o.dtype and str(o.dtype) not in self.dtypes:
                o = o.astype(acc_o.dtype)  # the kernel merges fp16/bf16 into float32 itself
            merge_attention(acc_o, acc_lse, o, lse, inplace=True)
            return
        self.reference.merge(acc_o, acc_lse, o, lse)

    def attend_into(
        self, acc_o: Any, acc_lse: Any, q: Any, k: Any, v: Any, *, scale: float, causal: bool,
        q_offset: int, k_offset: int, first: bool,
    ) -> None:  # fmt: skip
        """The block accumulated in the Triton kernel's epilogue where ``attend`` would run
        the Triton kernel (``attend``'s conditions, and the engine selector picking Triton);
        else ``attend`` (cuDNN or array ops) then ``merge``."""
        kw = dict(scale=scale, causal=causal, q_offset=q_offset, k_offset=k_offset)
        if self._fused(q, scale) and _engine_runs_triton(q, k, v, **kw):
            from ...kernels import attention as kernels  # looked up per call: tests patch it

            kernels.flash_attention_into(q, k, v, acc_o, acc_lse, first=first, **kw)
            return
        attend_then_merge(self, acc_o, acc_lse, q, k, v, first=first, **kw)


def _engine_runs_triton(
    q: Any, k: Any, v: Any, *, scale: float, causal: bool, q_offset: int, k_offset: int
) -> bool:
    """Whether ``attention_engine.fused_attention`` would pick the Triton kernel for this
    block: the engine is ``triton``, or cuDNN cannot run the call (its build failing at run
    time, the selector's last fallback, is not foreseen: that block then runs attend + merge)."""
    from .attention_engine import picks_cudnn

    return not picks_cudnn(
        q, k, v, scale=scale, causal=causal, q_offset=q_offset, k_offset=k_offset
    )


class CupyDevice:
    """What :class:`~trtdsl.backends.ring_exec.RingRunner` needs on a GPU (one per runner)."""

    def __init__(self) -> None:
        from . import device  # looked up per device: tests put a stand-in for CuPy there

        self.cp = device.cupy_module()
        self._streams: CupyStreams | None = None

    def array_module(self, ctx: Any) -> Any:
        return self.cp

    def streams(self, events: Sequence[str]) -> CupyStreams:
        self._streams = CupyStreams(self.cp, events)
        return self._streams

    def transport(self, world: Any, spec: Any) -> NcclTransport:
        if not hasattr(world, "communicator"):
            raise ExecutionError(
                f"ring attention on the cupy backend sends blocks through NCCL: the network's "
                f"world must be an NcclWorld, got {type(world).__name__}"
            )
        assert self._streams is not None, "streams() first"
        return NcclTransport(world.communicator(spec), self._streams.comm)

    def block_ops(self, ctx: Any) -> BlockOps:
        return KernelBlockOps(self.cp, ctx.matmul, bool(getattr(ctx, "use_kernels", True)))


def cupy_fusions() -> dict[str, Fusion]:
    """The cupy backend's fusions, fresh for one session: ``{"ring_attention": ...}``."""
    return {"ring_attention": RingFusion(CupyDevice)}


__all__ = ["CupyStreams", "NcclTransport", "KernelBlockOps", "CupyDevice", "cupy_fusions"]
