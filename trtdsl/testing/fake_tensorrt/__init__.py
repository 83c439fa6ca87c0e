"""A manifest-checked stand-in for the ``tensorrt`` module, for contract tests.

``make_fake_tensorrt()`` builds a module that looks like ``tensorrt`` for the purpose of *building
a network definition*: ``Logger``, ``Builder(logger)``, ``builder.create_network(flags)``,
``builder.create_builder_config()``, every ``network.add_*`` method, layers, tensors, enums.
Everything is generated from the manifest extracted from the real TensorRT 11 bindings
(:mod:`trtdsl.backends.tensorrt.manifest`), and every use is checked against it:

* enum classes carry exactly the manifest's members; an unknown member raises
  :class:`EnumMemberError` (an ``AttributeError``) naming the enum and the valid members;
* a method call must name a method of that class (inherited ones included), and its positional
  and keyword arguments must bind to one of the manifest overloads (count, names, required
  arguments); argument values are checked against the overload's type text: enum-typed arguments
  need a member of that enum, ``ITensor`` & co. need a fake object of that class,
  ``typing.SupportsInt`` an integer, ``str`` a string, ``Sequence[X]`` a list/tuple of X;
* attribute assignment must name a writable property, and the value must fit its setter type.

Any violation raises :class:`ContractError` with the manifest signatures in the message.
Methods return fake objects of the class named by the manifest's return type (``add_elementwise``
gives an ``IElementWiseLayer``, ``add_attention_v2`` an ``IAttention``); ``get_*`` calls are
cached, so ``layer.get_output(0)`` is the same tensor each time. Every method call is recorded as
``(method, args, kwargs)`` in the object's ``calls`` list (``network.calls`` for the network);
property assignments go to ``sets``. The network also keeps ``layers``, ``inputs``, ``outputs``
and ``created`` (``(method, object)`` for every object its methods returned).

The fake cannot build or run engines: ``build_*`` methods and anything returning an engine or a
serialized plan raise :class:`FakeTensorRTLimitation` after their arguments have been checked.
``make_fake_tensorrt(build_errors=[...])`` makes the builder fail as the real one does instead:
it logs each line at ERROR severity to the builder's logger and returns None (for tests of how
build errors are reported).
Unset properties read as a typed default (``0``, ``0.0``, ``False``, ``""``) or ``None``.

The package: :mod:`.objects` (errors, enums, the object base class), :mod:`.runtime` (the
generated classes and every check) and this module (:func:`make_fake_tensorrt`).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

from trtdsl.backends.tensorrt.manifest import Manifest, load_manifest

from .objects import (
    ContractAttributeError,
    ContractError,
    EnumMemberError,
    FakeEnum,
    FakeObject,
    FakeTensorRTLimitation,
    _suggest,
)
from .plugin import make_fake_plugin
from .refit import make_fake_engine
from .runtime import _Runtime

__all__ = [
    "ContractError",
    "ContractAttributeError",
    "EnumMemberError",
    "FakeEnum",
    "FakeObject",
    "FakeTensorRTLimitation",
    "make_fake_engine",
    "make_fake_tensorrt",
]


def make_fake_tensorrt(
    manifest: Manifest | None = None, build_errors: Sequence[str] | None = None
) -> types.ModuleType:
    """Build a fake ``tensorrt`` module driven by ``manifest`` (default: the checked-in one).

    ``build_errors``: log lines with which ``IBuilder.build_*`` fails (logged at ERROR to the
    builder's logger, then None is returned), instead of raising FakeTensorRTLimitation.
    """
    manifest = manifest if manifest is not None else load_manifest()
    rt = _Runtime(manifest)
    rt.build_errors = None if build_errors is None else [str(e) for e in build_errors]
    rt.build()
    mod = types.ModuleType("tensorrt", f"Fake tensorrt {manifest.version} (manifest-checked).")
    for qual, enum_cls in rt.enums.items():
        if "." not in qual:
            setattr(mod, qual, enum_cls)
    for name, cls in rt.classes.items():
        setattr(mod, name, cls)
    for alias, target in manifest.constants().items():
        enum_name, member = target.rsplit(".", 1)
        setattr(mod, alias, rt.enums[enum_name].__members__[member])
    for name in manifest.function_names():
        if not name.startswith("common_"):
            setattr(mod, name, rt.function(name))
    mod.__version__ = manifest.version
    mod.__fake__ = True
    mod.__fake_runtime__ = rt  # for make_fake_engine
    mod.MANIFEST = manifest
    mod.ContractError = ContractError
    mod.plugin = make_fake_plugin(mod)  # the fake ``tensorrt.plugin`` (QDP)

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        names = [n for n in vars(mod) if not n.startswith("_")]
        raise ContractAttributeError(
            f"module 'tensorrt' (TensorRT {manifest.version}) has no attribute {name!r}"
            f"{_suggest(name, names)}"
        )

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    return mod
