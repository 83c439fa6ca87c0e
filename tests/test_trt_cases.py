"""Small networks exercising every op and variant, shared by the TensorRT contract tests
(lowered through the manifest-checked fake ``tensorrt``) and the TensorRT end-to-end tests
(run against the numpy backend). This module holds no tests itself.

A single-rank case is ``make(rng) -> (net, feeds)``; a collective case is
``make(world) -> net`` with feeds from :func:`collective_feeds`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import trtdsl as td
from trtdsl import functional as F
from trtdsl.ops import ACTIVATIONS, BINARY_OPS, REDUCE_KINDS, UNARY_OPS
from trtdsl.ops.collective import COLLECTIVE_OPS, REDUCE_OPS, REDUCING, ROOTED
from trtdsl.ops.elementwise import _binary
from trtdsl.ops.linalg import _reduce

DTYPES = ("float32", "float16", "bfloat16", "int8", "int32", "int64", "bool")


def rand(rng: np.random.Generator, shape: tuple, dtype: str = "float32", lo=-2.0, hi=2.0):
    """Random array of ``dtype`` in [lo, hi) (bool: coin flips; ints: integers)."""
    dt = td.as_dtype(dtype)
    if dt.kind == "bool":
        return rng.random(shape) < 0.5
    if dt.kind == "int":
        return rng.integers(int(lo), int(hi) + 1, size=shape).astype(dt.numpy)
    return rng.uniform(lo, hi, size=shape).astype(np.float32).astype(dt.numpy)


@dataclass
class Case:
    """One network: ``make`` builds it (and its feeds); tolerances for end-to-end checks."""

    name: str
    make: Callable[..., Any]
    rtol: float = 1e-5
    atol: float = 1e-5
    tags: set[str] = field(default_factory=set)


CASES: list[Case] = []


def case(name: str, rtol: float = 1e-5, atol: float = 1e-5, **kw: Any):
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        CASES.append(Case(name, fn, rtol, atol, **kw))
        return fn

    return deco


# --- elementwise ---------------------------------------------------------------------------
_BOOL_OPS = {"and", "or", "xor"}
_INT_OK = {"add", "sub", "mul", "div", "floor_div", "min", "max", "equal", "less", "greater"}


def _binary_case(kind: str, dtype: str) -> Callable[..., Any]:
    def make(rng: np.random.Generator):
        net = td.Network(f"ew_{kind}_{dtype}")
        a = net.input("a", (2, 3), dtype)
        b = net.input("b", (3,), dtype)  # rank 2 and rank 1: broadcast via expand_rank
        net.output(_binary(kind, a, b, None), "y")
        lo, hi = (0.5, 2.0) if kind in ("pow", "div", "floor_div") else (-3.0, 3.0)
        if dtype != "float32" and kind in ("div", "floor_div"):
            lo, hi = 1, 4
        return net, {"a": rand(rng, (2, 3), dtype, lo, hi), "b": rand(rng, (3,), dtype, lo, hi)}

    return make


for _kind in BINARY_OPS:
    _dt = "bool" if _kind in _BOOL_OPS else "float32"
    CASES.append(Case(f"elementwise_{_kind}", _binary_case(_kind, _dt), 1e-5, 1e-5))
    if _kind in _INT_OK:
        CASES.append(Case(f"elementwise_{_kind}_int32", _binary_case(_kind, "int32"), 0, 0))


def _unary_case(kind: str, dtype: str) -> Callable[..., Any]:
    def make(rng: np.random.Generator):
        net = td.Network(f"unary_{kind}_{dtype}")
        x = net.input("x", (2, 5), dtype)
        op = F.logical_not if kind == "not" else getattr(F, kind)
        net.output(op(x), "y")
        lo, hi = (0.1, 3.0) if kind in ("log", "sqrt", "recip") else (-3.0, 3.0)
        return net, {"x": rand(rng, (2, 5), dtype, lo, hi)}

    return make


for _kind in UNARY_OPS:
    CASES.append(
        Case(f"unary_{_kind}", _unary_case(_kind, "bool" if _kind == "not" else "float32"), 1e-4)
    )
for _kind in ("abs", "neg"):
    CASES.append(Case(f"unary_{_kind}_int32", _unary_case(_kind, "int32"), 0, 0))


def _activation_case(kind: str) -> Callable[..., Any]:
    def make(rng: np.random.Generator):
        net = td.Network(f"act_{kind}")
        x = net.input("x", (3, 4))
        if kind.startswith("gelu"):
            y = x.gelu("tanh" if kind == "gelu_tanh" else "none")
        else:
            y = getattr(x, kind)()
        net.output(y, "y")
        return net, {"x": rand(rng, (3, 4))}

    return make


for _kind in ACTIVATIONS:
    CASES.append(Case(f"activation_{_kind}", _activation_case(_kind), 1e-4, 1e-4))


@case("activation_fp16", rtol=1e-2, atol=1e-2)
def _act_fp16(rng):
    net = td.Network("act_fp16")
    x = net.input("x", (4, 8), "float16")
    net.output(x.gelu().silu(), "y")
    return net, {"x": rand(rng, (4, 8), "float16")}


# --- linear algebra ------------------------------------------------------------------------
def _mm_case(sa: tuple, sb: tuple, ta: bool = False, tb: bool = False, dyn: bool = False):
    def make(rng: np.random.Generator):
        net = td.Network("matmul")
        a_shape = ((None,) + sa[1:]) if dyn else sa
        a = net.input("a", a_shape)
        w = net.constant(rand(rng, sb))
        net.output(F.matmul(a, w, transpose_a=ta, transpose_b=tb), "y")
        return net, {"a": rand(rng, sa)}

    return make


for _name, _args in {
    "matmul": ((3, 4), (4, 5)),
    "matmul_transpose_a": ((4, 3), (4, 5), True),
    "matmul_transpose_b": ((3, 4), (5, 4), False, True),
    "matmul_transpose_ab": ((4, 3), (5, 4), True, True),
    "matmul_batch_broadcast": ((2, 1, 3, 4), (5, 4, 6)),
    "matmul_vector_a": ((4,), (2, 4, 5)),
    "matmul_vector_b": ((2, 3, 4), (4,)),
    "matmul_vector_both": ((4,), (4,)),
    "matmul_dynamic_batch": ((6, 3, 4), (4, 5), False, False, True),
}.items():
    CASES.append(Case(_name, _mm_case(*_args), 1e-4, 1e-4))


@case("matmul_vector_a_dynamic_n", rtol=1e-4, atol=1e-4)
def _mm_vec_dyn(rng):
    net = td.Network("mm_vec_dyn")
    v = net.input("v", (4,))
    m = net.input("m", (4, None))
    net.output(v @ m, "y")
    return net, {"v": rand(rng, (4,)), "m": rand(rng, (4, 7))}


@case("softmax", rtol=1e-5)
def _softmax(rng):
    net = td.Network("softmax")
    x = net.input("x", (2, 3, 4))
    net.output(x.softmax(-1), "last")
    net.output(x.softmax(0), "first")
    return net, {"x": rand(rng, (2, 3, 4))}


def _reduce_case(kind: str, keepdims: bool, axes: Any):
    def make(rng: np.random.Generator):
        net = td.Network(f"reduce_{kind}")
        x = net.input("x", (2, 3, 4))
        net.output(_reduce(kind, x, axes, keepdims, None), "y")
        return net, {"x": rand(rng, (2, 3, 4), lo=0.5, hi=1.5)}

    return make


for _kind in REDUCE_KINDS:
    CASES.append(Case(f"reduce_{_kind}", _reduce_case(_kind, False, -1), 1e-5))
    CASES.append(Case(f"reduce_{_kind}_keepdims", _reduce_case(_kind, True, (0, 2)), 1e-5))


@case("reduce_all_int32", rtol=0, atol=0)
def _reduce_int(rng):
    net = td.Network("reduce_int")
    x = net.input("x", (3, 4), "int32")
    net.output(x.sum(), "s")
    net.output(x.max(axis=0), "m")
    return net, {"x": rand(rng, (3, 4), "int32", -5, 5)}


@case("layer_norm", rtol=1e-4, atol=1e-4)
def _layer_norm(rng):
    net = td.Network("layer_norm")
    x = net.input("x", (2, 3, 8))
    y = x.layer_norm(rand(rng, (8,)), rand(rng, (8,)))
    z = x.layer_norm(rand(rng, (3, 8)), rand(rng, (3, 8)), axes=(-2, -1))
    net.output(y, "y")
    net.output(z, "z")
    return net, {"x": rand(rng, (2, 3, 8))}


@case("rms_norm", rtol=1e-4, atol=1e-4)
def _rms_norm(rng):
    net = td.Network("rms_norm")
    x = net.input("x", (None, 8))
    net.output(x.rms_norm(rand(rng, (8,))), "y")
    return net, {"x": rand(rng, (5, 8))}


@case("modulated_norm", rtol=1e-4, atol=1e-4)
def _modulated_norm(rng):
    """adaLN (trtdsl/ops/adaln.py): layer norm through INormalization with [B, 1, D] shift and
    scale; RMS with weight and bias, a dynamic batch and [D] / [1, D] modulation."""
    net = td.Network("modulated_norm")
    x = net.input("x", (2, 3, 8))
    sh, sc = net.input("shift", (2, 1, 8)), net.input("scale", (2, 1, 8))
    net.output(x.modulated_norm(sh, sc, eps=1e-5), "y")
    v = net.input("v", (None, 8))
    w, b = rand(rng, (8,)), rand(rng, (8,))
    z = v.modulated_norm(rand(rng, (8,)), rand(rng, (1, 8)), kind="rms", weight=w, bias=b)
    net.output(z, "z")
    feeds = {"x": rand(rng, (2, 3, 8)), "shift": rand(rng, (2, 1, 8))}
    feeds.update(scale=rand(rng, (2, 1, 8)), v=rand(rng, (5, 8)))
    return net, feeds


# --- attention -----------------------------------------------------------------------------
def _attention_case(dtype: str, **kw: Any) -> Callable[..., Any]:
    """IAttention (4-D and 3-D inputs, causal kinds, masks) or the primitive-layer lowering
    (log-sum-exp, mask with causal)."""

    def make(rng: np.random.Generator):
        net = td.Network(f"attention_{dtype}")
        rank4 = kw.get("rank4", False)
        lead = (2, 3) if rank4 else (3,)
        s_q, s_k = kw.get("s_q", 6), kw.get("s_k", 6)
        d = kw.get("d", 8)
        q = net.input("q", lead + (s_q, d), dtype)
        k = net.input("k", lead + (s_k, d), dtype)
        v = net.input("v", lead + (s_k, kw.get("d_v", d)), dtype)
        mask = kw.get("mask")
        if mask == "bool":
            mask = rng.random((s_q, s_k)) < 0.7
            mask[:, 0] = True  # every query row sees a key
        elif mask == "additive":
            mask = rand(rng, (s_q, s_k), dtype)
        args = {k_: v_ for k_, v_ in kw.items() if k_ in ("causal", "q_offset", "k_offset")}
        out = F.attention(q, k, v, mask=mask, return_lse=kw.get("lse", False), **args)
        if kw.get("lse"):
            net.output(out[0], "o")
            net.output(out[1], "lse")
        else:
            net.output(out, "o")
        feeds = {n: rand(rng, t.shape, dtype) for n, t in net.inputs.items()}
        return net, feeds

    return make


for _dt in ("float32", "float16"):
    _tol = 1e-4 if _dt == "float32" else 2e-2
    for _label, _kw in (
        ("full", {}),
        ("full_4d", {"rank4": True}),
        ("causal_upper_left", {"causal": True}),
        ("causal_lower_right", {"causal": True, "s_q": 4, "s_k": 6, "q_offset": 2}),
        ("causal_offsets", {"causal": True, "q_offset": 6, "k_offset": 3}),
        ("bool_mask", {"mask": "bool"}),
        ("additive_mask", {"mask": "additive"}),
        ("lse", {"lse": True, "causal": True, "q_offset": 2}),
        ("lse_mask_causal", {"lse": True, "causal": True, "mask": "bool"}),
        ("value_head_dim", {"d_v": 4}),
    ):
        CASES.append(Case(f"attention_{_label}_{_dt}", _attention_case(_dt, **_kw), _tol, _tol))

# the log-sum-exp variant the flash-attention plugin computes (fp16/bf16, head_dim 32, no mask)
for _dt, _tol in (("float16", 2e-2), ("bfloat16", 6e-2)):
    for _label, _kw in (
        ("full", {"lse": True, "d": 32}),
        ("full_4d", {"lse": True, "d": 32, "rank4": True}),
        ("causal_offsets", {"lse": True, "d": 32, "causal": True, "s_q": 5, "q_offset": 4}),
        ("causal_4d", {"lse": True, "d": 32, "rank4": True, "causal": True}),
        # q before k: rows 0-2 see no key (o = 0, lse = -inf), which only the plugin defines
        ("causal_blind_rows", {"lse": True, "d": 32, "causal": True, "s_q": 5, "k_offset": 3}),
        # head_dim 64: the warp-specialized kernel's plugin (a third, scratch output)
        ("ws_full_4d", {"lse": True, "d": 64, "rank4": True}),
        ("ws_causal_offsets", {"lse": True, "d": 64, "causal": True, "s_q": 5, "q_offset": 4}),
    ):
        CASES.append(
            Case(f"attention_plugin_{_label}_{_dt}", _attention_case(_dt, **_kw), _tol, _tol)
        )


# --- data movement -------------------------------------------------------------------------
@case("reshape", rtol=0, atol=0)
def _reshape(rng):
    net = td.Network("reshape")
    x = net.input("x", (2, 3, 4))
    net.output(x.reshape((0, -1)), "copy_infer")
    net.output(x.reshape((4, 6)), "static")
    net.output(x.reshape((-1,)), "flat")
    return net, {"x": rand(rng, (2, 3, 4))}


@case("reshape_dynamic", rtol=0, atol=0)
def _reshape_dyn(rng):
    net = td.Network("reshape_dyn")
    x = net.input("x", (None, None, 6))
    net.output(x.reshape((0, 0, 2, -1)), "y")
    net.output(x.expand_dims(0), "e")
    return net, {"x": rand(rng, (2, 5, 6))}


@case("transpose", rtol=0, atol=0)
def _transpose(rng):
    net = td.Network("transpose")
    x = net.input("x", (2, 3, 4))
    net.output(x.transpose((2, 0, 1)), "y")
    net.output(x.transpose(), "reversed")
    return net, {"x": rand(rng, (2, 3, 4))}


@case("concat", rtol=0, atol=0)
def _concat(rng):
    net = td.Network("concat")
    a = net.input("a", (2, 3))
    b = net.input("b", (2, 5))
    net.output(td.concat([a, b, a], axis=1), "y")
    return net, {"a": rand(rng, (2, 3)), "b": rand(rng, (2, 5))}


@case("slice", rtol=0, atol=0)
def _slice(rng):
    net = td.Network("slice")
    x = net.input("x", (6, 8))
    net.output(F.slice(x, (1, 0), (2, 3), (2, 3)), "y")
    return net, {"x": rand(rng, (6, 8))}


@case("slice_dynamic", rtol=0, atol=0)
def _slice_dyn(rng):
    net = td.Network("slice_dyn")
    x = net.input("x", (None, 8, None))
    net.output(F.slice(x, (0, 2, 0), (None, 3, None), (1, 2, 1)), "y")
    return net, {"x": rand(rng, (3, 8, 5))}


@case("getitem", rtol=0, atol=0)
def _getitem(rng):
    net = td.Network("getitem")
    x = net.input("x", (4, 5, 6))
    net.output(x[1], "int")
    net.output(x[:, 1:4:2, ...], "strided")
    net.output(x[None, :, 2, -1], "newaxis")
    return net, {"x": rand(rng, (4, 5, 6))}


@case("split", rtol=0, atol=0)
def _split(rng):
    net = td.Network("split")
    x = net.input("x", (6, 4))
    for i, t in enumerate(x.split(3, axis=0)):
        net.output(t, f"even{i}")
    for i, t in enumerate(x.split([1, 3], axis=1)):
        net.output(t, f"sized{i}")
    return net, {"x": rand(rng, (6, 4))}


@case("split_dynamic", rtol=0, atol=0)
def _split_dyn(rng):
    net = td.Network("split_dyn")
    x = net.input("x", (None, 6))
    a, b = x.split([2, 4], axis=1)
    net.output(a, "a")
    net.output(b, "b")
    return net, {"x": rand(rng, (3, 6))}


@case("gather", rtol=0, atol=0)
def _gather(rng):
    net = td.Network("gather")
    x = net.input("x", (5, 4))
    idx = net.input("idx", (3,), "int64")
    net.output(x.gather([4, 0, 2], axis=0), "const_idx")
    net.output(x.gather(idx, axis=1), "input_idx")
    return net, {"x": rand(rng, (5, 4)), "idx": np.array([3, 0, 1], np.int64)}


def _cast_case(src: str, dst: str):
    def make(rng: np.random.Generator):
        net = td.Network(f"cast_{src}_{dst}")
        x = net.input("x", (3, 4), src)
        net.output(x.cast(dst), "y")
        return net, {"x": rand(rng, (3, 4), src, -3, 3)}

    return make


for _dst in DTYPES:
    CASES.append(Case(f"cast_float32_to_{_dst}", _cast_case("float32", _dst), 1e-2, 1e-2))
CASES.append(Case("cast_int32_to_float32", _cast_case("int32", "float32"), 0, 0))
CASES.append(Case("cast_bool_to_int32", _cast_case("bool", "int32"), 0, 0))


@case("select", rtol=0, atol=0)
def _select(rng):
    net = td.Network("select")
    c = net.input("c", (2, 3), "bool")
    a = net.input("a", (3,))
    net.output(td.select(c, a, 0.0), "y")
    return net, {"c": rand(rng, (2, 3), "bool"), "a": rand(rng, (3,))}


@case("constant", rtol=0, atol=0)
def _constant(rng):
    net = td.Network("constant")
    x = net.input("x", (2, 3))
    for dt in DTYPES:
        c = net.constant(rand(rng, (2, 3), dt), dtype=dt, name=f"c_{dt}")
        net.output(c.identity(), f"const_{dt}")
    net.output(x + net.constant(np.float32(2.0)), "plus_scalar")
    return net, {"x": rand(rng, (2, 3))}


@case("identity", rtol=0, atol=0)
def _identity(rng):
    net = td.Network("identity")
    x = net.input("x", (2, 3), "int32")
    net.output(x.identity(), "y")
    net.output(x, "x_out")  # a network input as output: lowered through an identity
    return net, {"x": rand(rng, (2, 3), "int32")}


@case("dynamic_inputs", rtol=1e-5, atol=1e-5)
def _dynamic(rng):
    net = td.Network("dynamic")
    x = net.input("x", (None, None, 4))
    b = net.input("b", (None, None))
    h = (x * b).relu() + 1.0  # b has two dynamic dims: its rank-3 shape is built at run time
    net.output(h.sum(axis=-1), "y")
    return net, {"x": rand(rng, (2, 3, 4)), "b": rand(rng, (3, 4))}


# --- collectives ---------------------------------------------------------------------------
def resolve_groups(groups: Any, size: int) -> Any:
    """Named group layouts for a world of ``size`` ranks (others are returned as given).

    "pairs": [[0, 1], [2, 3], ...]; "reversed": one group in descending rank order;
    "interleaved": [[odd ranks, descending], [even ranks, ascending]] ([[3, 1], [0, 2]] for 4;
    groups of one rank for 2); "singleton": rank 1 alone, the others together.
    """
    if groups == "pairs":
        return [[i, i + 1] for i in range(0, size, 2)]
    if groups == "reversed":
        return [list(range(size))[::-1]]
    if groups == "interleaved":
        return [list(range(size))[1::2][::-1], list(range(size))[0::2]]
    if groups == "singleton":
        return [[1], [r for r in range(size) if r != 1]]
    return groups


@dataclass
class CollectiveCase:
    """One collective layer: ``op``/``reduce``/``root``/``groups`` over ``make(world)``."""

    name: str
    op: str
    reduce: str | None = None
    root: int | None = None
    groups: Any = None
    dtype: str = "float32"

    def make(self, world: td.World) -> td.Network:
        net = td.Network(f"coll_{self.name}", world=world)
        d0 = 4 * world.size
        x = net.input("x", (d0, 3), self.dtype)
        groups = resolve_groups(self.groups, world.size)
        y = x.collective(self.op, reduce=self.reduce, root=self.root, groups=groups)
        net.output(y, "y")
        return net


def collective_feeds(world: td.World, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Distinct values per rank and row (exact in every collective dtype)."""
    d0 = 4 * world.size
    base = np.arange(d0 * 3).reshape(d0, 3) % 7 + 10 * (world.rank + 1)
    return {"x": base.astype(td.as_dtype(dtype).numpy)}


