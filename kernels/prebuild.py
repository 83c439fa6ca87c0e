"""Compile every kernel variant into the disk cache: ``python -m trtdsl.kernels.prebuild``.

Works without a GPU (cubins for sm_90); prints one line per variant and the total time.
"""

from __future__ import annotations

import sys
import time

from .compile import cache_dir, compile_kernel
from .configs import KernelSpec, all_specs


def prebuild(specs: list[KernelSpec] | None = None, verbose: bool = True) -> int:
    """Compile ``specs`` (default: all); returns how many were compiled (not cache hits)."""
    built = 0
    t0 = time.perf_counter()
    for spec in specs if specs is not None else all_specs():
        t = time.perf_counter()
        ck = compile_kernel(spec)
        built += not ck.from_cache
        if verbose:
            how = "cached" if ck.from_cache else f"{time.perf_counter() - t:.1f}s"
            print(f"{spec.fn_name} {spec.constexprs} {spec.options} shared={ck.shared} {how}")
    if verbose:
        print(f"{built} compiled in {time.perf_counter() - t0:.1f}s, cache {cache_dir()}")
    return built


if __name__ == "__main__":
    prebuild()
    sys.exit(0)
