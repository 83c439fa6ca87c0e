"""The kernels package for the kernel tests: ``trtdsl.kernels`` where trtdsl is installed
(``kernels/`` is mapped there), else ``kernels`` from the checkout; and the Triton marker.

>>> CFG = module("configs")                                   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
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


@pytest.fixture(autouse=True, scope="module")
def fresh_triton_cache(tmp_path_factory: pytest.TempPathFactory):
    """Triton's own cache in a fresh folder, so each variant really compiles (import it into a
    compiling test module: ``from kernel_modules import fresh_triton_cache``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_CACHE_DIR", str(tmp_path_factory.mktemp("triton-cache")))
        yield


def import_without_gpu_stack(modules: tuple[str, ...], probe: str) -> subprocess.CompletedProcess:
    """A fresh Python where triton, cupy, cuda and torch cannot be imported imports the kernels'
    ``modules`` (".ws_configs", ...), then prints "OK" and ``probe`` evaluated with ``m``, the
    last of them (``'m.ws_spec(128, "float16", True).fn_name'``)."""
    code = f"""
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("triton", "cupy", "cuda", "torch"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(ROOT)!r})
for name in {modules!r}:
    m = importlib.import_module({K.__name__!r} + name)
print("OK", {probe})
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not importable here (pip install 'triton==3.6.*')"
)


def run_interpreted(script: str, timeout: int, min_passes: int = 100) -> None:
    """Run ``script`` (a test file whose ``__main__`` launches its kernel cases under Triton's
    CPU interpreter and prints a PASS/FAIL line each) with a random seed; every line must be
    a PASS, and at least ``min_passes`` of them."""
    seed = int.from_bytes(os.urandom(4), "little")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, script, str(seed)], capture_output=True, text=True, env=env,
        timeout=timeout,
    )  # fmt: skip
    lines = p.stdout.splitlines()
    bad = [ln for ln in lines if not ln.startswith("PASS")]
    assert p.returncode == 0 and not bad, f"seed {seed}:\n" + "\n".join(bad) + p.stderr[-3000:]
    assert sum(ln.startswith("PASS") for ln in lines) >= min_passes, p.stdout[-2000:]
