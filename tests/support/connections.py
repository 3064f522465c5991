"""Thousands of connections at once: open them all, ping them all, close them all.

Each function drives every socket from one selector in this thread, in
batches small enough that the server's listen backlog never overflows, and
checks every reply; every wait has a deadline.  For the tests and soak runs
that hold 10,000 connections or churn through them.
"""

from __future__ import annotations

import selectors
import socket
import time

from tests.support.clients import REPLY


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
    """Close every socket and empty the list."""
    for sock in socks:
        sock.close()
    socks.clear()