COLLECTIVE_CASES: list[CollectiveCase] = []
for _op in COLLECTIVE_OPS:
    _reduces = REDUCE_OPS if _op in REDUCING else (None,)
    for _red in _reduces:
        COLLECTIVE_CASES.append(
            CollectiveCase(
                _op + (f"_{_red}" if _red else ""), _op, _red, 1 if _op in ROOTED else None
            )
        )
    _red = "sum" if _op in REDUCING else None
    for _layout, _root in (("pairs", 1), ("reversed", 1), ("interleaved", 0)):
        _r = _root if _op in ROOTED else None
        COLLECTIVE_CASES.append(CollectiveCase(f"{_op}_{_layout}", _op, _red, _r, _layout))
COLLECTIVE_CASES.append(
    CollectiveCase("all_reduce_singleton", "all_reduce", "sum", None, "singleton")
)
COLLECTIVE_CASES.append(CollectiveCase("all_reduce_int32", "all_reduce", "sum", dtype="int32"))
COLLECTIVE_CASES.append(CollectiveCase("all_gather_bf16", "all_gather", dtype="bfloat16"))
COLLECTIVE_CASES.append(CollectiveCase("broadcast_fp16", "broadcast", root=0, dtype="float16"))


# --- quantization, positions, layout (issue 13) -------------------------------------------------
def _fp8(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32).astype(td.as_dtype("float8_e4m3").numpy)


