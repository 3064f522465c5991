"""Load from threads of this process: a closed-loop pipelined :class:`Load`, and floods.

:class:`Load` keeps many connections busy with unique messages and records
which were acknowledged, so a test can check each acknowledged message against
the log.  :func:`flood` sends one chunk over and over (reading the replies or
not); :func:`flood_until_blocked` sends without reading until the server stops
reading (backpressure).  Non-blocking sockets and ``select``, so a stalled
server ends a run at its deadline instead of hanging it.
"""

from __future__ import annotations

import collections
import contextlib
import select
import selectors
import socket
import threading
import time
from typing import Any

from tests.support.clients import REPLY
from tests.support.waiting import wait_until


class _Conn:
    """One connection of a :class:`Load`: its lines in flight, its buffers, how many it sent."""

    __slots__ = ("index", "sock", "inflight", "outbuf", "inbuf", "sent", "open")

    def __init__(self, index: int, sock: socket.socket) -> None:
        self.index = index
        self.sock = sock
        self.inflight: collections.deque[bytes] = collections.deque()
        self.outbuf = b""
        self.inbuf = b""
        self.sent = 0
        self.open = True


class Load(threading.Thread):
    """Closed-loop load in a thread: ``connections`` sockets, ``pipeline`` lines in flight each.

    Each message is unique (``TAG-cCONN-mSEQ``).  ``acked`` lists every message
    whose ``Server received`` reply arrived, in arrival order; ``errors`` the
    messages answered with an ``ERROR`` line.  ``stop()`` ends sending; the
    thread ends once every line in flight is answered, or its connection is
    closed, or ``drain_timeout`` passed.
    """

    def __init__(
        self,
        address: tuple[str, int],
        connections: int,
        messages: int | None = None,
        pipeline: int = 1,
        tag: str = "load",
        size: int = 0,
        drain_timeout: float = 10.0,
    ) -> None:
        super().__init__(daemon=True, name=f"load-{tag}")
        self.address = address
        self.messages = messages
        self.pipeline = pipeline
        self.tag = tag.encode()
        self.pad = b"-" + b"p" * size if size else b""
        self.drain_timeout = drain_timeout
        self.acked: list[bytes] = []
        self.errors: list[bytes] = []
        self.unexpected: list[bytes] = []
        self.failure: BaseException | None = None
        self._stopping = threading.Event()
        self.conns: list[_Conn] = []
        for index in range(connections):
            sock = socket.create_connection(address, timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self.conns.append(_Conn(index, sock))

    def stop(self) -> None:
        self._stopping.set()

    def finish(self, timeout: float = 15.0) -> None:
        """Stop sending, wait for the thread; re-raise what went wrong in it."""
        self.stop()
        self.join(timeout)
        assert not self.is_alive(), "load thread did not finish"
        if self.failure is not None:
            raise self.failure
        assert not self.unexpected, f"unexpected replies: {self.unexpected[:5]!r}"

    def wait_acked(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` messages in all are acknowledged; re-raise what broke the thread."""
        wait_until(
            lambda: len(self.acked) >= count or self.failure or not self.is_alive(),
            timeout,
            f"{count} acknowledged messages (have {len(self.acked)})",
        )
        if self.failure is not None:
            raise self.failure
        assert len(self.acked) >= count, f"load ended with {len(self.acked)} of {count} acks"

    def _refill(self, conn: _Conn) -> None:
        if self._stopping.is_set() or not conn.open:
            return
        while len(conn.inflight) < self.pipeline and (
            self.messages is None or conn.sent < self.messages
        ):
            conn.sent += 1
            message = b"%s-c%d-m%d%s" % (self.tag, conn.index, conn.sent, self.pad)
            conn.inflight.append(message)
            conn.outbuf += message + b"\n"

    def _close(self, conn: _Conn, selector: selectors.BaseSelector) -> None:
        if conn.open:
            conn.open = False
            selector.unregister(conn.sock)
            conn.sock.close()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # reported by finish()
            self.failure = error
        finally:
            for conn in self.conns:
                conn.sock.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for conn in self.conns:
            self._refill(conn)
            selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        drain_deadline: float | None = None
        while True:
            live = [c for c in self.conns if c.open and (c.inflight or not self._stopping.is_set())]
            if self.messages is not None:
                live = [c for c in live if c.inflight or c.sent < self.messages]
            if not live:
                return
            if self._stopping.is_set():
                if drain_deadline is None:
                    drain_deadline = time.monotonic() + self.drain_timeout
                elif time.monotonic() > drain_deadline:
                    return
            for key, events in selector.select(0.05):
                conn = key.data
                if events & selectors.EVENT_READ:
                    try:
                        chunk = conn.sock.recv(262144)
                    except BlockingIOError:
                        chunk = None
                    except OSError:
                        chunk = b""
                    if chunk == b"":
                        self._close(conn, selector)
                        continue
                    if chunk:
                        self._received(conn, chunk)
                if conn.open and events & selectors.EVENT_WRITE and conn.outbuf:
                    try:
                        sent = conn.sock.send(conn.outbuf)
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        self._close(conn, selector)
                        continue
                    conn.outbuf = conn.outbuf[sent:]
                if conn.open:
                    self._refill(conn)
                    wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
                    if key.events != wanted:
                        selector.modify(conn.sock, wanted, conn)

    def _received(self, conn: _Conn, chunk: bytes) -> None:
        conn.inbuf += chunk
        *lines, conn.inbuf = conn.inbuf.split(b"\n")
        for line in lines:
            if not conn.inflight:
                self.unexpected.append(line)
                continue
            message = conn.inflight.popleft()
            if line == REPLY + message:
                self.acked.append(message)
            elif line.startswith(b"ERROR "):
                self.errors.append(message)
            else:
                self.unexpected.append(line)


def flood(
    sock: socket.socket, chunk: bytes, total: int, seconds: float, read: bool, out: dict[str, Any]
) -> None:
    """Send ``chunk`` repeatedly (up to ``total`` bytes or ``seconds``); read replies if asked.

    Progress goes into ``out`` as it happens (``sent`` bytes, ``replies``
    lines, ``done`` at the end); setting ``out["stop"]`` ends the flood early.
    Meant to run in a thread.
    """
    sock.setblocking(False)
    sent = replies = 0
    deadline = time.monotonic() + seconds
    view = memoryview(chunk)
    offset = 0
    while sent < total and time.monotonic() < deadline and not out.get("stop"):
        readable, writable, _ = select.select([sock] if read else [], [sock], [], 0.05)
        if readable:
            data = sock.recv(1 << 20)
            if not data:
                break
            replies += data.count(b"\n")
            out["replies"] = replies
        if writable:
            try:
                n = sock.send(view[offset:])
            except BlockingIOError:
                n = 0
            sent += n
            offset = (offset + n) % len(chunk)
            out["sent"] = sent
    out["done"] = True


def flood_until_blocked(sock: socket.socket, seconds: float = 5.0) -> int:
    """Send without reading until the server stops reading us (backpressure holds); bytes sent."""
    sock.setblocking(False)
    chunk = b"z" * 63 + b"\n"
    chunk *= 1024
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], 0.3)
        if not writable:
            return sent  # blocked for 0.3 s: the server paused reading
        with contextlib.suppress(BlockingIOError):
            sent += sock.send(chunk)
    raise AssertionError(f"the server kept reading a client that reads nothing ({sent} bytes)")
