"""Public-API registration: an op's builder function is declared once, beside its OpDef.

``@public(section)`` records a builder in :data:`REGISTRY`; :mod:`trtdsl.functional` exports
it, :class:`trtdsl.Tensor` gets it as a method (``method=`` renames it, ``method=None`` skips
it) and ``docs/api.md`` lists it under ``section``. Adding an op means one module with its
OpDef and its builders, plus tests.

>>> from trtdsl.ops.api import REGISTRY
>>> REGISTRY["softmax"].method, REGISTRY["reduce_sum"].method
('softmax', 'sum')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

#: Sections of the API reference, in the order the docs show them.
SECTIONS = (
    "elementwise",
    "unary",
    "activations",
    "linear algebra",
    "normalization",
    "attention",
    "quantization",
    "data movement",
    "indexing",
    "collectives",
)

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class PublicOp:
    """One public builder: its function name, Tensor method name (or None) and docs section."""

    name: str
    function: Callable
    method: str | None
    section: str
    aliases: tuple[str, ...] = ()


REGISTRY: dict[str, PublicOp] = {}


def public(
    section: str, *, method: str | None = "", aliases: tuple[str, ...] = ()
) -> Callable[[F], F]:
    """Register a builder function. ``method``: "" = same name as the function, None = no
    Tensor method, else the method's name. ``aliases``: more names for both."""
    if section not in SECTIONS:
        raise ValueError(f"unknown API section {section!r}; one of {SECTIONS}")

    def register(fn: F) -> F:
        name = fn.__name__
        if name in REGISTRY:
            raise ValueError(f"public op {name!r} is declared twice")
        REGISTRY[name] = PublicOp(name, fn, name if method == "" else method, section, aliases)
        return fn

    return register


def by_section() -> dict[str, list[PublicOp]]:
    """The registered builders grouped by section, in :data:`SECTIONS` order."""
    out: dict[str, list[PublicOp]] = {s: [] for s in SECTIONS}
    for op in REGISTRY.values():
        out[op.section].append(op)
    return out
