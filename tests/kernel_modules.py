"""The kernels package for the kernel tests: ``trtdsl.kernels`` where trtdsl is installed
(``kernels/`` is mapped there), else ``kernels`` from the checkout; and the Triton marker.

>>> CFG = module("configs")                                   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
try:
    import trtdsl.kernels as K
except ImportError:  # kernels/ not installed under trtdsl yet: import it from the checkout
    sys.path.insert(0, str(ROOT))
    import kernels as K  # type: ignore[no-redef]


def module(name: str) -> ModuleType:
    """``<kernels package>.<name>`` (configs, compile, attention, reference, ...)."""
    return importlib.import_module(f"{K.__name__}.{name}")


HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not importable here (pip install 'triton==3.6.*')"
)
