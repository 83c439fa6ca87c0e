"""Extract the TensorRT Python API surface from the installed bindings wheel into a JSON manifest.

TensorRT's libraries (libnvinfer, libnvinfer_plugin, libnvonnxparser) cannot be installed here, so
``tensorrt_bindings/tensorrt.so`` cannot be imported as is. This script:

1. reads the shared libraries the extension needs (``readelf -d``) and the dynamic symbols it
   imports (``nm -D --undefined-only``), keeps the ones no system library or the interpreter
   provides;
2. builds tiny stub shared libraries with the right SONAMEs that export those symbols (each stub
   calls ``abort()``: nothing of TensorRT is ever run, a call would kill the child at once);
3. imports ``tensorrt_bindings`` in a child process with ``LD_LIBRARY_PATH`` pointing at the stubs
   only, and reads the pybind11 docstrings (signatures with argument names, types, defaults),
   properties and enum members;
4. writes ``trtdsl/backends/tensorrt/trt11_manifest.json`` (sorted keys, indent 1).

Run: ``/work/venv/bin/python tools/extract_trt_manifest.py [--output PATH]``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "trtdsl" / "backends" / "tensorrt" / "trt11_manifest.json"
PACKAGE = "tensorrt_bindings"
EXTENSION = "tensorrt"
MODULE_PREFIX = f"{PACKAGE}.{EXTENSION}."
DOC_LIMIT = 300
ARG_DOC_LIMIT = 200
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Parent side: locate the wheel, build stubs, run the child.
# --------------------------------------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    """Run a tool and return its stdout (raises on failure)."""
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def find_extension() -> Path:
    """Path of ``tensorrt_bindings/tensorrt.so`` without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {PACKAGE!r} is not installed in {sys.executable}")
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    candidates = sorted(pkg_dir.glob(f"{EXTENSION}*.so"))
    if not candidates:
        raise SystemExit(f"no {EXTENSION}*.so in {pkg_dir}")
    return candidates[0]


def find_distribution() -> tuple[str, str]:
    """(distribution name, version) of the wheel that ships ``tensorrt_bindings``."""
    for dist in importlib.metadata.distributions():
        top = (dist.read_text("top_level.txt") or "").split()
        files = [str(f) for f in (dist.files or [])]
        if PACKAGE in top or any(f.startswith(PACKAGE + "/") for f in files):
            return dist.metadata["Name"], dist.version
    return "unknown", "unknown"


