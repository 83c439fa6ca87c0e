"""``World``: who the ranks are and how they exchange Python objects; ``StaticWorld``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import CollectiveMismatchError, ExecutionError
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


class StaticWorld(World):
    """A world of known size and rank that cannot communicate: define and lower networks."""

    def __init__(self, size: int, rank: int = 0) -> None:
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"need size >= 1 and 0 <= rank < size, got size={size} rank={rank}")
        self.size, self.rank = size, rank

    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        if self.size == 1:
            return [obj]
        raise ExecutionError(
            f"StaticWorld(size={self.size}) cannot communicate ({what}); run with MPIWorld() "
            "under mpiexec or with InProcessWorld"
        )
