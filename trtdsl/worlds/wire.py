"""Plain-data messages between ranks without MPI, and the world that speaks them.

Nothing received is unpickled or evaluated: a message is a JSON object (UTF-8) after a 12-byte
header (``b"TDSL"`` and the body's length, big-endian), the length is checked against a maximum
before the body is read, and every message carries the job's token, compared in constant time.
Values are JSON with tags for what JSON lacks: tuples, dicts with non-string keys, bytes,
NumPy arrays and scalars (dtype, shape and base64 bytes; object arrays are refused).

>>> import numpy as np
>>> msg = {"kind": "x", "obj": (1, "a", None, b"\\x00", np.arange(3, dtype="float32"))}
>>> back = unpack(pack(msg, "tok")[HEADER.size:], "tok")
>>> back["obj"][:4], back["obj"][4].tolist()
((1, 'a', None, b'\\x00'), [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import struct
import sys
import threading
import traceback
import weakref
from typing import Any

import numpy as np

from ..errors import CollectiveMismatchError, ExecutionError, RankFailedError
from .base import World

MAGIC = b"TDSL"
HEADER = struct.Struct(">4sQ")
#: The largest message body accepted (bytes); ``TRTDSL_MAX_MESSAGE_BYTES`` overrides it.
MAX_MESSAGE_BYTES = int(os.environ.get("TRTDSL_MAX_MESSAGE_BYTES", str(1 << 30)))
_MAX_DEPTH = 64


class WireError(ExecutionError):
    """A message that cannot be sent or that was received malformed."""


class WrongTokenError(WireError):
    """A message (or connection) presenting another job's token."""


# -- values ---------------------------------------------------------------------------------
def _dtype_name(dt: np.dtype) -> str:
    if dt.kind in "biufc":
        return dt.str
    if dt.kind == "V" and dt.names is None and dt.name in _EXTRA_DTYPES:
        return dt.name  # ml_dtypes: bfloat16, float8_*
    raise WireError(f"cannot send arrays of dtype {dt} (plain numeric dtypes only)")


def _extra_dtypes() -> dict[str, np.dtype]:
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes is a dependency
        return {}
    names = ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    return {n: np.dtype(getattr(ml_dtypes, n)) for n in names if hasattr(ml_dtypes, n)}


_EXTRA_DTYPES = _extra_dtypes()


def _parse_dtype(name: Any) -> np.dtype:
    if not isinstance(name, str):
        raise WireError(f"bad dtype in message: {name!r}")
    if name in _EXTRA_DTYPES:
        return _EXTRA_DTYPES[name]
    if len(name) > 8 or name[:1] not in "<>|=" or name[1:2] not in tuple("biufc"):
        raise WireError(f"bad dtype in message: {name!r}")
    dt = np.dtype(name)
    if dt.kind not in "biufc":
        raise WireError(f"bad dtype in message: {name!r}")
    return dt


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(obj: Any, depth: int = 0) -> Any:
    """``obj`` as JSON-ready data; WireError for anything but plain data."""
    if depth > _MAX_DEPTH:
        raise WireError("cannot send data nested this deeply")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, list):
        return [encode(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return {"t": [encode(v, depth + 1) for v in obj]}
    if isinstance(obj, dict):
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in obj.items()]}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"b": _b64(bytes(obj))}
    if isinstance(obj, np.ndarray):
        a = obj if obj.flags.c_contiguous else obj.copy(order="C")  # keeps 0-d arrays 0-d
        return {"a": [_dtype_name(a.dtype), list(a.shape), _b64(a.tobytes())]}
    if isinstance(obj, np.generic):
        a = np.asarray(obj)
        return {"s": [_dtype_name(a.dtype), _b64(a.tobytes())]}
    raise WireError(f"cannot send a {type(obj).__name__} between ranks (plain data only)")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise WireError("bad bytes in message")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError as e:
        raise WireError(f"bad base64 in message: {e}") from None


