"""The runtime of the fake ``tensorrt`` module: generated classes, checks, calls, results."""

from __future__ import annotations

import ast
import itertools
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from trtdsl.backends.tensorrt.manifest import Manifest, Overload, normalize_type

from .objects import (
    _BOOKKEEPING,
    _ENGINE_TYPES,
    _TYPED_DEFAULTS,
    ContractAttributeError,
    ContractError,
    FakeEnum,
    FakeObject,
    FakeTensorRTLimitation,
    _describe,
    _FakeEnumMeta,
    _format_overloads,
    _suggest,
)
from .refit import refitter_hook

_SEQUENCE_RE = re.compile(r"(?:collections\.abc\.Sequence|list|typing\.List)\[(.*)\]")
_OPTIONAL_RE = re.compile(r"(?:typing\.)?Optional\[(.*)\]")
_NONE_OK = {"", "object", "typing.Any"}


class _Runtime:
    """Holds the manifest and the generated classes; performs all checks."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.enums: dict[str, type[FakeEnum]] = {}
        self.classes: dict[str, type[FakeObject]] = {}
        self._serial = itertools.count()
        self.build_errors: list[str] | None = None  # log lines of a failing build_*

    def _fail_build(self, builder: FakeObject) -> None:
        """Log ``build_errors`` at ERROR to ``builder``'s logger (as TensorRT does); None."""
        origin = builder.origin
        logger = origin[2].get("logger") if origin is not None else None
        severity = self.enums["ILogger.Severity"].__members__["ERROR"]
        for line in self.build_errors or ():
            if logger is not None:
                logger.log(severity, line)
        return None

    # -- construction of classes ------------------------------------------------------------
    def build(self) -> None:
        m = self.manifest
        for qual in m.enum_names():
            values = m.enum_values(qual)
            ns = {
                "__slots__": (),
                "__qualname__": qual,
                "__module__": "tensorrt",
                "_trt_enum": qual,
                "__doc__": f"Fake of tensorrt.{qual} (members from the TensorRT manifest).",
            }
            cls = _FakeEnumMeta(qual.rsplit(".", 1)[-1], (FakeEnum,), ns)
            members = {name: cls._make(name, val) for name, val in values.items()}
            for name, member in members.items():
                type.__setattr__(cls, name, member)
            type.__setattr__(cls, "__members__", members)
            type.__setattr__(cls, "_by_value", {v.value: v for v in members.values()})
            extra = frozenset(m.data["enums"][qual].get("properties", {}))
            type.__setattr__(cls, "_extra_properties", extra)
            self.enums[qual] = cls
        for name in m.class_names():
            self._make_class(name)

    def _make_class(self, name: str) -> type[FakeObject]:
        if name in self.classes:
            return self.classes[name]
        m = self.manifest
        clash = (m.method_names(name) | m.property_names(name)) & set(_BOOKKEEPING)
        if clash:
            raise RuntimeError(f"fake_tensorrt bookkeeping names clash with {name}: {clash}")
        bases = tuple(self._make_class(b) for b in m.bases(name) if m.has_class(b))
        ns: dict[str, Any] = {
            "__qualname__": name,
            "__module__": "tensorrt",
            "_trt_class": name,
            "_rt": self,
            "__doc__": f"Fake of tensorrt.{name}: {m.class_doc(name)}",
        }
        for attr, spec in m.class_attributes(name).items():
            if "enum" in spec:
                ns[attr] = self.enums[spec["enum"]]
            elif "enum_member" in spec:
                enum_name, member = spec["enum_member"].rsplit(".", 1)
                ns[attr] = self.enums[enum_name].__members__[member]
            elif "value" in spec:
                try:
                    ns[attr] = ast.literal_eval(spec["value"])
                except (ValueError, SyntaxError):
                    ns[attr] = spec["value"]
        for meth in list(m.data["classes"][name].get("static_methods", {})):
            ns[meth] = staticmethod(self._static(name, meth))
        cls = type(name, bases or (FakeObject,), ns)
        self.classes[name] = cls
        return cls

    def _static(self, cls: str, name: str) -> Callable[..., Any]:
        def static(*args: Any, **kwargs: Any) -> Any:
            overload, bound = self.resolve(cls, name, args, kwargs)
            return self.result(None, overload, bound)

        static.__name__ = name
        static.__qualname__ = f"{cls}.{name}"
        return static

    def function(self, name: str) -> Callable[..., Any]:
        """A checked module-level function."""
        overloads = self.manifest.function(name)

        def func(*args: Any, **kwargs: Any) -> Any:
            overload, bound = self._resolve_in(f"tensorrt.{name}", overloads, args, kwargs)
            if name == "volume":
                out = 1
                for v in bound["iterable"]:
                    out *= v
                return out
            if overload.python:
                raise FakeTensorRTLimitation(f"tensorrt.{name} is not modelled by the fake")
            return self.result(None, overload, bound)

        func.__name__ = name
        func.__doc__ = "\n".join(o.signature for o in overloads)
        return func

    # -- object state -----------------------------------------------------------------------
    def new(self, cls: str, origin: tuple[Any, str, dict[str, Any]] | None) -> FakeObject:
        """A fake object of class ``cls`` created internally (no constructor check)."""
        obj = object.__new__(self.classes[cls])
        self.setup(obj, origin)
        return obj

    def setup(self, obj: FakeObject, origin: tuple[Any, str, dict[str, Any]] | None) -> None:
        """Initialise bookkeeping attributes."""
        put = object.__setattr__
        put(obj, "_props", {})
        put(obj, "_cache", {})
        put(obj, "_inputs", None)
        put(obj, "_network", None)
        put(obj, "calls", [])
        put(obj, "sets", [])
        put(obj, "origin", origin)
        if self.manifest.is_subclass(obj._trt_class, "INetworkDefinition"):
            put(obj, "layers", [])
            put(obj, "inputs", [])
            put(obj, "outputs", [])
            put(obj, "created", [])

    def prefill(self, obj: FakeObject, bound: dict[str, Any]) -> None:
        """Arguments named like a property of the new object set that property."""
        for key, value in bound.items():
            prop = self.manifest.property_info(obj._trt_class, key)
            if prop is not None and self.check(prop.set_type or prop.type, value, None) is None:
                obj._props[key] = value

    # -- checks -----------------------------------------------------------------------------
    def check(self, type_text: str, value: Any, default: str | None) -> str | None:
        """None if ``value`` fits the manifest type text, else the reason it does not."""
        t = normalize_type(type_text)
        opt = _OPTIONAL_RE.fullmatch(t)
        if opt:
            t = opt.group(1)
        elif t.endswith(" | None"):
            t, opt = t[: -len(" | None")], True  # type: ignore[assignment]
        if value is None:
            if opt or default == "None" or t in _NONE_OK:
                return None
            return f"None is not accepted (expects {t})"
        if t in _NONE_OK:
            return None
        m = self.manifest
        if t in self.enums:
            if isinstance(value, self.enums[t]):
                return None
            return f"expects a member of tensorrt.{t}, got {_describe(value)}"
        if m.has_class(t):
            if isinstance(value, FakeObject):
                if m.is_subclass(value._trt_class, t):
                    return None
                return f"expects tensorrt.{t}, got {_describe(value)}"
            if isinstance(value, FakeEnum) or not m.is_constructible(t):
                return f"expects tensorrt.{t}, got {_describe(value)}"
            if m.is_subclass(t, "Dims"):
                if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                    return f"expects tensorrt.{t} or a sequence of ints, got {_describe(value)}"
                for i, v in enumerate(value):
                    if self.check("typing.SupportsInt", v, None):
                        return f"expects a sequence of ints for {t}, item {i} is {_describe(v)}"
            return None  # implicit conversion (Weights from numpy, ...)
        if isinstance(value, FakeObject):
            return f"expects {t}, got {_describe(value)}"
        if t in ("typing.SupportsInt", "int"):
            if isinstance(value, (str, bytes, float)) or not hasattr(type(value), "__index__"):
                return f"expects an int, got {_describe(value)}"
            return None
        if t in ("typing.SupportsFloat", "float"):
            ok = hasattr(type(value), "__float__") or hasattr(type(value), "__index__")
            if isinstance(value, (str, bytes, FakeEnum)) or not ok:
                return f"expects a float, got {_describe(value)}"
            return None
        if t == "bool":
            if isinstance(value, (str, bytes, FakeEnum, list, tuple, dict)):
                return f"expects a bool, got {_describe(value)}"
            return None
        if t == "str":
            return None if isinstance(value, str) else f"expects a str, got {_describe(value)}"
        seq = _SEQUENCE_RE.fullmatch(t)
        if seq or t in ("list", "tuple"):
            if isinstance(value, (str, bytes, FakeEnum)) or not isinstance(value, (list, tuple)):
                return f"expects a list or tuple ({t}), got {_describe(value)}"
            if t == "list" and not isinstance(value, list):
                return f"expects a list, got {_describe(value)}"
            if t == "tuple" and not isinstance(value, tuple):
                return f"expects a tuple, got {_describe(value)}"
            if seq:
                for i, item in enumerate(value):
                    reason = self.check(seq.group(1), item, None)
                    if reason:
                        return f"item {i}: {reason}"
            return None
        return None  # types the fake does not model (buffers, capsules, callables)

    def bind(self, overload: Overload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Bind like pybind11: returns the {name: value} dict, or a reason string."""
        params = overload.args
        positional = [p for p in params if p.kind in ("positional_only", "positional_or_keyword")]
        var_pos = any(p.kind == "var_positional" for p in params)
        var_kw = any(p.kind == "var_keyword" for p in params)
        if len(args) > len(positional) and not var_pos:
            return f"takes {len(positional)} positional argument(s), {len(args)} given"
        bound: dict[str, Any] = {p.name: v for p, v in zip(positional, args)}
        by_name = {p.name: p for p in params}
        for key, value in kwargs.items():
            p = by_name.get(key)
            if p is None or p.kind in ("positional_only", "var_positional", "var_keyword"):
                if var_kw:
                    continue
                names = ", ".join(p.name for p in params) or "none"
                return f"unexpected keyword argument {key!r} (parameters: {names})"
            if key in bound:
                return f"got multiple values for argument {key!r}"
            bound[key] = value
        missing = [
            p.name
            for p in params
            if p.required and p.kind != "var_positional" and p.name not in bound
        ]
        if missing:
            return f"missing required argument(s) {', '.join(map(repr, missing))}"
        for p in params:
            if p.name in bound:
                reason = self.check(p.type, bound[p.name], p.default)
                if reason:
                    return f"argument {p.name!r}: {reason}"
        return bound

    def _resolve_in(
        self,
        where: str,
        overloads: Sequence[Overload],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Overload, dict[str, Any]]:
        reasons = []
        for overload in overloads:
            bound = self.bind(overload, args, kwargs)
            if isinstance(bound, dict):
                return overload, bound
            reasons.append(f"    {overload.signature}\n      -> {bound}")
        raise ContractError(
            f"{where}: the call does not match TensorRT {self.manifest.version} "
            f"(args: {', '.join(map(_describe, args)) or 'none'}; keywords: "
            f"{', '.join(kwargs) or 'none'}):\n" + "\n".join(reasons)
        )

    def resolve(
        self, cls: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Overload, dict[str, Any]]:
        """The first overload of ``cls.name`` the arguments bind to (else ContractError)."""
        overloads = self.manifest.method(cls, name)
        if not overloads:
            raise ContractAttributeError(
                f"tensorrt.{cls} has no method {name!r} in TensorRT {self.manifest.version}"
                f"{_suggest(name, sorted(self.manifest.method_names(cls)))}"
            )
        return self._resolve_in(f"tensorrt.{cls}.{name}", overloads, args, kwargs)

    # -- attribute protocol -----------------------------------------------------------------
    def get_attribute(self, obj: FakeObject, name: str) -> Any:
        m = self.manifest
        cls = obj._trt_class
        if m.has_method(cls, name):

            def method(*args: Any, **kwargs: Any) -> Any:
                return self.call(obj, name, args, kwargs)

            method.__name__ = name
            method.__qualname__ = f"{cls}.{name}"
            method.__doc__ = _format_overloads(m.method(cls, name))
            return method
        prop = m.property_info(cls, name)
        if prop is not None:
            if name in obj._props:
                return obj._props[name]
            return self.property_default(obj, name, prop.type)
        options = sorted(m.method_names(cls) | m.property_names(cls))
        raise ContractAttributeError(
            f"tensorrt.{cls} has no attribute {name!r} in TensorRT {m.version}"
            f"{_suggest(name, options)}"
        )

    def set_attribute(self, obj: FakeObject, name: str, value: Any) -> None:
        m = self.manifest
        cls = obj._trt_class
        prop = m.property_info(cls, name)
        if prop is None:
            kind = "a method, not a property" if m.has_method(cls, name) else "not a property"
            raise ContractAttributeError(
                f"cannot set tensorrt.{cls}.{name}: {kind} in TensorRT {m.version}"
                f"{_suggest(name, sorted(m.property_names(cls)))}"
            )
        if prop.readonly:
            raise ContractError(f"cannot set tensorrt.{cls}.{name}: the property is read-only")
        reason = self.check(prop.set_type or prop.type, value, None)
        if reason:
            raise ContractError(f"cannot set tensorrt.{cls}.{name}: {reason}")
        obj._props[name] = value
        obj.sets.append((name, value))

    def property_default(self, obj: FakeObject, name: str, type_text: str) -> Any:
        net = obj if _is_network(obj) else None
        if net is not None and name in ("num_layers", "num_inputs", "num_outputs"):
            return len({"num_layers": net.layers, "num_inputs": net.inputs}.get(name, net.outputs))
        if name == "num_inputs" and obj._inputs is not None:
            return len(obj._inputs)
        return _TYPED_DEFAULTS.get(normalize_type(type_text))

    # -- calls ------------------------------------------------------------------------------
    def call(
        self, obj: FakeObject, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Check a method call against the manifest, record it and produce a fake result."""
        cls = obj._trt_class
        if name in ("__len__", "__getitem__") and not self.manifest.has_method(cls, name):
            raise TypeError(f"tensorrt.{cls} does not support {name}")
        overload, bound = self.resolve(cls, name, args, kwargs)
        obj.calls.append((name, tuple(args), dict(kwargs)))
        if name == "add_plugin" and _is_network(obj):  # calls the plugin's creation function
            from .plugin import add_plugin

            return add_plugin(self, obj, overload, bound)
        hooked, value = self._hook(obj, name, bound)
        if hooked:
            return value
        return self.result(obj, overload, bound)

    def _hook(self, obj: FakeObject, name: str, bound: dict[str, Any]) -> tuple[bool, Any]:
        """Stateful behaviour of networks, layers and Dims: (handled, value).

        Networks answer ``get_layer``/``get_input``/``get_output``/``len``/``[i]`` from their
        ``layers``/``inputs``/``outputs`` and track ``mark_output``/``unmark_output``; layers
        created by the network answer ``get_input``/``set_input`` from their tensor arguments.
        """
        if obj._trt_class == "Refitter":
            return refitter_hook(obj, name, bound)
        values = list(bound.values())
        indexed = {"get_layer", "get_input", "get_output", "__getitem__", "set_input"}
        index = operator.index(values[0]) if name in indexed and values else 0
        if _is_network(obj):
            lists = {
                "get_layer": obj.layers,
                "__getitem__": obj.layers,
                "get_input": obj.inputs,
                "get_output": obj.outputs,
            }
            if name in lists:
                items = lists[name]
                if name == "__getitem__" and not -len(items) <= index < len(items):
                    raise IndexError(f"layer index {index} out of range")
                return True, items[index] if -len(items) <= index < len(items) else None
            if name == "__len__":
                return True, len(obj.layers)
            if name == "mark_output":
                obj.outputs.append(values[0])
                values[0]._props["is_network_output"] = True
            elif name == "unmark_output":
                if values[0] in obj.outputs:
                    obj.outputs.remove(values[0])
                values[0]._props["is_network_output"] = False
            return False, None
        if obj._inputs is not None:
            if name == "get_input":
                return True, obj._inputs[index] if 0 <= index < len(obj._inputs) else None
            if name == "set_input":
                while len(obj._inputs) <= index:
                    obj._inputs.append(None)
                obj._inputs[index] = values[1]
        seq = obj.__dict__.get("_seq")
        if seq is not None and name in ("__len__", "__getitem__"):
            return True, len(seq) if name == "__len__" else seq[index]
        return False, None

    def result(self, owner: FakeObject | None, overload: Overload, bound: dict[str, Any]) -> Any:
        """The fake value of a call, from the overload's return type text."""
        name = overload.name
        ret = normalize_type(overload.returns)
        where = f"tensorrt.{owner._trt_class}.{name}" if owner is not None else name
        if name.startswith("build_") and self.build_errors is not None and owner is not None:
            return self._fail_build(owner)
        if name.startswith("build_") or ret in _ENGINE_TYPES:
            raise FakeTensorRTLimitation(
                f"{where}: the arguments match TensorRT {self.manifest.version}, but the fake "
                "cannot build or run engines (needs the real TensorRT and a GPU)"
            )
        opt = _OPTIONAL_RE.fullmatch(ret)
        ret = opt.group(1) if opt else ret.removesuffix(" | None")
        if self.manifest.has_class(ret):
            key = None
            if owner is not None and name.startswith("get_"):
                key = (name, tuple((k, _cache_key(v)) for k, v in bound.items()))
                if key in owner._cache:
                    return owner._cache[key]
            obj = self.new(ret, (owner, name, bound))
            self.prefill(obj, bound)
            if owner is not None and key is not None:
                owner._cache[key] = obj
            net = owner if owner is not None and _is_network(owner) else None
            if net is not None and not name.startswith("get_"):
                net.created.append((name, obj))
                object.__setattr__(obj, "_network", net)
                if self.manifest.is_subclass(ret, "ITensor"):
                    if name == "add_input":
                        net.inputs.append(obj)
                        obj._props["is_network_input"] = True
                else:
                    object.__setattr__(obj, "_inputs", list(_tensors(self, bound.values())))
                    if self.manifest.is_subclass(ret, "ILayer"):
                        net.layers.append(obj)
            return obj
        if ret in self.enums:
            return None
        return {"None": None, "bool": True}.get(ret, _TYPED_DEFAULTS.get(ret))


def _is_network(obj: FakeObject) -> bool:
    return "layers" in obj.__dict__


def _cache_key(value: Any) -> Any:
    if isinstance(value, (FakeObject, list, dict)):
        return ("id", id(value))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


def _tensors(rt: _Runtime, values: Any) -> Any:
    """ITensor arguments in order (sequences flattened): the layer's inputs."""
    for v in values:
        if isinstance(v, FakeObject) and rt.manifest.is_subclass(v._trt_class, "ITensor"):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from _tensors(rt, v)
