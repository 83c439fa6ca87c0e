"""Building serialized TensorRT 11 engines from networks: options, profiles, cache, progress.

``build_engine(net, ...)`` (also ``Network.build(...)``) validates its options, imports
TensorRT (:class:`TensorRTUnavailableError` when it cannot), and returns the plan's bytes: from
the per-process cache, from ``cache_dir``, or by lowering and building the network.

Engine cache key: SHA-256 of a canonical serialization of the network (layers, ops, attributes,
inferred types, constants' bytes, I/O names, world size and rank) plus the options that shape
the engine (workspace, optimization profiles) plus the TensorRT version and the GPU.

>>> import trtdsl as td
>>> net = td.Network("n")
>>> _ = net.output(net.input("x", (None, 4)).relu(), "y")
>>> normalize_profiles(net, {"x": [(1, 64), 4]})
[{'x': ((1, 4), (64, 4), (64, 4))}]
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ... import dtypes
from ...atomic_file import write_atomically
from ...ir import TensorType
from .errors import BuildError, BuildOptionError
from .lowering import lower_network
from .module import get_logger, import_tensorrt

#: Oldest TensorRT major version the backend supports.

Shape = tuple[int, ...]
#: One optimization profile: input name -> (min, opt, max) shapes.
Profile = dict[str, tuple[Shape, Shape, Shape]]


# --- options -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Validated build options. ``workspace``, ``profiles`` and ``tf32`` shape the engine (they
    are in the cache key); ``timing_cache``, ``progress`` and ``cache_dir`` do not.

    ``tf32`` False (the default) clears ``BuilderFlag.TF32``, which TensorRT sets by default:
    float32 matmuls then round their inputs to 10 mantissa bits and miss strict fp32 tolerances.
    """

    workspace: int | None = None
    timing_cache: Path | None = None
    profiles: tuple[Profile, ...] = ()
    progress: bool = True
    cache_dir: Path | None = None
    tf32: bool = False
    refit: bool = False

    def key_fields(self) -> dict[str, Any]:
        fields = {"workspace": self.workspace, "profiles": [dict(p) for p in self.profiles]}
        if self.tf32:  # absent when False: keys of engines built before the option stay valid
            fields["tf32"] = True
        if self.refit:
            fields["refit"] = True
        return fields


