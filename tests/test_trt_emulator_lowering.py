"""What the TensorRT lowering computes: every op, dtype, collective and parallel block is
lowered through the manifest-checked fake ``tensorrt`` module and the recorded network is run
by the TensorRT emulator (:mod:`trtdsl.testing.trt_emulator`, an implementation of TensorRT's
layer semantics independent of ``trtdsl.ops``), then compared with the numpy backend on random
data. A lowering that maps an op to another TensorRT operation, swaps inputs, passes the wrong
tensor or axes, or slices off by one fails here even though every call is valid TensorRT.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_trt_cases import CASES, COLLECTIVE_CASES, DTYPES, Case, CollectiveCase, collective_feeds
from test_trt_cases import rand as rand_array

import trtdsl as td
from trtdsl import functional as F
from trtdsl import parallel as P
from trtdsl.backends.tensorrt import lower_network
from trtdsl.ops import ACTIVATIONS, BINARY_OPS, REDUCE_KINDS, UNARY_OPS
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.trt_emulator import Communicator, run_network

try:  # the per-kind builders moved next to their ops
    from trtdsl.ops.elementwise import _binary
    from trtdsl.ops.linalg import _reduce
except ImportError:
    _binary, _reduce = F._binary, F._reduce  # type: ignore[attr-defined]

TRT = make_fake_tensorrt()
FLOATS = ("float32", "float16", "bfloat16")
#: (rtol, atol) per dtype: both sides round once per layer, so differences are a few ulps
TOL = {"float32": (2e-5, 2e-5), "float16": (4e-3, 4e-3), "bfloat16": (3e-2, 3e-2)}


def emulate(net: td.Network, feeds: dict, rank: int = 0, comm: Any = None) -> dict:
    """Lower ``net`` through the fake ``tensorrt`` and run it in the emulator."""
    _, network, ctx = lower_network(net, TRT)
    out = run_network(network, feeds, rank=rank, comm=comm)
    del ctx  # the weights' memory lives until the emulator has read it
    return out


def assert_match(got: dict, want: dict, rtol: float, atol: float, what: str = "") -> None:
    """Same outputs, dtypes and shapes; values close (NaN where the reference has NaN)."""
    assert set(got) == set(want), what
    for name, w in want.items():
        w, g = np.asarray(w), got[name]
        where = f"{what} output {name!r}"
        assert g.dtype == w.dtype, f"{where}: dtype {g.dtype} vs {w.dtype}"
        assert g.shape == w.shape, f"{where}: shape {g.shape} vs {w.shape}"
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=where)
        else:
            np.testing.assert_allclose(
                g.astype(np.float64), w.astype(np.float64), rtol, atol, True, err_msg=where
            )


def check(net: td.Network, feeds: dict, rtol: float, atol: float) -> None:
    assert_match(emulate(net, feeds), net.run(feeds), rtol, atol, net.name)


# --- every case of the contract tests --------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_contract_case_computes_like_the_reference(case: Case) -> None:
    for seed in (0, 1):
        net, feeds = case.make(np.random.default_rng(seed))
        check(net, feeds, max(case.rtol, 2e-5), max(case.atol, 2e-5))


# --- every op in every dtype it allows -------------------------------------------------------
def _ranges(op: str, kind: str, dtype: str) -> tuple[float, float]:
    if op in ("pow", "log", "sqrt", "recip"):
        return 0.5, 2.0
    if op in ("div", "floor_div"):
        return (1, 4) if dtype not in FLOATS else (0.5, 3.0)
    return (-3.0, 3.0) if kind != "int8" else (-5, 5)


def _activation(x: td.Tensor, kind: str) -> td.Tensor:
    if kind.startswith("gelu"):
        return x.gelu("tanh" if kind == "gelu_tanh" else "none")
    return getattr(x, kind)()


def _dtype_cases() -> list[tuple[str, Any]]:
    """(id, make(rng) -> (net, feeds)) for each op x dtype the DSL accepts."""
    out: list[tuple[str, Any]] = []

    def add(name: str, dtype: str, build: Any, shapes: dict[str, tuple], lo=-3.0, hi=3.0):
        def make(rng: np.random.Generator):
            net = td.Network(name)
            xs = {k: net.input(k, s, dtype) for k, s in shapes.items()}
            net.output(build(net, **xs), "y")
            return net, {k: rand_array(rng, s, dtype, lo, hi) for k, s in shapes.items()}

        try:
            make(np.random.default_rng(0))
        except td.DefinitionError:
            return  # the DSL refuses this dtype for this op
        out.append((f"{name}-{dtype}", make, dtype))

    for dt in DTYPES:
        for kind in BINARY_OPS:
            lo, hi = _ranges(kind, dt, dt)
            add(
                f"ew_{kind}",
                dt,
                lambda n, a, b, k=kind: _binary(k, a, b, None),
                {"a": (2, 3, 4), "b": (3, 1)},
                lo,
                hi,
            )
        for kind in UNARY_OPS:
            op = F.logical_not if kind == "not" else getattr(F, kind)
            lo, hi = _ranges(kind, dt, dt)
            add(f"unary_{kind}", dt, lambda n, x, op=op: op(x), {"x": (3, 5)}, lo, hi)
        for kind in ACTIVATIONS:
            add(f"act_{kind}", dt, lambda n, x, k=kind: _activation(x, k), {"x": (3, 5)})
        for kind in REDUCE_KINDS:
            add(
                f"reduce_{kind}",
                dt,
                lambda n, x, k=kind: _reduce(k, x, (0, 2), False, None),
                {"x": (2, 3, 4)},
                0.5,
                1.5,
            )
        add(
            "matmul",
            dt,
            lambda n, a, b: F.matmul(a, b, transpose_b=True),
            {"a": (2, 3, 4), "b": (5, 4)},
        )
        add("softmax", dt, lambda n, x: x.softmax(1), {"x": (2, 5, 3)})
        add(
            "layer_norm",
            dt,
            lambda n, x, s, b: x.layer_norm(s, b, axes=(-2, -1)),
            {"x": (2, 3, 4), "s": (3, 4), "b": (3, 4)},
        )
        add("rms_norm", dt, lambda n, x, s: x.rms_norm(s), {"x": (3, 8), "s": (8,)})
        for kind in ("layer", "rms"):
            add(
                f"modulated_norm_{kind}",
                dt,
                lambda n, x, sh, sc, w, k=kind: x.modulated_norm(sh, sc, kind=k, weight=w),
                {"x": (2, 3, 8), "sh": (2, 1, 8), "sc": (8,), "w": (8,)},
            )
        add("transpose", dt, lambda n, x: x.transpose((1, 2, 0)), {"x": (2, 3, 4)})
        add("reshape", dt, lambda n, x: x.reshape((0, -1, 2)), {"x": (2, 3, 4)})
        add("concat", dt, lambda n, a, b: td.concat([b, a], axis=0), {"a": (2, 3), "b": (1, 3)})
        add("slice", dt, lambda n, x: F.slice(x, (1, 2), (2, 2), (2, 1)), {"x": (5, 6)})
        add("getitem", dt, lambda n, x: x[1:, ::-1][0], {"x": (3, 4)})
        add("gather", dt, lambda n, x: x.gather([2, 0, 2], axis=1), {"x": (2, 3)})
        add("select", dt, lambda n, a, b: td.select(a == b, b, a), {"a": (2, 3), "b": (2, 3)})
        for dst in DTYPES:
            add(f"cast_to_{dst}", dt, lambda n, x, d=dst: x.cast(d), {"x": (3, 4)})
    return out


DTYPE_CASES = _dtype_cases()


@pytest.mark.parametrize(("name", "make", "dtype"), DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
def test_every_op_in_every_dtype(name: str, make: Any, dtype: str) -> None:
    net, feeds = make(np.random.default_rng(7))
    rtol, atol = TOL.get(dtype, (0, 0))
    if name.startswith(("cast_to_float16", "cast_to_bfloat16")):
        rtol, atol = TOL["bfloat16"]
    check(net, feeds, max(rtol, 2e-5), max(atol, 2e-5))


def test_dtype_cases_cover_every_op_and_dtype() -> None:
    ids = {c[0] for c in DTYPE_CASES}
    assert len(ids) > 230  # int8 takes no arithmetic (docs/dsl.md, Dtypes)
    for dt in DTYPES:
        assert (f"ew_add-{dt}" in ids) == (dt not in ("bool", "int8"))  # int8: quantized
        assert f"cast_to_bool-{dt}" in ids
    assert {f"unary_{k}-bfloat16" for k in UNARY_OPS if k != "not"} <= ids


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rms_norm_of_large_16bit_values(dtype: str) -> None:
    """The reference squares in float32; a 16-bit x*x overflows (fp16 max 65504) above 256."""
    net = td.Network("rms_large")
    x = net.input("x", (2, 8), dtype)
    net.output(x.rms_norm(np.ones(8, td.as_dtype(dtype).numpy)), "y")
    feeds = {"x": rand_array(np.random.default_rng(3), (2, 8), dtype, 300.0, 600.0)}
    check(net, feeds, *TOL[dtype])


# --- collectives on 1-4 ranks with groups and roots ------------------------------------------
def _valid(cc: CollectiveCase, n: int) -> bool:
    try:
        for r in range(n):
            cc.make(td.StaticWorld(n, r))
    except (td.DefinitionError, ValueError, IndexError):
        return False
    return True


COLLECTIVE_RUNS = [(cc, n) for cc in COLLECTIVE_CASES for n in (1, 2, 3, 4) if _valid(cc, n)]


def run_world(n: int, fn: Any) -> list:
    """``fn(world, comm)`` on ``n`` in-process ranks sharing one emulator Communicator."""
    comm = Communicator(n, timeout=20.0)
    return td.InProcessWorld(n).run(lambda world: fn(world, comm))


@pytest.mark.parametrize(
    ("cc", "n"), COLLECTIVE_RUNS, ids=[f"{cc.name}-{n}ranks" for cc, n in COLLECTIVE_RUNS]
)
def test_collective_computes_like_the_reference(cc: CollectiveCase, n: int) -> None:
    def per_rank(world: td.World, comm: Communicator) -> tuple:
        net = cc.make(world)
        feeds = collective_feeds(world, cc.dtype)
        return world.rank, net.run(feeds), emulate(net, feeds, world.rank, comm)

    for rank, want, got in run_world(n, per_rank):
        assert_match(got, want, 0, 0, f"{cc.name} rank {rank}/{n}")


def test_collective_runs_cover_every_op_on_four_ranks() -> None:
    ops = {cc.op for cc, n in COLLECTIVE_RUNS if n == 4 and cc.groups}
    assert len(ops) == 8 and len(COLLECTIVE_RUNS) > 100


# --- parallel blocks on 1-4 ranks ------------------------------------------------------------
def _weights(seed: int, *shapes: tuple) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]


def _block(kind: str, x: td.Tensor, dtype: str) -> td.Tensor:
    w = [a.astype(td.as_dtype(dtype).numpy) for a in _weights(1, (12, 24), (24, 12), (12, 24))]
    if kind == "column":
        return P.column_parallel_linear(x, w[0], w[0][0], gather_output=True)
    if kind == "row":
        return P.row_parallel_linear(x, w[1][:12], w[1][0], input_is_parallel=False)
    if kind == "row_reduce_scatter":
        return P.row_parallel_linear(x, w[1][:12], reduce="reduce_scatter", input_is_parallel=False)
    if kind == "mlp":
        return P.tensor_parallel_mlp(x, w[0], w[1], b_down=w[1][0], activation="gelu_tanh")
    if kind == "swiglu":
        return P.tensor_parallel_mlp(x, w[0], w[1], w_gate=w[2], reduce="reduce_scatter")
    if kind == "attention":  # 12 heads of 2 dims: divisible by every group size 1-4
        w_qkv, w_out = _weights(2, (12, 72), (24, 12))
        cast = td.as_dtype(dtype).numpy
        return P.tensor_parallel_attention(
            x, w_qkv.astype(cast), w_out.astype(cast), num_heads=12, causal=True
        )
    raise AssertionError(kind)


BLOCKS = ["column", "row", "row_reduce_scatter", "mlp", "swiglu", "attention"]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", BLOCKS)
def test_tensor_parallel_blocks(kind: str, n: int) -> None:
    dtype = "float16" if kind in ("mlp", "attention") and n == 2 else "float32"

    def per_rank(world: td.World, comm: Communicator) -> tuple:
        net = td.Network(kind, world=world)
        x = net.input("x", (12, 12), dtype)
        net.output(_block(kind, x, dtype), "y")
        feeds = {"x": rand_array(np.random.default_rng(5), (12, 12), dtype)}
        return net.run(feeds), emulate(net, feeds, world.rank, comm)

    for want, got in run_world(n, per_rank):
        assert_match(got, want, *(TOL[dtype] if dtype != "float32" else (1e-4, 1e-4)))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("strategy", sorted(P.STRATEGIES))
def test_context_parallel_attention(strategy: str, causal: bool, n: int) -> None:
    heads, seq, dh = 12, 12, 4

    def per_rank(world: td.World, comm: Communicator) -> tuple:
        net = td.Network("cp", world=world)
        qkv = [net.input(k, (heads, seq // n, dh)) for k in "qkv"]
        net.output(P.cp_attention(*qkv, strategy=strategy, causal=causal), "y")
        rng = np.random.default_rng(11)
        full = {k: rand_array(rng, (heads, seq, dh)) for k in "qkv"}
        feeds = {k: P.shard_sequence(v, world.rank, n, axis=1) for k, v in full.items()}
        return net.run(feeds), emulate(net, feeds, world.rank, comm)

    for want, got in run_world(n, per_rank):
        assert_match(got, want, 1e-4, 1e-4)


# --- the samples' networks --------------------------------------------------------------------
def _sample(name: str) -> Any:
    samples = str(Path(__file__).resolve().parents[1] / "samples")
    if samples not in sys.path:
        sys.path.insert(0, samples)
    return importlib.import_module(name)


DIT_LAYOUTS = [(1, 1, "ring"), (2, 2, "ulysses"), (1, 2, "allgather_kv"), (2, 1, "ring")]


@pytest.mark.parametrize(("tp", "cp", "strategy"), DIT_LAYOUTS)
def test_dit_block_sample(tp: int, cp: int, strategy: str) -> None:
    dit = _sample("dit_block")
    heads, dh, seq, d_cond = 4, 4, 8, 8
    d = heads * dh
    rng = np.random.default_rng(2)
    wt = dit.make_weights(rng, d, d_cond, 2 * d)
    x = rng.standard_normal((seq, d)).astype(np.float32)
    c = rng.standard_normal((1, d_cond)).astype(np.float32)
    want_full = dit.reference(x, c, wt, heads)
    tp_groups = [[ci * tp + ti for ti in range(tp)] for ci in range(cp)]
    cp_groups = [[ci * tp + ti for ci in range(cp)] for ti in range(tp)]

    def per_rank(world: td.World, comm: Communicator) -> tuple:
        ci = world.rank // tp
        net = td.Network("dit", world=world)
        xin, cin = net.input("x", (seq // cp, d)), net.input("c", (1, d_cond))
        y = dit.dit_block(
            xin, cin, wt, heads=heads, tp_groups=tp_groups, cp_groups=cp_groups, strategy=strategy
        )
        net.output(y, "y")
        feeds = {"x": P.shard_sequence(x, ci, cp), "c": c}
        return ci, net.run(feeds), emulate(net, feeds, world.rank, comm)

    for ci, want, got in run_world(tp * cp, per_rank):
        assert_match(got, want, 1e-4, 1e-4)
        np.testing.assert_allclose(got["y"], P.shard_sequence(want_full, ci, cp), 1e-4, 1e-4)
