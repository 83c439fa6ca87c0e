"""Plugin layers (``add_plugin``) of the trtdsl plugins, evaluated with the kernels' reference.

``trtdsl::flash_attention_lse`` and ``trtdsl::flash_attention_lse_ws``
(trtdsl/backends/tensorrt/plugins.py) run the flash-attention kernels inside a TensorRT engine;
here both are the kernels' float64 NumPy reference (:mod:`trtdsl.kernels.reference`,
independent of ``trtdsl.ops``): o in q's dtype (rounded once), lse float32; the ws plugin's
third output (its kernel's scratch, which nothing reads) is int32 zeros of the size its
registration declares. Any other plugin is an :class:`UnsupportedLayerError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...backends.tensorrt import plugins as P
from ...kernels import reference
from .graph import type_name

_DTYPES = ("HALF", "BF16")  # tensorrt.DataType names


def plugin(v: Any, ins: list[np.ndarray], ev: Any) -> list[np.ndarray]:
    """``IPluginV3Layer`` made by the fake ``tensorrt.plugin``."""
    v.allow()
    p = v.prop("plugin")
    pid = getattr(p, "plugin_id", None)
    if pid not in (P.PLUGIN_ID, P.PLUGIN_WS_ID):
        raise v.unsupported(f"plugin {pid!r} is not modelled")
    if len(ins) != 3:
        raise v.fail(f"needs q, k, v, got {len(ins)} inputs")
    q, k, val = ins
    if not (q.dtype == k.dtype == val.dtype) or type_name(q.dtype) not in _DTYPES:
        names = ", ".join(type_name(x.dtype) for x in ins)
        raise v.fail(f"q, k, v must share float16 or bfloat16, got {names}")
    if (
        q.ndim != 4
        or k.shape != val.shape
        or q.shape[:2] != k.shape[:2]
        or q.shape[3] != k.shape[3]
    ):
        raise v.fail(f"needs q [B,H,Sq,D] and k = v [B,H,Sk,D], got {q.shape}, {k.shape}")
    a = p.attrs
    o, lse = reference.attention(
        q.astype(np.float32), k.astype(np.float32), val.astype(np.float32), a["scale"],
        a["causal"], a["q_offset"], a["k_offset"],
    )  # fmt: skip
    outs = [o.astype(np.float32).astype(q.dtype), lse.astype(np.float32)]
    if pid == P.PLUGIN_WS_ID:
        words = P.ws_scratch_words(*q.shape[:3], lambda a, b: -(-a // b))
        outs.append(np.zeros(words, np.int32))
    return outs
