"""Named weights from a safetensors file (or a dict of arrays) into network constants, with
tensor-parallel sharding at load time: a rank reads only its own slice of the file.

>>> import numpy as np, trtdsl as td
>>> wt = Weights({"w": np.arange(12, dtype="float32").reshape(3, 4)})
>>> def rank_fn(world):
...     net = td.Network("load", world=world)
...     w = wt.constant(net, "w", shape=(3, 4), shard_axis=-1)    # columns split over ranks
...     return w.shape, w.name
>>> td.InProcessWorld(2).run(rank_fn)
[((3, 2), 'w'), ((3, 2), 'w')]

A constant is named after its weight, so an engine built with ``refit=True`` can be refitted
from the same file: ``refit_engine(engine, wt.shards(net))`` (see
:mod:`trtdsl.backends.tensorrt.refit`). ``safetensors`` is the optional extra ``weights``
(``pip install trtdsl[weights]``); a dict of arrays needs nothing.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import dtypes
from .errors import DefinitionError, user_location
from .network import Network
from .parallel._common import coords
from .tensor import Tensor


class WeightsError(DefinitionError):
    """A weight is missing, mis-shaped or does not split over the ranks (names the tensor)."""


def _fail(message: str) -> WeightsError:
    return WeightsError(message, where=user_location())


def save_weights(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` (name -> NumPy array) as a safetensors file; returns the path."""
    from safetensors.numpy import save_file

    path = Path(path)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    return path


class Weights:
    """Weights by name: from a safetensors file (read lazily, slice by slice) or a mapping."""

    def __init__(self, source: str | os.PathLike | Mapping[str, Any]) -> None:
        self._arrays: Mapping[str, Any] | None = None
        self._path: Path | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, str] = {}
        if isinstance(source, Mapping):
            self._arrays = {str(k): np.asarray(v) for k, v in source.items()}
            for k, v in self._arrays.items():
                self._shapes[k], self._dtypes[k] = tuple(v.shape), str(v.dtype)
        elif isinstance(source, (str, os.PathLike)):
            self._path = Path(source)
            if not self._path.is_file():
                raise _fail(f"weights file {str(self._path)!r} does not exist")
            try:
                from safetensors import safe_open
            except ImportError:
                raise _fail(
                    "reading safetensors files needs the 'safetensors' package "
                    "(pip install 'trtdsl[weights]')"
                ) from None
            with safe_open(str(self._path), framework="numpy") as f:
                for k in f.keys():
                    sl = f.get_slice(k)
                    self._shapes[k] = tuple(int(d) for d in sl.get_shape())
                    self._dtypes[k] = str(sl.get_dtype())
        else:
            raise _fail(f"weights come from a file path or a mapping, got {type(source).__name__}")

    def __repr__(self) -> str:
        src = str(self._path) if self._path else "a dict"
        return f"<Weights: {len(self._shapes)} tensors from {src}>"

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def keys(self) -> list[str]:
        return list(self._shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        """The full shape of weight ``name`` (from the file's header: nothing is read)."""
        self._check_name(name)
        return self._shapes[name]

    def _check_name(self, name: str) -> None:
        if name not in self._shapes:
            close = difflib.get_close_matches(str(name), list(self._shapes), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            src = f" in {str(self._path)!r}" if self._path else ""
            raise _fail(f"weight {name!r} is missing{src} ({len(self._shapes)} tensors){hint}")

    def get(
        self,
        name: str,
        *,
        shape: Sequence[int] | None = None,
        shard_axis: int | None = None,
        rank: int = 0,
        size: int = 1,
    ) -> np.ndarray:
        """Weight ``name`` (checked against the full ``shape`` when given), or chunk ``rank`` of
        ``size`` equal chunks along ``shard_axis``: from a file only that slice is read."""
        self._check_name(name)
        full = self._shapes[name]
        if shape is not None and tuple(shape) != full:
            raise _fail(f"weight {name!r} has shape {full}, the network expects {tuple(shape)}")
        index: tuple[slice, ...] = tuple(slice(None) for _ in full)
        if shard_axis is not None and size > 1:
            if not -len(full) <= shard_axis < len(full):
                raise _fail(f"weight {name!r} {full}: shard axis {shard_axis} out of range")
            ax = shard_axis % len(full)
            if full[ax] % size:
                raise _fail(
                    f"weight {name!r} {full}: axis {ax} ({full[ax]}) does not split evenly over "
                    f"{size} ranks"
                )
            c = full[ax] // size
            index = index[:ax] + (slice(rank * c, (rank + 1) * c),) + index[ax + 1 :]
        if self._arrays is not None:
            return np.ascontiguousarray(self._arrays[name][index])
        from safetensors import safe_open

        with safe_open(str(self._path), framework="numpy") as f:
            return np.ascontiguousarray(f.get_slice(name)[index])

    def constant(
        self,
        net: Network,
        name: str,
        *,
        shape: Sequence[int] | None = None,
        shard_axis: int | None = None,
        groups: Any = None,
        dtype: Any = None,
        const_name: str | None = None,
    ) -> Tensor:
        """A constant named ``const_name`` (default ``name``) holding this rank's shard of
        weight ``name``: split along ``shard_axis`` over the rank's group of ``groups`` (the
        network's world when None; no split without a world), cast to ``dtype`` if given."""
        idx, n = coords(net, groups) if shard_axis is not None else (0, 1)
        arr = self.get(name, shape=shape, shard_axis=shard_axis, rank=idx, size=n)
        if dtype is not None:
            arr = arr.astype(dtypes.as_dtype(dtype).numpy)
        return net.constant(arr, name=const_name or name)

    def shards(self, net: Network, groups: Any = None) -> dict[str, np.ndarray]:
        """For refit: every constant of ``net`` whose name is a weight here, with this
        network's shape (a constant smaller than its weight along one axis is this rank's
        shard over its group of ``groups``, as :meth:`constant` made it)."""
        out = {}
        for layer in net.layers:
            if layer.op.name != "constant" or layer.name not in self._shapes:
                continue
            have = layer.attrs["value"]
            full = self._shapes[layer.name]
            if tuple(have.shape) == full:
                arr = self.get(layer.name)
            else:
                axes = [i for i, (a, b) in enumerate(zip(have.shape, full)) if a != b]
                if len(axes) != 1 or full[axes[0]] % have.shape[axes[0]]:
                    raise _fail(f"constant {layer.name!r} {have.shape} is no shard of {full}")
                ax = axes[0]
                idx, n = coords(net, groups)
                if n * have.shape[ax] != full[ax]:
                    raise _fail(f"constant {layer.name!r} {have.shape} is no 1/{n} shard of {full}")
                arr = self.get(layer.name, shard_axis=ax, rank=idx, size=n)
            out[layer.name] = arr.astype(have.dtype)
        return out


def load_weights(source: str | os.PathLike | Mapping[str, Any]) -> Weights:
    """:class:`Weights` from a safetensors file path or a mapping of arrays."""
    return Weights(source)


__all__ = ["Weights", "WeightsError", "load_weights", "save_weights"]
