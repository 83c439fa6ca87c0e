"""Refitting in the fake: an engine stand-in that knows its refittable weights, and the
stateful part of ``Refitter`` (the calls themselves are checked against the manifest).

``make_fake_engine(trt, network)`` gives an ``ICudaEngine`` fake whose refittable weights are
the constants of a network lowered with the fake (name -> DataType member name and count), as
a build with ``BuilderFlag.REFIT`` makes every IConstantLayer's weights refittable under the
layer's name. A ``Refitter(engine, logger)`` then answers as TensorRT documents:
``set_named_weights`` is False for an unknown name or weights of another type or count;
``get_missing_weights`` lists the names not set yet; ``refit_cuda_engine`` is True only when
none is missing. ``get_all_weights`` lists the refittable names.
"""

from __future__ import annotations

import operator
from typing import Any


def make_fake_engine(trt: Any, network: Any) -> Any:
    """An ``ICudaEngine`` fake for ``network`` (built with REFIT), for refit contract tests."""
    rt = trt.__fake_runtime__
    engine = rt.new("ICudaEngine", None)
    weights = {}
    for method, obj in network.created:
        if method == "add_constant":
            w = obj._props.get("weights")
            args = w.origin[2] if w is not None and w.origin else {}
            dtype = getattr(args.get("type"), "name", None)
            weights[obj._props.get("name")] = (dtype, operator.index(args.get("count", 0)))
    object.__setattr__(engine, "refittable", weights)
    return engine


def refitter_hook(obj: Any, name: str, bound: dict[str, Any]) -> tuple[bool, Any]:
    """(handled, value) for the stateful Refitter methods."""
    engine = (obj.origin[2] if obj.origin else {}).get("engine")
    known = getattr(engine, "__dict__", {}).get("refittable")
    if known is None:
        return False, None
    done = obj.__dict__.setdefault("refitted", {})
    if name == "set_named_weights":
        key, w = bound.get("name"), bound.get("weights")
        args = w.origin[2] if getattr(w, "origin", None) else {}
        got = (getattr(args.get("type"), "name", None), operator.index(args.get("count", -1)))
        if key not in known or got != known[key]:
            return True, False
        done[key] = w
        return True, True
    if name == "get_missing_weights":
        return True, [k for k in known if k not in done]
    if name == "get_all_weights":
        return True, list(known)
    if name == "refit_cuda_engine":
        return True, all(k in done for k in known)
    return False, None
