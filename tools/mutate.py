#!/usr/bin/env python3
"""Mutation testing of the TensorRT lowering: do the fast tests notice a wrong lowering?

Generates mutants (one small change each) of

* ``trtdsl/backends/tensorrt/lowering.py`` and ``enums.py`` (whole files, docstrings excepted;
  an enum table value is swapped to another member of the same table),
* the ``lower`` methods of ``trtdsl/ops/*.py``,

runs the relevant fast tests for each mutant in a private copy of the tree (never in the tree
itself: ``shutil.copytree`` to a temporary directory per worker, pytest there with ``PYTHONPATH``
pointing at the copy, ``-x -q``, a timeout per mutant, at most 2 workers), and prints the kill
rate and the survivors.

Mutation operators: arithmetic operator swapped (``+``/``-``, ``*``/``/``, ``//``/``*``,
``%``/``*``), comparison flipped (``==``/``!=``, ``<``/``>=``, ``<=``/``>``, ``in``/``not in``,
``is``/``is not``), ``and``/``or`` swapped, ``not`` dropped, unary minus dropped, an int constant
off by one, ``True``/``False`` flipped, an enum table value swapped, the first two arguments of a
call swapped, a statement deleted (replaced by ``pass``).

Usage (from the repository root; slow, not part of CI)::

    python tools/mutate.py                   # every target, default tests, 2 workers
    python tools/mutate.py --list            # list the mutants only
    python tools/mutate.py --only enums.py --max 20 --json out.json

A mutant is *killed* when the tests fail (or time out), *survived* when they pass. An
unmutated baseline run must pass first.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (file, function filter): None mutates the whole file, else only functions of that name.
#: Every module of trtdsl/ops that defines a ``lower`` method is a target (new ops included).
DEFAULT_TARGETS: list[tuple[str, str | None]] = [
    ("trtdsl/backends/tensorrt/lowering.py", None),
    ("trtdsl/backends/tensorrt/enums.py", None),
] + [
    (f"trtdsl/ops/{path.name}", "lower")
    for path in sorted((ROOT / "trtdsl" / "ops").glob("*.py"))
    if path.name != "base.py" and "def lower(" in path.read_text()  # base: the protocol
]
DEFAULT_TESTS = [
    "tests/test_trt_emulator_lowering.py",
    "tests/test_trt_lowering_contract.py",
    "tests/test_trt_lowering_fixes.py",
    "tests/test_trt_emulator.py",
    "tests/test_trt_mutants.py",
]
MAX_JOBS = 2

_BINOP_SWAP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.Mult,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
}
_CMP_SWAP = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.LtE: ast.Gt,
    ast.Gt: ast.LtE,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One mutation: the ``index``-th site of ``path`` (in :func:`sites` order)."""

    path: str  # relative to the root
    index: int
    line: int
    kind: str
    description: str

    @property
    def label(self) -> str:
        return f"{self.path}:{self.line} [{self.kind}] {self.description}"


# --- finding mutation sites ----------------------------------------------------------------
def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    ids.add(id(body[0]))
    return ids


def _regions(tree: ast.Module, func: str | None) -> list[ast.AST]:
    """The subtrees to mutate: the module, or every function named ``func``."""
    if func is None:
        return [tree]
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func
    ]


def _table_alternative(node: ast.Dict, i: int) -> str | None:
    """Another string value of the same table dict (the next distinct one), or None."""
    values = [v.value for v in node.values if isinstance(v, ast.Constant)]
    own = node.values[i].value  # type: ignore[attr-defined]
    others = [v for v in dict.fromkeys(values) if v != own and isinstance(v, str)]
    if not others:
        return None
    pos = values.index(own)
    for v in values[pos + 1 :] + values[:pos]:
        if v != own:
            return v
    return others[0]


def _is_enum_table(node: ast.Dict) -> bool:
    return len(node.values) >= 2 and all(
        isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.isupper()
        for v in node.values
    )


def _site_nodes(tree: ast.Module, func: str | None) -> Iterator[tuple[ast.AST, str, str, object]]:
    """(node, kind, description, extra) for every mutation site, in a deterministic order."""
    docs = _docstring_nodes(tree)
    seen: set[int] = set()  # f-string parts are messages, not behaviour: skipped
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            seen.update(id(n) for n in ast.walk(node))
        notes = [getattr(node, "returns", None), getattr(node, "annotation", None)]
        for note in notes:  # annotations are not evaluated (from __future__ import annotations)
            if isinstance(note, ast.AST):
                seen.update(id(n) for n in ast.walk(note))
    for region in _regions(tree, func):
        for node in ast.walk(region):
            if id(node) in seen:
                continue
            seen.add(id(node))
            yield from _sites_of(node, docs)


