"""Errors that point at the user's line.

Every error raised while a network is defined names the layer, the shapes involved and the
``file:line`` of the user's call that created it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class SourceLocation:
    """Where in the user's code a layer was created."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"


def user_location() -> SourceLocation:
    """The innermost stack frame outside the trtdsl package (the user's call site)."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_PACKAGE_DIR + os.sep):
            return SourceLocation(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return SourceLocation("<unknown>", 0, "<unknown>")


class TrtDslError(Exception):
    """Base class of every error trtdsl raises on purpose."""


class DefinitionError(TrtDslError, ValueError):
    """A layer cannot be defined: bad shape, axis, dtype, name or argument.

    The message names the layer, its inputs' shapes and the user's source line.
    """

    def __init__(self, message: str, *, layer: str | None = None, where=None) -> None:
        self.layer = layer
        self.where = where
        head = f"layer '{layer}'" if layer else "network"
        loc = f" (defined at {where})" if where else ""
        super().__init__(f"{head}{loc}: {message}")


class TensorUsageError(TrtDslError, TypeError):
    """A Tensor used as a Python value it cannot stand for while the network is defined (its
    truth value, iteration, a length it does not have). A TypeError, as Python's protocols
    expect; the message names the user's file:line."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} (at {user_location()})")


class WorldError(TrtDslError, ValueError):
    """A world cannot be made: a bad size, rank or timeout. A ValueError; the message names
    the user's file:line."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} (at {user_location()})")


class ExecutionError(TrtDslError, RuntimeError):
    """Running a network failed: bad feeds, or a layer failed at run time."""


class UnknownBackendError(ExecutionError, ValueError):
    """``backend=`` names no backend."""


class CollectiveMismatchError(ExecutionError):
    """Ranks disagree on the sequence of collectives they are about to run."""


class RankFailedError(ExecutionError):
    """Another rank failed, so this rank stops instead of waiting forever."""
