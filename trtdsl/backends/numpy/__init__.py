"""The reference backend: TensorRT's semantics in NumPy, on the CPU.

>>> import numpy as np, trtdsl as td
>>> net = td.Network("n"); net.output(net.input("x", (3,)).exp(), "y")
>>> out = net.run({"x": np.zeros(3, "float32")}, backend="numpy")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..interpreter import RunContext, check_feeds, interpret


def run(network: Any, feeds: Mapping[str, Any], **options: Any) -> dict[str, np.ndarray]:
    """Run ``network`` on ``feeds`` with NumPy; collectives go through ``network.world``."""
    if options:
        raise TypeError(f"numpy backend takes no options, got {sorted(options)}")
    checked = check_feeds(network, feeds, np.asarray)
    with np.errstate(all="ignore"):
        return interpret(network, RunContext(network, checked, network.world))
