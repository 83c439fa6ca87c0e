"""Errors, enums and the object base class of the fake ``tensorrt`` module.

See :mod:`trtdsl.testing.fake_tensorrt` for what the fake checks.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Sequence
from typing import Any, ClassVar

from trtdsl.backends.tensorrt.manifest import Overload


class ContractError(Exception):
    """A use of the TensorRT API that the manifest of the real bindings does not allow."""


class ContractAttributeError(ContractError, AttributeError):
    """Unknown attribute (also an ``AttributeError``, as with the real bindings)."""


class EnumMemberError(ContractAttributeError):
    """Unknown enum member."""


class FakeTensorRTLimitation(NotImplementedError):
    """Something the fake cannot do (build or run engines); not a contract violation."""


_BOOKKEEPING = ("calls", "sets", "origin", "layers", "inputs", "outputs", "created")
_ENGINE_TYPES = {"IHostMemory", "ICudaEngine", "IExecutionContext"}
_TYPED_DEFAULTS: dict[str, Any] = {"int": 0, "float": 0.0, "bool": False, "str": ""}


def _suggest(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _describe(value: Any) -> str:
    if isinstance(value, FakeObject):
        name = value._props.get("name")
        return f"tensorrt.{value._trt_class}" + (f" {name!r}" if name else "")
    if isinstance(value, FakeEnum):
        return f"tensorrt.{type(value)._trt_enum}.{value.name}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


def _format_overloads(overloads: Sequence[Overload]) -> str:
    return "\n".join(f"    {o.signature}" for o in overloads)


# ---------------------------------------------------------------------------------------------
# Enums
# ---------------------------------------------------------------------------------------------


class _FakeEnumMeta(type):
    """Metaclass: unknown class attributes of an enum are unknown members."""

    _trt_enum: str
    __members__: dict[str, FakeEnum]

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") or name.startswith("_trt"):
            raise AttributeError(name)
        valid = list(cls.__members__)
        raise EnumMemberError(
            f"tensorrt.{cls._trt_enum} has no member {name!r}{_suggest(name, valid)}"
            f" (valid members: {', '.join(valid)})"
        )

    def __setattr__(cls, name: str, value: Any) -> None:
        if not name.startswith("_"):
            raise ContractError(f"tensorrt.{cls._trt_enum} is read-only (cannot set {name!r})")
        super().__setattr__(name, value)

    def __repr__(cls) -> str:
        return f"<class 'tensorrt.{cls._trt_enum}'>"


class FakeEnum(metaclass=_FakeEnumMeta):
    """Base of the generated enum classes; members behave like pybind11 enum values."""

    __slots__ = ("_name", "_value")
    _trt_enum: ClassVar[str] = ""
    _by_value: ClassVar[dict[int, FakeEnum]] = {}
    _extra_properties: ClassVar[frozenset[str]] = frozenset()

    def __new__(cls, value: Any) -> FakeEnum:  # noqa: D102 - mimics ``trt.DataType(0)``
        try:
            return cls._by_value[operator.index(value)]
        except (KeyError, TypeError):
            raise ContractError(
                f"tensorrt.{cls._trt_enum}({value!r}): no member has that value "
                f"(members: {', '.join(f'{k}={int(v)}' for k, v in cls.__members__.items())})"
            ) from None

    @classmethod
    def _make(cls, name: str, value: int) -> FakeEnum:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_name", name)
        object.__setattr__(obj, "_value", value)
        return obj

    @property
    def name(self) -> str:
        """Member name."""
        return self._name

    @property
    def value(self) -> int:
        """Member value."""
        return self._value

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._extra_properties:
            raise FakeTensorRTLimitation(
                f"tensorrt.{self._trt_enum}.{name} exists but is not modelled by the fake"
            )
        raise ContractAttributeError(f"tensorrt.{self._trt_enum} member has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise ContractError(f"tensorrt.{self._trt_enum} members are immutable")

    def __int__(self) -> int:
        return self._value

    def __index__(self) -> int:
        return self._value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._value == self._value  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self._trt_enum, self._value))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name}: {self._value}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self._name}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._value,))


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------


class FakeObject:
    """Base of the generated classes; attribute use is checked against the manifest."""

    _trt_class: ClassVar[str] = ""
    _rt: ClassVar[Any]  # the runtime.py _Runtime that generated the class

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        rt = type(self)._rt
        cls = self._trt_class
        if not rt.manifest.is_constructible(cls):
            raise ContractError(f"tensorrt.{cls} has no Python constructor in TensorRT")
        overload, bound = rt.resolve(cls, "__init__", args, kwargs)
        rt.setup(self, origin=(None, "__init__", bound))
        rt.prefill(self, bound)
        seq = bound.get("shape")
        if rt.manifest.is_subclass(cls, "Dims") and isinstance(seq, (list, tuple)):
            object.__setattr__(self, "_seq", [operator.index(v) for v in seq])

    # Attribute protocol -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_props", "_cache", "_inputs", "_seq", "_network"):
            raise AttributeError(name)
        return type(self)._rt.get_attribute(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        type(self)._rt.set_attribute(self, name, value)

    def __dir__(self) -> list[str]:
        m = type(self)._rt.manifest
        return sorted(m.method_names(self._trt_class) | m.property_names(self._trt_class))

    def __repr__(self) -> str:
        return f"<fake {_describe(self)}>"

    # Sequence protocol where the class binds it (INetworkDefinition, Dims, ...) ------------
    def __len__(self) -> int:
        return type(self)._rt.call(self, "__len__", (), {})

    def __getitem__(self, index: Any) -> Any:
        return type(self)._rt.call(self, "__getitem__", (index,), {})

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        return True
