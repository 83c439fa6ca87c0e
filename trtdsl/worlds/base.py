"""``World``: who the ranks are and how they exchange Python objects; ``StaticWorld``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import CollectiveMismatchError, ExecutionError, WorldError
from ..ops.collective import simulate
from .agreement import Entry, agree_on_collective, first_mismatch


class World:
    """Base class: ``size``, ``rank`` and ``exchange`` (an all-gather of Python objects)."""

    size: int
    rank: int

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        """Every rank's ``obj``, in rank order. ``what`` names the step for error reports;
        ranks must be at the same ``key`` (default: ``what``) or they all fail."""
        raise NotImplementedError

    def agree(self, entries: Sequence[Entry], what: str = "running the network") -> None:
        """Raise CollectiveMismatchError on every rank unless all ranks hold the same
        collective sequence (see :func:`first_mismatch`). Called by ``Network.run`` before
        any work, so mismatched ranks fail together instead of hanging."""
        __tracebackhide__ = True
        if self.size == 1:
            return
        per_rank = self.exchange(list(entries), f"collective check before {what}", key="agree")
        msg = first_mismatch(per_rank)
        if msg:
            raise CollectiveMismatchError(f"rank {self.rank}, before {what}: {msg}")

    def collective(self, layer: Any, x: np.ndarray) -> np.ndarray:
        """Run one collective layer (NumPy semantics) by exchanging every rank's input."""
        spec = layer.spec
        x = np.asarray(x)
        inputs = agree_on_collective(self, layer, x.shape, payload=x)
        outs = simulate(spec, [inputs[r] for r in spec.group])
        return outs[spec.group.index(self.rank)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, rank={self.rank})"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_world_args(kind: str, size: Any, rank: Any = 0, timeout: Any = 1.0) -> None:
    """WorldError (a ValueError naming the caller's line) unless ``size`` is an int >= 1,
    ``rank`` an int in [0, size) and ``timeout`` a positive number of seconds."""
    if not _is_int(size) or size < 1:
        raise WorldError(f"{kind}: the world size must be an int >= 1, got {size!r}")
    if not _is_int(rank) or not 0 <= rank < size:
        raise WorldError(f"{kind}: rank must be an int in [0, {size}), got {rank!r}")
    ok = isinstance(timeout, (int, float, np.integer, np.floating)) and not isinstance(
        timeout, (bool, np.bool_)
    )
    if not ok or not timeout > 0 or timeout != timeout:
        raise WorldError(f"{kind}: timeout must be a positive number of seconds, got {timeout!r}")


class StaticWorld(World):
    """A world of known size and rank that cannot communicate: define and lower networks."""

    def __init__(self, size: int, rank: int = 0) -> None:
        check_world_args("StaticWorld", size, rank)
        self.size, self.rank = int(size), int(rank)

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        if self.size == 1:
            return [obj]
        raise ExecutionError(
            f"StaticWorld(size={self.size}) cannot communicate ({what}); run with MPIWorld() "
            "under mpiexec or with InProcessWorld"
        )
