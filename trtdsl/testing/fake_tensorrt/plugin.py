"""A fake ``tensorrt.plugin`` (QDP) checked against the manifest of the real package's sources.

``make_fake_plugin(trt)`` returns a module with ``register``, ``aot_impl``, ``TensorDesc``,
``ShapeExpr(s)``, ``SymInt32``, ``SymIntExprs``, ``KernelLaunchParams``, ``cdiv``/``max``/
``min``, ``from_shape_expr`` and ``op``. Their names and parameters come from
``trt11_plugin_manifest.json`` (extracted with :mod:`ast` from ``tensorrt_bindings/plugin`` of
the 11.4.0.106 bindings wheel by tools/extract_trt_plugin_manifest.py); the decorators apply the
real package's validation rules as recorded there (reserved namespaces, disallowed and
serializable attribute types, the ``aot_impl`` argument schema ``(inputs, attrs, outputs,
tactic)`` and its return schema), and a plugin instance is driven the way the real runtime
drives it: the register function with ``**attrs`` (placeholder shapes, then symbolic ones), the
AOT function with every attribute positionally in registration order, its result unpacked into
(kernel name, code, ``KernelLaunchParams``, ``SymIntExprs`` of ``SymInt32``).

Shape expressions are small symbolic trees: :meth:`FakePlugin.launch` evaluates the launch
parameters and extra arguments for concrete input shapes. ``network.add_plugin(func, aot)``
(the fake's hook, :func:`add_plugin`) calls ``func`` like TensorRT, checks what it returns
(input ITensors, shape inputs, the plugin) and asks the plugin for its output dtypes.
Anything of the real package the fake does not model raises ``FakeTensorRTLimitation``.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

from .objects import ContractAttributeError, ContractError, FakeObject, FakeTensorRTLimitation

MANIFEST_PATH = (
    Path(__file__).resolve().parents[2] / "backends" / "tensorrt" / "trt11_plugin_manifest.json"
)
_BUILTINS = {"int": int, "float": float, "bytes": bytes, "bool": bool, "str": str}


@cache
def load_plugin_manifest() -> dict[str, Any]:
    """The checked-in manifest of the real ``tensorrt.plugin`` sources."""
    return json.loads(MANIFEST_PATH.read_text())


# --- symbolic integers ------------------------------------------------------------------------
#: TensorRT's DimensionOperation names, evaluated (only the one asked for: x // 0 raises).
_OPS: dict[str, Any] = {
    "SUM": lambda x, y: x + y, "SUB": lambda x, y: x - y, "PROD": lambda x, y: x * y,
    "FLOOR_DIV": lambda x, y: x // y, "CEIL_DIV": lambda x, y: -(-x // y),
    "MAX": lambda x, y: x if x >= y else y, "MIN": lambda x, y: x if x <= y else y,
    "EQUAL": lambda x, y: int(x == y), "LESS": lambda x, y: int(x < y),
}  # fmt: skip


class _Expr:
    """const value | dim (input, axis) | op(name, a, b)."""

    def __init__(self, kind: str, *args: Any) -> None:
        self.kind, self.args = kind, args

    def eval(self, shapes: list[tuple[int, ...]]) -> int:
        if self.kind == "const":
            return self.args[0]
        if self.kind == "dim":
            return int(shapes[self.args[0]][self.args[1]])
        name, a, b = self.args
        return _OPS[name](a.eval(shapes), b.eval(shapes))

    def is_constant(self) -> bool:
        return self.kind == "const" or (self.kind == "op" and all(
            e.is_constant() for e in self.args[1:]))  # fmt: skip


class SymIntExpr:
    """Symbolic integer; ``_e`` None for a placeholder (TensorRT's "fake" expression)."""

    def __init__(self, value: Any = None) -> None:
        if isinstance(value, SymIntExpr):
            self._e = value._e
        elif isinstance(value, bool) or not (value is None or isinstance(value, int)):
            raise ContractError(f"tensorrt.plugin: a symbolic int from {type(value).__name__}")
        else:
            self._e = None if value is None else _Expr("const", int(value))

    def _op(self, name: str, other: Any) -> SymIntExpr:
        other = other if isinstance(other, SymIntExpr) else SymIntExpr(other)
        out = type(self).__new__(ShapeExpr if isinstance(self, ShapeExpr) else SymIntExpr)
        out._e = None if self._e is None or other._e is None else _Expr("op", name, self._e,
                                                                         other._e)  # fmt: skip
        return out

    def __add__(self, o: Any) -> SymIntExpr:
        return self._op("SUM", o)

    def __sub__(self, o: Any) -> SymIntExpr:
        return self._op("SUB", o)

    def __mul__(self, o: Any) -> SymIntExpr:
        return self._op("PROD", o)

    def __floordiv__(self, o: Any) -> SymIntExpr:
        return self._op("FLOOR_DIV", o)

    @property
    def is_fake(self) -> bool:
        return self._e is None

    @property
    def is_constant(self) -> bool:
        if self._e is None:
            raise RuntimeError("Not accessible for fake 'SymIntExpr's.")
        return self._e.is_constant()

    def constant_value(self) -> int:
        if not self.is_constant:
            raise RuntimeError("Not accessible for non-constant integer expressions.")
        return self._e.eval([])

    def evaluate(self, shapes: list[tuple[int, ...]]) -> int:
        """Fake-only: the value for concrete input shapes."""
        if self._e is None:
            raise ContractError("a placeholder shape expression reached a launch parameter")
        return self._e.eval(shapes)


class SymInt32(SymIntExpr):
    """32-bit symbolic integer (the only extra-argument type QDP launches accept)."""


class ShapeExpr(SymInt32):
    """One dimension of a tensor descriptor."""


class SymExprs:
    def __init__(self, length: int) -> None:
        self._length, self._exprs = int(length), [None] * int(length)

    def __iter__(self) -> Any:
        return iter(self._exprs)

    def __getitem__(self, i: int) -> Any:
        return self._exprs[i]

    def __len__(self) -> int:
        return self._length

    def __setitem__(self, i: int, value: Any) -> None:
        if i >= self._length:
            raise IndexError("Index out of range")
        self._exprs[i] = value if isinstance(value, SymIntExpr) else SymIntExpr(value)


class SymIntExprs(SymExprs):
    pass


class ShapeExprs(SymExprs):
    @classmethod
    def from_tuple(cls, exprs: Any) -> ShapeExprs:
        out = cls(len(tuple(exprs)))
        out._exprs = [e if isinstance(e, ShapeExpr) else ShapeExpr(e) for e in exprs]
        return out

    def numel(self) -> ShapeExpr:
        n = ShapeExpr(1)
        for e in self._exprs:
            n = n * e
        return n


class TensorDesc:
    """Shape expressions and dtype of a plugin input or output (no data)."""

    def __init__(self, shape_expr: Any = None, dtype: Any = None, format: Any = None,
                 scale: Any = None) -> None:  # fmt: skip
        self.shape_expr, self.dtype, self.format, self.scale = shape_expr, dtype, format, scale

    @property
    def ndim(self) -> int:
        return len(self.shape_expr)

    def like(self) -> TensorDesc:
        return TensorDesc(ShapeExprs.from_tuple(list(self.shape_expr)), self.dtype)


class KernelLaunchParams:
    """Grid, block and shared memory of an AOT kernel (fields from the manifest)."""

    _FIELDS: tuple[str, ...] = ()

    def __init__(self, **kw: Any) -> None:
        for f in self._FIELDS:
            self.__dict__[f] = SymInt32(kw.pop(f, 0 if f == "shared_mem" else 1))
        if kw:
            raise ContractError(f"KernelLaunchParams has no fields {sorted(kw)}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._FIELDS:
            raise ContractAttributeError(f"KernelLaunchParams object has no attribute '{name}'")
        self.__dict__[name] = SymInt32(value)


def cdiv(first: Any, second: Any) -> ShapeExpr:
    if isinstance(first, int):
        if isinstance(second, int):
            raise ValueError("Both arguments cannot be 'int's")
        first = ShapeExpr(first)
    return first._op("CEIL_DIV", second)


def max(first: Any, second: Any) -> ShapeExpr:  # noqa: A001 - the real module's name
    return (ShapeExpr(first) if isinstance(first, int) else first)._op("MAX", second)


def min(first: Any, second: Any) -> ShapeExpr:  # noqa: A001
    return (ShapeExpr(first) if isinstance(first, int) else first)._op("MIN", second)


def from_shape_expr(shape_expr: Any, dtype: Any) -> TensorDesc:
    exprs = ShapeExprs.from_tuple(shape_expr) if isinstance(shape_expr, tuple) else shape_expr
    return TensorDesc(exprs, dtype)


# --- plugins ----------------------------------------------------------------------------------
class PluginDef:
    """What ``register`` records; calling it (``trtp.op.ns.name(*tensors, **attrs)``) gives the
    creation function ``network.add_plugin`` takes."""

    def __init__(self, mod: Any, plugin_id: str, func: Any, tensors: list[str],
                 attrs: dict[str, type], num_outputs: int) -> None:  # fmt: skip
        self.mod, self.plugin_id, self.register_func = mod, plugin_id, func
        self.input_tensor_names, self.input_attrs, self.num_outputs = tensors, attrs, num_outputs
        self.aot_impl_func: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trt = self.mod._trt
        for t in args:
            if not (isinstance(t, FakeObject) and trt.MANIFEST.is_subclass(t._trt_class,
                                                                           "ITensor")):  # fmt: skip
                raise ValueError(f"Expected trt.ITensor but got input of type {type(t)}")
        for key, value in kwargs.items():
            if key not in self.input_attrs:
                raise ValueError(f"Unexpected attribute {key} provided.")
            if self.input_attrs[key] is not type(value):
                raise ValueError(f"Unexpected type '{type(value)}' for attribute '{key}'.")
        want = ["ITensor"] * len(self.input_tensor_names) + list(self.input_attrs)
        got = ["ITensor"] * len(args) + list(kwargs)
        if got != want:
            raise ValueError(f"Unexpected schema ({', '.join(got)}). Expected ({', '.join(want)})")
        plugin = FakePlugin(self, dict(kwargs))

        def create_plugin_instance(quick_plugin_creation_request: Any = None) -> Any:
            return list(args), [], plugin

        return create_plugin_instance


class FakePlugin:
    """A plugin instance: drives the registered functions as the real runtime does."""

    def __init__(self, definition: PluginDef, attrs: dict[str, Any]) -> None:
        self.definition, self.attrs = definition, attrs
        self.plugin_id = definition.plugin_id

    def _outputs(self, descs: list[TensorDesc]) -> tuple[TensorDesc, ...]:
        out = self.definition.register_func(*descs, **self.attrs)  # manifest "register.call"
        out = out if isinstance(out, tuple) else (out,)
        if len(out) != self.definition.num_outputs or not all(
            isinstance(o, TensorDesc) for o in out
        ):
            raise ContractError(f"{self.plugin_id}: register returned {out!r}")
        return out

    def output_dtypes(self, input_dtypes: list[Any], ranks: list[int]) -> list[Any]:
        """``get_output_data_types``: placeholder shape expressions, real dtypes."""
        descs = [
            TensorDesc(ShapeExprs.from_tuple([ShapeExpr() for _ in range(r)]), dt)
            for dt, r in zip(input_dtypes, ranks)
        ]
        return [o.dtype for o in self._outputs(descs)]

    def _symbolic(self, input_dtypes: list[Any], static: list[tuple]) -> list[TensorDesc]:
        descs = []
        for i, (dt, dims) in enumerate(zip(input_dtypes, static)):
            exprs = ShapeExprs(len(dims))
            for j, d in enumerate(dims):
                e = ShapeExpr.__new__(ShapeExpr)
                e._e = _Expr("const", int(d)) if d is not None and d >= 0 else _Expr("dim", i, j)
                exprs[j] = e
            descs.append(TensorDesc(exprs, dt))
        return descs

    def output_shapes(self, input_dtypes: list[Any], static: list[tuple],
                      shapes: list[tuple]) -> list[tuple[int, ...]]:  # fmt: skip
        """The outputs' shapes as the runtime sizes them: ``register`` on the symbolic inputs
        (``static``: the network's dims, None/-1 dynamic), evaluated for ``shapes``."""
        outs = self._outputs(self._symbolic(input_dtypes, static))
        return [
            tuple(e if isinstance(e, int) else e.evaluate(shapes) for e in o.shape_expr)
            for o in outs
        ]

    def launch(self, input_dtypes: list[Any], static: list[tuple], shapes: list[tuple],
               tactic: int = 0) -> dict[str, Any]:  # fmt: skip
        """``get_launch_params`` then ``get_kernel``: the AOT function called like the real
        runtime (manifest "aot_impl.call"), its result checked and evaluated for ``shapes``.
        ``static``: the network's dims (None/-1 dynamic)."""
        m = load_plugin_manifest()["aot_impl"]
        fn = self.definition.aot_impl_func
        if fn is None:
            raise ContractError(f"{self.plugin_id}: no aot_impl registered")
        ins = self._symbolic(input_dtypes, static)
        outs = self._outputs(ins)
        vals = tuple(self.attrs.values())  # "_, val = zip(*self.attrs.items())"
        res = fn(*ins, *vals, outs, tactic)
        if not isinstance(res, tuple) or len(res) != len(m["unpack"]):
            raise ContractError(f"{self.plugin_id}: aot_impl must return {m['unpack']}")
        name, code, params, extra = res
        if not isinstance(name, (str, bytes)) or not isinstance(code, (str, bytes)):
            raise TypeError("Kernel name and PTX/CUBIN must be a 'str' or 'bytes'.")
        if not isinstance(params, KernelLaunchParams):
            raise TypeError(f"Launch params must be a KernelLaunchParams, got {type(params)}")
        if not isinstance(extra, SymExprs):
            raise TypeError(f"Extra args must be a 'tensorrt.plugin.SymIntExprs', got {extra}")
        allowed = tuple(getattr(self.definition.mod, t) for t in m["extra_arg_types"])
        for arg in extra:
            if not isinstance(arg, allowed):
                raise TypeError(f"Extra args must be a 'tensorrt.plugin.SymInt32'. Got {arg}")
        return {
            "kernel_name": name,
            "code": code,
            **{f: getattr(params, f).evaluate(shapes) for f in m["launch_params_set"]},
            "extra_args": [a.evaluate(shapes) for a in extra],
        }


def _annotation_ok(ann: Any, allowed: dict[str, type]) -> bool:
    return inspect.isclass(ann) and ann in allowed.values()


def make_fake_plugin(trt: Any) -> types.ModuleType:
    """A fake ``tensorrt.plugin`` bound to the fake ``tensorrt`` module ``trt``."""
    man = load_plugin_manifest()
    consts = man["constants"]
    serializable = {n: _BUILTINS[n] for n in consts["SERIALIZABLE_BUILTIN_TYPES"]}
    mod = types.ModuleType("tensorrt.plugin", "Fake tensorrt.plugin (manifest-checked).")
    mod._trt = trt
    mod.MANIFEST = man
    registry: dict[str, PluginDef] = {}
    mod.QDP_REGISTRY = registry
    op = types.SimpleNamespace()
    klp = type("KernelLaunchParams", (KernelLaunchParams,), {})
    type.__setattr__(klp, "_FIELDS", tuple(man["kernel_launch_params_fields"]))

    def register(plugin_id: str, lazy_register: bool = False) -> Any:
        ns, _, name = plugin_id.partition("::")
        if "." in ns or "." in name or not name:
            raise ValueError(f"Provided plugin id {plugin_id!r} is not 'namespace::name'")
        if ns in consts["RESERVED_NAMESPACES"]:
            raise ValueError(f"Provided namespace {ns} is a reserved namespace")

        def decorator(func: Any) -> Any:
            tensors, attrs, seen_attr = [], {}, False
            for idx, (pname, p) in enumerate(inspect.signature(func).parameters.items()):
                if p.annotation is inspect.Parameter.empty:
                    raise ValueError(f"Argument {pname} does not have a type annotation.")
                if p.default is not inspect.Parameter.empty:
                    raise ValueError(f"Argument {pname} has a default value.")
                if inspect.isclass(p.annotation) and issubclass(p.annotation, TensorDesc):
                    if seen_attr:
                        raise ValueError("TensorDescs and attribute args cannot be interspersed")
                    tensors.append(pname)
                    continue
                if idx == 0:
                    raise ValueError("TensorDescs args should come first")
                if pname in consts["DISALLOWED_ATTR_NAMES"]:
                    raise ValueError(f"'{pname}' is not allowed as a plugin attribute name.")
                if not _annotation_ok(p.annotation, serializable):
                    raise ValueError(f"Attribute '{pname}' of type {p.annotation} is not a "
                                     "supported serializable type.")  # fmt: skip
                attrs[pname], seen_attr = p.annotation, True
            ret = inspect.signature(func).return_annotation
            args = typing.get_args(ret) if typing.get_origin(ret) is tuple else (ret,)
            if not args or not all(inspect.isclass(a) and issubclass(a, TensorDesc) for a in args):
                raise ValueError(f"Return types can only be TensorDesc or Tuple[TensorDesc], "
                                 f"got {ret}")  # fmt: skip
            if plugin_id in registry:
                raise ValueError(f"'op' already has a defintion for '{name}'")
            pdef = PluginDef(mod, plugin_id, func, tensors, attrs, len(args))
            registry[plugin_id] = pdef
            space = getattr(op, ns, None) or types.SimpleNamespace()
            setattr(op, ns, space)
            setattr(space, name, pdef)
            return func

        return decorator

    def aot_impl(plugin_id: str) -> Any:
        def decorator(func: Any) -> Any:
            if plugin_id not in registry:
                raise ValueError(f"Plugin {plugin_id} is not registered.")
            pdef = registry[plugin_id]
            sig = inspect.signature(func)
            used = []
            for pname, p in sig.parameters.items():
                if pname in pdef.input_attrs:
                    if p.annotation not in (inspect.Parameter.empty, pdef.input_attrs[pname]):
                        raise ValueError(f"Attribute '{pname}' has a type annotation different "
                                         "from the one specified at registration.")  # fmt: skip
                    used.append(pname)
                elif pname not in pdef.input_tensor_names + ["outputs", "tactic"]:
                    raise ValueError(f"Unexpected attribute '{pname}' specified in aot_impl")
            want = "(" + ", ".join(pdef.input_tensor_names + used) + man["aot_impl"]["schema_tail"]
            if f"({', '.join(sig.parameters)})" != want:
                raise ValueError(f"Signature of the aot_impl function '{sig}' does not match the "
                                 f"expected input arg schema: {want}")  # fmt: skip
            _check_aot_return(sig.return_annotation, mod)
            pdef.aot_impl_func = func
            return func

        return decorator

    names = {
        "register": register, "aot_impl": aot_impl, "cdiv": cdiv, "max": max, "min": min,
        "from_shape_expr": from_shape_expr, "TensorDesc": TensorDesc, "ShapeExpr": ShapeExpr,
        "ShapeExprs": ShapeExprs, "SymExprs": SymExprs, "SymInt32": SymInt32,
        "SymIntExprs": SymIntExprs, "KernelLaunchParams": klp, "op": op,
    }  # fmt: skip
    public = set(man["public"]["functions"]) | set(man["public"]["classes"])
    public |= set(man["public"]["objects"])
    unknown = sorted(set(names) - public)
    if unknown:  # the fake must not offer what the real package does not have
        raise ContractError(f"the fake tensorrt.plugin models names the manifest lacks: {unknown}")
    for key, value in names.items():
        setattr(mod, key, value)

    def __getattr__(name: str) -> Any:
        if name in public:
            raise FakeTensorRTLimitation(f"tensorrt.plugin.{name} exists but is not modelled")
        raise ContractAttributeError(f"module 'tensorrt.plugin' has no attribute {name!r}")

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    return mod


def _check_aot_return(ret: Any, mod: Any) -> None:
    """The real ``_validate_aot_impl``'s return-annotation rule (manifest schema)."""
    want = load_plugin_manifest()["aot_impl"]["expected_return_schema"]
    args = typing.get_args(ret) if typing.get_origin(ret) is tuple else ()
    if len(args) != 4:
        raise ValueError(f"Return annotation is {ret}. Expected {want}.")
    for a in args[:2]:
        parts = (
            typing.get_args(a) if typing.get_origin(a) in (typing.Union, types.UnionType) else (a,)
        )
        if not all(p in (str, bytes) for p in parts):
            raise ValueError(f"Return annotation {a}: expected 'str' or 'bytes' ({want})")
    if not issubclass(args[2], KernelLaunchParams) or not issubclass(args[3], SymExprs):
        raise ValueError(f"Return annotation is {ret}. Expected {want}.")


def add_plugin(rt: Any, network: Any, overload: Any, bound: dict[str, Any]) -> Any:
    """``INetworkDefinition.add_plugin``: call the creation function (or take the tuple), check
    (inputs, shape inputs, plugin), ask the plugin for its output dtypes, make the layer."""
    if "func" in bound:
        if not callable(bound["func"]):
            raise ContractError("add_plugin: func must be callable")
        qpcr = rt.enums["QuickPluginCreationRequest"].__members__
        made = bound["func"](qpcr["STRICT_AOT" if bound.get("aot") else "UNKNOWN"])
    else:
        made = bound["tuple"]
    if not (isinstance(made, (tuple, list)) and len(made) == 3):
        raise ContractError("add_plugin: expects (inputs, shape_inputs, plugin)")
    inputs, shape_inputs, plugin = made
    for t in list(inputs) + list(shape_inputs):
        if not (isinstance(t, FakeObject) and rt.manifest.is_subclass(t._trt_class, "ITensor")):
            raise ContractError(f"add_plugin: {t!r} is not a tensorrt.ITensor")
    if not isinstance(plugin, FakePlugin):
        raise FakeTensorRTLimitation("add_plugin: only fake tensorrt.plugin plugins are modelled")
    dtypes = [t._props.get("dtype") for t in inputs]
    layer = rt.result(network, overload, bound)
    object.__setattr__(layer, "_inputs", list(inputs))
    layer._props["plugin"] = plugin
    if all(d is not None for d in dtypes):
        ranks = [len(t._props.get("shape", ())) for t in inputs]
        layer._props["plugin_output_dtypes"] = plugin.output_dtypes(dtypes, ranks)
    return layer


__all__ = ["FakePlugin", "PluginDef", "add_plugin", "load_plugin_manifest", "make_fake_plugin"]