@case("quantize_int8_per_tensor", rtol=0, atol=0)
def _q_int8(rng):
    net = td.Network("q_int8")
    x = net.input("x", (3, 8))
    q = x.quantize(0.05, "int8")
    net.output(q, "q")
    net.output(q.dequantize(0.05, "float32"), "y")
    return net, {"x": rand(rng, (3, 8), lo=-9.0, hi=9.0)}


@case("quantize_fp8_per_channel_fp16", rtol=0, atol=0)
def _q_fp8(rng):
    net = td.Network("q_fp8")
    x = net.input("x", (4, 6), "float16")
    s = np.linspace(0.01, 0.5, 6).astype(np.float16)
    q = x.quantize(s, "float8_e4m3", axis=1)
    net.output(q, "q")
    net.output(q.dequantize(s, "float16", axis=1), "y")
    return net, {"x": rand(rng, (4, 6), "float16", -300.0, 300.0)}


@case("quantize_block_scales", rtol=0, atol=0)
def _q_block(rng):
    net = td.Network("q_block")
    x = net.input("x", (4, 8))
    s = rng.uniform(0.01, 0.1, (2, 2)).astype(np.float32)  # blocks of 2 x 4
    net.output(x.quantize(s, "int8").dequantize(s), "y")
    net.output(x.quantize(s, "float8_e4m3").dequantize(s), "y8")
    return net, {"x": rand(rng, (4, 8), lo=-20.0, hi=20.0)}


