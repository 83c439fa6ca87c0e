"""Run the attention kernels of ``kernels/triton_attention.py`` under Triton's CPU interpreter
(``TRITON_INTERPRET=1``), for the tests: no GPU, the kernels' own index and mask logic on NumPy.

    python tests/interp_attention.py DIR    # reads DIR/cases.json + DIR/inputs.npz,
                                            # writes DIR/outputs.npz (o<i>, lse<i> per case)

A case is a dict: ``kernel`` ("tma": ``attention_fwd_tma``, "ptr": ``attention_fwd``), ``causal``,
``q_off``, ``k_off``, ``block_m``, ``block_n``, ``split`` (tma only), ``write_lse``, ``pad``
(extra elements after each row and each head: strided, non-contiguous [BH, S, D] views);
inputs ``q<i>`` [BH, Sq, D], ``k<i>``/``v<i>`` [BH, Sk, D] float16. Outputs are float16 O and
float32 LSE (an untouched NaN-filled LSE when ``write_lse`` is 0). The interpreter computes
``tl.dot`` with NumPy (float16 in, float32 accumulation), TMA as masked loads (zero fill) and
masked stores, and checks descriptor alignment (16-byte bases and strides) as TMA would.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

LOG2E = 1.4426950408889634


class _DType:
    """A torch-like dtype: Triton reads ``str(dtype)`` ("torch.float16")."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return "torch." + self.name


#: One dtype object per name, alive for the process: Triton's argument specialization caches
#: by the dtype object, so a fresh object at a recycled address could take another's type.
_DTYPES: dict[str, _DType] = {}


class HostTensor:
    """Just enough of a torch tensor for Triton's interpreter: a host NumPy array, used in
    place (its storage is itself, so nothing is copied to or from a device)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr
        self.dtype = _DTYPES.setdefault(arr.dtype.name, _DType(arr.dtype.name))

    def data_ptr(self) -> int:
        return int(self.arr.__array_interface__["data"][0])

    def untyped_storage(self) -> HostTensor:
        return self

    def cpu(self) -> HostTensor:
        return self

    def new_empty(self, *args: Any, **kwargs: Any) -> HostTensor:
        return self

    def set_(self, *args: Any) -> HostTensor:
        return self

    def storage_offset(self) -> int:
        return 0

    def size(self) -> tuple[int, ...]:
        return self.arr.shape

    def stride(self) -> tuple[int, ...]:
        return tuple(s // self.arr.itemsize for s in self.arr.strides)

    def copy_(self, other: Any) -> HostTensor:
        return self


def aligned_empty(shape: tuple[int, ...], dtype: Any, align: int = 128) -> np.ndarray:
    """An uninitialised array whose first element sits at a multiple of ``align`` bytes."""
    n = math.prod(shape) * np.dtype(dtype).itemsize
    buf = np.empty(n + align, np.uint8)
    off = (-buf.ctypes.data) % align
    return buf[off : off + n].view(dtype).reshape(shape)


def strided(x: np.ndarray, pad: int) -> np.ndarray:
    """``x`` [BH, S, D] copied into an aligned buffer with ``pad`` extra elements after every
    row and ``pad`` extra rows after every head (pad 0: contiguous)."""
    bh, s, d = x.shape
    buf = aligned_empty((bh, s + pad, d + pad), x.dtype)
    buf[...] = np.nan
    view = buf[:, :s, :d]
    view[...] = x
    return view


def _patch_interpreter() -> None:
    """Triton 3.6's interpreter turns a scalar into an int with ``int(array)``, which NumPy 2
    refuses for 1-element arrays of rank 1: use the element instead."""
    import triton.runtime.interpreter as ti

    original = ti._patch_lang_tensor

    def patched(tensor: Any, scope: Any) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    ti._patch_lang_tensor = patched


def run_case(ta: Any, case: dict, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple:
    """(o, lse) of one case through the interpreted kernel."""
    pad = case["pad"]
    q3, k3, v3 = (strided(x, pad) for x in (q, k, v))
    bh, sq, d = q.shape
    o = strided(np.zeros_like(q), pad)
    o[...] = np.nan
    lse = aligned_empty((bh, sq), np.float32)
    lse[...] = np.nan
    item = q.itemsize
    strides = [s // item for x in (q3, k3, v3, o) for s in x.strides[:2]]
    scale = case["scale"]
    args = [HostTensor(x) for x in (q3, k3, v3, o, lse)]
    args += strides + [sq, k.shape[1], case["q_off"], case["k_off"], scale * LOG2E]
    args.append(int(case["write_lse"]))
    consts = {"HEAD_DIM": d, "BLOCK_M": case["block_m"], "BLOCK_N": case["block_n"]}
    consts["CAUSAL"] = bool(case["causal"])
    grid = (math.ceil(sq / case["block_m"]), bh)
    if case["kernel"] == "tma":
        ta.attention_fwd_tma[grid](*args, **consts, SPLIT=case["split"])
    else:
        ta.attention_fwd[grid](*args, **consts)
    return np.array(o), np.array(lse)


def main(folder: str) -> int:
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernels module makes its @triton.jit
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    _patch_interpreter()
    from kernels import triton_attention as ta

    d = Path(folder)
    cases = json.loads((d / "cases.json").read_text())
    inputs = np.load(d / "inputs.npz")
    out = {}
    for i, case in enumerate(cases):
        o, lse = run_case(ta, case, inputs[f"q{i}"], inputs[f"k{i}"], inputs[f"v{i}"])
        out[f"o{i}"], out[f"lse{i}"] = o, lse
    np.savez(d / "outputs.npz", **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
