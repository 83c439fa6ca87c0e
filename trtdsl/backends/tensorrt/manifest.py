"""The TensorRT 11 Python API surface, as extracted from the bindings wheel.

``trt11_manifest.json`` is produced by ``tools/extract_trt_manifest.py`` from the real
``tensorrt_bindings/tensorrt.so`` (pybind11 docstrings: argument names, types, defaults, return
types; properties with their read-only flag; enum members). It lets contract tests check what the
TensorRT backend emits on machines where ``import tensorrt`` does not work.

Type texts keep pybind11's spelling with the ``tensorrt_bindings.tensorrt.`` prefix removed
(``ITensor``, ``ILogger.Severity``, ``typing.SupportsInt``,
``collections.abc.Sequence[ITensor]``); a few are C++ names (``nvinfer1::TensorLocation``),
which :func:`normalize_type` maps to the Python name.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_PATH = Path(__file__).with_name("trt11_manifest.json")

_CPP_NAMESPACE = re.compile(r"\b(?:nvinfer1|nvonnxparser)::(?:detail::)?")


def normalize_type(text: str | None) -> str:
    """Map C++ spellings (``nvinfer1::X``) to the Python name and trim whitespace."""
    if not text:
        return ""
    return _CPP_NAMESPACE.sub("", text).strip()


@dataclass(frozen=True)
class Arg:
    """One parameter of a bound function (``self`` excluded)."""

    name: str
    kind: str  # positional_or_keyword | positional_only | keyword_only | var_*
    type: str = ""
    default: str | None = None

    @property
    def required(self) -> bool:
        """True when the caller must supply this argument."""
        return self.default is None and self.kind not in ("var_positional", "var_keyword")


@dataclass(frozen=True)
class Overload:
    """One overload of a method or function."""

    name: str
    signature: str
    args: tuple[Arg, ...]
    returns: str
    doc: str = ""
    arg_docs: Mapping[str, str] = field(default_factory=dict)
    python: bool = False

    @property
    def arg_names(self) -> list[str]:
        """Parameter names in order (``self`` excluded)."""
        return [a.name for a in self.args]


@dataclass(frozen=True)
class Property:
    """A property of a class; ``set_type`` is the setter's parameter type."""

    name: str
    readonly: bool
    type: str = ""
    set_type: str = ""
    doc: str = ""


def _overloads(name: str, raw: list[dict[str, Any]]) -> list[Overload]:
    """Build :class:`Overload` objects from manifest records."""
    out = []
    for rec in raw:
        args = tuple(
            Arg(
                a["name"],
                a.get("kind", "positional_or_keyword"),
                a.get("type", ""),
                a.get("default"),
            )
            for a in rec.get("args", [])
        )
        out.append(
            Overload(
                name=name,
                signature=rec.get("signature", ""),
                args=args,
                returns=rec.get("returns", ""),
                doc=rec.get("doc", ""),
                arg_docs=dict(rec.get("arg_docs", {})),
                python=bool(rec.get("python", False)),
            )
        )
    return out


