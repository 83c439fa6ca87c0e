"""The package's structure: imports point one way, no import cycles, one declaration per op.

Imports are read with ``ast`` from the source, including imports inside functions and under
``if TYPE_CHECKING:``, so a deferred import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import trtdsl as td
from trtdsl import functional as F
from trtdsl.ops.api import REGISTRY, SECTIONS, public

PKG = Path(td.__file__).resolve().parent

#: Layers, lowest first: a module may import from its own layer and the ones before it.
LAYERS = [
    ("trtdsl.dtypes", "trtdsl.errors", "trtdsl.atomic_file"),
    ("trtdsl.ir",),
    ("trtdsl.ops",),
    ("trtdsl.tensor", "trtdsl.functional", "trtdsl.network"),
    ("trtdsl.worlds",),
    ("trtdsl.kernels",),
    ("trtdsl.backends",),
    ("trtdsl.parallel",),
    ("trtdsl.weights",),
    ("trtdsl.testing",),
    ("trtdsl",),  # the package's __init__: the public surface
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """trtdsl modules that ``name`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
            else:
                base = []
            head = ".".join(base + ([node.module] if node.module else []))
            targets = [head] + [f"{head}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # "a.b.c" where c is a name in module a.b
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imported(m, p, set(mods)) for m, p in mods.items()}


def layer_of(module: str) -> int:
    best = (-1, -1)
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                best = max(best, (len(p), i))
    assert best[1] >= 0, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_point_from_higher_layers_to_lower_ones():
    bad = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
        for m, targets in graph().items()
        for t in targets
        if layer_of(t) > layer_of(m)
    ]
    assert not bad, "\n".join(bad)


def test_cycle_finder_and_import_reader_catch_what_they_should(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .x import A\n"
        "def f():\n    from ..y import z\n    import trtdsl.q\n"
    )
    known = {"trtdsl.p.x", "trtdsl.y", "trtdsl.y.z", "trtdsl.q"}
    want = {"trtdsl.p.x", "trtdsl.y", "trtdsl.y.z", "trtdsl.q"}
    assert imported("trtdsl.p.m", src, known) == want


def test_no_library_file_is_longer_than_600_lines():
    long = {
        str(p.relative_to(PKG)): n
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long


def test_functional_exports_exactly_the_declared_builders_and_their_aliases():
    declared = {n for op in REGISTRY.values() for n in (op.name, *op.aliases)}
    assert set(F.__all__) == declared
    assert len(F.__all__) == len(set(F.__all__))
    for op in REGISTRY.values():
        for n in (op.name, *op.aliases):
            assert getattr(F, n) is op.function, n


def test_tensor_methods_are_the_declared_builders():
    for op in REGISTRY.values():
        for m in () if op.method is None else (op.method, *op.aliases):
            assert getattr(td.Tensor, m) is op.function, m
    net = td.Network("m", world=td.StaticWorld(2, 0))
    x = net.input("x", (2, 3))
    assert x.sum(axis=1).producer.attrs["kind"] == "sum"  # method -> reduce_sum
    assert x.reduce_to("max", root=0, groups=None).producer.attrs["op"] == "reduce"
    assert x.gather([1, 0], axis=1).producer.op.name == "gather"
    assert not hasattr(td.Tensor, "reduce") and not hasattr(F, "reduce")


def test_every_builder_has_a_docstring_a_section_and_a_name_argument():
    for op in REGISTRY.values():
        assert op.section in SECTIONS
        assert inspect.getdoc(op.function), op.name
        params = inspect.signature(op.function).parameters
        assert op.name in ("getitem",) or "name" in params, op.name


def test_public_refuses_unknown_sections_and_double_declarations():
    with pytest.raises(ValueError, match="unknown API section"):
        public("nonsense")
    with pytest.raises(ValueError, match="declared twice"):

        @public("unary")
        def exp(x):  # noqa: ANN001 - same name as the real one
            return x


@pytest.mark.parametrize(
    "protocol,implementation",
    [
        ("RunContext", "trtdsl.backends.interpreter:RunContext"),
        ("LoweringContext", "trtdsl.backends.tensorrt.lowering:LoweringContext"),
    ],
)
def test_backends_implement_the_contexts_ops_are_written_against(protocol, implementation):
    """An op's reference/lower see only the Protocol's members; the backends provide them all."""
    import importlib

    from trtdsl.ops import base

    proto = getattr(base, protocol)
    module, name = implementation.split(":")
    impl = getattr(importlib.import_module(module), name)
    members = {
        m for m in vars(proto) if not m.startswith("_") and m not in ("trt", "network", "feeds")
    } | set(getattr(proto, "__annotations__", {}))
    missing = sorted(
        m for m in members if not hasattr(impl, m) and m not in ("trt", "network", "feeds")
    )
    assert not missing, f"{implementation} lacks {missing}"
    for m in members:
        if callable(getattr(proto, m, None)) and hasattr(impl, m):
            want = list(inspect.signature(getattr(proto, m)).parameters)
            got = list(inspect.signature(getattr(impl, m)).parameters)
            assert got[: len(want)] == want, (m, got, want)
