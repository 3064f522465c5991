"""End-to-end: the installed twistd plugin serves, logs and stops cleanly."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.support.clients import read_to_eof
from tests.support.logfile import kinds


@pytest.mark.e2e
def test_reply_and_log_then_sigterm(chatlog_server) -> None:
    """Lines are answered in order, logged once each, and SIGTERM writes Server Stopped."""
    server = chatlog_server()
    with server.connect() as sock:
        sock.sendall(b"Hello, Server!\nsecond\r\n")
        sock.shutdown(socket.SHUT_WR)
        replies = read_to_eof(sock)
    assert replies == b"Server received: Hello, Server!\nServer received: second\n"
    # After a clean shutdown twistd ends itself with the signal it received.
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM
    records = server.records()
    assert kinds(records) == [
        b"Server Started",
        b"Connection",
        b"Message Received",
        b"Message Received",
        b"Disconnection",
        b"Server Stopped",
    ]
    assert records[2].endswith(b" #1 - Hello, Server!")
    assert records[3].endswith(b" #1 - second")
    assert b"clean, 2 messages" in records[4]
