"""The attention log-sum-exp plugin (``trtdsl::flash_attention_lse``, tensorrt.plugin AOT).

Contract: the plugin code against the manifest extracted from the real ``tensorrt.plugin``
sources of the 11.4.0.106 bindings wheel (names, parameters, the aot_impl schema and return
types, KernelLaunchParams fields, SymInt32 extra arguments), through the fake plugin module,
and the manifest against the wheel itself where it has been downloaded. AOT: the kernel compiles
for sm_90 on this CPU machine (needs Triton) and its PTX, cut to QDP's arguments, assembles to a
cubin. Emulator equality of the lowered networks is in test_trt_emulator_lowering.py (the
``attention_plugin_*`` cases). Nothing here runs a TensorRT engine.
"""

# no "from __future__ import annotations": tensorrt.plugin reads the annotations as objects
import ast
import importlib.util
import inspect
import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from trtdsl.kernels import configs as KC
from trtdsl.kernels import reference as R
from trtdsl.kernels import ws_configs as WC

import trtdsl as td
from trtdsl import functional as F
from trtdsl.backends.tensorrt import lower_network
from trtdsl.backends.tensorrt import plugins as P
from trtdsl.backends.tensorrt.errors import LoweringError
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.fake_tensorrt.plugin import MANIFEST_PATH, load_plugin_manifest

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not importable here")
MAN = load_plugin_manifest()