def needed_libraries(so: Path) -> list[str]:
    """SONAMEs from the DT_NEEDED entries of ``so``."""
    out = _run(["readelf", "-d", str(so)])
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def unresolved_libraries(so: Path) -> tuple[list[str], dict[str, str]]:
    """(SONAMEs the loader cannot find, {found SONAME: path})."""
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    out = subprocess.run(["ldd", str(so)], capture_output=True, text=True, env=env).stdout
    missing, found = [], {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(.*?)(?:\s+\(0x[0-9a-f]+\))?$", line)
        if not m:
            continue
        if m.group(2).strip() == "not found":
            missing.append(m.group(1))
        else:
            found[m.group(1)] = m.group(2).strip()
    return missing, found


def defined_symbols(lib: str) -> set[str]:
    """Dynamic symbols defined by a shared library."""
    out = _run(["nm", "-D", "--defined-only", lib])
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def undefined_symbols(so: Path) -> list[str]:
    """Strong (non-weak) undefined dynamic symbols without a version tag."""
    out = _run(["nm", "-D", "--undefined-only", "--with-symbol-versions", str(so)])
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[0] != "U" or "@" in parts[1]:
            continue
        syms.append(parts[1])
    return syms


def python_symbols() -> set[str]:
    """Symbols the interpreter provides to extensions (libpython or the executable)."""
    syms: set[str] = set()
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    for cand in (os.path.join(libdir, ldlib), os.path.realpath(sys.executable)):
        if os.path.isfile(cand):
            try:
                syms |= defined_symbols(cand)
            except subprocess.CalledProcessError:
                pass
    return syms


def build_stubs(so: Path, stub_dir: Path) -> dict[str, list[str]]:
    """Compile stub libraries for every missing SONAME; returns {soname: exported symbols}."""
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is needed to build the stub libraries")
    missing, found = unresolved_libraries(so)
    needed = needed_libraries(so)
    missing = [lib for lib in needed if lib in missing]
    if not missing:
        raise SystemExit(f"{so} has no missing libraries; import it directly")
    provided: set[str] = set()
    for path in found.values():
        provided |= defined_symbols(path)
    provided |= python_symbols()
    wanted = sorted(
        s for s in undefined_symbols(so) if s not in provided and not s.startswith(("Py", "_Py"))
    )
    # Which missing library really defines a symbol is unknown without it; every stub exports
    # all of them (the loader takes the first definition, and none is ever called).
    body = ["#include <stdlib.h>"]
    body += [f"void *{sym}(void) {{ abort(); return 0; }}" for sym in wanted]
    source = stub_dir / "trt_stub.c"
    source.write_text("\n".join(body) + "\n")
    exported: dict[str, list[str]] = {}
    for soname in missing:
        target = stub_dir / soname
        cmd = ["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(target), str(source)]
        subprocess.run(cmd, check=True)
        exported[soname] = wanted
    return exported


def run_child(stub_dir: Path) -> dict[str, Any]:
    """Import the bindings in a child process against the stubs and return its dump."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(stub_dir)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    out_file = stub_dir / "dump.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--introspect", str(out_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"importing {PACKAGE} against stub libraries failed (rc={proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return json.loads(out_file.read_text())


# --------------------------------------------------------------------------------------------
# Child side: introspect the imported module (only reads attributes and docstrings).
# --------------------------------------------------------------------------------------------


def clean_type(text: str) -> str:
    """Drop the module prefix and object addresses from a type or default text."""
    text = text.replace(MODULE_PREFIX, "")
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)
    return text.strip()


_OPEN = {"(": ")", "[": "]", "{": "}", "<": ">"}
_CLOSE = {v: k for k, v in _OPEN.items()}


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` at ``sep`` outside brackets and quotes."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "-" and text.startswith("->", i):
            i += 1
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def matching_paren(text: str, open_at: int) -> int:
    """Index of the ``)`` closing the ``(`` at ``open_at``."""
    depth, quote, i = 0, "", open_at
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced signature: {text!r}")


def parse_params(params: str, drop_self: bool) -> list[dict[str, Any]]:
    """Parse a pybind11 parameter list into argument records."""
    args: list[dict[str, Any]] = []
    kind = "positional_or_keyword"
    for i, raw in enumerate(split_top_level(params)):
        if raw == "/":
            for a in args:
                if a["kind"] == "positional_or_keyword":
                    a["kind"] = "positional_only"
            continue
        if raw == "*":
            kind = "keyword_only"
            continue
        if raw.startswith("**"):
            args.append({"name": raw[2:].split(":")[0].strip(), "kind": "var_keyword"})
            continue
        if raw.startswith("*"):
            args.append({"name": raw[1:].split(":")[0].strip(), "kind": "var_positional"})
            kind = "keyword_only"
            continue
        name, _, rest = raw.partition(":")
        name = name.strip()
        pieces = split_top_level(rest, " = ") if rest else []
        rec: dict[str, Any] = {"name": name, "kind": kind}
        if pieces:
            rec["type"] = clean_type(pieces[0])
        if len(pieces) > 1:
            rec["default"] = clean_type(" = ".join(pieces[1:]))
        if re.fullmatch(r"arg\d+", name) and kind == "positional_or_keyword":
            rec["kind"] = "positional_only"  # pybind11: unnamed arguments are positional only
        if i == 0 and drop_self and name in ("self", "arg0"):
            continue
        args.append(rec)
    return args


def first_paragraph(text: str, limit: int = DOC_LIMIT) -> str:
    """First paragraph of a docstring, whitespace-collapsed and cut at ``limit`` characters."""
    text = (text or "").strip()
    para = re.split(r"\n\s*\n", text, maxsplit=1)[0] if text else ""
    para = " ".join(para.split())
    return para if len(para) <= limit else para[: limit - 3].rstrip() + "..."


_FIELD_START = r"^\s*:(?:arg|param|ivar|returns?|rtype|type|raises?|var)\b"


def field_docs(text: str, fields: tuple[str, ...]) -> dict[str, str]:
    """``:arg name: ...`` style field descriptions (multi-line), cut to ``ARG_DOC_LIMIT``."""
    out: dict[str, str] = {}
    pattern = r"^\s*:(?:" + "|".join(fields) + r") (\w+):(.*?)(?=" + _FIELD_START + r"|\Z)"
    for m in re.finditer(pattern, text or "", re.S | re.M):
        desc = " ".join(m.group(2).split())
        out[m.group(1)] = desc if len(desc) <= ARG_DOC_LIMIT else desc[: ARG_DOC_LIMIT - 3] + "..."
    return out


def parse_signature(line: str, drop_self: bool) -> dict[str, Any]:
    """Parse ``name(params) -> ret`` into a record."""
    open_at = line.index("(")
    close_at = matching_paren(line, open_at)
    rest = line[close_at + 1 :].strip()
    ret = clean_type(rest[2:]) if rest.startswith("->") else ""
    return {
        "signature": clean_type(line.strip()),
        "args": parse_params(line[open_at + 1 : close_at], drop_self),
        "returns": ret,
    }


def parse_pybind_doc(name: str, doc: str, drop_self: bool) -> list[dict[str, Any]]:
    """Split a pybind11 function docstring into overload records."""
    doc = doc or ""
    chunks: list[tuple[str, str]] = []
    if "Overloaded function." in doc.split("\n\n", 1)[0] or doc.startswith(
        f"{name}(*args, **kwargs)\nOverloaded function."
    ):
        pieces = re.split(rf"^\d+\. (?={re.escape(name)}\()", doc, flags=re.M)[1:]
        for piece in pieces:
            sig, _, body = piece.partition("\n")
            chunks.append((sig, body))
    else:
        sig, _, body = doc.partition("\n")
        chunks.append((sig, body))
    overloads = []
    for sig, body in chunks:
        if not sig.startswith(name + "("):
            continue
        rec = parse_signature(sig, drop_self)
        rec["doc"] = first_paragraph(body)
        arg_docs = field_docs(body, ("arg", "param"))
        if arg_docs:
            rec["arg_docs"] = arg_docs
        overloads.append(rec)
    return overloads


def python_overload(name: str, fn: Any, drop_self: bool) -> list[dict[str, Any]]:
    """Overload record for a plain Python function (added by the package's __init__)."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    args = []
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 and drop_self:
            continue
        rec: dict[str, Any] = {"name": p.name, "kind": p.kind.name.lower()}
        if p.default is not inspect.Parameter.empty:
            rec["default"] = repr(p.default)
        args.append(rec)
    return [
        {
            "signature": f"{name}{sig}",
            "args": args,
            "returns": "",
            "doc": first_paragraph(fn.__doc__ or ""),
            "python": True,
        }
    ]


def describe_callable(name: str, obj: Any, drop_self: bool) -> list[dict[str, Any]]:
    """Overload records for a pybind11 or Python callable."""
    import types

    func = getattr(obj, "__func__", obj)
    if isinstance(func, types.FunctionType):
        return python_overload(name, func, drop_self)
    return parse_pybind_doc(name, getattr(func, "__doc__", "") or "", drop_self)


def describe_property(prop: property) -> dict[str, Any]:
    """Record for a property: readonly flag, value type and doc."""
    import types

    rec: dict[str, Any] = {"readonly": prop.fset is None}
    fget_doc = getattr(prop.fget, "__doc__", "") or ""
    if not isinstance(prop.fget, types.FunctionType):
        m = re.match(r"\((.*)\)\s*->\s*(.+)", fget_doc.split("\n", 1)[0])
        if m:
            rec["type"] = clean_type(m.group(2))
    if prop.fset is not None and not isinstance(prop.fset, types.FunctionType):
        m = re.match(r"\((.*)\)\s*->", (prop.fset.__doc__ or "").split("\n", 1)[0])
        if m:
            params = parse_params(m.group(1), drop_self=True)
            if params and "type" in params[0]:
                rec["set_type"] = params[0]["type"]
    doc = prop.__doc__ if prop.__doc__ and prop.__doc__ != fget_doc else ""
    rec["doc"] = first_paragraph(doc) if doc else ""
    return rec


def is_enum(cls: type) -> bool:
    """pybind11 enums carry ``__members__`` and ``__entries``."""
    return "__members__" in cls.__dict__ and hasattr(cls, "__entries")


def enum_record(cls: type) -> dict[str, Any]:
    """Members (name -> int value), doc and extra properties of an enum."""
    members = {name: int(val) for name, val in cls.__members__.items()}
    doc = cls.__doc__ or ""
    head, _, listing = doc.partition("\nMembers:\n")
    member_docs = {}
    for m in re.finditer(r"^  (\w+) :(.*?)(?=^  \w+ :|\Z)", listing, re.S | re.M):
        if m.group(1) in members:
            member_docs[m.group(1)] = first_paragraph(m.group(2), ARG_DOC_LIMIT)
    rec: dict[str, Any] = {
        "members": members,
        "doc": first_paragraph(head),
        "member_docs": member_docs,
    }
    extra = {
        k: describe_property(v)
        for k, v in cls.__dict__.items()
        if isinstance(v, property)
        and type(v).__name__ != "pybind11_static_property"
        and k not in ("name", "value")
    }
    if extra:
        rec["properties"] = extra
    return rec


SKIP_ATTRS = {"__doc__", "__module__", "__dict__", "__weakref__", "_pybind11_conduit_v1_"}


def class_record(cls: type, enums: dict[str, Any]) -> dict[str, Any]:
    """Methods, static methods, properties, attributes and bases of a pybind11 class."""
    import types

    bases = [
        b.__qualname__
        for b in cls.__bases__
        if b.__module__.startswith(PACKAGE) and b.__qualname__ != "pybind11_object"
    ]
    ivars = field_docs(cls.__doc__ or "", ("ivar",))
    rec: dict[str, Any] = {
        "bases": bases,
        "doc": first_paragraph(cls.__doc__ or ""),
        "methods": {},
        "properties": {},
    }
    for key, val in cls.__dict__.items():
        if key in SKIP_ATTRS or key.startswith("__pybind11_module_local"):
            continue
        tname = type(val).__name__
        if isinstance(val, type) and is_enum(val):
            enums[val.__qualname__] = enum_record(val)
            rec.setdefault("attributes", {})[key] = {"enum": val.__qualname__}
        elif tname == "pybind11_static_property":
            rec.setdefault("attributes", {})[key] = {"value": repr(getattr(cls, key))}
        elif isinstance(val, property):
            prop = describe_property(val)
            if not prop["doc"] and key in ivars:
                prop["doc"] = ivars[key]
            rec["properties"][key] = prop
        elif isinstance(val, staticmethod):
            ovl = describe_callable(key, val.__func__, drop_self=False)
            rec.setdefault("static_methods", {})[key] = ovl
        elif tname == "instancemethod" or isinstance(val, types.FunctionType):
            ovl = describe_callable(key, val, drop_self=True)
            if ovl:
                rec["methods"][key] = ovl
        elif tname == "wrapper_descriptor":
            continue  # inherited C slots (object.__init__ etc.)
        elif type(type(val)).__name__ == "pybind11_type" and is_enum(type(val)):
            rec.setdefault("attributes", {})[key] = {
                "enum_member": f"{type(val).__qualname__}.{val.name}"
            }
        elif isinstance(val, (int, float, str)):
            rec.setdefault("attributes", {})[key] = {"value": repr(val)}
    own_init = "__init__" in rec["methods"]
    rec["constructible"] = own_init and not any(
        "No constructor" in o.get("doc", "") for o in rec["methods"]["__init__"]
    )
    return rec


def introspect(out_path: str) -> None:
    """Child entry point: import the bindings against the stubs and dump the API as JSON."""
    import types

    pkg = __import__(PACKAGE)
    ext = getattr(pkg, EXTENSION)
    classes: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    functions: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    for name in sorted(dir(pkg)):
        if name.startswith("_"):
            continue
        obj = getattr(pkg, name)
        if isinstance(obj, types.ModuleType):
            continue
        if isinstance(obj, type):
            if obj.__module__ != ext.__name__:
                continue
            if is_enum(obj):
                enums[obj.__qualname__] = enum_record(obj)
            else:
                classes[obj.__qualname__] = class_record(obj, enums)
        elif type(obj).__name__ == "builtin_function_or_method" or isinstance(
            obj, types.FunctionType
        ):
            if isinstance(obj, types.FunctionType) and obj.__module__ != PACKAGE:
                continue
            functions[name] = describe_callable(name, obj, drop_self=False)
        elif type(type(obj)).__name__ == "pybind11_type" and is_enum(type(obj)):
            if not hasattr(ext, name):
                continue  # e.g. a loop variable left behind by the package's __init__
            constants[name] = {"enum_member": f"{type(obj).__qualname__}.{obj.name}"}
    dump = {
        "classes": classes,
        "enums": enums,
        "functions": functions,
        "constants": constants,
        "module_version": getattr(pkg, "__version__", ""),
    }
    with open(out_path, "w") as f:
        json.dump(dump, f)


# --------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Build stubs, run the child, write the manifest."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--introspect", metavar="DUMP", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.introspect:
        introspect(args.introspect)
        return 0
    so = find_extension()
    dist, version = find_distribution()
    with tempfile.TemporaryDirectory(prefix="trt_stubs_") as tmp:
        stub_dir = Path(tmp)
        stubs = build_stubs(so, stub_dir)
        dump = run_child(stub_dir)
    manifest = {
        "header": {
            "format": FORMAT_VERSION,
            "distribution": dist,
            "version": version,
            "wheel": f"{dist.replace('-', '_')}-{version}",
            "module": f"{PACKAGE}.{EXTENSION}",
            "module_version": dump.pop("module_version"),
            "extension_sha256": sha256(so),
            "extracted": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "method": "import against abort() stub libraries; pybind11 docstrings parsed",
            "stubbed_libraries": {k: len(v) for k, v in stubs.items()},
            "stubbed_symbols": sorted({s for v in stubs.values() for s in v}),
            "tool": "tools/extract_trt_manifest.py",
            "notes": (
                "Type texts drop the 'tensorrt_bindings.tensorrt.' prefix. Docs keep the first "
                f"paragraph (<= {DOC_LIMIT} chars); arg_docs come from ':arg'/':param' fields."
            ),
        },
        **dump,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, sort_keys=True, indent=1) + "\n"
    args.output.write_text(text)
    n_methods = sum(len(c["methods"]) for c in dump["classes"].values())
    print(
        f"wrote {args.output} ({len(text) / 1e6:.2f} MB): {len(dump['classes'])} classes, "
        f"{n_methods} methods, {len(dump['enums'])} enums, {len(dump['functions'])} functions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
