"""``FileWorld``: ranks that meet through files, as TensorRT's sample does with
``TRT_NCCL_ID_FILE`` (one node, or several sharing a file system).

Rank 0 starts a session by writing ``TRT_NCCL_ID_FILE`` atomically (a temporary file, then
``os.replace``); the other ranks wait for it (at most ``timeout`` seconds) and answer with a
file each. Every message is then a file in the directory ``<TRT_NCCL_ID_FILE>.trtdsl`` written
the same way, in the framing of :mod:`trtdsl.worlds.wire` (plain JSON, the job's token, a size
limit); an exchange writes this rank's file and waits for every other rank's. A rank that
raises writes a failure notice that waiting ranks see; a rank that finished writes a goodbye; a
rank that does not arrive is named when the wait times out. Rank 0 removes the files at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from ..atomic_file import write_atomically
from .rendezvous import RendezvousError
from .wire import HEADER, ChannelWorld, WireError, WrongTokenError, body_length, pack, unpack


def read_file_message(path: Path, token: str) -> dict | None:
    """The message in ``path``, or None if there is no such file yet or it belongs to another
    job (another token); WireError if it is malformed or over the size limit."""
    try:
        with open(path, "rb") as f:
            header = f.read(HEADER.size)
            if len(header) < HEADER.size:
                return None
            n = body_length(header)
            body = f.read(n + 1)
    except FileNotFoundError:
        return None
    if len(body) != n:
        raise WireError(f"{path}: the file does not hold one whole message")
    try:
        return unpack(body, token)
    except WrongTokenError:
        return None  # another job's (stale) file
    except WireError as e:
        raise WireError(f"{path}: {e}") from None


class _Poll:
    """Back-off sleeps for polling files: short at first, 20 ms later."""

    def __init__(self) -> None:
        self.delay = 0.0005

    def sleep(self) -> None:
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.02)


class FileWorld(ChannelWorld):
    """One rank of a job whose ranks meet through files beside ``id_file``
    (``TRT_NCCL_ID_FILE``). ``timeout`` bounds the rendezvous and every exchange.

    >>> FileWorld(0, 1, "/nonexistent/id", token="t").exchange(3, "step")
    [3]
    """

    launcher = "file"

    def __init__(
        self,
        rank: int,
        size: int,
        id_file: str | os.PathLike,
        token: str,
        timeout: float = 120.0,
        local_rank: int | None = None,
        notify_on_exception: bool = True,
    ) -> None:
        super().__init__(rank, size, token, timeout, local_rank, notify_on_exception)
        self.id_file = Path(id_file)
        self.dir = self.id_file.with_name(self.id_file.name + ".trtdsl")
        self._seq = 0
        self.nonce = ""
        if size == 1:
            return
        if rank == 0:
            self._start_session()
        else:
            self._join_session()
        import atexit

        atexit.register(self.close)

    def _path(self, kind: str, *parts: Any) -> Path:
        return self.dir / ".".join([kind, self.nonce, *map(str, parts)])

    def _write(self, path: Path, msg: dict) -> None:
        write_atomically(path, pack(msg, self.token))

    # -- rendezvous
    def _start_session(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.iterdir():  # an earlier job's leftovers
            try:
                old.unlink()
            except OSError:
                pass
        self.nonce = secrets.token_hex(8)
        msg = {"kind": "session", "nonce": self.nonce, "size": self.size}
        write_atomically(self.id_file, pack(msg, self.token))
        deadline = time.monotonic() + self.timeout
        poll = _Poll()
        while True:
            missing = [r for r in range(1, self.size) if not self._path("hello", r).exists()]
            if not missing:
                break
            if time.monotonic() > deadline:
                self._write(
                    self._path("failed", 0),
                    {"kind": "failed", "rank": missing[0], "message": "did not arrive"},
                )
                who = f"rank {missing[0]}" if len(missing) == 1 else f"ranks {missing}"
                raise RendezvousError(
                    f"rank 0 waited more than {self.timeout:g} s for the other ranks at "
                    f"{self.id_file}: {who} did not arrive (not started, a different "
                    "TRT_NCCL_ID_FILE or job token, or it failed first)"
                )
            poll.sleep()
        self._write(self._path("ready"), {"kind": "ready"})

    def _join_session(self) -> None:
        # rank 0 names a missing rank after `timeout`: wait a little longer for its report
        deadline = time.monotonic() + self.timeout + min(5.0, 0.25 * self.timeout) + 0.5
        poll = _Poll()
        while True:
            msg = read_file_message(self.id_file, self.token)
            if msg and msg["kind"] == "session" and msg.get("size") == self.size:
                nonce = str(msg.get("nonce"))
                if nonce != self.nonce:  # a new session (the file may have been stale)
                    self.nonce = nonce
                    try:
                        self._write(self._path("hello", self.rank), {"kind": "hello"})
                    except FileNotFoundError:
                        self.nonce = ""  # the directory is being cleaned up: retry
                if self.nonce and self._path("ready").exists():
                    return
                failed = read_file_message(self._path("failed", 0), self.token)
                if failed:
                    raise RendezvousError(
                        f"rank {self.rank} stopped at the rendezvous: rank {failed['rank']} "
                        f"{failed['message']}"
                    )
            if time.monotonic() > deadline:
                raise RendezvousError(
                    f"rank {self.rank} waited more than {self.timeout:g} s for rank 0 at "
                    f"{self.id_file}: "
                    + (
                        "rank 0 did not write it (not started, or failed)"
                        if not self.nonce
                        else "not every rank arrived (missing: "
                        + ", ".join(
                            f"rank {r}"
                            for r in range(1, self.size)
                            if not self._path("hello", r).exists()
                        )
                        + ")"
                    )
                )
            poll.sleep()

    # -- exchanges
    def _stop(self, what: str, ranks: list[int]) -> Exception | None:
        """RankFailedError if one of ``ranks`` sent a failure notice (first) or left."""
        for r in ranks:
            msg = read_file_message(self._path("failed", r), self.token)
            if msg:
                return self._fail(
                    f"rank {self.rank} stopped waiting at {what}: rank {r} {msg.get('message')}"
                )
        for r in ranks:
            if self._path("bye", r).exists():
                return self._fail(
                    f"rank {self.rank} stopped waiting at {what}: rank {r} already finished "
                    "(left the world) while others still wait for it"
                )
        return None

    def _gather(self, item: Any, what: str) -> list[Any]:
        __tracebackhide__ = True
        self._seq += 1
        seq = self._seq
        others = [r for r in range(self.size) if r != self.rank]
        err = self._stop(what, others)
        if err:
            raise err
        self._write(self._path("x", seq, self.rank), {"kind": "x", "item": item})
        items: dict[int, Any] = {self.rank: item}
        deadline = time.monotonic() + self.timeout
        poll = _Poll()
        checked = time.monotonic()
        while len(items) < self.size:
            for r in others:
                if r not in items:
                    msg = read_file_message(self._path("x", seq, r), self.token)
                    if msg is not None:
                        items[r] = msg.get("item")
            if len(items) == self.size:
                break
            missing = [r for r in others if r not in items]
            if time.monotonic() - checked > 0.02:
                checked = time.monotonic()
                err = self._stop(what, sorted(set(others)))
                if err:
                    raise err
            if time.monotonic() > deadline:
                who = f"rank {missing[0]}" if len(missing) == 1 else f"ranks {missing}"
                # a notice on behalf of the missing rank, so that every other rank names it
                notice = (
                    f"did not get to {what} within {self.timeout:g} s (it hangs, died, or runs "
                    "a different sequence of collectives)"
                )
                if not self._path("failed", missing[0]).exists():
                    self._write(
                        self._path("failed", missing[0]),
                        {"kind": "failed", "rank": missing[0], "message": notice},
                    )
                raise self._fail(
                    f"rank {self.rank} waited more than {self.timeout:g} s at {what}: {who} did "
                    "not get there (it hangs, died, or runs a different sequence of collectives)"
                )
            poll.sleep()
        if seq > 1:  # every rank has written seq, so all have read seq - 1
            self._path("x", seq - 1, self.rank).unlink(missing_ok=True)
        return [items[r] for r in range(self.size)]

    # -- notices and shutdown
    def _send_notice(self, message: str) -> None:
        msg = {"kind": "failed", "rank": self.rank, "message": message}
        self._write(self._path("failed", self.rank), msg)

    def _shutdown(self) -> None:
        if self.size == 1 or not self.nonce:
            return
        try:
            self._write(self._path("bye", self.rank), {"kind": "bye"})
        except OSError:
            return
        if self.rank != 0:
            return
        # rank 0 cleans up once every rank has said goodbye (or after a short wait)
        deadline = time.monotonic() + (0.2 if self.broken else 2.0)
        while not all(self._path("bye", r).exists() for r in range(self.size)):
            if time.monotonic() > deadline:  # a rank may still read the last exchange
                self.id_file.unlink(missing_ok=True)
                return
            time.sleep(0.01)
        self.id_file.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