@case("dequantize_fp8_weight_matmul", rtol=1e-5, atol=1e-5)
def _dq_weight(rng):
    net = td.Network("fp8_weight")
    x = net.input("x", (3, 8))
    s = rng.uniform(0.01, 0.02, 5).astype(np.float32)
    w = net.constant(_fp8(rand(rng, (8, 5), lo=-400.0, hi=400.0)), name="w_fp8")
    net.output(x @ F.dequantize(w, s, axis=1), "y")
    return net, {"x": rand(rng, (3, 8))}


def _rope_case(interleaved: bool, dtype: str, pairs: int, dynamic: bool):
    def make(rng: np.random.Generator):
        net = td.Network("rope")
        x = net.input("x", (2, None if dynamic else 6, 8), dtype)
        if dynamic:
            pos = net.input("pos", (None,), "int32")
            c, s = F.rope_frequencies(pos, 2 * pairs, dtype=dtype)
        else:
            c, s = F.rope_frequencies(np.arange(3, 9), 2 * pairs, dtype=dtype, net=net)
        net.output(x.rope(c, s, interleaved=interleaved), "y")
        feeds = {"x": rand(rng, (2, 6, 8), dtype)}
        if dynamic:
            feeds["pos"] = np.arange(5, 11, dtype=np.int32)
        return net, feeds

    return make