def decode(data: Any, depth: int = 0) -> Any:
    """The inverse of :func:`encode`; WireError for anything it would not produce."""
    if depth > _MAX_DEPTH:
        raise WireError("message nested too deeply")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, depth + 1) for v in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise WireError(f"bad value in message: {str(data)[:80]}")
    ((tag, v),) = data.items()
    if tag == "t" and isinstance(v, list):
        return tuple(decode(x, depth + 1) for x in v)
    if tag == "d" and isinstance(v, list):
        out = {}
        for kv in v:
            if not isinstance(kv, list) or len(kv) != 2:
                raise WireError("bad dict in message")
            key = decode(kv[0], depth + 1)
            try:
                out[key] = decode(kv[1], depth + 1)
            except TypeError:
                raise WireError("bad dict key in message") from None
        return out
    if tag == "b":
        return _unb64(v)
    if tag == "a" and isinstance(v, list) and len(v) == 3:
        dt, shape, raw = _parse_dtype(v[0]), v[1], _unb64(v[2])
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise WireError(f"bad array shape in message: {shape!r}")
        if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != len(raw):
            raise WireError(f"array of shape {shape} {dt} does not match its {len(raw)} bytes")
        return np.frombuffer(raw, dt).reshape(tuple(shape)).copy()
    if tag == "s" and isinstance(v, list) and len(v) == 2:
        dt, raw = _parse_dtype(v[0]), _unb64(v[1])
        if len(raw) != dt.itemsize:
            raise WireError("bad scalar in message")
        return np.frombuffer(raw, dt)[0]
    raise WireError(f"bad value in message: {str(data)[:80]}")


# -- messages ---------------------------------------------------------------------------------
def pack(msg: dict[str, Any], token: str | None, limit: int | None = None) -> bytes:
    """Header + JSON body of ``msg`` (a dict of plain data) stamped with ``token``."""
    body = json.dumps(
        {"token": token, **{k: encode(v) for k, v in msg.items()}}, separators=(",", ":")
    ).encode()
    limit = MAX_MESSAGE_BYTES if limit is None else limit
    if len(body) > limit:
        raise WireError(
            f"message of {len(body)} bytes is over the limit of {limit} bytes "
            "(TRTDSL_MAX_MESSAGE_BYTES)"
        )
    return HEADER.pack(MAGIC, len(body)) + body


def body_length(header: bytes, limit: int | None = None) -> int:
    """The body length announced by a 12-byte ``header``; WireError if it is not ours or is
    over ``limit`` (checked before anything more is read)."""
    magic, n = HEADER.unpack(header)
    if magic != MAGIC:
        raise WireError(f"not a trtdsl message (it starts with {magic!r})")
    limit = MAX_MESSAGE_BYTES if limit is None else limit
    if n > limit:
        raise WireError(f"message of {n} bytes is over the limit of {limit} bytes")
    return n


