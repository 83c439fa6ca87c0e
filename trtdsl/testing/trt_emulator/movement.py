"""Data-movement layers: IConstant, IShape, IShuffle, ISlice, IConcatenation, IGather.

Semantics from TensorRT's operator documentation (Constant, Shape, Shuffle, Slice,
Concatenation, Gather pages) and the 11.4 bindings' docstrings.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from .graph import (
    EmulatorError,
    LayerView,
    dims,
    enum_name,
    is_int,
    permutation,
    read_weights,
    type_name,
)


def constant(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """The weights, of the weights' type, in ``shape`` (the count must match the volume)."""
    v.allow("shape", "weights")
    shape = dims(v.prop("shape"), f"{v.where()} shape")
    if any(d < 0 for d in shape):
        raise v.fail(f"constant shape {shape} has a negative dim")
    data = read_weights(v.prop("weights"), f"{v.where()} weights")
    if data.size != math.prod(shape):
        raise v.fail(f"weights hold {data.size} values, shape {shape} needs {math.prod(shape)}")
    return [data.reshape(shape)]


def shape(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """The input's shape as a 1-D INT64 tensor."""
    v.allow()
    return [np.asarray(ins[0].shape, np.int64)]


def _shape_values(t: np.ndarray | None, rank: int | None, what: str) -> tuple[int, ...] | None:
    if t is None:
        return None
    if not is_int(t) or t.ndim != 1:
        raise EmulatorError(f"{what}: needs a 1-D INT32/INT64 tensor, got {t.dtype} {t.shape}")
    if rank is not None and t.shape[0] != rank:
        raise EmulatorError(f"{what}: has {t.shape[0]} entries, the input has rank {rank}")
    return tuple(int(d) for d in t)


def resolve_reshape(
    in_shape: tuple[int, ...], spec: tuple[int, ...], zero_copies: bool, what: str
) -> tuple[int, ...]:
    """Reshape dims: 0 copies the input dim at that index (when ``zero_copies``), one -1 is
    inferred from the volume; the volume must be unchanged."""
    out = []
    for i, d in enumerate(spec):
        if d == 0 and zero_copies:
            if i >= len(in_shape):
                raise EmulatorError(f"{what}: 0 at index {i}, the input has rank {len(in_shape)}")
            out.append(in_shape[i])
        elif d < -1:
            raise EmulatorError(f"{what}: reshape dim {d} < -1")
        else:
            out.append(d)
    total = math.prod(in_shape)
    if out.count(-1) > 1:
        raise EmulatorError(f"{what}: more than one -1 in {spec}")
    if -1 in out:
        rest = math.prod(d for d in out if d != -1)
        if rest == 0 or total % rest:
            raise EmulatorError(f"{what}: cannot infer -1 reshaping {in_shape} to {spec}")
        out[out.index(-1)] = total // rest
    if math.prod(out) != total:
        raise EmulatorError(f"{what}: reshape {in_shape} ({total} values) to {tuple(out)}")
    return tuple(out)


def shuffle(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """first_transpose, then reshape (``reshape_dims`` or input 1), then second_transpose."""
    v.allow("first_transpose", "reshape_dims", "second_transpose", "zero_is_placeholder")
    x = ins[0]
    if len(ins) > 2:
        raise v.fail(f"a shuffle has at most 2 inputs, got {len(ins)}")
    y = np.transpose(x, permutation(v.prop("first_transpose"), x.ndim, f"{v.where()} first"))
    dyn = ins[1] if len(ins) > 1 else None
    static = v.prop("reshape_dims")
    if dyn is not None and static is not None:
        raise v.fail("reshape_dims is set and input 1 gives the dims too (ambiguous)")
    spec = _shape_values(dyn, None, f"{v.where()} input 1") if dyn is not None else None
    if static is not None:
        spec = dims(static, f"{v.where()} reshape_dims")
    if spec is not None:
        zero_copies = bool(v.prop("zero_is_placeholder", True))
        y = y.reshape(resolve_reshape(y.shape, spec, zero_copies, v.where()))
    y = np.transpose(y, permutation(v.prop("second_transpose"), y.ndim, f"{v.where()} second"))
    return [y.copy(order="C")]


def _sample(x: np.ndarray, n: int, d: int, mode: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices for coordinates ``x`` of a dim of size ``d``, and the in-bounds mask."""
    inside = (x >= 0) & (x < d)
    if mode == "STRICT_BOUNDS":
        if not inside.all():
            bad = int(x[~inside][0])
            raise EmulatorError(f"{what}: coordinate {bad} outside [0, {d}) (STRICT_BOUNDS)")
        return x, inside
    if d == 0:
        if n and mode != "FILL":
            raise EmulatorError(f"{what}: {mode} sampling of an empty dim")
        return np.zeros_like(x), inside
    if mode == "WRAP":
        return np.mod(x, d), inside
    if mode == "CLAMP":
        return np.clip(x, 0, d - 1), inside
    if mode == "FILL":
        return np.where(inside, x, 0), inside
    if mode == "REFLECT":
        if d == 1:
            return np.zeros_like(x), inside
        c = np.mod(np.abs(x), 2 * d - 2)
        return np.where(c >= d, 2 * d - 2 - c, c), inside
    raise EmulatorError(f"{what}: SampleMode.{mode} is not modelled")


def slice_(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``output[y] = input[start + y * stride]`` per dim, out-of-bounds handled by ``mode``;
    start/size/stride/fill/axes may come from inputs 1-5."""
    v.allow("start", "shape", "stride", "mode", "axes")
    x = ins[0]
    extra = list(ins[1:]) + [None] * (6 - len(ins))
    axes_t = extra[4]
    axes = _shape_values(axes_t, None, f"{v.where()} axes input") if axes_t is not None else None
    if axes is None and v.prop("axes") is not None:
        axes = dims(v.prop("axes"), f"{v.where()} axes")
    n = x.ndim if axes is None else len(axes)
    parts = []
    for key, idx in (("start", 0), ("shape", 1), ("stride", 2)):
        given = _shape_values(extra[idx], n, f"{v.where()} input {idx + 1} ({key})")
        if given is None:
            if v.prop(key) is None:
                raise v.fail(f"no {key} (neither the property nor input {idx + 1})")
            given = dims(v.prop(key), f"{v.where()} {key}")
        if len(given) != n:
            raise v.fail(f"{key} has {len(given)} entries, expected {n}")
        parts.append(given)
    start, size, stride = parts
    if axes is not None:
        full = [[0] * x.ndim, list(x.shape), [1] * x.ndim]
        norm = [a + x.ndim if a < 0 else a for a in axes]
        if sorted(set(norm)) != sorted(norm) or any(not 0 <= a < x.ndim for a in norm):
            raise v.fail(f"bad axes {axes} for rank {x.ndim}")
        for j, a in enumerate(norm):
            for p in range(3):
                full[p][a] = parts[p][j]
        start, size, stride = (tuple(p) for p in full)
    mode = enum_name(v.prop("mode"), v.where()) if v.prop("mode") is not None else "STRICT_BOUNDS"
    if any(s < 0 for s in size):
        raise v.fail(f"negative slice size {size}")
    index, inside = [], []
    for i, (s, n_i, st) in enumerate(zip(start, size, stride)):
        coords = s + np.arange(n_i, dtype=np.int64) * st
        src, ok = _sample(coords, n_i, x.shape[i], mode, f"{v.where()} dim {i}")
        index.append(src)
        inside.append(ok)
    out = x[np.ix_(*index)] if x.ndim else x.copy()
    if mode == "FILL":
        fill = extra[3]
        value = np.zeros((), x.dtype) if fill is None else fill
        if fill is not None and fill.size != 1:
            raise v.fail(f"the fill value must be a scalar, got shape {fill.shape}")
        mask = np.ones(out.shape, bool)
        for i, ok in enumerate(inside):
            shape = [1] * out.ndim
            shape[i] = -1
            mask &= ok.reshape(shape)
        out = np.where(mask, out, np.asarray(value).reshape(()).astype(x.dtype))
    return [out.copy(order="C")]


def concatenation(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """Inputs joined along ``axis`` (default: rank - 3, or 0 below rank 3)."""
    v.allow("axis")
    if not ins:
        raise v.fail("no inputs")
    rank = ins[0].ndim
    axis = operator.index(v.prop("axis", max(0, rank - 3)))
    if not 0 <= axis < max(rank, 1):
        raise v.fail(f"axis {axis} outside [0, {rank})")
    for t in ins:
        if t.dtype != ins[0].dtype:
            raise v.fail(f"input types differ ({type_name(ins[0].dtype)} vs {type_name(t.dtype)})")
        if t.ndim != rank or any(
            a != b for i, (a, b) in enumerate(zip(t.shape, ins[0].shape)) if i != axis
        ):
            raise v.fail(f"shapes {[u.shape for u in ins]} differ outside axis {axis}")
    return [np.concatenate(ins, axis=axis)]


def _check_indices(idx: np.ndarray, d: int, what: str) -> np.ndarray:
    if not is_int(idx) or idx.dtype.itemsize < 4:
        raise EmulatorError(f"{what}: indices must be INT32 or INT64, got {type_name(idx.dtype)}")
    if idx.size and (idx.min() < 0 or idx.max() >= d):
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise EmulatorError(f"{what}: index {bad} outside [0, {d}) (TensorRT's Gather rule)")
    return idx.astype(np.int64)


def gather(v: LayerView, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """GatherMode DEFAULT (ONNX Gather), ELEMENT (GatherElements), ND (GatherND), with
    ``axis`` and ``num_elementwise_dims`` (leading dims shared by data and indices)."""
    v.allow("axis", "mode", "num_elementwise_dims")
    data, idx = ins
    mode = enum_name(v.prop("mode"), v.where()) if v.prop("mode") is not None else "DEFAULT"
    axis = operator.index(v.prop("axis", 0))
    ne = operator.index(v.prop("num_elementwise_dims", 0))
    where = v.where()
    if mode == "DEFAULT":
        if not 0 <= axis < data.ndim or ne not in (0, 1) or (ne and axis == 0):
            raise v.fail(f"axis {axis} / num_elementwise_dims {ne} invalid for rank {data.ndim}")
        idx = _check_indices(idx, data.shape[axis], where)
        if ne == 0:
            return [np.take(data, idx, axis=axis)]
        if idx.ndim < 1 or data.shape[0] != idx.shape[0] and 1 not in (data.shape[0], idx.shape[0]):
            raise v.fail(f"leading dims {data.shape[0]} and {idx.shape} do not broadcast")
        n = max(data.shape[0], idx.shape[0])
        outs = [
            np.take(data[min(i, data.shape[0] - 1)], idx[min(i, idx.shape[0] - 1)], axis=axis - 1)
            for i in range(n)
        ]
        return [np.stack(outs)]
    if mode == "ELEMENT":
        if ne != 0 or idx.ndim != data.ndim or not 0 <= axis < data.ndim:
            raise v.fail(f"ELEMENT needs indices of rank {data.ndim} and a valid axis")
        idx = _check_indices(idx, data.shape[axis], where)
        return [np.take_along_axis(data, idx, axis=axis)]
    if mode == "ND":
        if idx.ndim < 1 or ne >= min(data.ndim, idx.ndim):
            raise v.fail(f"ND with num_elementwise_dims {ne}, ranks {data.ndim}, {idx.ndim}")
        k = idx.shape[-1]
        if data.shape[:ne] != idx.shape[:ne] or ne + k > data.ndim:
            raise v.fail(f"ND indices {idx.shape} do not fit data {data.shape}")
        for j in range(k):
            _check_indices(idx[..., j], data.shape[ne + j], where)
        idx = idx.astype(np.int64)
        batch = int(math.prod(data.shape[:ne]))
        d2 = data.reshape((batch,) + data.shape[ne:])
        i2 = idx.reshape((batch, -1, k))
        out = np.stack([d2[b][tuple(i2[b].T)] for b in range(batch)])
        return [out.reshape(idx.shape[:-1] + data.shape[ne + k :])]
    raise v.unsupported(f"GatherMode.{mode}")
