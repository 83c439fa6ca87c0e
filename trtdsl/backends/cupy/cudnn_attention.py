"""cuDNN's fused attention (SDPA of the ``nvidia-cudnn-frontend`` package, ``import cudnn``):
an optional engine of the cupy backend beside the Triton kernel (:mod:`.attention_engine`).

Layouts as ``kernels.attention.flash_attention``: CuPy q [..., H, Sq, D], k/v [..., H, Sk, D]
(fp16/bf16, unit last stride, other strides positive multiples of 16 bytes: described to cuDNN
as [B, H, S, D], no copy); o [..., H, Sq, D] in q's dtype, lse [..., H, Sq] float32 (natural
log). Causal: key j allowed for row i iff ``k_offset + j <= q_offset + i``: cuDNN's top-left
diagonal band with right bound ``shift = q_offset - k_offset`` (:func:`right_bound`);
``shift < 0`` leaves row 0 without a key (ours: o = 0, lse = -inf; cuDNN: unspecified), so
:func:`supported` refuses it and the Triton kernel runs.

Per thread (nothing is shared between threads: cuDNN handles are per thread, and plans are
not promised to be thread safe): one handle per device, set to CuPy's current stream at each
call, and an LRU of :data:`CACHE_SIZE` graphs, one per (device, dtype, shapes, strides, mask,
return_lse, scale), built on first use with one workspace per stream (at most
:data:`STREAMS_PER_GRAPH`, least recent dropped first: CuPy's pool reuses freed memory in that
stream's order). Nothing is built or allocated while the stream is capturing (a CUDA-graph
session's eager first call builds it); a graph that ran inside a capture, and the workspace it
used, are never dropped, even when their thread ends (the captured launches use them).

>>> o, lse = attention(q, k, v, scale=0.125, causal=True, return_lse=True)   # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ...errors import ExecutionError
from ...kernels.validate import dtype_name, effective_dtype
from . import device

#: Head dims this engine takes (those gpu/check_cudnn_attention.py checks); others: Triton.
HEAD_DIMS: tuple[int, ...] = (64, 128)
#: Our dtype name -> the ``cudnn.data_type`` member.
DATA_TYPES: dict[str, str] = {"float16": "HALF", "bfloat16": "BFLOAT16"}
#: Graphs kept per thread (least recently used evicted first, never one a capture used).
CACHE_SIZE = 64
#: Workspaces kept per graph, one per stream (least recent dropped first, never a captured one).
STREAMS_PER_GRAPH = 4
_ALIGN = 16  # bytes: base pointers and every stride but the last


class CudnnAttentionError(ExecutionError):
    """cuDNN cannot run this call: unsupported, or no graph may be built now (capturing)."""


class CudnnBuildError(CudnnAttentionError):
    """cuDNN could not build a graph for this call (cached: the key is not tried again)."""


class CudnnRunError(CudnnAttentionError):
    """A built graph failed to run (its error wrapped, with the call's shapes and dtype)."""


@dataclass
class Entry:
    """A built graph, its tensors (keys of the variant pack) and workspaces (one per stream,
    least recent first); ``captured``: the streams it ran on inside a CUDA-graph capture."""

    graph: Any
    tensors: tuple[Any, ...]  # q, k, v, o, stats (None without LSE)
    workspace_size: int
    workspaces: OrderedDict[int, Any] = field(default_factory=OrderedDict)
    captured: set[int] = field(default_factory=set)

    @property
    def pinned(self) -> bool:
        """Whether a capture used it (then it is never evicted)."""
        return bool(self.captured)

    def workspace(self, cp: Any, stream: Any) -> int | None:
        """This stream's workspace pointer (allocated on first use; None when none is needed)."""
        if not self.workspace_size:
            return None
        ws = self.workspaces.get(stream.ptr)
        if ws is not None:
            self.workspaces.move_to_end(stream.ptr)
        else:
            if stream.is_capturing():
                raise CudnnAttentionError("no cuDNN workspace for this stream while capturing")
            ws = self.workspaces[stream.ptr] = cp.empty((self.workspace_size,), dtype=cp.uint8)
            free = [p for p in self.workspaces if p != stream.ptr and p not in self.captured]
            for p in free[: max(len(self.workspaces) - STREAMS_PER_GRAPH, 0)]:
                del self.workspaces[p]
        return int(ws.data.ptr)


class _ThreadState(threading.local):
    """One thread's cuDNN handles (by device) and graph cache (key -> Entry, or a str: why
    no graph could be built)."""

    def __init__(self) -> None:
        self.handles: dict[int, Any] = {}
        self.graphs: OrderedDict[tuple, Entry | str] = OrderedDict()


_lock = threading.Lock()  # guards _captured and changes to a set _module
_module: dict[str, Any] = {}
_local = _ThreadState()
_captured: list[tuple[Entry, Any]] = []  # (entry, handle) a capture used: kept past the thread


def graphs() -> OrderedDict[tuple, Entry | str]:
    """The calling thread's graph cache, least recently used first."""
    return _local.graphs


def cudnn_module() -> Any | None:
    """``import cudnn`` (tried once), or None; :func:`import_error` says why."""
    if not _module:
        try:
            import cudnn

            _module["cudnn"] = cudnn
        except Exception as e:  # ImportError, or a libcudnn that fails to load
            _module["error"] = (
                "the cuDNN frontend is not importable (pip install nvidia-cudnn-frontend): "
                f"{type(e).__name__}: {e}"
            )
    return _module.get("cudnn")


def import_error() -> str | None:
    """Why ``import cudnn`` failed, or None."""
    cudnn_module()
    return _module.get("error")


def reset() -> None:
    """Forget the module, the calling thread's handles and graphs, and the graphs kept for
    captures (for tests: a CUDA graph captured with them must not run afterwards)."""
    with _lock:
        _module.clear()
        _captured.clear()
    _local.handles.clear()
    _local.graphs.clear()


def right_bound(causal: bool, shift: int, seq_k: int) -> int | None:
    """cuDNN's ``diagonal_band_right_bound`` (top-left aligned: key j allowed for row i iff
    ``j <= i + bound``) for our rule ``j <= i + shift``; None: no mask (not causal, or every
    row sees all ``seq_k`` keys). ValueError for ``shift < 0`` (row 0 would see no key).

    >>> right_bound(True, 17, 4096), right_bound(True, 4095, 4096), right_bound(False, -3, 9)
    (17, None, None)
    """
    if not causal:
        return None
    if shift < 0:
        raise ValueError(f"causal shift {shift} < 0: row 0 sees no key")
    return None if shift >= seq_k - 1 else shift


def as_4d(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[tuple, tuple] | None:
    """[..., H, S, D] with element strides as [B, H, S, D] (B: the product of the leading
    dims) over the same memory, or None when the leading dims do not merge without a copy.
    A size-1 dim addresses nothing: its stride is set to the span of the others (outermost).

    >>> as_4d((2, 3, 5, 64), (960, 64, 192, 1))  # a [B, S, H, D] array seen as [B, H, S, D]
    ((2, 3, 5, 64), (960, 64, 192, 1))
    >>> as_4d((3, 5, 64), (320, 64, 1)), as_4d((2, 2, 3, 5, 64), (2000, 960, 320, 64, 1))
    (((1, 3, 5, 64), (960, 320, 64, 1)), None)
    """
    *lead, h, s, d = shape
    *lead_st, hs, ss, ds = strides
    kept = [(n, st) for n, st in zip(lead, lead_st) if n != 1]
    if any(s0 != s1 * n1 for (_, s0), (n1, s1) in zip(kept, kept[1:])):
        return None
    dims = (math.prod(lead), h, s, d)
    out = [kept[-1][1] if kept else 0, hs, ss, ds]
    span = max([out[i] * dims[i] for i in range(4) if dims[i] != 1], default=1)
    return dims, tuple(span if n == 1 else st for n, st in zip(dims, out))


def _layout(name: str, x: Any) -> tuple[tuple, tuple] | str:
    """(dims, strides) of ``x`` as [B, H, S, D] in elements, or why cuDNN cannot read it."""
    item = x.dtype.itemsize
    if any(st % item for st in x.strides):
        return f"{name} strides {x.strides} are not whole elements"
    geo = as_4d(tuple(x.shape), tuple(st // item for st in x.strides))
    if geo is None:
        return f"{name} {tuple(x.shape)} strides {x.strides}: leading dims do not merge"
    dims, st = geo
    if st[3] != 1:
        return f"{name} last stride is {st[3]} elements; cuDNN needs 1"
    if any(s <= 0 or (s * item) % _ALIGN for s in st[:3]) or int(x.data.ptr) % _ALIGN:
        return f"{name} base or strides {st} (elements) are not positive multiples of 16 bytes"
    return geo


def supported(
    q: Any, k: Any, v: Any, *, causal: bool, q_offset: int = 0, k_offset: int = 0,
    scale: float | None = None, as_dtype: str | None = None,
) -> str | None:  # fmt: skip
    """None when cuDNN can run this call, else the reason (the Triton kernel runs then).
    ``as_dtype`` as in ``flash_attention`` (uint16 arrays holding bf16 bits)."""
    if cudnn_module() is None:
        return import_error()
    xs = (q, k, v)
    for name, x in zip("qkv", xs):
        if not all(hasattr(x, a) for a in ("shape", "dtype", "strides", "device", "data")):
            return f"{name} is not a CuPy array ({type(x).__name__})"
        if len(x.shape) < 3:
            return f"{name} must be [..., heads, seq, head_dim], got shape {tuple(x.shape)}"
    try:
        dts = {effective_dtype(x, as_dtype, tuple(DATA_TYPES)) for x in xs}
    except ValueError as e:
        return str(e)
    if len(dts) != 1 or not dts <= set(DATA_TYPES) or len({dtype_name(x) for x in xs}) > 1:
        return f"dtypes {[dtype_name(x) for x in xs]}: cuDNN takes one of {tuple(DATA_TYPES)}"
    if tuple(k.shape) != tuple(v.shape) or tuple(q.shape[:-2]) != tuple(k.shape[:-2]):
        return f"shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not agree"
    if q.shape[-1] != k.shape[-1] or q.shape[-1] not in HEAD_DIMS:
        return f"head_dim {q.shape[-1]} (k: {k.shape[-1]}) not in {HEAD_DIMS}"
    if 0 in tuple(q.shape) + tuple(k.shape):
        return f"empty q {tuple(q.shape)} or k {tuple(k.shape)}"
    for name, x in zip("qkv", xs):
        geo = _layout(name, x)
        if isinstance(geo, str):
            return geo
    if len({int(x.device.id) for x in xs}) != 1:
        return "q, k, v live on different devices"
    for name, off in (("q_offset", q_offset), ("k_offset", k_offset)):
        if not isinstance(off, int) or isinstance(off, bool) or abs(off) >= 2**31:
            return f"{name} must be an int32 value, got {off!r}"
    if causal and q_offset < k_offset:
        return f"causal with q_offset {q_offset} < k_offset {k_offset}: row 0 sees no key"
    if scale is not None and not (isinstance(scale, (int, float)) and 0 < scale < math.inf):
        return f"scale must be a finite positive number, got {scale!r}"
    return None


def _handle(cudnn: Any, dev: int) -> Any:
    """This thread's cuDNN handle on device ``dev`` (cuDNN handles are per thread)."""
    per = _local.handles
    return per[dev] if dev in per else per.setdefault(dev, cudnn.create_handle())


def _row_major(dims: tuple) -> list[int]:
    return [math.prod(dims[i + 1 :]) for i in range(len(dims))]


def _build(cudnn: Any, handle: Any, key: tuple) -> Entry:
    """Graph, plans and workspace size for one key (the cuDNN frontend's classic sequence)."""
    _, dt, qd, kd, qs, ks, vs, bound, want_lse, scale = key
    io, f32 = getattr(cudnn.data_type, DATA_TYPES[dt]), cudnn.data_type.FLOAT
    g = cudnn.pygraph(
        io_data_type=io, intermediate_data_type=f32, compute_data_type=f32, handle=handle
    )
    tq, tk, tv = (
        g.tensor(name=n, dim=list(d), stride=list(s), data_type=io)
        for n, d, s in (("q", qd, qs), ("k", kd, ks), ("v", kd, vs))
    )
    band = {"diagonal_alignment": cudnn.diagonal_alignment.TOP_LEFT}
    band = {} if bound is None else {**band, "diagonal_band_right_bound": bound}
    o, stats = g.sdpa(
        name="sdpa", q=tq, k=tk, v=tv, attn_scale=scale, generate_stats=want_lse, **band
    )
    o.set_output(True).set_dim(list(qd)).set_stride(_row_major(qd)).set_data_type(io)
    if want_lse:
        sd = (*qd[:3], 1)
        stats.set_output(True).set_dim(list(sd)).set_stride(_row_major(sd)).set_data_type(f32)
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    g.build_plans()
    return Entry(g, (tq, tk, tv, o, stats if want_lse else None), int(g.get_workspace_size()))


def _entry(key: tuple, cudnn: Any, handle: Any, cp: Any, stream: Any) -> Entry:
    """This thread's cached graph of ``key``, built (with this stream's workspace) if missing."""
    got = _local.graphs.get(key)
    if got is not None:
        _local.graphs.move_to_end(key)
    if isinstance(got, str):
        raise CudnnBuildError(got)
    if got is not None:
        return got
    if stream.is_capturing():
        raise CudnnAttentionError(
            "no cuDNN graph for this call yet, and none is built while a stream is capturing "
            "(run the call once eagerly first)"
        )
    try:
        entry = _build(cudnn, handle, key)
    except Exception as e:  # cudnnGraphNotSupportedError, a refused plan, ...
        got = f"cuDNN could not build this attention graph {key[1:8]}: {type(e).__name__}: {e}"
        _store(key, got)
        raise CudnnBuildError(got) from e
    entry.workspace(cp, stream)  # now: later calls and captures on this stream never allocate
    _store(key, entry)
    return entry


def _store(key: tuple, value: Entry | str) -> None:
    cache = _local.graphs
    cache[key] = value
    old = [k for k, e in cache.items() if k != key and not getattr(e, "pinned", False)]
    for k in old[: max(len(cache) - CACHE_SIZE, 0)]:
        del cache[k]


def attention(
    q: Any, k: Any, v: Any, *, scale: float, causal: bool = False, q_offset: int = 0,
    k_offset: int = 0, return_lse: bool = False, as_dtype: str | None = None,
    checked: bool = False,
) -> tuple[Any, Any | None]:  # fmt: skip
    """softmax(scale q k^T, masked) v through cuDNN on CuPy's current stream: ``(o, lse or
    None)`` as ``flash_attention``. CudnnAttentionError where :func:`supported` refuses
    (not asked again with ``checked``: the caller just did), CudnnBuildError where no graph
    can be built (remembered: that key is not tried again), CudnnRunError where it fails to
    run."""
    if not checked:
        why = supported(q, k, v, causal=causal, q_offset=q_offset, k_offset=k_offset,
                        scale=scale, as_dtype=as_dtype)  # fmt: skip
        if why is not None:
            raise CudnnAttentionError(f"cuDNN attention cannot run this call: {why}")
    cudnn, cp = cudnn_module(), device.cupy_module()
    (qd, qs), (kd, ks), (_, vs) = (_layout(n, x) for n, x in zip("qkv", (q, k, v)))
    bound = right_bound(causal, q_offset - k_offset, kd[2])
    dt = effective_dtype(q, as_dtype, tuple(DATA_TYPES))
    dev = int(q.device.id)
    key = (dev, dt, qd, kd, qs, ks, vs, bound, bool(return_lse), float(scale))
    with cp.cuda.Device(dev):
        stream = cp.cuda.get_current_stream()
        try:
            handle = _handle(cudnn, dev)
        except Exception as e:  # e.g. no libcudnn to load: from now on cuDNN counts as missing
            why = f"cudnn.create_handle() failed: {type(e).__name__}: {e}"
            with _lock:
                _module["error"] = why
                _module.pop("cudnn", None)
            raise CudnnBuildError(why) from e
        entry = _entry(key, cudnn, handle, cp, stream)
        ws = entry.workspace(cp, stream)
        o = cp.empty(qd, dtype=q.dtype)
        lse = cp.empty((*qd[:3], 1), dtype=cp.float32) if return_lse else None
        bufs = (q, k, v, o, lse)  # the variant pack: declared tensor -> device pointer
        pack = {t: int(x.data.ptr) for t, x in zip(entry.tensors, bufs) if x is not None}
        cudnn.set_stream(handle=handle, stream=stream.ptr)
        if stream.is_capturing() and stream.ptr not in entry.captured:
            if not entry.captured:
                with _lock:
                    _captured.append((entry, handle))
            entry.captured.add(stream.ptr)
        try:
            entry.graph.execute(pack, ws, handle=handle)
        except Exception as e:  # cudnnGraphExecutionError, a CUDA error, ...
            mask = "none" if bound is None else f"band right bound {bound}"
            raise CudnnRunError(
                f"cuDNN attention failed to run: q {tuple(q.shape)}, k/v {tuple(k.shape)} {dt}, "
                f"mask {mask}, lse {bool(return_lse)}: {type(e).__name__}: {e}"
            ) from e
    lead = tuple(q.shape[:-2])
    o = o.reshape(lead + tuple(q.shape[-2:]))
    return o, (lse.reshape(lead + (q.shape[-2],)) if lse is not None else None)


__all__ = [
    "CACHE_SIZE", "DATA_TYPES", "HEAD_DIMS", "STREAMS_PER_GRAPH", "CudnnAttentionError",
    "CudnnBuildError", "CudnnRunError", "as_4d", "attention", "cudnn_module", "graphs",
    "import_error", "reset", "right_bound", "supported",
]  # fmt: skip