def unpack(body: bytes, token: str | None, accept_any_token: bool = False) -> dict[str, Any]:
    """The message in ``body``; WireError if it is not valid JSON of ours, WrongTokenError if
    its token is not ``token`` (unless ``accept_any_token``)."""
    try:
        raw = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WireError(f"message is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        raise WireError("message is not a JSON object with a 'kind'")
    got = raw.pop("token", None)
    if not accept_any_token and not (
        isinstance(got, str)
        and isinstance(token, str)
        and hmac.compare_digest(got.encode(), token.encode())
    ):
        raise WrongTokenError(
            "message with a wrong job token (another job, or a stray connection): refused"
        )
    return {k: decode(v) for k, v in raw.items()}


# -- the world over a channel -----------------------------------------------------------------
_LIVE: weakref.WeakSet = weakref.WeakSet()
_HOOKED = False


def _install_failure_hook() -> None:
    """An uncaught exception sends a failure notice from every live channel world of this
    process before the usual traceback, so the other ranks stop instead of waiting."""
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        if not issubclass(kind, (KeyboardInterrupt, SystemExit)):
            for world in list(_LIVE):
                world._notify_uncaught(kind, value)
        previous(kind, value, tb)

    sys.excepthook = hook


class ChannelWorld(World):
    """A world whose ranks talk over a channel of plain-data messages (no MPI): the base of
    :class:`~trtdsl.worlds.SocketWorld` and :class:`~trtdsl.worlds.FileWorld`.

    ``exchange`` keeps MPIWorld's contract: every rank's object in rank order, ranks at
    different steps fail together (CollectiveMismatchError), a failure notice from another rank
    stops a waiting rank (RankFailedError naming that rank), and no wait is longer than
    ``timeout`` seconds. After a rank stopped waiting, the world is broken and later exchanges
    refuse to start. An uncaught exception sends a failure notice (``notify_on_exception``).
    """

    launcher = "?"

    def __init__(
        self,
        rank: int,
        size: int,
        token: str,
        timeout: float = 120.0,
        local_rank: int | None = None,
        notify_on_exception: bool = True,
    ) -> None:
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"need size >= 1 and 0 <= rank < size, got size={size} rank={rank}")
        if not token:
            raise ValueError("a channel world needs a non-empty job token")
        self.rank, self.size, self.token, self.timeout = rank, size, token, float(timeout)
        self.local_rank = rank if local_rank is None else local_rank
        self.broken: str | None = None
        self.closed = False
        self._notified = False
        self._lock = threading.Lock()
        if notify_on_exception:
            _LIVE.add(self)
            _install_failure_hook()

    # -- to implement
    def _gather(self, item: Any, what: str) -> list[Any]:
        """Every rank's ``item`` in rank order, or RankFailedError (after marking broken)."""
        raise NotImplementedError

    def _send_notice(self, message: str) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    # -- the World interface
    def exchange(self, obj: Any, what: str, key: Any = None) -> list[Any]:
        __tracebackhide__ = True
        if self.closed:
            raise ExecutionError(f"rank {self.rank} cannot start {what}: the world is closed")
        if self.broken:
            raise RankFailedError(
                f"rank {self.rank} cannot start {what}: this world is out of step after an "
                f"earlier failure ({self.broken})"
            )
        if self.size == 1:
            return [obj]
        tagged = self._gather(((what if key is None else key), what, obj), what)
        if len({repr(k) for k, _, _ in tagged}) > 1:
            lines = "; ".join(f"rank {r} at {w}" for r, (_, w, _) in enumerate(tagged))
            raise CollectiveMismatchError(f"rank {self.rank}: ranks are out of step: {lines}")
        return [o for _, _, o in tagged]

    def _fail(self, text: str) -> RankFailedError:
        if self.broken is None:
            self.broken = text
        return RankFailedError(text)

    def notify_failure(self, message: str) -> None:
        """Tell the other ranks that this one failed (``message`` completes "rank R ..."), so
        that ranks waiting for it stop with RankFailedError; sent at most once."""
        with self._lock:
            if self._notified or self.closed or self.size == 1:
                return
            self._notified = True
        try:
            self._send_notice(message)
        except Exception:  # noqa: BLE001 - best effort: the channel may be gone already
            pass

    def _notify_uncaught(self, kind: type, value: BaseException) -> None:
        if self.broken and isinstance(value, RankFailedError):
            return  # it stopped because of another rank: that rank's notice is out already
        text = "".join(traceback.format_exception_only(kind, value)).strip().splitlines()
        self.notify_failure(f"raised {text[-1] if text else kind.__name__}")

    def close(self) -> None:
        """Leave the world: tell the others this rank finished, release the channel."""
        if self.closed:
            return
        try:
            self._shutdown()
        finally:
            self.closed = True
            _LIVE.discard(self)

    def __enter__(self) -> ChannelWorld:
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if value is not None and not isinstance(value, (KeyboardInterrupt, SystemExit)):
            self._notify_uncaught(kind, value)
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, rank={self.rank})"
