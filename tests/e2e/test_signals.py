"""End-to-end: SIGTERM and SIGINT (Ctrl-C) stop the real server without losing a reply.

A stop must send the replies that are due: every line whose record the
server wrote is answered before its connection closes, whether the reply
already reached the client or still waits in the server's buffers behind a
client that reads slowly.  These tests never race the signal: they wait until
the log holds the lines (the event that makes their replies due), then
signal, and only then read; what each client receives is compared, whole and
in order, with what the log holds for it.
"""

from __future__ import annotations

import fcntl
import re
import select
import signal
import socket
import struct
import termios
import time
from pathlib import Path

import pytest

from tests.support.clients import REPLY, LineClient
from tests.support.logfile import kinds, read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

_CONN = re.compile(rb" #(\d+) - ")


def _logged_with(log_path: Path, prefix: bytes) -> list[bytes]:
    """The logged messages that start with ``prefix``, in log order.

    Called while the server writes, too: a last line still being written
    (no newline yet) is not a record.
    """
    texts = []
    data = log_path.read_bytes()
    for record in data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]:
        if record.startswith(b"Message Received: "):
            text = record.split(b" - ", 2)[2]
            if text.startswith(prefix):
                texts.append(text)
    return texts


def _read_all(sock: socket.socket, timeout: float = 15.0) -> bytes:
    """Everything the server sends until it closes; a reset fails, saying how much came first."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except ConnectionResetError:
        received = b"".join(chunks)
        replies = received.count(b"\n")
        raise AssertionError(
            f"connection reset after {len(received)} bytes ({replies} replies): "
            "the replies still in the server's buffers were thrown away"
        ) from None
    return b"".join(chunks)


def _slow_reader(address: tuple[str, int]) -> socket.socket:
    """A connection whose receive buffer holds only a few KiB: its replies back up in the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect, or it is ignored
    sock.connect(address)
    return sock


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_answers_every_line_it_logged(chatlog_server, signum: int) -> None:
    """A stop answers every logged line, its reply delivered or still in the server; Server Stopped last."""
    server = chatlog_server()
    # Pipelined lines whose replies all fit in the client's receive buffer.
    pipelined = [b"piped-%d" % i for i in range(2000)]
    reader = LineClient(server.address)
    reader.send(b"".join(m + b"\n" for m in pipelined))
    # Lines whose replies are larger than the client's receive buffer by far:
    # once the server has read them all, most replies are still in its own
    # buffers (the kernel's send queue, Twisted's write buffer).
    slow = _slow_reader(server.address)
    backed_up = [b"slow-%05d" % i for i in range(1500)]
    room = slow.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert sum(len(REPLY + m) + 1 for m in backed_up) > 4 * room
    slow.sendall(b"".join(m + b"\n" for m in backed_up))
    idle = LineClient(server.address)
    idle.round_trip(b"idle")
    # Every line read and logged: every reply is due, and the server holds no unread input.
    wait_until(
        lambda: (
            len(_logged_with(server.log_path, b"piped-")) == len(pipelined)
            and len(_logged_with(server.log_path, b"slow-")) == len(backed_up)
        ),
        10,
        "every line logged",
    )
    server.send_signal(signum)
    # Only now read: what arrives is what the stop delivered.
    pipelined_replies = reader.rest(timeout=15)
    slow_replies = _read_all(slow)
    idle_rest = idle.rest(timeout=15)
    for sock in (reader, idle, slow):
        sock.close()
    assert server.proc.wait(timeout=15) == -signum
    assert pipelined_replies.split(b"\n") == [REPLY + m for m in pipelined] + [b""]
    assert slow_replies.split(b"\n") == [REPLY + m for m in backed_up] + [b""]
    assert idle_rest == b"", "an idle client gets nothing but the close"
    records = read_records(server.log_path)
    assert _logged_with(server.log_path, b"piped-") == pipelined
    assert _logged_with(server.log_path, b"slow-") == backed_up
    assert records[-1].startswith(b"Server Stopped: "), records[-1]
    assert kinds(records).count(b"Server Stopped") == 1


def _unsent(sock: socket.socket) -> int:
    """Bytes in ``sock``'s send queue that the peer has not taken in yet (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]


def _flood_until_refused(sock: socket.socket, queued: int) -> list[bytes]:
    """Send numbered lines, reading nothing, until ``queued`` bytes wait unaccepted; the lines sent.

    The server stops reading a client that does not read its replies; from
    then on what we send waits in our send queue and its receive queue.
    """
    sock.setblocking(False)
    sent: list[bytes] = []
    pending = b""
    deadline = time.monotonic() + 20
    while True:
        if not pending:
            batch = [b"flood-%07d" % n for n in range(len(sent), len(sent) + 2000)]
            sent += batch
            pending = b"".join(line + b"\n" for line in batch)
        try:
            pending = pending[sock.send(pending) :]
            continue
        except BlockingIOError:
            pass
        if _unsent(sock) >= queued:
            return sent[: len(sent) - pending.count(b"\n")]
        assert time.monotonic() < deadline, f"the server took in all but {_unsent(sock)} bytes"
        select.select([], [sock], [], 0.05)


def test_stop_answers_a_client_it_had_stopped_reading(chatlog_server) -> None:
    """A client that sent far more than it read: at a stop, every logged line is still answered."""
    server = chatlog_server()
    flooder = _slow_reader(server.address)
    # A megabyte the server has not taken in: it stopped reading us (its
    # replies backed up), and cannot read that much in the moment the signal
    # takes to arrive, so input is left unread when it closes.
    sent = _flood_until_refused(flooder, 1 << 20)
    server.send_signal(signal.SIGTERM)
    replies = _read_all(flooder)
    flooder.close()
    closed_at = time.monotonic()
    assert server.proc.wait(timeout=15) == -signal.SIGTERM
    # It read on to our end of stream, rather than wait out the grace (2 s) and reset us.
    exited_after = time.monotonic() - closed_at
    assert exited_after < 1.0, f"the server exited {exited_after:.2f} s after the client closed"
    logged = _logged_with(server.log_path, b"flood-")
    assert 0 < len(logged) < len(sent)
    assert logged == sent[: len(logged)], "the server logged other lines than those sent"
    answered = replies.split(b"\n")
    assert answered == [REPLY + m for m in logged] + [b""], (
        f"{len(logged)} lines logged, {len(answered) - 1} answered"
    )


def test_stop_records_every_open_connection_closed(chatlog_server) -> None:
    """Connections open at a stop each get a Disconnection record ('closed') before Server Stopped."""
    server = chatlog_server()
    clients = [LineClient(server.address) for _ in range(3)]
    for i, client in enumerate(clients):
        client.round_trip(b"open-%d" % i)
    assert server.stop() == -signal.SIGTERM
    for client in clients:
        client.close()
    records = server.records()
    assert records[-1].startswith(b"Server Stopped: ")
    connected = [_CONN.search(r).group(1) for r in records if r.startswith(b"Connection: ")]
    closed = [
        _CONN.search(r).group(1)
        for r in records
        if r.startswith(b"Disconnection: ") and b" - closed, " in r
    ]
    assert len(connected) == 3 and sorted(closed) == sorted(connected), records
