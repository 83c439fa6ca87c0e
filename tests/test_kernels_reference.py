"""The float64 reference of the kernels (``kernels/reference.py``) against independent formulas:
a per-row loop with the mask written out, and the merge identity (attention over two key
chunks merged == attention over their concatenation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from kernel_modules import module

R = module("reference")


def loop_attention(q, k, v, scale, causal, q_off, k_off):
    """Row by row with Python floats: allowed keys, exp-sum, weighted sum of values."""
    sq, d = q.shape
    o = np.zeros((sq, d))
    lse = np.full(sq, -math.inf)
    for i in range(sq):
        keys = [j for j in range(k.shape[0]) if not causal or k_off + j <= q_off + i]
        if not keys:
            continue
        s = [scale * float(q[i] @ k[j]) for j in keys]
        m = max(s)
        w = [math.exp(x - m) for x in s]
        tot = sum(w)
        lse[i] = m + math.log(tot)
        o[i] = sum(wj / tot * v[j] for wj, j in zip(w, keys))
    return o, lse


CASES = [  # (Sq, Sk, causal, q_offset, k_offset)
    (5, 7, False, 0, 0),
    (6, 6, True, 0, 0),
    (4, 9, True, 10, 0),  # q after k: every key visible
    (4, 9, True, 0, 5),  # q before k: rows see no key
    (7, 5, True, 3, 2),  # overlapping: some rows empty, some partial
    (1, 1, True, 0, 0),
]


@pytest.mark.parametrize("sq, sk, causal, qo, ko", CASES)
def test_attention_matches_the_row_loop(sq, sk, causal, qo, ko) -> None:
    rng = np.random.default_rng(sq * 100 + sk + qo)
    q, k, v = (
        rng.standard_normal((sq, 4)),
        rng.standard_normal((sk, 4)),
        rng.standard_normal((sk, 4)),
    )
    o, lse = R.attention(q[None], k[None], v[None], 0.7, causal, qo, ko)
    o_ref, lse_ref = loop_attention(q, k, v, 0.7, causal, qo, ko)
    np.testing.assert_allclose(o[0], o_ref, rtol=1e-12, atol=1e-12)
    assert np.array_equal(np.isneginf(lse[0]), np.isneginf(lse_ref))
    fin = np.isfinite(lse_ref)
    np.testing.assert_allclose(lse[0][fin], lse_ref[fin], rtol=1e-12)
    assert (o[0][~fin] == 0).all()


def test_fully_masked_rows_are_zero_and_minus_inf() -> None:
    q = np.ones((2, 3, 8))
    o, lse = R.attention(q, q, q, 1.0, True, 0, 100)
    assert (o == 0).all() and np.isneginf(lse).all()


@pytest.mark.parametrize("causal, qo", [(False, 0), (True, 6), (True, 2)])
def test_merge_of_two_key_chunks_equals_attention_over_both(causal, qo) -> None:
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 5, 8))
    k = rng.standard_normal((2, 9, 8))
    v = rng.standard_normal((2, 9, 8))
    full = R.attention(q, k, v, 0.3, causal, qo, 0)
    a = R.attention(q, k[:, :4], v[:, :4], 0.3, causal, qo, 0)
    b = R.attention(q, k[:, 4:], v[:, 4:], 0.3, causal, qo, 4)
    o, lse = R.merge(*a, *b)
    np.testing.assert_allclose(o, full[0], rtol=1e-12, atol=1e-12)
    assert np.array_equal(np.isneginf(lse), np.isneginf(full[1]))
    fin = np.isfinite(lse)
    np.testing.assert_allclose(lse[fin], full[1][fin], rtol=1e-12)


def test_merge_handles_empty_sides() -> None:
    o1, o2 = np.ones((3, 4)), 2 * np.ones((3, 4))
    l1 = np.array([-np.inf, 0.5, -np.inf])
    l2 = np.array([1.0, -np.inf, -np.inf])
    o, lse = R.merge(o1, l1, o2, l2)
    np.testing.assert_allclose(o, [[2] * 4, [1] * 4, [0] * 4])
    np.testing.assert_allclose(lse[:2], [1.0, 0.5])
    assert np.isneginf(lse[2])
    # equal weights average
    o, lse = R.merge(o1[:1], np.zeros(1), o2[:1], np.zeros(1))
    np.testing.assert_allclose(o, 1.5)
    np.testing.assert_allclose(lse, math.log(2))
