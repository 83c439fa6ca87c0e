"""Refitting a TensorRT engine: new weights for its constants, by the DSL constants' names.

Build with ``net.build(refit=True)`` (``BuilderFlag.REFIT``): every constant layer keeps the
DSL constant's name (``net.constant(w, name="blocks.0.w_q")``), and
``refit_engine(engine, {"blocks.0.w_q": new_w, ...})`` replaces those weights in place with
``trt.Refitter.set_named_weights``, then ``refit_cuda_engine``. Weights must have the dtype and
size they were built with, and every refittable weight must be given (TensorRT refits only
when none is missing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ... import dtypes
from . import enums
from .errors import BuildError


def refit_engine(
    engine: Any, weights: Mapping[str, Any], trt: Any = None, logger: Any = None
) -> Any:
    """Refit ``engine`` (an ``ICudaEngine`` built with ``refit=True``) with ``weights``
    (name -> NumPy array; a :class:`trtdsl.weights.Weights` works too). Returns the engine.

    Errors (:class:`BuildError`) name the weight: an unknown name (with the engine's names),
    a dtype or size other than the engine's, weights the engine still misses, a failed refit.
    """
    if trt is None:
        from .module import import_tensorrt

        trt = import_tensorrt()
    if logger is None:
        logger = trt.Logger(trt.Logger.WARNING)
    refitter = trt.Refitter(engine, logger)
    known = list(refitter.get_all_weights() or [])
    keep = []
    names = list(weights.keys())
    for name in names:
        arr = np.ascontiguousarray(weights[name])
        try:
            dt = dtypes.as_dtype(arr.dtype)
        except ValueError as e:
            raise BuildError(f"refit: weight {name!r}: {e}") from None
        trt_dtype = enums.resolve(trt, "DataType", dt.name)
        w = trt.Weights(trt_dtype, int(arr.ctypes.data), int(arr.size))
        keep += [arr, w]
        if not refitter.set_named_weights(str(name), w):
            why = (
                "not a refittable weight of the engine"
                if name not in known
                else (f"dtype {dt} / {arr.size} values differ from the engine's")
            )
            raise BuildError(
                f"refit: weight {name!r} ({dt}{list(arr.shape)}): {why}; the engine's "
                f"refittable weights: {sorted(known)[:20]}"
            )
    missing = list(refitter.get_missing_weights() or [])
    if missing:
        raise BuildError(f"refit: weights still missing: {sorted(missing)[:20]} (give them all)")
    if not refitter.refit_cuda_engine():
        raise BuildError("refit: TensorRT's refit_cuda_engine failed; see TensorRT's log")
    del keep
    return engine