for _il in (False, True):
    _tag = "interleaved" if _il else "half"
    CASES.append(Case(f"rope_{_tag}", _rope_case(_il, "float32", 4, False), 1e-5, 1e-5))
    CASES.append(Case(f"rope_{_tag}_partial", _rope_case(_il, "float32", 2, False), 1e-5, 1e-5))
    CASES.append(Case(f"rope_{_tag}_positions", _rope_case(_il, "float32", 4, True), 1e-5, 1e-5))
    CASES.append(Case(f"rope_{_tag}_bf16", _rope_case(_il, "bfloat16", 4, False), 2e-2, 2e-2))


@case("embedding", rtol=0, atol=0)
def _embedding(rng):
    net = td.Network("embedding")
    ids = net.input("ids", (2, 3), "int32")
    net.output(F.embedding(ids, rand(rng, (7, 4)), name="embed"), "h")
    return net, {"ids": rng.integers(0, 7, (2, 3)).astype(np.int32)}


@case("patchify", rtol=0, atol=0)
def _patchify(rng):
    net = td.Network("patchify")
    img = net.input("img", (3, 4, 6))
    batch = net.input("batch", (2, 3, 4, 4))
    tokens = img.patchify(2)
    net.output(tokens, "tokens")
    net.output(tokens.unpatchify(2, (2, 3)), "back")
    net.output(batch.patchify(2), "batched")
    feeds = {"img": rand(rng, (3, 4, 6)), "batch": rand(rng, (2, 3, 4, 4))}
    return net, feeds


@case("pad", rtol=0, atol=0)
def _pad(rng):
    net = td.Network("pad")
    x = net.input("x", (2, 3, 4))
    i = net.input("i", (3, 2), "int32")
    net.output(x.pad([(1, 0), (2, 3)], value=-1.5), "y")
    net.output(i.pad([(0, 1), (1, 1)], value=7), "yi")
    return net, {"x": rand(rng, (2, 3, 4)), "i": rand(rng, (3, 2), "int32", -5, 5)}


@case("topk", rtol=0, atol=0)
def _topk(rng):
    net = td.Network("topk")
    x = net.input("x", (3, 9))
    v, i = x.topk(4)
    net.output(v, "v")
    net.output(i, "i")
    v0, i0 = x.topk(2, axis=0, largest=False)
    net.output(v0, "v0")
    net.output(i0, "i0")
    return net, {"x": rng.permutation(27).reshape(3, 9).astype(np.float32)}