def _sites_of(node: ast.AST, docs: set[int]) -> Iterator[tuple[ast.AST, str, str, object]]:
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
        new = _BINOP_SWAP[type(node.op)]
        yield node, "binop", f"{type(node.op).__name__} -> {new.__name__}", None
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
        new = _BINOP_SWAP[type(node.op)]
        yield node, "augop", f"{type(node.op).__name__}= -> {new.__name__}=", None
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_SWAP:
                new = _CMP_SWAP[type(op)]
                yield node, "compare", f"{type(op).__name__} -> {new.__name__}", i
    elif isinstance(node, ast.BoolOp):
        new = "Or" if isinstance(node.op, ast.And) else "And"
        yield node, "boolop", f"{type(node.op).__name__} -> {new}", None
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield node, "unary", f"drop {type(node.op).__name__}", None
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            yield node, "bool", f"{v} -> {not v}", None
        elif isinstance(v, int):
            yield node, "const", f"{v} -> {v + 1}", None
    elif isinstance(node, ast.Dict) and _is_enum_table(node):
        for i, key in enumerate(node.keys):
            alt = _table_alternative(node, i)
            if alt is not None:
                k = key.value if isinstance(key, ast.Constant) else "?"
                old = node.values[i].value  # type: ignore[attr-defined]
                yield node, "enum", f"{k!r}: {old!r} -> {alt!r}", (i, alt)
    elif isinstance(node, ast.Call):
        if len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]):
            if ast.dump(node.args[0]) != ast.dump(node.args[1]):
                name = ast.unparse(node.func)
                yield node, "args", f"swap the first two arguments of {name}(...)", None
    if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise)):
        if id(node) not in docs:
            text = ast.unparse(node).splitlines()[0][:60]
            yield node, "delete", f"delete `{text}`", None


def sites(source: str, path: str, func: str | None = None) -> list[Mutant]:
    """The mutants of ``source`` (``path`` is only the label)."""
    tree = ast.parse(source)
    out = []
    for i, (node, kind, desc, _) in enumerate(_site_nodes(tree, func)):
        out.append(Mutant(path, i, getattr(node, "lineno", 0), kind, desc))
    return out


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, new: ast.AST) -> None:
        self.target, self.new = target, new

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.new
        return super().generic_visit(node)


def mutate(source: str, mutant: Mutant, func: str | None = None) -> str:
    """The source of ``mutant`` (re-parses ``source`` and applies the ``index``-th site)."""
    tree = ast.parse(source)
    for i, (node, kind, _, extra) in enumerate(_site_nodes(tree, func)):  # noqa: B007
        if i == mutant.index:
            break
    else:
        raise IndexError(f"{mutant.path} has no mutation site {mutant.index}")
    assert kind == mutant.kind, (kind, mutant)
    if kind in ("binop", "augop"):
        node.op = _BINOP_SWAP[type(node.op)]()  # type: ignore[attr-defined]
    elif kind == "compare":
        node.ops[extra] = _CMP_SWAP[type(node.ops[extra])]()  # type: ignore[attr-defined,index]
    elif kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()  # type: ignore[attr-defined]
    elif kind == "unary":
        tree = _Replace(node, node.operand).visit(tree)  # type: ignore[attr-defined]
    elif kind == "bool":
        node.value = not node.value  # type: ignore[attr-defined]
    elif kind == "const":
        node.value = node.value + 1  # type: ignore[attr-defined]
    elif kind == "enum":
        j, alt = extra  # type: ignore[misc]
        node.values[j] = ast.Constant(alt)  # type: ignore[attr-defined]
    elif kind == "args":
        a = node.args  # type: ignore[attr-defined]
        a[0], a[1] = a[1], a[0]
    elif kind == "delete":
        tree = _Replace(node, ast.Pass()).visit(tree)
    else:
        raise ValueError(kind)
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


# --- running -------------------------------------------------------------------------------
def _ignore(directory: str, names: Sequence[str]) -> list[str]:
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}
    return [n for n in names if n in skip or n.endswith(".egg-info")]


@dataclasses.dataclass
class Result:
    mutant: Mutant
    killed: bool
    seconds: float
    detail: str = ""


