"""Clients and measurements for the end-to-end hardening tests and the soak script.

Everything here talks to a real server over loopback sockets and reads its
log as bytes split on ``b"\\n"``.  Every wait has a deadline: a server bug
makes a test fail with a message, never hang.
"""

from __future__ import annotations

import collections
import re
import resource
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REPLY = b"Server received: "
MESSAGE_HEAD = b"Message Received: "
_PID = re.compile(rb"^Server Started: .* pid (\d+),")


# -- the log ------------------------------------------------------------------


def read_records(path: Path) -> list[bytes]:
    """The log's records, split on ``\\n`` only; a torn last line is kept as the last item."""
    data = path.read_bytes()
    records = data.split(b"\n")
    if records and records[-1] == b"":
        records.pop()
    return records


def message_text(record: bytes) -> bytes | None:
    """The client text of a ``Message Received`` record (event format), else None."""
    if not record.startswith(MESSAGE_HEAD):
        return None
    # "Message Received: <time> - <ip>:<port> #<conn> - <text>": neither the
    # time nor the peer contains " - ", so the text is what follows the second.
    parts = record.split(b" - ", 2)
    return parts[2] if len(parts) == 3 else None


def logged_messages(*paths: Path) -> collections.Counter[bytes]:
    """How many times each message text appears in the given logs."""
    counts: collections.Counter[bytes] = collections.Counter()
    for path in paths:
        if not path.exists():
            continue
        for record in read_records(path):
            text = message_text(record)
            if text is not None:
                counts[text] += 1
    return counts


def kinds(records: Iterable[bytes]) -> list[bytes]:
    """The event name of each record (``b"Message Received"``, ``b"Timeout"``...)."""
    return [r.split(b":", 1)[0] for r in records]


def server_pid(log_path: Path, fallback: int) -> int:
    """The pid in the last ``Server Started`` record: the process that really serves.

    The fixture's process may be a wrapper (a shim script) rather than twistd
    itself; the server writes its own pid into the log.
    """
    pid = fallback
    for record in read_records(log_path):
        match = _PID.match(record)
        if match:
            pid = int(match.group(1))
    return pid


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` in ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.01
) -> object:
    """Poll ``condition`` until it returns something true, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "min": ordered[0],
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


# -- blocking clients ----------------------------------------------------------


class LineClient:
    """One blocking connection that reads whole lines, with a deadline on every read."""

    def __init__(
        self, address: tuple[str, int], timeout: float = 5.0, source: str | None = None
    ) -> None:
        self.sock = socket.create_connection(
            address, timeout=timeout, source_address=(source, 0) if source else None
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buffer = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no reply in time; have {self.buffer[-200:]!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(262144)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buffer += chunk

    def line(self, timeout: float | None = None) -> bytes:
        """The next line, without its ``\\n``; raises EOFError when the server closed."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\n" not in self.buffer:
            if self.eof:
                raise EOFError(f"connection closed; unfinished {self.buffer!r}")
            self.fill(deadline)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def lines(self, count: int, timeout: float | None = None) -> list[bytes]:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while self.buffer.count(b"\n") < count:
            if self.eof:
                have = self.buffer.count(b"\n")
                raise EOFError(f"connection closed after {have} of {count} lines")
            self.fill(deadline)
        *lines, self.buffer = self.buffer.split(b"\n", count)
        return lines

    def rest(self, timeout: float | None = None) -> bytes:
        """Everything until the server closes the connection."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.eof:
            self.fill(deadline)
        data, self.buffer = self.buffer, b""
        return data

    def round_trip(self, message: bytes) -> float:
        """Send one line, wait for its reply; the round trip in milliseconds."""
        started = time.perf_counter_ns()
        self.sock.sendall(message + b"\n")
        reply = self.line()
        elapsed = (time.perf_counter_ns() - started) / 1e6
        assert reply == REPLY + message, reply
        return elapsed

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- load ---------------------------------------------------------------------------


class _Conn:
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
        self.conns = []
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


# -- many connections -------------------------------------------------------------


def open_many(
    address: tuple[str, int], count: int, tag: str, batch: int = 500, timeout: float = 30.0
) -> list[socket.socket]:
    """Open ``count`` connections, each answered once (so the server surely accepted it).

    Connections are made ``batch`` at a time with non-blocking connects and
    one epoll selector, each sending ``TAG-N`` and waiting for its reply
    before the next batch starts, so the listen backlog never overflows.
    """
    deadline = time.monotonic() + timeout
    socks: list[socket.socket] = []
    with selectors.DefaultSelector() as selector:
        for start in range(0, count, batch):
            pending: dict[socket.socket, list] = {}
            for index in range(start, min(count, start + batch)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.connect_ex(address)
                expected = REPLY + b"%s-%d\n" % (tag.encode(), index)
                pending[sock] = [b"%s-%d\n" % (tag.encode(), index), expected, b""]
                selector.register(sock, selectors.EVENT_WRITE)
                socks.append(sock)
            while pending:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{len(pending)} of {count} connections not answered after {timeout} s "
                        f"({len(socks) - len(pending)} were)"
                    )
                for key, events in selector.select(0.1):
                    sock = key.fileobj
                    state = pending[sock]
                    if events & selectors.EVENT_WRITE:
                        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        assert error == 0, f"connect failed: {error}"
                        sock.send(state[0])
                        selector.modify(sock, selectors.EVENT_READ)
                        continue
                    chunk = sock.recv(4096)
                    assert chunk, f"connection closed before its reply: {state[2]!r}"
                    state[2] += chunk
                    if state[2].endswith(b"\n"):
                        assert state[2] == state[1], state[2]
                        selector.unregister(sock)
                        del pending[sock]
    return socks


def ping_all(socks: list[socket.socket], tag: str, timeout: float = 30.0) -> None:
    """Send one line on every connection at once and wait for every reply."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        pending: dict[socket.socket, list] = {}
        for index, sock in enumerate(socks):
            line = b"%s-%d\n" % (tag.encode(), index)
            sock.send(line)
            pending[sock] = [REPLY + line, b""]
            selector.register(sock, selectors.EVENT_READ)
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(pending)} of {len(socks)} replies missing after {timeout} s"
                )
            for key, _ in selector.select(0.1):
                sock = key.fileobj
                state = pending[sock]
                chunk = sock.recv(4096)
                assert chunk, "connection closed before its reply"
                state[1] += chunk
                if state[1].endswith(b"\n"):
                    assert state[1] == state[0], state[1]
                    selector.unregister(sock)
                    del pending[sock]


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()
    socks.clear()
