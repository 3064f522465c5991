"""Blocking loopback clients of the line server, with a deadline on every read.

:class:`LineClient` is one connection that reads whole replies (``Server
received: ...``) or the error lines; the functions are the odds and ends the
end-to-end tests share on plain sockets.  A server that never answers makes a
test fail with what it did receive, never hang.
"""

from __future__ import annotations

import socket
import time

#: What every reply line starts with, followed by the line's bytes.
REPLY = b"Server received: "


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (the socket's own timeout bounds each read)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def free_port() -> int:
    """A loopback port nothing listens on (free when asked; the kernel may give it out again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
        """Read once into ``buffer`` (``eof`` on close); TimeoutError once ``deadline`` passed."""
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
        """The next ``count`` lines, without their ``\\n``; EOFError if the server closed first."""
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
