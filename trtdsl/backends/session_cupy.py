"""The cupy backend's session: the program on one GPU, collectives straight to NCCL, and
optionally the whole rank's network as one CUDA graph.

Made once: constants on the device (the backend's per-layer cache), one NCCL communicator per
group partition (the world's, made once), and per collective layer a bound call with its
NCCL codes (:class:`~.cupy.world.BoundCollective`: one call into nccl4py's bindings with int
pointers). Per call, a known input signature runs with no feed re-validation, no per-layer
output checks and no exchange before NCCL, on the caller's current stream (no events) unless a
``stream`` is given; a new signature runs checked (each collective agrees over the world first,
with the usual mismatch report). With the NCCL watchdog (``nccl_timeout`` seconds, default
600, None: off; :mod:`.cupy.watchdog`) each call also records one CUDA event, and the host's
waits for the GPU poll it, so a peer that stops calling ends this rank with WatchdogError
instead of a hang. Off the root, reduce and gather outputs (which NCCL leaves
unwritten) are one poisoned buffer per layer and shape, made once and returned on every call:
with ``return_device=True`` treat them as read-only.

``cuda_graph=True`` (static input shapes only): the first call runs eagerly (checked), then the
network is captured once on the session's stream into a CUDA graph (NCCL calls included) from
static input buffers; later calls copy the feeds in, launch the graph and copy the outputs out.
Everything the graph touches lives in a memory pool owned by the session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ExecutionError, TrtDslError
from ..worlds import agree_on_collective
from .cupy.watchdog import (
    DEFAULT_TIMEOUT,
    describe_collectives,
    session_watchdog,
    validate_nccl_timeout,
)
from .cupy.world import BoundCollective
from .session import Session, agree_once, validate_check

#: Events a session re-records round robin to mark its calls for the watchdog (an event still
#: queued when re-recorded marks later work: its call only looks unfinished for longer).
_WATCH_EVENTS = 64
#: cudaMemcpyKind cudaMemcpyDeviceToDevice
_DEVICE_TO_DEVICE = 3
OPTIONS = ("check", "cuda_graph", "return_device", "stream", "nccl_timeout")


def validate_cupy_options(network: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check the cupy session's options without CuPy (so it is testable on the CPU)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"cupy backend options are {list(OPTIONS)}, got unknown {unknown}")
    opts = {"check": "once", "cuda_graph": False, "return_device": False, "stream": None}
    opts.update(options)
    validate_check(opts["check"])
    opts["nccl_timeout"] = validate_nccl_timeout(opts.get("nccl_timeout", DEFAULT_TIMEOUT))
    for flag in ("cuda_graph", "return_device"):
        if not isinstance(opts[flag], bool):
            raise TypeError(f"{flag} must be True or False, got {opts[flag]!r}")
    if opts["cuda_graph"]:
        dynamic = [f"'{n}' {t.type}" for n, t in network.inputs.items() if not t.type.is_static]
        if dynamic:
            raise ExecutionError(
                f"network '{network.name}': cuda_graph=True needs static input shapes (a CUDA "
                f"graph replays fixed sizes and addresses), but input(s) {', '.join(dynamic)} "
                "have dynamic dims; declare static shapes or compile without cuda_graph"
            )
        if opts["check"] == "always":
            raise ValueError("cuda_graph=True replays without checks; it excludes check='always'")
    return opts


def _device_copy(cp: Any, dst: Any, src: Any) -> None:
    """``dst[...] = src`` on the current stream; one async memcpy when both are contiguous."""
    if dst.flags.c_contiguous and src.flags.c_contiguous:
        ptr = cp.cuda.get_current_stream().ptr
        cp.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes, _DEVICE_TO_DEVICE, ptr)
    else:
        dst[...] = src


class _Collectives:
    """Per collective layer, its NCCL call bound once (communicator, codes, root); groups of
    one rank copy. Off-root outputs of reduce/gather are one poisoned buffer per shape."""

    def __init__(self, session: CupySession) -> None:
        self.bound: dict[int, Any] = {}
        self.comms: dict[int, Any] = {}  # the NCCL communicators used (the watchdog's)
        world = session.network.world
        for layer in session.network.collectives:  # layer order: the same on every rank
            spec = layer.spec
            if spec.n == 1:
                self.bound[id(layer)] = None
                continue
            comm = world.communicator(spec)
            self.comms[id(comm)] = comm
            dtype = layer.inputs[0].type.dtype.numpy
            self.bound[id(layer)] = BoundCollective(
                session.cp, comm, spec, dtype, reuse_undefined=True
            )


class CupySession(Session):
    """``Network.compile(backend="cupy", ...)``; see the module docstring."""

    backend = "cupy"

    def __init__(self, network: Any, context: Any, agree: bool = True, **options: Any) -> None:
        opts = validate_cupy_options(network, options)
        super().__init__(network, opts["check"])
        from .cupy.device import cupy_module
        from .cupy.ring import cupy_fusions
        from .interpreter import Program

        self.cp = cp = cupy_module()
        CupyContext = context  # noqa: N806 - the backend's context class
        self.cuda_graph = opts["cuda_graph"]
        self.return_device = opts["return_device"]
        self.program = Program(network, fusions=cupy_fusions())  # ring_attention regions
        if agree:
            agree_once(network)
        self._ctx_cls = CupyContext
        self._stream = opts["stream"]
        if self.cuda_graph and self._stream is None:
            self._stream = cp.cuda.Stream(non_blocking=True)
        self._pool = cp.cuda.MemoryPool() if self.cuda_graph else None
        self._gemm: Any = None
        if self.cuda_graph:  # CuPy's matmul cannot be captured; cuBLAS bound to our stream can
            from .cupy.cublas import CapturableGemm

            self._gemm = CapturableGemm(cp, self._stream)
        self._graph: Any = None
        self._static_in: dict[str, Any] = {}
        self._static_out: dict[str, Any] = {}
        self._collectives = _Collectives(self)
        comms = list(self._collectives.comms.values())
        self._watch = session_watchdog(network, comms, opts["nccl_timeout"])
        self._timeout, self._last = opts["nccl_timeout"], None
        self._watch_events: list[Any] = []
        self._watch_next = 0
        if self._watch is not None:  # NCCL work is tracked; waits for the GPU go through it
            self._what = describe_collectives(network)
        self._checking = True
        self._ctx: Any = None
        self._events = (
            cp.cuda.Event(block=False, disable_timing=True),
            cp.cuda.Event(block=False, disable_timing=True),
        )
        self._constants: set[int] = set()  # ids of the cached device constants
        for layer, *_ in self.program.steps:  # constants to the device now, once
            if layer.op.name == "constant":
                self._constants.add(id(CupyContext.constant(self._bare_ctx({}), layer)))
        if self._watch is not None:  # last: a failure above leaves nothing attached
            self._watch.attach(self, comms)

    # -- running ----------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any], out: Mapping[str, Any] | None = None) -> dict:
        if self._watch is not None:  # fired: the communicators are aborted; never call them
            self._watch.check()
        return super().run(feeds, out)

    def _watched(self, stream: Any, wait: bool) -> None:
        """Track the work enqueued so far on ``stream`` (None: the current one) with the
        watchdog; ``wait``: wait for it through the watchdog (WatchdogError if it fires)."""
        cp = self.cp
        s = cp.cuda.get_current_stream() if stream is None else stream
        pool, i = self._watch_events, self._watch_next
        if len(pool) < _WATCH_EVENTS:  # made on first use, then re-recorded round robin
            pool.append(cp.cuda.Event(block=False, disable_timing=True))
        self._watch_next = (i + 1) % _WATCH_EVENTS
        ev = pool[i]
        if not ev.done:  # still queued with the watchdog: re-recording would move its deadline's
            ev = pool[i] = cp.cuda.Event(block=False, disable_timing=True)  # work later
        self._last = ev
        ev.record(s)
        self._watch.track(s.ptr, ev, self._timeout, self._what)
        if wait:
            self._watch.wait(ev)

    def _bare_ctx(self, feeds: Mapping[str, Any]) -> Any:
        ctx = self._ctx_cls(self.network, feeds, self.network.world)
        ctx.collective = self._collective  # instance attribute: the session's NCCL path
        ctx.gemm = self._gemm
        return ctx

    def _asarray(self, x: Any) -> Any:
        return self.cp.asarray(x)

    def _execute(self, feeds: dict, first: bool) -> dict:
        """Run on the session's stream, ordered after the caller's current stream (the feeds
        were made there) and before it (the caller reads the outputs there)."""
        cp = self.cp
        caller = cp.cuda.get_current_stream()
        stream = self._stream
        if stream is None or stream.ptr == caller.ptr:  # the caller's stream: no events
            if self._graph is not None:
                return self._replay(feeds, caller)
            return self._eager(feeds, first, caller)
        start, done = self._events  # made once; recording reuses them
        start.record(caller)
        stream.wait_event(start)
        if self._graph is not None:
            outs = self._replay(feeds, stream)
        else:
            with stream:
                outs = self._eager(feeds, first, stream)
        done.record(stream)
        caller.wait_event(done)
        return outs

    def _eager(self, feeds: dict, first: bool, stream: Any) -> dict:
        """The program op by op on the current stream (``stream``); captured after the first
        run with ``cuda_graph``."""
        cp = self.cp
        ndarray = cp.ndarray
        feeds = {n: v if type(v) is ndarray else cp.asarray(v) for n, v in feeds.items()}
        self._checking = first
        if self._pool is not None:
            with cp.cuda.using_allocator(self._pool.malloc):
                outs = self.program.execute(self._bare_ctx(feeds), check=first)
                self._capture(feeds)
            return outs
        ctx = self._ctx
        if ctx is None or first:
            ctx = self._ctx = self._bare_ctx(feeds)
        else:
            ctx.feeds = feeds
        return self.program.execute(ctx, check=first)

    def _capture(self, feeds: dict) -> None:
        """Capture the whole program once, from static input buffers (inside the pool)."""
        cp, stream = self.cp, self._stream
        self._static_in = {n: cp.empty_like(v) for n, v in feeds.items()}
        for n, v in feeds.items():
            self._static_in[n][...] = v
        if self._watch is not None:
            self._watched(stream, wait=True)
        stream.synchronize()
        self._checking = False
        try:
            stream.begin_capture(cp.cuda.runtime.streamCaptureModeRelaxed)
        except TypeError:  # older CuPy: no mode argument
            stream.begin_capture()
        try:
            ctx = self._bare_ctx(self._static_in)
            ctx.check_values = False  # no host reads while capturing (the eager run checked)
            outs = self.program.execute(ctx, check=False, keep_all=True)
        except BaseException:
            try:  # end the broken capture; its own error must not hide the one that broke it
                stream.end_capture()
            except Exception:  # noqa: BLE001, S110 - the original error is raised below
                pass
            raise
        self._graph = stream.end_capture()
        self._graph_values = self.program.values  # keep every captured buffer alive
        self.program.values = None
        self._static_out = outs

    def _replay(self, feeds: dict, stream: Any) -> dict:
        """Feeds into the graph's static inputs (one async copy each), then one launch."""
        cp = self.cp
        for n, v in feeds.items():
            dst = self._static_in[n]
            if isinstance(v, cp.ndarray):
                with stream:
                    _device_copy(cp, dst, v)
            else:
                dst.set(v, stream=stream)
        self._graph.launch(stream)
        return self._static_out

    def _collective(self, layer: Any, x: Any) -> Any:
        bound = self._collectives.bound[id(layer)]
        if self._checking:  # a new signature: agree before NCCL runs, so a mismatch cannot hang
            if self.network.world is None:
                raise ExecutionError(
                    f"layer '{layer.name}' (defined at {layer.where}): the network has no world "
                    "to run collectives in"
                )
            try:
                agree_on_collective(self.network.world, layer, x.shape)
            except TrtDslError:  # another rank failed or is out of step: NCCL would hang
                abort = getattr(self.network.world, "abort_communicators", None)
                if abort is not None:
                    abort()
                raise
        if not x.flags.c_contiguous:
            x = self.cp.ascontiguousarray(x)
        if bound is None:  # a group of one rank
            return x.copy()
        return bound(x)

    # -- results ----------------------------------------------------------------------------
    def _deliver(self, outs: dict, feeds: Mapping[str, Any], out: Mapping[str, Any] | None) -> dict:
        cp = self.cp
        stream = self._stream
        if out is None:
            host = not self.return_device
        else:  # host arrays among the given outputs: the host reads them after the copies
            host = any(not isinstance(out[k], cp.ndarray) for k in outs if k in out)
        if self._watch is not None:  # wait through the watchdog where the host would block
            self._watched(stream, wait=host)
        if out is not None:  # checked and copied by Session._deliver through _copy_into
            delivered = super()._deliver(outs, feeds, out)
            if host and stream is not None:
                stream.synchronize()
            return delivered
        if self.return_device:
            if self._graph is not None:  # graph buffers are overwritten by the next launch
                return {k: v.copy() for k, v in outs.items()}
            return {  # never the cached constant itself: a caller's write would change it
                k: v.copy() if id(v) in self._constants else self._own(v, feeds)
                for k, v in outs.items()
            }
        res = {k: cp.asnumpy(v, stream=stream) for k, v in outs.items()}
        if stream is not None:
            stream.synchronize()
        return res

    def _copy_into(self, dst: Any, src: Any, name: str) -> None:
        self._check_out(dst, src, name)
        if isinstance(dst, self.cp.ndarray):  # stream-ordered on the caller's stream
            _device_copy(self.cp, dst, src)
        else:
            src.get(stream=self._stream, out=dst)

    def _release(self) -> None:
        self._graph = None
        self._graph_values = None
        self._static_in, self._static_out = {}, {}
        dog = self._watch
        try:  # the last work, through the watchdog where there is one (raises if it fires)
            if dog is None:
                if self._stream is not None:
                    self._stream.synchronize()
            elif dog.fired is None and self._stream is not None:
                self._watched(self._stream, wait=True)
            elif dog.fired is None and self._last is not None:
                dog.wait(self._last)
        finally:  # the handles are freed even when the last wait raised
            if dog is not None:
                dog.detach(self)
            if self._gemm is not None:
                self._gemm.close()
                self._gemm = None
            if self._pool is not None:
                self._pool.free_all_blocks()