def run_tests(copy_root: Path, tests: Sequence[str], timeout: float) -> tuple[bool, str]:
    """Run pytest in ``copy_root``; (passed, last lines). A timeout counts as a failure."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy_root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p"]
    cmd += ["no:randomly", *tests]
    try:
        proc = subprocess.run(
            cmd, cwd=copy_root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return False, f"timeout after {timeout:.0f} s"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines else ""


def _check_copy_is_used(copy_root: Path, package: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(copy_root), PYTHONDONTWRITEBYTECODE="1")
    code = f"import {package}, sys; sys.stdout.write({package}.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=copy_root, env=env, capture_output=True, text=True
    )
    where = Path(out.stdout.strip() or "/")
    if copy_root.resolve() not in where.resolve().parents:
        raise SystemExit(f"mutate: {package} imports from {where}, not from the copy {copy_root}")


def run_mutants(
    root: Path,
    targets: Sequence[tuple[str, str | None]],
    tests: Sequence[str],
    jobs: int = MAX_JOBS,
    timeout: float = 120.0,
    limit: int | None = None,
    every: int = 1,
    package: str | None = "trtdsl",
    log: bool = True,
    labels: set[str] | None = None,
) -> list[Result]:
    """Generate the mutants of ``targets`` and run ``tests`` on each in private copies
    (``labels``: only the mutants with these labels, e.g. the survivors of an earlier run)."""
    jobs = max(1, min(int(jobs), MAX_JOBS))
    sources = {path: (root / path).read_text() for path, _ in targets}
    todo: list[tuple[Mutant, str | None]] = []
    for path, func in targets:
        todo += [(m, func) for m in sites(sources[path], path, func)]
    if labels is not None:
        todo = [(m, f) for m, f in todo if m.label in labels]
    todo = todo[:: max(1, int(every))]
    if limit is not None:
        todo = todo[:limit]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="trtdsl-mutate-") as tmp:
        copies = []
        for w in range(min(jobs, max(1, len(todo)))):
            dst = Path(tmp) / f"w{w}"
            shutil.copytree(root, dst, ignore=_ignore, symlinks=True)
            copies.append(dst)
        if package:
            _check_copy_is_used(copies[0], package)
        ok, detail = run_tests(copies[0], tests, timeout * 3)
        if not ok:
            raise SystemExit(f"mutate: the unmutated baseline fails ({detail}); fix that first")
        work: queue.Queue = queue.Queue()
        for item in todo:
            work.put(item)
        lock = threading.Lock()

        def worker(copy_root: Path) -> None:
            while True:
                try:
                    mutant, func = work.get_nowait()
                except queue.Empty:
                    return
                target = copy_root / mutant.path
                original = sources[mutant.path]
                target.write_text(mutate(original, mutant, func))
                start = time.monotonic()
                try:
                    passed, detail = run_tests(copy_root, tests, timeout)
                finally:
                    target.write_text(original)
                res = Result(mutant, not passed, time.monotonic() - start, detail)
                with lock:
                    results.append(res)
                    if log:
                        mark = "killed  " if res.killed else "SURVIVED"
                        n = len(results)
                        print(f"[{n}/{len(todo)}] {mark} {mutant.label}", flush=True)

        threads = [threading.Thread(target=worker, args=(c,)) for c in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    results.sort(key=lambda r: (r.mutant.path, r.mutant.index))
    return results


def summary(results: Sequence[Result]) -> str:
    killed = sum(r.killed for r in results)
    n = len(results)
    rate = 100.0 * killed / n if n else 100.0
    lines = [f"mutants: {n}, killed: {killed}, survived: {n - killed}, kill rate: {rate:.1f}%"]
    survivors = [r for r in results if not r.killed]
    if survivors:
        lines.append("survivors:")
        lines += [f"  {r.mutant.label}" for r in survivors]
    return "\n".join(lines)


def read_labels(path: Path) -> set[str]:
    """Mutant labels from a file: bare labels, or log/summary lines that end with one."""
    out = set()
    for line in path.read_text().splitlines():
        text = line.strip()
        for mark in ("SURVIVED ", "killed   "):
            if mark in text:
                text = text.split(mark, 1)[1].strip()
        if re.match(r"\S+:\d+ \[\w+\] ", text):  # path:line [kind] description
            out.add(text)
    return out


def _parse_targets(values: Sequence[str]) -> list[tuple[str, str | None]]:
    out = []
    for v in values:
        path, _, func = v.partition("::")
        out.append((path, func or None))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="tree to copy (default: this repo)")
    p.add_argument(
        "--target",
        action="append",
        help="FILE or FILE::FUNCTION to mutate (repeatable; default: the lowering targets)",
    )
    p.add_argument("--only", help="keep only targets whose path contains this text")
    p.add_argument(
        "--tests", help="pytest arguments, one string (default: the fast TensorRT tests)"
    )
    p.add_argument("--jobs", type=int, default=MAX_JOBS, help=f"workers (at most {MAX_JOBS})")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant")
    p.add_argument("--max", type=int, default=None, help="run only the first N mutants")
    p.add_argument("--every", type=int, default=1, help="run every N-th mutant (a sample)")
    p.add_argument(
        "--labels",
        type=Path,
        help="run only the mutants whose labels this file lists (one a line; a log line such "
        "as '[3/9] SURVIVED <label>' counts too), e.g. an earlier run's survivors",
    )
    p.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--package", default="trtdsl", help="package that must import from the copy")
    args = p.parse_args(argv)
    root = args.root.resolve()
    targets = _parse_targets(args.target) if args.target else list(DEFAULT_TARGETS)
    if args.only:
        targets = [t for t in targets if args.only in t[0]]
    if args.list:
        for path, func in targets:
            for m in sites((root / path).read_text(), path, func):
                print(m.label)
        return 0
    tests = (
        shlex.split(args.tests) if args.tests else [t for t in DEFAULT_TESTS if (root / t).exists()]
    )
    labels = read_labels(args.labels) if args.labels else None
    results = run_mutants(
        root,
        targets,
        tests,
        args.jobs,
        args.timeout,
        args.max,
        args.every,
        args.package or None,
        labels=labels,
    )
    text = summary(results)
    print(text)
    if args.json:
        rows = [
            dict(dataclasses.asdict(r.mutant), killed=r.killed, detail=r.detail) for r in results
        ]
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