def _path(value: Any, what: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise BuildOptionError(
            f"{what} must be a file system path (str or PathLike), got {value!r}"
        )
    return Path(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _dim_range(name: str, axis: int, static: int | None, entry: Any) -> tuple[int, int, int]:
    """(min, opt, max) of one dim from a user entry: int, (lo, hi), (lo, opt, hi) or None."""
    where = f"profile for input '{name}', dim {axis}"
    if entry is None:
        if static is None:
            raise BuildOptionError(f"{where} is dynamic: give its range, e.g. (1, 64)")
        return static, static, static
    if _is_int(entry):
        lo = opt = hi = int(entry)
    elif isinstance(entry, (tuple, list)) and len(entry) in (2, 3) and all(map(_is_int, entry)):
        lo, hi = int(entry[0]), int(entry[-1])
        opt = int(entry[1]) if len(entry) == 3 else hi
    else:
        raise BuildOptionError(
            f"{where}: expected an int, (min, max) or (min, opt, max), got {entry!r}"
        )
    if not 0 <= lo <= opt <= hi:
        raise BuildOptionError(f"{where}: need 0 <= min <= opt <= max, got {(lo, opt, hi)}")
    if static is not None and (lo, hi) != (static, static):
        raise BuildOptionError(f"{where} is static ({static}); its range {(lo, opt, hi)} differs")
    return lo, opt, hi


def _input_profile(name: str, ty: TensorType, spec: Any) -> tuple[Shape, Shape, Shape]:
    shape = ty.shape
    if isinstance(spec, Mapping) and set(spec) and set(spec) <= {"min", "opt", "max"}:
        if set(spec) != {"min", "opt", "max"}:
            raise BuildOptionError(f"profile for input '{name}': give all of min, opt and max")
        shapes = []
        for k in ("min", "opt", "max"):
            s = spec[k]
            if not isinstance(s, (tuple, list)) or not all(map(_is_int, s)):
                raise BuildOptionError(
                    f"profile for input '{name}': {k} must be a shape, got {s!r}"
                )
            if len(s) != len(shape):
                raise BuildOptionError(
                    f"profile for input '{name}': {k} {tuple(s)} has rank {len(s)}, the input "
                    f"has rank {len(shape)}"
                )
            shapes.append(tuple(int(d) for d in s))
        per_dim = [
            _dim_range(name, i, shape[i], tuple(s[i] for s in shapes)) for i in range(len(shape))
        ]
    else:
        if isinstance(spec, Mapping):
            bad = [k for k in spec if not _is_int(k) or not -len(shape) <= k < len(shape)]
            if bad:
                raise BuildOptionError(
                    f"profile for input '{name}': keys must be axes of rank {len(shape)} or "
                    f"'min'/'opt'/'max', got {bad}"
                )
            entries: list[Any] = [None] * len(shape)
            for k, v in spec.items():
                entries[int(k) % len(shape)] = v
        elif isinstance(spec, (tuple, list)):
            if len(spec) != len(shape):
                raise BuildOptionError(
                    f"profile for input '{name}': {len(spec)} entries for an input of rank "
                    f"{len(shape)} (one per dim: int, (min, max), (min, opt, max) or None)"
                )
            entries = list(spec)
        else:
            raise BuildOptionError(
                f"profile for input '{name}': expected per-dim ranges (a list, or a dict of "
                f"axis -> range) or {{'min': ..., 'opt': ..., 'max': ...}}, got {spec!r}"
            )
        per_dim = [_dim_range(name, i, shape[i], e) for i, e in enumerate(entries)]
    mn, opt, mx = (tuple(r[j] for r in per_dim) for j in range(3))
    return mn, opt, mx


def normalize_profiles(net: Any, profiles: Any) -> list[Profile]:
    """Optimization profiles as [{input: (min, opt, max)}] for the inputs with dynamic dims.

    ``profiles``: None, or one mapping (or a list of mappings, one per profile) from input
    name to per-dim ranges ``[(1, 64), 16]`` / ``{0: (1, 64)}`` (an int is a fixed size,
    ``(min, max)`` uses opt = max, ``(min, opt, max)`` is explicit, None keeps a static dim),
    or to explicit shapes ``{"min": (1, 16), "opt": (8, 16), "max": (64, 16)}``. Every dynamic
    input needs a range in every profile.
    """
    dynamic = {n: t.type for n, t in net.inputs.items() if not t.type.is_static}
    if profiles is None:
        profiles = []
    elif isinstance(profiles, Mapping):
        profiles = [profiles]
    elif not isinstance(profiles, (list, tuple)) or not all(
        isinstance(p, Mapping) for p in profiles
    ):
        raise BuildOptionError(
            "profiles must be a mapping {input name: ranges} or a list of such mappings, "
            f"got {profiles!r}"
        )
    if dynamic and not profiles:
        shown = ", ".join(f"'{n}' {t}" for n, t in dynamic.items())
        raise BuildOptionError(
            f"network '{net.name}' has inputs with dynamic dims ({shown}): pass "
            f"profiles={{name: ranges}}, e.g. profiles={{'{next(iter(dynamic))}': "
            f"{[(1, 64) if d is None else d for d in next(iter(dynamic.values())).shape]}}}"
        )
    out: list[Profile] = []
    for k, prof in enumerate(profiles):
        unknown = sorted(set(prof) - set(net.inputs))
        if unknown:
            raise BuildOptionError(
                f"profile {k} names unknown input(s) {unknown}; inputs: {sorted(net.inputs)}"
            )
        missing = sorted(set(dynamic) - set(prof))
        if missing:
            raise BuildOptionError(f"profile {k} gives no range for dynamic input(s) {missing}")
        norm: Profile = {}
        for name in net.inputs:  # input order, so the key does not depend on dict order
            if name in prof:
                ranges = _input_profile(name, net.inputs[name].type, prof[name])
                if name in dynamic:
                    norm[name] = ranges
        out.append(norm)
    return out


def validate_options(
    net: Any,
    workspace: Any = None,
    timing_cache: Any = None,
    profiles: Any = None,
    progress: Any = True,
    cache_dir: Any = None,
    tf32: Any = False,
    refit: Any = False,
) -> BuildOptions:
    """Check build options without TensorRT; ValueError/TypeError naming the bad one."""
    if workspace is not None and (not _is_int(workspace) or workspace <= 0):
        raise BuildOptionError(
            f"workspace must be a positive number of bytes or None, got {workspace!r}"
        )
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not isinstance(tf32, (bool, np.bool_)):
        raise TypeError(f"tf32 must be True or False, got {tf32!r}")
    if not isinstance(refit, (bool, np.bool_)):
        raise TypeError(f"refit must be True or False, got {refit!r}")
    return BuildOptions(
        workspace=None if workspace is None else int(workspace),
        timing_cache=_path(timing_cache, "timing_cache"),
        profiles=tuple(normalize_profiles(net, profiles)),
        progress=bool(progress),
        cache_dir=_path(cache_dir, "cache_dir"),
        tf32=bool(tf32),
        refit=bool(refit),
    )


# --- cache key -----------------------------------------------------------------------------
def _canon(value: Any) -> Any:
    """A JSON-able, deterministic form of an attribute value (no ids, no addresses)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if _is_int(value):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return ["float", float(value).hex()]
    if isinstance(value, dtypes.DType):
        return ["dtype", value.name]
    if isinstance(value, TensorType):
        return ["type", _canon(value.shape), value.dtype.name]
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        digest = hashlib.sha256(arr.tobytes()).hexdigest()
        return ["array", str(arr.dtype), list(arr.shape), digest]
    if isinstance(value, Path):
        return ["path", str(value)]
    if isinstance(value, enum.Enum):
        return ["enum", type(value).__name__, value.name]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _canon(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return ["dataclass", type(value).__name__, fields]
    if isinstance(value, Mapping):
        return ["map", sorted((json.dumps(_canon(k)), _canon(v)) for k, v in value.items())]
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return ["set", sorted(json.dumps(_canon(v)) for v in value)]
    text = repr(value)
    if " at 0x" in text:
        raise TypeError(f"cannot make a stable cache key from {type(value).__name__} {text}")
    return ["repr", type(value).__name__, text]


def canonical_network(net: Any) -> dict[str, Any]:
    """Everything about ``net`` that an engine depends on, as plain JSON-able data."""
    index = {id(layer): i for i, layer in enumerate(net.layers)}
    layers = []
    for layer in net.layers:
        layers.append(
            {
                "name": layer.name,
                "op": layer.op.name,
                "inputs": [[index[id(t.producer)], t.index] for t in layer.inputs],
                "attrs": {k: _canon(v) for k, v in sorted(layer.attrs.items())},
                "outputs": [_canon(t.type) for t in layer.outputs],
            }
        )
    return {
        "name": net.name,
        "world_size": net.world_size,
        "rank": net.rank,
        "inputs": list(net.inputs),
        "outputs": [[n, index[id(t.producer)], t.index] for n, t in net.outputs.items()],
        "layers": layers,
    }


def cache_key(
    net: Any, options: BuildOptions | None = None, trt_version: str = "", device: str = ""
) -> str:
    """SHA-256 hex of the network, the engine-shaping options, TensorRT's version and GPU."""
    options = options if options is not None else validate_options(net)
    doc = {
        "format": 1,
        "network": canonical_network(net),
        "options": _canon(options.key_fields()),
        "tensorrt": trt_version,
        "device": device,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_file(cache_dir: Path, net: Any, key: str) -> Path:
    """``<cache_dir>/<net name>.rank<r>of<n>.<key>.engine`` (name made file-system safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(net.name))[:64] or "net"
    rank = "" if net.world_size is None else f".rank{net.rank}of{net.world_size}"
    return cache_dir / f"{safe}{rank}.{key}.engine"


#: Plans built (or loaded) in this process, by cache key; the oldest go first.
_MEMORY_CACHE: OrderedDict[str, bytes] = OrderedDict()
_MEMORY_CACHE_SIZE = 16
_LOCK = threading.Lock()


def _remember(key: str, plan: bytes) -> None:
    with _LOCK:
        _MEMORY_CACHE[key] = plan
        _MEMORY_CACHE.move_to_end(key)
        while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
            _MEMORY_CACHE.popitem(last=False)


# --- TensorRT objects ----------------------------------------------------------------------
class ProgressPrinter:
    """Text progress of TensorRT's build phases (no TensorRT needed, so it is testable).

    On a terminal, the innermost phase's step counter is rewritten in place; elsewhere only
    top-level phase starts and ends are printed.
    """

    def __init__(self, label: str = "", stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.phases: dict[str, tuple[int, int, float]] = {}  # name -> (depth, steps, start)

    def _write(self, text: str, end: str = "\n") -> None:
        prefix = f"[trtdsl build{' ' + self.label if self.label else ''}] "
        self.stream.write(("\r" if end == "" else "") + prefix + text + end)
        self.stream.flush()

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        depth = 0 if not parent else self.phases.get(parent, (0, 0, 0.0))[0] + 1
        self.phases[phase] = (depth, int(num_steps), time.monotonic())
        if depth == 0 or self.tty:
            self._write(f"{'  ' * depth}{phase} ({num_steps} steps)", "" if self.tty else "\n")

    def step_complete(self, phase: str, step: int) -> bool:
        if self.tty and phase in self.phases:
            depth, steps, _ = self.phases[phase]
            self._write(f"{'  ' * depth}{phase}: {step + 1}/{steps}", "")
        return True  # False would cancel the build

    def phase_finish(self, phase: str) -> None:
        depth, _, start = self.phases.pop(phase, (0, 0, time.monotonic()))
        if depth == 0 or self.tty:
            self._write(f"{'  ' * depth}{phase} done in {time.monotonic() - start:.1f} s")


def make_progress_monitor(trt: Any, printer: ProgressPrinter) -> Any:
    """A ``trt.IProgressMonitor`` whose three callbacks feed ``printer``."""

    class _Monitor(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Any, num_steps: int) -> None:
            printer.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return printer.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            printer.phase_finish(phase_name)

    return _Monitor()


def configure(
    trt: Any, builder: Any, options: BuildOptions, label: str = "", stream: TextIO | None = None
) -> tuple[Any, list[Any]]:
    """A builder config for ``options``; returns (config, objects to keep alive)."""
    config = builder.create_builder_config()
    keep: list[Any] = []
    # TensorRT turns TF32 on by default; trtdsl keeps float32 strict unless asked.
    if options.tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.refit:  # constants keep their names: refit them with trtdsl.backends...refit
        config.set_flag(trt.BuilderFlag.REFIT)
    if options.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace)
    for prof in options.profiles:
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in prof.items():
            profile.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(profile)
        keep.append(profile)
    if options.timing_cache is not None:
        data = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, False):
            sys.stderr.write(
                f"[trtdsl] timing cache {options.timing_cache} does not match this TensorRT or "
                "GPU; starting an empty one\n"
            )
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, True)
        keep.append(cache)
    if options.progress:
        monitor = make_progress_monitor(trt, ProgressPrinter(label, stream))
        config.progress_monitor = monitor
        keep.append(monitor)
    return config, keep


def device_description() -> str:
    """'<GPU name> sm<major><minor>' of the current CUDA device, or '' if unknown."""
    try:
        from .runtime import current_device_description

        return current_device_description()
    except Exception:
        return ""


def build_plan(trt: Any, net: Any, options: BuildOptions) -> bytes:
    """Lower ``net`` and build a serialized engine with the ``tensorrt`` module ``trt``."""
    logger, logs = get_logger(trt)
    builder = trt.Builder(logger)
    _, network, ctx = lower_network(net, trt, builder)
    label = "" if not net.world_size or net.world_size == 1 else f"rank {net.rank}"
    config, keep = configure(trt, builder, options, label)
    start = len(logs.errors)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = "\n  ".join(map(ctx.explain, logs.errors[start:])) or "(TensorRT logged no error)"
        raise BuildError(f"TensorRT could not build network '{net.name}':\n  {errors}")
    data = bytes(plan)
    if options.timing_cache is not None:
        options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    del ctx, keep  # the weights and profiles lived until here
    return data


def build_engine(
    net: Any,
    workspace: int | None = None,
    timing_cache: str | os.PathLike | None = None,
    profiles: Any = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    tf32: bool = False,
    refit: bool = False,
) -> bytes:
    """Build (or fetch from the cache) this rank's serialized TensorRT engine for ``net``.

    ``workspace``: the WORKSPACE memory pool limit in bytes. ``timing_cache``: a file to load
    and save TensorRT's timing cache. ``profiles``: ranges of the dynamic input dims (see
    :func:`normalize_profiles`). ``progress``: print build phases to stderr. ``cache_dir``:
    keep engines as files, keyed by :func:`cache_key`. ``tf32``: allow TF32 for float32
    matmuls and convolutions (default False: ``BuilderFlag.TF32`` is cleared, strict fp32).
    ``refit``: set ``BuilderFlag.REFIT``; every constant's weights can then be replaced by
    name (the DSL constant's name) with :func:`~trtdsl.backends.tensorrt.refit.refit_engine`.
    """
    options = validate_options(
        net, workspace, timing_cache, profiles, progress, cache_dir, tf32, refit
    )
    trt = import_tensorrt()
    key = cache_key(net, options, str(trt.__version__), device_description())
    with _LOCK:
        plan = _MEMORY_CACHE.get(key)
    if plan is not None:
        return plan
    path = cache_file(options.cache_dir, net, key) if options.cache_dir is not None else None
    if path is not None and path.is_file():
        plan = path.read_bytes()
    else:
        plan = build_plan(trt, net, options)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, plan)
    _remember(key, plan)
    return plan