@pytest.fixture(autouse=True, scope="module")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory):
    """The kernels' disk cache and Triton's in fresh folders (each variant really compiles)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRTDSL_KERNEL_CACHE", str(tmp_path_factory.mktemp("kcache")))
        mp.setenv("TRITON_CACHE_DIR", str(tmp_path_factory.mktemp("triton-cache")))
        P.aot_kernel.cache_clear()
        yield
        P.aot_kernel.cache_clear()


def _wheel() -> Path | None:
    env = os.environ.get("TRTDSL_TRT_WHEEL")
    cands = [Path(env)] if env else sorted(Path("/tmp/trtw").glob("tensorrt_cu13_bindings-*.whl"))
    return next((p for p in cands if p.is_file()), None)


def _net(dtype="float16", lead=(2, 3), s_q=40, s_k=24, d=64, causal=True, q_offset=30, **kw):
    net = td.Network("attn_lse")
    q = net.input("q", lead + (s_q, d), dtype)
    k = net.input("k", lead + (s_k, d), dtype)
    v = net.input("v", lead + (s_k, d), dtype)
    o, lse = F.attention(q, k, v, causal=causal, q_offset=q_offset, return_lse=True, **kw)
    net.output(o, "o")
    net.output(lse, "lse")
    return net


def _plugin_layer(network):
    found = [obj for method, obj in network.created if method == "add_plugin"]
    return found[0] if found else None


# --- the manifest --------------------------------------------------------------------------
def test_manifest_names_the_wheel_and_the_api_the_plugin_uses() -> None:
    h = MAN["header"]
    assert h["version"] == "11.4.0.106" and h["wheel"].startswith("tensorrt_cu13_bindings")
    pub = MAN["public"]
    assert {"register", "aot_impl", "cdiv", "from_shape_expr"} <= set(pub["functions"])
    assert {"TensorDesc", "KernelLaunchParams", "SymInt32", "SymIntExprs"} <= set(pub["classes"])
    assert MAN["kernel_launch_params_fields"] == [
        "grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem",
    ]  # fmt: skip
    a = MAN["aot_impl"]
    assert a["schema_tail"] == ", outputs, tactic)"
    assert a["unpack"] == ["kernel_name", "ptx", "launch_params", "extra_args"]
    assert a["extra_arg_types"] == ["SymInt32"]
    assert (
        a["call"]
        == "self.aot_impl_function(*self.input_descs, *val, self.output_descs, self._tactic)"
    )


NO_WHEEL = (
    "no tensorrt_cu13_bindings wheel in /tmp/trtw (pip download --no-deps "
    "tensorrt-cu13-bindings==11.4.0.106 -d /tmp/trtw, or set TRTDSL_TRT_WHEEL)"
)


@pytest.mark.skipif(_wheel() is None, reason=NO_WHEEL)
def test_checked_in_manifest_is_what_the_wheel_gives(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    tool = ROOT / "tools" / "extract_trt_plugin_manifest.py"
    subprocess.run([sys.executable, str(tool), str(_wheel()), "--out", str(out)], check=True)
    assert json.loads(out.read_text()) == json.loads(MANIFEST_PATH.read_text())


def test_the_fake_plugin_module_has_the_real_signatures() -> None:
    trtp = make_fake_tensorrt().plugin
    for name in ("register", "aot_impl", "cdiv", "from_shape_expr", "max", "min"):
        want = [(p["name"], p.get("default")) for p in MAN["public"]["functions"][name]["params"]]
        got = [
            (p.name, None if p.default is inspect.Parameter.empty else repr(p.default))
            for p in inspect.signature(getattr(trtp, name)).parameters.values()
        ]
        assert got == want, name
    init = MAN["public"]["classes"]["TensorDesc"]["methods"]["__init__"]["params"][1:]
    got = list(inspect.signature(trtp.TensorDesc).parameters)
    assert got == [p["name"] for p in init]


def test_plugins_py_uses_only_names_of_the_real_package() -> None:
    src = (ROOT / "trtdsl/backends/tensorrt/plugins.py").read_text()
    used = {
        n.attr
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == "trtp"
    }
    pub = MAN["public"]
    known = set(pub["functions"]) | set(pub["classes"]) | set(pub["objects"])
    assert used and used <= known, used - known


# --- registration and lowering ----------------------------------------------------------
def test_importing_trtdsl_and_lowering_with_the_fake_imports_no_tensorrt() -> None:
    code = (
        "import sys, trtdsl as td\n"
        "from trtdsl import functional as F\n"
        "from trtdsl.backends.tensorrt import lower_network\n"
        "from trtdsl.testing.fake_tensorrt import make_fake_tensorrt\n"
        "assert 'tensorrt' not in sys.modules\n"
        "n = td.Network('a'); q = n.input('q', (2, 8, 32), 'float16')\n"
        "o, l = F.attention(q, q, q, return_lse=True); n.output(o, 'o'); n.output(l, 'l')\n"
        "_, net, ctx = lower_network(n, make_fake_tensorrt())\n"
        "assert any(m == 'add_plugin' for m, _ in net.created)\n"
        "assert not any(m.startswith('tensorrt') for m in sys.modules), 'tensorrt imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize(
    "d, plugin_id, dtypes",
    [
        (32, "trtdsl::flash_attention_lse", ["HALF", "FLOAT"]),
        (64, "trtdsl::flash_attention_lse_ws", ["HALF", "FLOAT", "INT32"]),
    ],
)
def test_lowering_inserts_one_plugin_layer_with_the_attributes(d, plugin_id, dtypes) -> None:
    trt = make_fake_tensorrt()
    _, network, _ctx = lower_network(_net(d=d), trt)
    lay = _plugin_layer(network)
    assert [m for m, _ in network.created].count("add_plugin") == 1
    _, args, kwargs = next(c for c in network.calls if c[0] == "add_plugin")
    assert kwargs == {"aot": True} and callable(args[0])
    p = lay.plugin
    assert p.plugin_id == plugin_id
    assert p.attrs == {"causal": True, "q_offset": 30, "k_offset": 0, "scale": 1 / math.sqrt(d)}
    assert [type(v) for v in p.attrs.values()] == [bool, int, int, float]
    name = plugin_id.split("::")[1]
    assert len(lay._inputs) == 3 and lay._props["name"] == f"attention_0/{name}"
    assert lay._props["plugin_output_dtypes"] == [getattr(trt.DataType, t) for t in dtypes]
    reg = trt.plugin.QDP_REGISTRY[plugin_id]
    assert reg.input_tensor_names == ["q", "k", "v"] and list(reg.input_attrs) == list(P.ATTRS)
    assert reg.aot_impl_func is not None and reg.num_outputs == len(dtypes)


@pytest.mark.parametrize(
    "why, kw, ws",
    [
        ("head_dim 64", {}, True),
        ("head_dim 128, full", {"d": 128, "causal": False, "q_offset": 0}, True),
        ("bf16", {"dtype": "bfloat16"}, True),
        ("q at k's offset", {"q_offset": 7, "k_offset": 7}, True),
        ("head_dim 32", {"d": 32}, False),
        ("head_dim 256", {"d": 256}, False),
        ("causal q before k", {"q_offset": 3, "k_offset": 4}, False),
        ("dynamic key length", {"s_k": None}, False),
    ],
)
def test_the_warp_specialized_plugin_is_chosen_where_its_kernel_applies(why, kw, ws) -> None:
    trt = make_fake_tensorrt()
    _, network, _ = lower_network(_net(**kw), trt)
    got = _plugin_layer(network).plugin.plugin_id
    assert got == (P.PLUGIN_WS_ID if ws else P.PLUGIN_ID), why


@pytest.mark.parametrize(
    "why, net",
    [
        ("plugins off", None),
        ("float32", _net(dtype="float32")),
        ("head_dim 8", _net(d=8)),
        ("mask", _net(causal=False, q_offset=0, mask=np.ones((40, 24), bool))),
        ("no lse", None),
    ],
)
def test_other_variants_keep_primitive_layers_or_iattention(why, net) -> None:
    trt = make_fake_tensorrt()
    if why == "plugins off":
        _, network, _ = lower_network(_net(), trt, plugins=False)
    elif why == "no lse":
        n = td.Network("a")
        q = n.input("q", (2, 40, 64), "float16")
        n.output(F.attention(q, q, q), "o")
        _, network, _ = lower_network(n, trt)
    else:
        _, network, _ = lower_network(net, trt)
    assert _plugin_layer(network) is None, why


def test_registration_happens_once_per_plugin_module() -> None:
    trt = make_fake_tensorrt()
    assert P.register(trt) is P.register(trt) is trt.plugin
    lower_network(_net(), trt)
    lower_network(_net(dtype="bfloat16"), trt)
    assert list(trt.plugin.QDP_REGISTRY) == [P.PLUGIN_ID, P.PLUGIN_WS_ID]


# --- the fake applies the real package's rules ----------------------------------------------
def test_the_fake_refuses_what_the_real_decorators_refuse() -> None:
    trtp = make_fake_tensorrt().plugin
    TD = trtp.TensorDesc

    with pytest.raises(ValueError, match="reserved namespace"):
        trtp.register("trt::x")
    with pytest.raises(ValueError, match="not allowed"):

        @trtp.register("t::a")
        def a(x: TD, outputs: int) -> TD: ...

    with pytest.raises(ValueError, match="default value"):

        @trtp.register("t::b")
        def b(x: TD, n: int = 1) -> TD: ...

    @trtp.register("t::c")
    def c(x: TD, n: int, s: float) -> TD: ...

    ret = tuple[str, str, trtp.KernelLaunchParams, trtp.SymIntExprs]
    with pytest.raises(ValueError, match="schema"):  # no tactic

        @trtp.aot_impl("t::c")
        def c1(x: TD, n: int, s: float, outputs: tuple[TD]) -> ret: ...

    with pytest.raises(ValueError, match="annotation"):

        @trtp.aot_impl("t::c")
        def c2(x: TD, n: float, s: float, outputs: tuple[TD], tactic: int) -> ret: ...

    with pytest.raises(ValueError, match="Return annotation"):

        @trtp.aot_impl("t::c")
        def c3(x: TD, n: int, s: float, outputs: tuple[TD], tactic: int) -> tuple[str, str]: ...

    with pytest.raises(Exception, match="no attribute"):
        trtp.KernelLaunchParams().grid_w = 1


def test_plugin_instances_check_attribute_types_and_order() -> None:
    trt = make_fake_tensorrt()
    trtp = P.register(trt)
    pdef = trtp.op.trtdsl.flash_attention_lse
    net = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_network(0)
    q = net.add_input("q", trt.DataType.HALF, (1, 2, 16, 64))
    good = {"causal": True, "q_offset": 0, "k_offset": 0, "scale": 0.125}
    pdef(q, q, q, **good)
    with pytest.raises(ValueError, match="type"):
        pdef(q, q, q, **dict(good, scale=np.float64(0.125)))
    with pytest.raises(ValueError, match="schema"):
        pdef(q, q, q, scale=0.125, causal=True, q_offset=0, k_offset=0)


# --- AOT: the kernel, its launch parameters and scalar arguments ----------------------------
def test_qk_scale_travels_as_float32_bits() -> None:
    bits = P.qk_scale_bits(0.125)
    assert struct.unpack("<f", struct.pack("<i", bits))[0] == np.float32(0.125 * P.LOG2E)
    assert P.qk_scale_bits(-1.0) < 0  # a signed int32 either way


def test_qdp_ptx_refuses_a_used_scratch_parameter() -> None:
    ptx = (
        ".entry k(\n\t.param .u64 k_param_0,\n\t.param .u64 k_param_1,\n\t.param .u64 k_param_2\n)"
    )
    cut = P.qdp_ptx(ptx, "k", 1)
    assert "k_param_1" not in cut and "k_param_0" in cut
    with pytest.raises(LoweringError, match="used"):
        P.qdp_ptx(ptx + "\nld.param.u64 %rd1, [k_param_2];", "k", 1)
    with pytest.raises(LoweringError, match="expected"):
        P.qdp_ptx(ptx, "k", 2)
    used = ptx + "\nld.param.u64 %rd1, [k_param_1];"  # the global scratch, read by the kernel
    kept = P.qdp_ptx(used, "k", 1, keep_global_scratch=True)
    assert "k_param_1" in kept.split(")")[0] and "k_param_2" not in kept
    with pytest.raises(LoweringError, match="used"):
        P.qdp_ptx(used + "\nld.param.u64 %rd2, [k_param_2];", "k", 1, keep_global_scratch=True)
    with pytest.raises(LoweringError, match="not a scratch pointer"):
        P.qdp_ptx(ptx.replace(".u64 k_param_1", ".u32 k_param_1"), "k", 1, True)


@needs_triton
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("kernel", ["pointer", "ws"])
def test_aot_impl_returns_kernel_launch_params_and_int32_args(dtype, dynamic, kernel) -> None:
    d = 32 if kernel == "pointer" else 64
    trt = make_fake_tensorrt()
    _, network, _ = lower_network(_net(dtype=dtype, s_q=300, s_k=200, q_offset=100, d=d), trt)
    plugin = _plugin_layer(network).plugin
    dt = trt.DataType.HALF if dtype == "float16" else trt.DataType.BF16
    shapes = [(2, 3, 300, d), (2, 3, 200, d), (2, 3, 200, d)]
    static = [(-1, 3, -1, d)] * 3 if dynamic else shapes
    got = plugin.launch([dt] * 3, static, shapes)
    if kernel == "pointer":
        rows, (name, ptx, ck) = (
            KC.attention_config(d, dtype, True).block_m,
            P.aot_kernel(d, dtype, True),
        )
        spec, n_params = KC.attention_qdp_spec(d, dtype, True), 19
    else:
        rows, (name, ptx, ck) = 2 * 64, P.aot_kernel_ws(d, dtype, True)  # two consumers of 64
        spec, n_params = WC.ws_qdp_spec(d, dtype, True), 20  # + the scratch (third output)
    assert got["kernel_name"] == name == spec.fn_name and got["code"] == ptx
    entry = ptx[ptx.index(f".entry {name}(") :].split(")")[0]
    assert entry.count(".param") == n_params
    assert (got["grid_x"], got["grid_y"], got["grid_z"]) == (math.ceil(300 / rows), 6, 1)
    assert (got["block_x"], got["block_y"], got["block_z"]) == (ck.num_warps * 32, 1, 1)
    assert got["shared_mem"] == ck.shared > 0
    strides = [300 * d, d, 200 * d, d, 200 * d, d, 300 * d, d]
    scale = P.qk_scale_bits(1 / math.sqrt(d))
    want = strides + [300, 200, 300 + 100, 300, scale, 1]  # (sq + shift, sq)
    assert got["extra_args"] == want
    names = list(spec.runtime_params)
    assert names[3 : 3 + len(P.EXTRA_ARGS)] == list(P.EXTRA_ARGS)  # inputs, scalars, outputs
    assert names[:3] == ["Q", "K", "V"] and names[-2:] == ["O", "LSE"]
    dims = plugin.output_shapes([dt] * 3, static, shapes)
    out_dtypes = plugin.output_dtypes([dt] * 3, [4] * 3)
    assert dims[:2] == [(2, 3, 300, d), (2, 3, 300)]
    if kernel == "ws":  # the third output holds every program's scratch
        assert out_dtypes[2] == trt.int32 and ck.global_scratch_size > 0
        assert dims[2][0] * 4 >= got["grid_x"] * got["grid_y"] * ck.global_scratch_size
    else:
        assert len(dims) == len(out_dtypes) == 2 and ck.global_scratch_size == 0


@given(
    sq=st.integers(1, 40), sk=st.integers(1, 40), causal=st.booleans(),
    q_off=st.one_of(st.integers(-60, 60), st.sampled_from([-(2**31), 2**31 - 1])),
    k_off=st.one_of(st.integers(-60, 60), st.sampled_from([-(2**31), 2**31 - 1])),
)  # fmt: skip
def test_offset_args_give_the_reference_mask_without_int32_wrap(sq, sk, causal, q_off, k_off):
    from trtdsl.testing.fake_tensorrt import plugin as fake
    from trtdsl.testing.fake_tensorrt.plugin import ShapeExpr, _Expr

    dims = []
    for axis in (2, 2):  # dynamic Sq of input 0 and Sk of input 1, as aot_impl sees them
        e = ShapeExpr.__new__(ShapeExpr)
        e._e = _Expr("dim", len(dims), axis)
        dims.append(e)
    args = P.offset_args(fake, causal, q_off, k_off, *dims)
    shapes = [(1, 1, sq, 8), (1, 1, sk, 8)]
    qa, ka = (a if isinstance(a, int) else a.evaluate(shapes) for a in args)
    assert 0 <= qa <= sq + sk and 0 <= ka <= sq  # int32, and i + (qa - ka) stays in int32
    rows, keys = np.arange(sq)[:, None], np.arange(sk)[None, :]
    # the kernel: key j visible to row i iff j <= i + (q_offset - k_offset)
    kernel_mask = keys <= rows + (qa - ka) if causal else np.ones((sq, sk), bool)
    assert np.array_equal(kernel_mask, R.attention_mask(sq, sk, causal, q_off, k_off))


def test_offset_args_refuse_offsets_past_int32() -> None:
    from trtdsl.testing.fake_tensorrt import plugin as fake

    with pytest.raises(LoweringError, match="q_offset=2147483648"):
        P.offset_args(fake, True, 2**31, 0, 4, 4)
    with pytest.raises(LoweringError, match="k_offset"):
        P.offset_args(fake, False, 0, -(2**31) - 1, 4, 4)


@needs_triton
def test_aot_kernel_is_the_table_kernel_and_assembles_to_an_sm90_cubin() -> None:
    name, ptx, ck = P.aot_kernel(128, "bfloat16", False)
    ref = KC.attention_spec(128, "bfloat16", False)
    spec = KC.attention_qdp_spec(128, "bfloat16", False)
    assert spec.constexprs == ref.constexprs and spec.options == ref.options  # same config
    assert ck.cubin[:4] == b"\x7fELF" and ck.arch == 90
    assert ck.global_scratch_size == ck.profile_scratch_size == 0
    entry = ptx[ptx.index(f".entry {name}(") :].split(")")[0]
    assert entry.count(".param") == len(spec.runtime_params) == 19
    cubin = P.assemble_cubin(ptx)
    assert cubin[:4] == b"\x7fELF" and name.encode() in cubin


@pytest.mark.parametrize(
    "spec",
    [KC.attention_qdp_spec(64, "float16", True), WC.ws_qdp_spec(64, "float16", True)],
    ids=lambda s: s.fn_name,
)
def test_qdp_specs_follow_the_kernels_own_parameter_order(spec) -> None:
    """Triton binds a spec's signature to the kernel by name, so a spec in another order than
    the kernel compiles fine and QDP would pass strides into O: the orders must be one."""
    from trtdsl.kernels.compile import _kernel_fn

    assert list(spec.signature) == list(_kernel_fn(spec.fn_name).arg_names)
    runtime = list(spec.runtime_params)
    assert runtime == ["Q", "K", "V", *P.EXTRA_ARGS, "O", "LSE"]  # QDP: inputs, int32s, outputs


@needs_triton
@pytest.mark.parametrize("kernel", ["pointer", "ws"])
def test_the_plugin_ptx_takes_what_qdp_passes_in_order(kernel) -> None:
    if kernel == "pointer":
        name, ptx, _ = P.aot_kernel(64, "bfloat16", False)
    else:
        name, ptx, _ = P.aot_kernel_ws(64, "bfloat16", False)
    entry = ptx[ptx.index(f".entry {name}(") :].split(")")[0]
    types = [t for t in re.findall(r"\.param\s+\.(\w+)", entry)]
    outputs = 2 if kernel == "pointer" else 3  # o, lse (and the ws kernel's scratch)
    assert types == ["u64"] * 3 + ["u32"] * len(P.EXTRA_ARGS) + ["u64"] * outputs


def test_ws_plugin_can_be_switched_off_while_lowering(monkeypatch) -> None:
    monkeypatch.setenv("TRTDSL_ATTENTION_WS", "0")
    _, network, _ = lower_network(_net(), make_fake_tensorrt())
    assert _plugin_layer(network).plugin.plugin_id == P.PLUGIN_ID
    monkeypatch.setenv("TRTDSL_ATTENTION_WS", "1")
    _, network, _ = lower_network(_net(), make_fake_tensorrt())
    assert _plugin_layer(network).plugin.plugin_id == P.PLUGIN_WS_ID


@pytest.mark.parametrize(
    "why, kw, plugin",
    [
        ("B x H at grid y's limit", {"lead": (5, 13107)}, True),
        ("B x H past grid y", {"lead": (2, 32768)}, False),
        ("heads past grid y, rank 3", {"lead": (65536,)}, False),
        ("Sk x D at int32's limit", {"lead": (1, 1), "s_k": 2**25 - 1, "causal": False}, True),
        ("Sk x D past int32", {"lead": (1, 1), "s_k": 2**25, "causal": False}, False),
        ("Sq x D past int32", {"lead": (1, 1), "s_q": 2**25, "causal": False}, False),
        ("no query", {"s_q": 0, "causal": False}, False),
    ],
)
def test_plugins_only_take_shapes_their_launch_and_int32_strides_allow(why, kw, plugin) -> None:
    _, network, _ = lower_network(_net(**kw), make_fake_tensorrt())
    assert (_plugin_layer(network) is not None) == plugin, why


def test_registration_adds_only_the_plugins_a_registry_lacks() -> None:
    trt = make_fake_tensorrt()
    P._define(trt, trt.plugin, [P.FLASH_ATTENTION_LSE])  # an earlier registration of one
    P._registered.pop(id(trt.plugin), None)
    assert P.register(trt) is trt.plugin  # the real registry refuses a second definition
    assert list(trt.plugin.QDP_REGISTRY) == [P.PLUGIN_ID, P.PLUGIN_WS_ID]
