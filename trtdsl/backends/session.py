"""Sessions: a network compiled once for its rank, run many times (``Network.compile``).

A session holds what lives across calls: the rank's :class:`~.interpreter.Program` (layers
with bound references and the dead-value schedule), the backend's device state (constants,
NCCL communicators, TensorRT engine and context) and the input signatures it has seen.

Agreement across ranks happens once per (network, input signature): the collective
fingerprints when the session is made, and each collective's run-time shape the first time a
new signature (input shapes and dtypes) arrives; later calls with a known signature neither
re-validate their feeds nor exchange anything before NCCL runs. ``check="always"`` keeps the
per-call checks (for debugging ranks that change shapes independently).

>>> import numpy as np, trtdsl as td
>>> net = td.Network("n"); net.output(net.input("x", (None, 2)).relu(), "y")
>>> with net.compile() as s:                      # numpy backend
...     s.run({"x": -np.ones((3, 2), "float32")})["y"].shape
(3, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ExecutionError
from .interpreter import Program, RunContext, _owned, check_feeds

CHECK_MODES = ("once", "always")


def validate_check(check: Any) -> str:
    if check not in CHECK_MODES:
        raise ValueError(f"check must be one of {CHECK_MODES}, got {check!r}")
    return check


def agree_once(network: Any) -> None:
    """Every rank holds the same collective sequence (the check ``Network.run`` always did)."""
    world = network.world
    if world is not None and world.size > 1:
        world.agree(network.collective_fingerprint())


class Session:
    """Base class: ``run(feeds, out=None)``, ``close()``, ``with`` support, signatures.

    Subclasses implement ``_asarray`` (feeds to the backend's arrays), ``_execute(feeds,
    first)`` (``first``: this signature runs for the first time, so check everything) and
    ``_release()``.
    """

    backend = "?"

    def __init__(self, network: Any, check: str = "once") -> None:
        self.network = network
        self.check = validate_check(check)
        self.closed = False
        self._names = tuple(network.inputs)
        self._known: set[tuple] = set()
        self.calls = 0

    # -- the public surface ---------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any], out: Mapping[str, Any] | None = None) -> dict:
        """Run once: ``{input name: array}`` -> ``{output name: array}``. ``out``: arrays to
        write the outputs into (returned); otherwise new arrays the caller owns. Collective
        call when the network has multi-rank collectives."""
        if self.closed:
            raise ExecutionError(f"session of network '{self.network.name}' is closed")
        sig = self._signature(feeds)
        first = sig is None or sig not in self._known or self.check == "always"
        if first:
            arrays = check_feeds(self.network, feeds, self._asarray)
            sig = self._signature(arrays)
        else:
            arrays = {n: feeds[n] for n in self._names}
        outs = self._execute(arrays, first)
        if first:
            self._known.add(sig)
        self.calls += 1
        return self._deliver(outs, arrays, out)

    def close(self) -> None:
        """Free what the session holds (collective where it holds NCCL communicators)."""
        if not self.closed:
            self.closed = True
            self._release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.calls} calls"
        return f"{type(self).__name__}({self.network.name!r}, {self.backend}, {state})"

    # -- helpers --------------------------------------------------------------------------------
    def _signature(self, feeds: Mapping[str, Any]) -> tuple | None:
        if len(feeds) != len(self._names):
            return None
        try:
            return tuple((tuple(feeds[n].shape), feeds[n].dtype) for n in self._names)
        except (KeyError, AttributeError):
            return None

    def _deliver(self, outs: dict, feeds: Mapping[str, Any], out: Mapping[str, Any] | None) -> dict:
        if out is None:
            return {k: self._own(v, feeds) for k, v in outs.items()}
        missing = sorted(set(outs) - set(out))
        if missing:
            raise ExecutionError(f"out= lacks output(s) {missing}")
        for k, v in outs.items():
            self._copy_into(out[k], v, k)
        return dict(out)

    def _own(self, v: Any, feeds: Mapping[str, Any]) -> Any:
        return _owned(v, _Feeds(feeds))

    def _copy_into(self, dst: Any, src: Any, name: str) -> None:
        """``out[name] = src``, after :meth:`_check_out` (backends copy their own way)."""
        self._check_out(dst, src, name)
        np.copyto(dst, src)

    @staticmethod
    def _check_out(dst: Any, src: Any, name: str) -> None:
        if tuple(dst.shape) != tuple(src.shape) or dst.dtype != src.dtype:
            raise ExecutionError(
                f"out['{name}'] is {tuple(dst.shape)} {dst.dtype}, the output is "
                f"{tuple(src.shape)} {src.dtype}"
            )

    def _asarray(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _execute(self, feeds: dict, first: bool) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _release(self) -> None:
        pass


class _Feeds:
    """What :func:`_owned` reads of a context: the feeds."""

    def __init__(self, feeds: Mapping[str, Any]) -> None:
        self.feeds = feeds


class NumpySession(Session):
    """The numpy backend's session: the program on the CPU; collectives through the world."""

    backend = "numpy"

    def __init__(self, network: Any, check: str = "once", agree: bool = True) -> None:
        super().__init__(network, check)
        self.program = Program(network)
        if agree:
            agree_once(network)

    def _asarray(self, x: Any) -> Any:
        return np.asarray(x)

    def _execute(self, feeds: dict, first: bool) -> dict:
        ctx = RunContext(self.network, feeds, self.network.world)
        with np.errstate(all="ignore"):
            return self.program.execute(ctx, check=first)


def compile_numpy(network: Any, **options: Any) -> NumpySession:
    """A numpy-backend session. Options: ``check`` ("once" or "always")."""
    unknown = sorted(set(options) - {"check"})
    if unknown:
        raise TypeError(f"numpy backend takes only the option 'check', got {unknown}")
    return NumpySession(network, **options)


def run_once(session_factory: Any, network: Any, feeds: Mapping[str, Any], asarray: Any) -> dict:
    """``Network.run``: feeds checked first (as before sessions), then compile, run, close."""
    checked = check_feeds(network, feeds, asarray)
    with session_factory() as s:
        return s.run(checked)