class Manifest:
    """Read-only view of ``trt11_manifest.json`` with inheritance-aware lookups."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.header: Mapping[str, Any] = data["header"]
        self._classes: Mapping[str, Any] = data["classes"]
        self._enums: Mapping[str, Any] = data["enums"]

    # -- header ------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """TensorRT version of the wheel the manifest was extracted from."""
        return str(self.header.get("version", ""))

    # -- classes -----------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        """All non-enum classes (qualified names)."""
        return sorted(self._classes)

    def has_class(self, name: str) -> bool:
        """True if ``name`` is a (non-enum) class of the API."""
        return normalize_type(name) in self._classes

    def _cls(self, name: str) -> Mapping[str, Any]:
        try:
            return self._classes[normalize_type(name)]
        except KeyError:
            raise KeyError(f"TensorRT {self.version} has no class {name!r}") from None

    def bases(self, cls: str) -> list[str]:
        """Direct base classes of ``cls``."""
        return list(self._cls(cls)["bases"])

    def mro(self, cls: str) -> list[str]:
        """``cls`` and its bases, nearest first (depth-first, duplicates removed)."""
        order: list[str] = []
        stack = [normalize_type(cls)]
        while stack:
            name = stack.pop(0)
            if name in order or name not in self._classes:
                continue
            order.append(name)
            stack[0:0] = self._classes[name]["bases"]
        return order

    def is_subclass(self, cls: str, base: str) -> bool:
        """True if ``cls`` is ``base`` or derives from it."""
        return normalize_type(base) in self.mro(cls)

    def is_constructible(self, cls: str) -> bool:
        """True if Python code can construct ``cls`` (it binds ``__init__``)."""
        return bool(self._cls(cls).get("constructible"))

    def class_doc(self, cls: str) -> str:
        """First paragraph of the class docstring."""
        return str(self._cls(cls).get("doc", ""))

    def method(self, cls: str, name: str) -> list[Overload]:
        """Overloads of ``cls.name`` (inherited ones included); empty if there is none."""
        for owner in self.mro(cls):
            entry = self._classes[owner]
            if name in entry["methods"]:
                return _overloads(name, entry["methods"][name])
            if name in entry.get("static_methods", {}):
                return _overloads(name, entry["static_methods"][name])
        self._cls(cls)
        return []

    def has_method(self, cls: str, name: str) -> bool:
        """True if ``cls`` (or a base) binds a method ``name``."""
        return bool(self.method(cls, name))

    def is_static_method(self, cls: str, name: str) -> bool:
        """True if ``cls.name`` is a static method."""
        return any(name in self._classes[c].get("static_methods", {}) for c in self.mro(cls))

    def method_names(self, cls: str) -> set[str]:
        """Names of all methods of ``cls`` (inherited and static ones included)."""
        out: set[str] = set()
        for owner in self.mro(cls):
            out |= set(self._classes[owner]["methods"])
            out |= set(self._classes[owner].get("static_methods", {}))
        return out

    def property_info(self, cls: str, name: str) -> Property | None:
        """The property ``cls.name`` (inherited ones included), or None."""
        for owner in self.mro(cls):
            rec = self._classes[owner]["properties"].get(name)
            if rec is not None:
                return Property(
                    name,
                    bool(rec["readonly"]),
                    rec.get("type", ""),
                    rec.get("set_type", ""),
                    rec.get("doc", ""),
                )
        self._cls(cls)
        return None

    def property_names(self, cls: str) -> set[str]:
        """Names of all properties of ``cls`` (inherited ones included)."""
        out: set[str] = set()
        for owner in self.mro(cls):
            out |= set(self._classes[owner]["properties"])
        return out

    def class_attributes(self, cls: str) -> dict[str, Mapping[str, Any]]:
        """Class-level attributes (nested enums, enum aliases, static values), inherited too."""
        out: dict[str, Mapping[str, Any]] = {}
        for owner in reversed(self.mro(cls)):
            out.update(self._classes[owner].get("attributes", {}))
        return out

    # -- enums -------------------------------------------------------------------------------
    def enum_names(self) -> list[str]:
        """All enum classes (qualified, e.g. ``ILogger.Severity``)."""
        return sorted(self._enums)

    def is_enum(self, name: str) -> bool:
        """True if ``name`` names an enum class."""
        return normalize_type(name) in self._enums

    def enum_values(self, enum_name: str) -> dict[str, int]:
        """Members of an enum with their integer values."""
        try:
            return dict(self._enums[normalize_type(enum_name)]["members"])
        except KeyError:
            raise KeyError(f"TensorRT {self.version} has no enum {enum_name!r}") from None

    def enum_members(self, enum_name: str) -> set[str]:
        """Member names of an enum."""
        return set(self.enum_values(enum_name))

    def enum_member_docs(self, enum_name: str) -> dict[str, str]:
        """Per-member descriptions from the enum's docstring."""
        return dict(self._enums[normalize_type(enum_name)].get("member_docs", {}))

    # -- module level ------------------------------------------------------------------------
    def function_names(self) -> list[str]:
        """Top-level functions of the ``tensorrt`` module."""
        return sorted(self.data.get("functions", {}))

    def function(self, name: str) -> list[Overload]:
        """Overloads of a top-level function; empty if there is none."""
        return _overloads(name, self.data.get("functions", {}).get(name, []))

    def constants(self) -> dict[str, str]:
        """Module-level enum aliases, e.g. ``{"float16": "DataType.HALF"}``."""
        return {k: v["enum_member"] for k, v in self.data.get("constants", {}).items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self.class_names())


@functools.cache
def _load(path: str) -> Manifest:
    with open(path, encoding="utf-8") as f:
        return Manifest(json.load(f))


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Load (once, cached) the checked-in TensorRT 11 manifest, or the one at ``path``."""
    return _load(str(Path(path) if path is not None else MANIFEST_PATH))
