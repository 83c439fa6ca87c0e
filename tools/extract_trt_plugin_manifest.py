"""Extract the API manifest of TensorRT's ``tensorrt.plugin`` package (QDP) from a bindings wheel.

The wheel ships the package as Python sources (``tensorrt_bindings/plugin/*.py``); this reads
them with :mod:`ast` (nothing is imported, so neither TensorRT nor a GPU is needed) and writes
``trtdsl/backends/tensorrt/trt11_plugin_manifest.json``: the public API (functions and classes
exported with ``@public_api``, their parameters, methods and properties), the validation rules
the decorators apply (reserved namespaces, disallowed attribute names, serializable types, the
``aot_impl`` argument schema and return schema), the ``KernelLaunchParams`` fields, and how the
plugin runtime calls the decorated functions. The fake ``tensorrt.plugin``
(trtdsl/testing/fake_tensorrt/plugin.py) checks every use against it.

    pip download --no-deps tensorrt-cu13-bindings==11.4.0.106 -d /tmp/trtw
    python tools/extract_trt_plugin_manifest.py /tmp/trtw/tensorrt_cu13_bindings-11.4.0.106-*.whl
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "trtdsl/backends/tensorrt/trt11_plugin_manifest.json"
FORMAT = 1


def _sources(wheel: Path) -> tuple[dict[str, str], str]:
    """{file name: source} of the plugin package, and the wheel's version."""
    with zipfile.ZipFile(wheel) as z:
        files = {
            Path(n).name: z.read(n).decode()
            for n in z.namelist()
            if re.fullmatch(r"tensorrt[a-z_]*/plugin/[^/]+\.py", n)
        }
    m = re.search(r"-(\d+(?:\.\d+)+)-", wheel.name)
    if not files:
        raise SystemExit(f"{wheel}: no tensorrt*/plugin/*.py inside")
    return files, m.group(1) if m else "?"


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[dict[str, Any]]:
    a = fn.args
    out: list[dict[str, Any]] = []
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    kinds = ["positional_only"] * len(a.posonlyargs) + ["positional_or_keyword"] * len(a.args)
    for arg, d, kind in zip(pos, defaults, kinds):
        out.append(_param(arg, kind, d))
    if a.vararg:
        out.append(_param(a.vararg, "var_positional", None))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append(_param(arg, "keyword_only", d))
    if a.kwarg:
        out.append(_param(a.kwarg, "var_keyword", None))
    return out


def _param(arg: ast.arg, kind: str, default: ast.expr | None) -> dict[str, Any]:
    p: dict[str, Any] = {"name": arg.arg, "kind": kind}
    if arg.annotation is not None:
        p["annotation"] = ast.unparse(arg.annotation)
    if default is not None:
        p["default"] = ast.unparse(default)
    return p


def _is_public(dec: ast.expr) -> bool:
    return isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "public_api"


def _doc(node: Any) -> str:
    d = ast.get_docstring(node) or ""
    return d.strip().split("\n\n")[0].replace("\n", " ")[:300]


def _class(node: ast.ClassDef) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    props: dict[str, dict[str, Any]] = {}
    for item in node.body:
        if not isinstance(item, ast.FunctionDef):
            continue
        decos = [ast.unparse(d) for d in item.decorator_list]
        if "property" in decos:
            props.setdefault(item.name, {"readonly": True})
            if item.returns is not None:
                props[item.name]["type"] = ast.unparse(item.returns)
        elif any(d.endswith(".setter") for d in decos):
            props.setdefault(item.name, {})["readonly"] = False
        elif not item.name.startswith("_") or item.name in ("__init__", "__call__"):
            methods[item.name] = {"params": _params(item), "doc": _doc(item)}
            if item.returns is not None:
                methods[item.name]["returns"] = ast.unparse(item.returns)
    return {
        "bases": [ast.unparse(b) for b in node.bases],
        "doc": _doc(node),
        "methods": methods,
        "properties": props,
    }


def _public(files: dict[str, str]) -> dict[str, Any]:
    functions: dict[str, Any] = {}
    classes: dict[str, Any] = {}
    objects: list[str] = []
    aot_only: list[str] = []
    for fname, src in sorted(files.items()):
        tree = ast.parse(src)
        for top in tree.body:
            nodes, guarded = [top], False
            if isinstance(top, ast.If) and ast.unparse(top.test) == "IS_AOT_ENABLED":
                nodes, guarded = top.body, True
            for node in nodes:
                if isinstance(node, ast.FunctionDef) and any(map(_is_public, node.decorator_list)):
                    functions[node.name] = {
                        "params": _params(node),
                        "returns": ast.unparse(node.returns) if node.returns else None,
                        "doc": _doc(node),
                        "file": fname,
                    }
                elif isinstance(node, ast.ClassDef) and any(map(_is_public, node.decorator_list)):
                    classes[node.name] = dict(_class(node), file=fname)
                else:
                    continue
                if guarded:
                    aot_only.append(node.name)
            for call in ast.walk(top):  # public_api(symbol="op")(op)
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Call)
                    and getattr(call.func.func, "id", None) == "public_api"
                ):
                    for kw in call.func.keywords:
                        if kw.arg == "symbol":
                            objects.append(ast.literal_eval(kw.value))
    return {
        "functions": functions,
        "classes": classes,
        "objects": sorted(objects),
        "aot_enabled_only": sorted(aot_only),
    }


