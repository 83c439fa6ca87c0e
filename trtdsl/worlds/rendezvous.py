"""``SocketWorld``: ranks that meet over TCP at ``MASTER_ADDR:MASTER_PORT`` (no MPI).

Rank 0 listens on exactly the address given; every other rank connects to it and presents the
job's token; a connection with a wrong token (or a bad message) is refused with a clear error
and rank 0 keeps waiting for the real ranks. The topology is a star: an exchange gathers every
rank's object on rank 0, which sends all of them back. Rank 0 also relays failure notices at
once: a rank that raises (see :class:`~trtdsl.worlds.wire.ChannelWorld`), dies (its connection
closes without a goodbye) or does not arrive within ``timeout`` is named to every other rank,
which stops with RankFailedError instead of waiting.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any

from ..errors import ExecutionError, RankFailedError
from .notices import emit
from .wire import HEADER, ChannelWorld, WireError, WrongTokenError, body_length, pack, unpack


class RendezvousError(ExecutionError):
    """The ranks could not meet: rank 0 unreachable, a refused connection, a rank missing."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_body(sock: socket.socket) -> bytes:
    """The body of one framed message from ``sock`` (blocking, under the socket's own
    timeout; the length is checked before the body is read); EOFError when the peer closed
    the connection first."""
    return _recv_exact(sock, body_length(_recv_exact(sock, HEADER.size)))


def read_message(sock: socket.socket, token: str | None) -> dict:
    """One framed message from ``sock`` stamped with ``token`` (see :func:`read_body`)."""
    return unpack(read_body(sock), token)


class _Peer:
    """One connection and its send lock."""

    def __init__(self, rank: int, sock: socket.socket) -> None:
        self.rank, self.sock, self.lock = rank, sock, threading.Lock()
        self.said_bye = False

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)


