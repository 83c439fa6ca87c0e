"""The attention op against a direct float64 formula: shapes, dtypes, causal offsets, masks,
log-sum-exp; and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import trtdsl as td
from trtdsl import functional as F

TOL = {"float32": 2e-5, "float16": 3e-3, "bfloat16": 2e-2}


def formula(q, k, v, scale, causal, q_off, k_off, mask):
    """float64, a row at a time: the softmax over allowed keys; a row with none gives 0, -inf."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    lse = np.full(q.shape[:-1], -np.inf)
    for idx in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            logits = []
            for j in range(k.shape[-2]):
                if causal and k_off + j > q_off + i:
                    continue
                m = None if mask is None else np.broadcast_to(mask, q.shape[:-1] + (k.shape[-2],))
                if m is not None and m.dtype == bool and not m[idx + (i, j)]:
                    continue
                s = scale * float(q[idx + (i,)] @ k[idx + (j,)])
                if m is not None and m.dtype != bool:
                    s += float(m[idx + (i, j)])
                logits.append((s, j))
            if not logits:
                continue
            top = max(s for s, _ in logits)
            w = {j: math.exp(s - top) for s, j in logits}
            total = sum(w.values())
            out[idx + (i,)] = sum(w[j] * v[idx + (j,)] for j in w) / total
            lse[idx + (i,)] = top + math.log(total)
    return out, lse


@st.composite
def problems(draw):
    lead = tuple(draw(st.lists(st.integers(1, 2), min_size=1, max_size=2)))
    s_q, s_k = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    d, d_v = draw(st.sampled_from([1, 4, 8])), draw(st.sampled_from([2, 4, 8]))
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    causal = draw(st.booleans())
    k_off = draw(st.integers(0, 8))
    q_off = draw(st.integers(k_off, k_off + 8)) if causal else draw(st.integers(0, 8))
    mask_kind = draw(st.sampled_from([None, "bool", "additive"]))
    scale = draw(st.sampled_from([None, 0.3, 1.0]))
    return lead, s_q, s_k, d, d_v, dtype, causal, q_off, k_off, mask_kind, scale


@given(problems(), st.integers(0, 2**31 - 1), st.booleans())
def test_attention_matches_the_formula(p, seed, lse_too):
    lead, s_q, s_k, d, d_v, dtype, causal, q_off, k_off, mask_kind, scale = p
    rng = np.random.default_rng(seed)
    dt = td.as_dtype(dtype)
    q, k = (rng.standard_normal(lead + (s, d)).astype(dt.numpy) for s in (s_q, s_k))
    v = rng.standard_normal(lead + (s_k, d_v)).astype(dt.numpy)
    mask = None
    if mask_kind == "bool":
        mask = rng.random((s_q, s_k)) < 0.6
    elif mask_kind == "additive":
        mask = rng.uniform(-3, 1, (1, s_q, s_k)).astype(dt.numpy)
    net = td.Network("attn")
    ins = [net.input(n, a.shape, dtype) for n, a in zip("qkv", (q, k, v))]
    got = F.attention(
        *ins, mask=mask, causal=causal, q_offset=q_off, k_offset=k_off, scale=scale,
        return_lse=lse_too,
    )  # fmt: skip
    o_t, l_t = got if lse_too else (got, None)
    net.output(o_t, "o")
    if lse_too:
        net.output(l_t, "lse")
        assert l_t.dtype == td.float32 and l_t.shape == lead + (s_q,)
    assert o_t.dtype == dt and o_t.shape == lead + (s_q, d_v)
    r = net.run({"q": q, "k": k, "v": v})
    eff = 1 / math.sqrt(d) if scale is None else scale
    want_o, want_l = formula(q, k, v, eff, causal, q_off, k_off, mask)
    np.testing.assert_allclose(r["o"].astype(np.float64), want_o, atol=TOL[dtype] * 4, rtol=0)
    if lse_too:
        finite = np.isfinite(want_l)
        assert (np.isfinite(r["lse"]) == finite).all()
        np.testing.assert_allclose(r["lse"][finite], want_l[finite], atol=TOL[dtype] * 10)


def test_reference_chunks_long_sequences(monkeypatch):
    """Chunks of query rows give the same result as one block (64k tokens fit in memory)."""
    from trtdsl.ops import attention as mod

    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 37, 8)).astype(np.float32) for _ in range(3))
    whole = mod.attention_reference(np, q, k, v, scale=0.3, causal=True, q_offset=5)
    monkeypatch.setattr(mod, "REFERENCE_CHUNK_BYTES", 4 * 37 * 2 * 3)  # 3 rows a chunk
    chunked = mod.attention_reference(np, q, k, v, scale=0.3, causal=True, q_offset=5)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shapes,dtypes,kw,match",
    [
        (((4, 8), (4, 8), (4, 8)), "fff", {}, "rank 2"),
        (((2, 4, 8), (2, 4, 8), (2, 4, 8)), "fhf", {}, "one float dtype"),
        (((2, 4, 8), (3, 4, 8), (3, 4, 8)), "fff", {}, "leading dims"),
        (((2, 4, 8), (2, 4, 6), (2, 4, 8)), "fff", {}, "head_dim"),
        (((2, 4, 8), (2, 5, 8), (2, 4, 8)), "fff", {}, "same sequence length"),
        (((2, 4, 8),) * 3, "fff", {"mask": np.ones((3, 4), bool)}, "does not broadcast"),
        (((2, 4, 8),) * 3, "hhh", {"mask": np.ones((4, 4), np.float32)}, "additive mask"),
        (((2, 4, 8),) * 3, "fff", {"q_offset": 1.5}, "q_offset must be an int"),
        (((2, 4, 8),) * 3, "fff", {"scale": "big"}, "scale must be a number"),
        (((2, 4, 8),) * 3, "iii", {}, "one float dtype"),
    ],
)
def test_attention_errors_name_the_layer_and_line(shapes, dtypes, kw, match):
    names = {"f": "float32", "h": "float16", "i": "int32"}
    net = td.Network("bad")
    ins = [net.input(n, s, names[c]) for n, s, c in zip("qkv", shapes, dtypes)]
    with pytest.raises(td.DefinitionError, match=match) as e:
        F.attention(*ins, **kw)
    assert "test_ops_attention.py" in str(e.value)


def test_attention_with_dynamic_head_dim_needs_a_scale():
    net = td.Network("dyn")
    q = net.input("q", (2, 4, None))
    with pytest.raises(td.DefinitionError, match="head_dim must be static"):
        F.attention(q, q, q)
