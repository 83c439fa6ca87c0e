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

A case with ``blocks`` (a list of ``[start, length, k_offset]``: key rows of k/v and their
offset) runs the accumulating epilogues instead: a float32 contiguous running (O, LSE), then
for each block ``ACCUM`` 1 ("init", the first block) or 2 ("merge"); with inputs ``o0<i>`` /
``lse0<i>`` the state starts from those and every block merges. O and LSE are followed by
``TAIL`` NaN elements, returned as ``otail<i>`` / ``lsetail<i>`` (they must stay NaN).
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
    refuses for 1-element arrays of rank 1: use the element instead. And it multiplies bf16
    operands of ``tl.dot`` as their uint16 storage bits: widen them to float32 first (exact)."""
    import triton.language as tl
    import triton.runtime.interpreter as ti

    original = ti._patch_lang_tensor

    def patched(tensor: Any, scope: Any) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    ti._patch_lang_tensor = patched
    dot = ti.InterpreterBuilder.create_dot

    def widen(x: Any) -> Any:
        if x.dtype.scalar != tl.bfloat16:
            return x
        data = ti._convert_float(x.data, tl.bfloat16, tl.float32, None).view(np.float32)
        return ti.TensorHandle(data, tl.float32)

    def create_dot(self: Any, a: Any, b: Any, d: Any, *rest: Any) -> Any:
        return dot(self, widen(a), widen(b), d, *rest)

    ti.InterpreterBuilder.create_dot = create_dot


TAIL = 64


def launch(ta: Any, case: dict, xs: tuple, k_off: int, write_lse: int, accum: int) -> None:
    """One interpreted launch on ``xs`` = (q3, k3, v3, o, lse) host arrays."""
    q3, k3, _, _, _ = xs
    bh, sq, d = q3.shape
    strides = [s // x.itemsize for x in xs[:4] for s in x.strides[:2]]
    args = [HostTensor(x) for x in xs]
    args += strides + [sq, k3.shape[1], case["q_off"], k_off, case["scale"] * LOG2E, write_lse]
    consts = {"HEAD_DIM": d, "BLOCK_M": case["block_m"], "BLOCK_N": case["block_n"]}
    consts.update({"CAUSAL": bool(case["causal"]), "ACCUM": accum})
    grid = (math.ceil(sq / case["block_m"]), bh)
    if case["kernel"] == "tma":
        ta.attention_fwd_tma[grid](*args, **consts, SPLIT=case["split"])
    else:
        ta.attention_fwd[grid](*args, **consts)


def run_case(ta: Any, case: dict, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple:
    """(o, lse) of one case through the interpreted kernel."""
    pad = case["pad"]
    q3, k3, v3 = (strided(x, pad) for x in (q, k, v))
    bh, sq, d = q.shape
    o = strided(np.zeros_like(q), pad)
    o[...] = np.nan
    lse = aligned_empty((bh, sq), np.float32)
    lse[...] = np.nan
    launch(ta, case, (q3, k3, v3, o, lse), case["k_off"], int(case["write_lse"]), 0)
    return np.array(o), np.array(lse)


def run_accum_case(ta: Any, case: dict, arrays: Any, i: int) -> dict[str, np.ndarray]:
    """The running (o, lse) after the case's ``blocks`` (see the module docstring), and the
    NaN tails after them."""
    q, k, v = (arrays[f"{n}{i}"] for n in "qkv")
    bh, sq, d = q.shape
    obuf = aligned_empty((bh * sq * d + TAIL,), np.float32)
    lbuf = aligned_empty((bh * sq + TAIL,), np.float32)
    obuf[...], lbuf[...] = np.nan, np.nan
    o, lse = obuf[: bh * sq * d].reshape(bh, sq, d), lbuf[: bh * sq].reshape(bh, sq)
    given = f"o0{i}" in arrays
    if given:
        o[...], lse[...] = arrays[f"o0{i}"], arrays[f"lse0{i}"]
    q3 = strided(q, case["pad"])
    for j, (start, length, k_off) in enumerate(case["blocks"]):
        kb, vb = (strided(x[:, start : start + length], case["pad"]) for x in (k, v))
        accum = 2 if given or j > 0 else 1
        launch(ta, case, (q3, kb, vb, o, lse), k_off, int(case["write_lse"]), accum)
    out = {"o": np.array(o), "lse": np.array(lse), "otail": obuf[bh * sq * d :].copy()}
    out["lsetail"] = lbuf[bh * sq :].copy()
    return out


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
        if "blocks" in case:
            out.update({f"{n}{i}": x for n, x in run_accum_case(ta, case, inputs, i).items()})
            continue
        o, lse = run_case(ta, case, inputs[f"q{i}"], inputs[f"k{i}"], inputs[f"v{i}"])
        out[f"o{i}"], out[f"lse{i}"] = o, lse
    np.savez(d / "outputs.npz", **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
