"""Generate docs/api.md from the public docstrings.

python tools/gen_api_docs.py          # rewrite docs/api.md
python tools/gen_api_docs.py --check  # exit 1 if docs/api.md is out of date
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = [
    "trtdsl.network",
    "trtdsl.tensor",
    "trtdsl.functional",
    "trtdsl.dtypes",
    "trtdsl.errors",
    "trtdsl.worlds",
    "trtdsl.ops.collective",
    "trtdsl.parallel",
    "trtdsl.backends.numpy",
    "trtdsl.backends.cupy",
    "trtdsl.backends.tensorrt",
    "trtdsl.backends.tensorrt.runtime",
    "trtdsl.backends.nccl",
]

OUT = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _doc(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip()


def _sig(obj: object) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    # a module default shows its install path, which differs between machines: keep its name
    return re.sub(r"<module '([\w.]+)' from '[^']*'>", r"\1", text)


def _public(mod: object) -> list[tuple[str, object]]:
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in vars(mod) if not n.startswith("_")]
    out = []
    for name in names:
        obj = getattr(mod, name, None)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(
            obj, "__module__", ""
        ).startswith(mod.__name__):
            out.append((name, obj))
    return sorted(out, key=lambda kv: kv[0].lower())


def _ops_section() -> list[str]:
    """The builders, by section, from their declarations (trtdsl.ops.api.REGISTRY)."""
    from trtdsl.ops.api import by_section

    lines: list[str] = []
    for section, ops in by_section().items():
        if not ops:
            continue
        lines += [f"### {section}", ""]
        for op in sorted(ops, key=lambda o: o.name):
            names = ", ".join(f"`F.{n}`" for n in (op.name, *op.aliases))
            methods = (
                ""
                if op.method is None
                else ", ".join(f"`Tensor.{m}`" for m in (op.method, *op.aliases))
            )
            lines += [
                f"#### `{op.name}{_sig(op.function)}`",
                "",
                f"{names}"
                + (f"; method {methods}" if methods else "")
                + f" (declared in `{op.function.__module__}`)",
                "",
                _doc(op.function) or "(no docstring)",
                "",
            ]
    return lines


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `tools/gen_api_docs.py`; do not edit by hand.",
        "",
    ]
    for modname in MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:  # optional module missing: say so rather than skip silently
            lines += [f"## `{modname}`", "", f"(not importable here: {e})", ""]
            continue
        lines += [f"## `{modname}`", "", _doc(mod), ""]
        if modname == "trtdsl.functional":
            lines += _ops_section()
            continue
        for name, obj in _public(mod):
            kind = "class" if inspect.isclass(obj) else "def"
            lines += [f"### `{kind} {name}{_sig(obj)}`", "", _doc(obj) or "(no docstring)", ""]
            if inspect.isclass(obj):
                for mname, member in sorted(vars(obj).items()):
                    if mname.startswith("_") or not (
                        inspect.isfunction(member) or isinstance(member, property)
                    ):
                        continue
                    target = member.fget if isinstance(member, property) else member
                    doc = _doc(target)
                    if not doc:
                        continue
                    sig = "" if isinstance(member, property) else _sig(member)
                    first = doc.split("\n\n")[0].replace("\n", " ")
                    lines.append(f"- `{name}.{mname}{sig}`: {first}")
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python tools/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
