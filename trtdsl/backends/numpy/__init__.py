"""The reference backend: TensorRT's semantics in NumPy, on the CPU.

>>> import numpy as np, trtdsl as td
>>> net = td.Network("n"); net.output(net.input("x", (3,)).exp(), "y")
>>> out = net.run({"x": np.zeros(3, "float32")}, backend="numpy")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..session import NumpySession, compile_numpy, run_once


def compile(network: Any, **options: Any) -> NumpySession:  # noqa: A001 - the backend's verb
    """A session running ``network`` many times (see :mod:`trtdsl.backends.session`)."""
    return compile_numpy(network, **options)


def run(network: Any, feeds: Mapping[str, Any], **options: Any) -> dict[str, np.ndarray]:
    """Run ``network`` on ``feeds`` with NumPy; collectives go through ``network.world``."""
    if options:
        raise TypeError(f"numpy backend takes no options, got {sorted(options)}")
    return run_once(lambda: NumpySession(network), network, feeds, np.asarray)