class SocketWorld(ChannelWorld):
    """One rank of a job whose ranks meet over TCP at ``addr:port`` (rank 0 listens there).

    ``timeout`` bounds the rendezvous and every exchange. ``local_rank`` is the rank on this
    node (the GPU to use). Made by :func:`~trtdsl.worlds.world_from_env` under torchrun, srun
    or a hand-made environment; ``close()`` (also at exit) says goodbye to the others.

    >>> w = SocketWorld(0, 1, "127.0.0.1", 0, token="t")  # a 1-rank world needs no socket
    >>> w.exchange({"a": 1}, "step")
    [{'a': 1}]
    """

    launcher = "tcp"

    def __init__(
        self,
        rank: int,
        size: int,
        addr: str,
        port: int,
        token: str,
        timeout: float = 120.0,
        local_rank: int | None = None,
        notify_on_exception: bool = True,
    ) -> None:
        super().__init__(rank, size, token, timeout, local_rank, notify_on_exception)
        self.addr, self.port = addr, int(port)
        self._events: queue.Queue = queue.Queue()
        self._peers: dict[int, _Peer] = {}
        self._gone: dict[int, str] = {}  # rank -> why it is gone ("raised ...", "died ...")
        self._seq = 0
        self._closing = False
        self._gone_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        if size == 1:
            return
        if rank == 0:
            self._serve()
        else:
            self._connect()
        for peer in self._peers.values():
            t = threading.Thread(
                target=self._read_loop, args=(peer,), name=f"trtdsl-recv-{peer.rank}", daemon=True
            )
            t.start()
            self._threads.append(t)
        import atexit

        atexit.register(self.close)

    # -- rendezvous
    def _where(self) -> str:
        return f"{self.addr}:{self.port}"

    def _serve(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            server = socket.create_server((self.addr, self.port), backlog=max(16, self.size))
        except OSError as e:
            raise RendezvousError(
                f"rank 0 cannot listen on {self._where()} ({e}); set MASTER_ADDR to this host's "
                "address and MASTER_PORT (or TRTDSL_PORT) to a free port"
            ) from None
        server.settimeout(0.2)
        try:
            while len(self._peers) < self.size - 1:
                if time.monotonic() > deadline:
                    missing = [r for r in range(1, self.size) if r not in self._peers]
                    who = f"rank {missing[0]}" if len(missing) == 1 else f"ranks {missing}"
                    text = (
                        f"rank 0 waited more than {self.timeout:g} s at {self._where()} for the "
                        f"other ranks: {who} did not connect (not started, a different "
                        "MASTER_ADDR/MASTER_PORT or job token, or it failed before connecting)"
                    )
                    notice = f"did not connect to {self._where()} within {self.timeout:g} s"
                    for peer in self._peers.values():
                        self._send_quietly(
                            peer, {"kind": "failed", "rank": missing[0], "message": notice}
                        )
                        peer.sock.close()
                    raise RendezvousError(text)
                try:
                    conn, addr = server.accept()
                except TimeoutError:
                    continue
                self._admit(conn, addr, deadline)
        finally:
            server.close()
        for peer in self._peers.values():
            peer.send(pack({"kind": "ready"}, self.token))

    def _admit(self, conn: socket.socket, addr: Any, deadline: float) -> None:
        conn.settimeout(max(0.5, min(5.0, deadline - time.monotonic())))
        try:
            hello = read_message(conn, self.token)
            r, n = hello.get("rank"), hello.get("size")
            if hello["kind"] != "hello" or not isinstance(r, int) or not isinstance(n, int):
                raise WireError("expected a hello message with 'rank' and 'size'")
            if n != self.size:
                raise WireError(f"it says the world size is {n}, rank 0 has {self.size}")
            if not 0 < r < self.size or r in self._peers:
                raise WireError(f"rank {r} is not free (world size {self.size})")
        except (WireError, EOFError, OSError) as e:
            reason = "closed the connection" if isinstance(e, EOFError) else str(e)
            if isinstance(e, WrongTokenError):
                reason = "wrong job token (TRTDSL_JOB_TOKEN differs, or not a rank of this job)"
            emit(f"[trtdsl] rank 0 refused a connection from {addr[0]}:{addr[1]}: {reason}\n")
            try:
                conn.sendall(pack({"kind": "refused", "reason": reason}, None))
            except OSError:
                pass
            conn.close()
            return
        conn.settimeout(None)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[r] = _Peer(r, conn)

    def _connect(self) -> None:
        deadline = time.monotonic() + self.timeout
        sock = None
        last: Exception | None = None
        while sock is None:
            try:
                sock = socket.create_connection(
                    (self.addr, self.port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))
                )
            except OSError as e:
                last = e
                if time.monotonic() > deadline:
                    raise RendezvousError(
                        f"rank {self.rank} could not reach rank 0 at {self._where()} within "
                        f"{self.timeout:g} s ({last}): rank 0 not started or failed, or a "
                        "different MASTER_ADDR/MASTER_PORT"
                    ) from None
                time.sleep(0.05)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(pack({"kind": "hello", "rank": self.rank, "size": self.size}, self.token))
        sock.settimeout(max(0.1, deadline - time.monotonic()) + 2.0)
        try:
            body = read_body(sock)
        except TimeoutError:
            sock.close()
            raise RendezvousError(
                f"rank {self.rank} connected to rank 0 at {self._where()} but the other ranks "
                f"did not all arrive within {self.timeout:g} s"
            ) from None
        except (EOFError, OSError, WireError) as e:
            sock.close()
            raise RendezvousError(
                f"rank {self.rank}: rank 0 at {self._where()} closed the connection during the "
                f"rendezvous ({type(e).__name__}: {e})"
            ) from None
        try:
            reply = unpack(body, self.token)
        except WrongTokenError:
            reply = unpack(body, None, accept_any_token=True)  # only a refusal is unstamped
            sock.close()
            if reply["kind"] != "refused":
                raise
            raise RendezvousError(
                f"rank {self.rank}: rank 0 at {self._where()} refused the connection: "
                f"{reply.get('reason')}"
            ) from None
        if reply["kind"] not in ("ready", "failed"):
            sock.close()
            raise RendezvousError(f"rank {self.rank}: unexpected reply {reply['kind']!r}")
        if reply["kind"] == "failed":
            sock.close()
            raise RendezvousError(
                f"rank {self.rank} stopped at the rendezvous: rank {reply['rank']} "
                f"{reply['message']}"
            )
        sock.settimeout(None)
        self._peers[0] = _Peer(0, sock)

    # -- receiving (one thread per connection)
    def _read_loop(self, peer: _Peer) -> None:
        while True:
            try:
                msg = read_message(peer.sock, self.token)
            except (EOFError, OSError):
                self._lost(peer)
                return
            except WireError as e:
                self._lost(peer, f"sent a bad message ({e})")
                return
            kind = msg["kind"]
            if kind == "bye":
                peer.said_bye = True
                continue
            if kind == "failed":
                r = msg.get("rank")
                if isinstance(r, int):
                    self._record(r, str(msg.get("message")), skip=(peer.rank, r))
            self._events.put((peer.rank, msg))

    def _lost(self, peer: _Peer, why: str | None = None) -> None:
        if self.closed or self._closing:
            return
        if why is None:
            why = (
                "already finished (left the world) while others still wait for it"
                if peer.said_bye
                else "died: its connection closed without a failure notice (the process "
                "exited or was killed)"
            )
        self._record(peer.rank, why, skip=(peer.rank,))
        self._events.put((peer.rank, {"kind": "lost"}))

    def _record(self, rank: int, why: str, skip: tuple) -> None:
        """Remember the first reason rank ``rank`` is gone; rank 0 relays it to the others
        first (this rank may stop, and leave, as soon as it is recorded). One at a time, so the
        first failure stays first everywhere."""
        with self._gone_lock:
            if rank in self._gone:
                return
            if self.rank == 0:
                self._broadcast({"kind": "failed", "rank": rank, "message": why}, skip)
            self._gone[rank] = why

    def _broadcast(self, msg: dict, skip: tuple = ()) -> None:
        for r, p in list(self._peers.items()):
            if r not in skip:
                self._send_quietly(p, msg)

    def _send_quietly(self, peer: _Peer, msg: dict) -> None:
        try:
            peer.send(pack(msg, self.token))
        except OSError:
            pass

    # -- exchanges
    def _stop(self, what: str) -> RankFailedError | None:
        if not self._gone:
            return None
        r = next(iter(self._gone))  # the first failure heard of
        return self._fail(f"rank {self.rank} stopped waiting at {what}: rank {r} {self._gone[r]}")

    def _gather(self, item: Any, what: str) -> list[Any]:
        __tracebackhide__ = True
        self._seq += 1
        seq = self._seq
        if self.rank == 0:
            return self._gather_root(item, what, seq)
        err = self._stop(what)
        if err:
            raise err
        try:
            self._peers[0].send(pack({"kind": "x", "seq": seq, "item": item}, self.token))
        except OSError:
            raise self._fail(
                f"rank {self.rank} could not send {what} to rank 0: its connection is closed "
                "(rank 0 died or left)"
            ) from None
        # rank 0 reports a missing rank after `timeout`; wait a little longer for its report
        deadline = time.monotonic() + self.timeout + min(5.0, 0.25 * self.timeout) + 0.5
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(
                    f"rank {self.rank} waited more than {self.timeout:g} s at {what}: rank 0 "
                    f"at {self._where()} did not answer (it hangs, or runs a different "
                    "sequence of collectives)"
                )
            try:
                _, msg = self._events.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if msg["kind"] == "result" and msg.get("seq") == seq:
                items = msg.get("items")
                if not isinstance(items, list) or len(items) != self.size:
                    raise self._fail(f"rank {self.rank}: bad result from rank 0 at {what}")
                return items
            err = self._stop(what)
            if err:
                raise err

    def _gather_root(self, item: Any, what: str, seq: int) -> list[Any]:
        __tracebackhide__ = True
        items: dict[int, Any] = {0: item}
        deadline = time.monotonic() + self.timeout
        while len(items) < self.size:
            err = self._stop(what)
            if err:
                raise err
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [r for r in range(self.size) if r not in items]
                who = f"rank {missing[0]}" if len(missing) == 1 else f"ranks {missing}"
                for r in missing:
                    self._gone.setdefault(
                        r,
                        f"did not get to {what} within {self.timeout:g} s (it hangs, or runs a "
                        "different sequence of collectives)",
                    )
                self._broadcast(
                    {"kind": "failed", "rank": missing[0], "message": self._gone[missing[0]]},
                    skip=tuple(missing),
                )
                raise self._fail(
                    f"rank 0 waited more than {self.timeout:g} s at {what}: {who} did not get "
                    "there (it hangs, or runs a different sequence of collectives)"
                )
            try:
                src, msg = self._events.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if msg["kind"] == "x":
                if msg.get("seq") != seq or src in items:
                    self._gone.setdefault(
                        src,
                        f"is out of step (exchange #{msg.get('seq')} while rank 0 is at #{seq})",
                    )
                    continue
                items[src] = msg.get("item")
        result = pack(
            {"kind": "result", "seq": seq, "items": [items[r] for r in range(self.size)]},
            self.token,
        )
        with self._gone_lock:  # a relayed failure must not overtake this result anywhere
            for p in self._peers.values():
                try:
                    p.send(result)
                except OSError:
                    pass  # its reader thread reports the lost connection
        return [items[r] for r in range(self.size)]

    # -- notices and shutdown
    def _send_notice(self, message: str) -> None:
        self._gone.setdefault(self.rank, message)
        self._broadcast({"kind": "failed", "rank": self.rank, "message": message})

    def _shutdown(self) -> None:
        if self.size == 1:
            return
        self._closing = True
        self._broadcast({"kind": "bye"})
        for p in self._peers.values():
            try:
                p.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        # wait briefly for the others' goodbyes, so nothing in flight is cut off
        deadline = time.monotonic() + (0.2 if self.broken else 2.0)  # broken: others are gone
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for p in self._peers.values():
            p.sock.close()