def _constants(src: str, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            name = getattr(node.targets[0], "id", None)
            if name in names:
                v = node.value
                if isinstance(v, (ast.Set, ast.Tuple, ast.List)):
                    items = [
                        e.value if isinstance(e, ast.Constant) else ast.unparse(e) for e in v.elts
                    ]
                    out[name] = sorted(items) if isinstance(v, ast.Set) else items
    return out


def _function(src: str, name: str) -> ast.FunctionDef:
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise SystemExit(f"function {name} not found")


def _strings(fn: ast.FunctionDef) -> list[str]:
    return [
        n.value for n in ast.walk(fn) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _calls_of(fn: ast.FunctionDef, attr: str) -> list[str]:
    return [
        ast.unparse(n)
        for n in ast.walk(fn)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == attr
    ]


def _rules(files: dict[str, str]) -> dict[str, Any]:
    validate, cls_src, tensor = (
        files["_validate.py"],
        files["_plugin_class.py"],
        files["_tensor.py"],
    )
    consts = _constants(
        validate,
        ("SERIALIZABLE_BUILTIN_TYPES", "SERIALIZABLE_NP_DTYPES", "RESERVED_NAMESPACES",
         "DISALLOWED_ATTR_NAMES"),
    )  # fmt: skip
    aot = _function(validate, "_validate_aot_impl")
    ret_schema = next(s for s in _strings(aot) if s.startswith("tuple["))
    tail = next(s for s in _strings(aot) if s.startswith(", outputs"))
    impl_tail = next(s for s in _strings(_function(validate, "_validate_impl")) if "outputs" in s)
    launch = _function(cls_src, "get_launch_params")
    unpack = next(
        n for n in ast.walk(launch)
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Tuple)
        and getattr(getattr(n.value, "func", None), "attr", "") == "aot_impl_function"
    )  # fmt: skip
    extra_types = sorted(
        {
            ast.unparse(n.args[1])
            for n in ast.walk(launch)
            if isinstance(n, ast.Call)
            and getattr(n.func, "id", None) == "isinstance"
            and ast.unparse(n.args[0]) == "arg"
        }
    )
    launch_sets = sorted(
        {
            n.targets[0].attr
            for n in ast.walk(launch)
            if isinstance(n, ast.Assign)
            and isinstance(n.targets[0], ast.Attribute)
            and ast.unparse(n.targets[0].value) == "launchParams"
        }
    )
    klp = next(
        n for n in ast.walk(ast.parse(tensor))
        if isinstance(n, ast.ClassDef) and n.name == "KernelLaunchParams"
    )  # fmt: skip
    setattr_ = next(n for n in klp.body if getattr(n, "name", "") == "__setattr__")
    klp_fields = next(
        [e.value for e in n.elts] for n in ast.walk(setattr_) if isinstance(n, ast.List)
    )
    attr_values = next(
        ast.unparse(n) for n in ast.walk(launch)
        if isinstance(n, ast.Assign) and "self.attrs.items()" in ast.unparse(n)
    )  # fmt: skip
    register_calls = _calls_of(_function(cls_src, "get_output_shapes"), "register_function")
    plugin_call = _function(files["_lib.py"], "create_plugin_instance")
    returns = [ast.unparse(n.value) for n in ast.walk(plugin_call) if isinstance(n, ast.Return)]
    return {
        "constants": consts,
        "register": {"call": register_calls[0]},
        "aot_impl": {
            "schema_tail": tail,
            "expected_return_schema": ret_schema,
            "call": ast.unparse(unpack.value),
            "unpack": [ast.unparse(e) for e in unpack.targets[0].elts],
            "attr_values": attr_values,
            "extra_arg_types": extra_types,
            "launch_params_set": launch_sets,
        },
        "impl": {"schema_tail": impl_tail},
        "kernel_launch_params_fields": klp_fields,
        "plugin_instance_returns": returns,
    }


def extract(wheel: Path) -> dict[str, Any]:
    files, version = _sources(wheel)
    return {
        "header": {
            "format": FORMAT,
            "tool": "tools/extract_trt_plugin_manifest.py",
            "wheel": wheel.name,
            "version": version,
            "package": "tensorrt.plugin (tensorrt_bindings/plugin)",
            "files": {n: hashlib.sha256(s.encode()).hexdigest() for n, s in sorted(files.items())},
            "method": "ast of the package's Python sources; nothing imported",
        },
        "public": _public(files),
        **_rules(files),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    manifest = extract(args.wheel)
    args.out.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    pub = manifest["public"]
    print(f"{args.out}: {len(pub['functions'])} functions, {len(pub['classes'])} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
