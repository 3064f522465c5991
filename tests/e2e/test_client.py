"""End-to-end: ``python -m chatlog.client`` against the real ``twistd chatlog``.

The client runs as a subprocess, as a user runs it.  Its figures are checked
against an independent instrument, :mod:`tests.support.delayproxy`, which holds every
reply a known time (the p50 must show it) or stalls once (the p99 of an
open-loop run must show it).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatlog.client.load import MESSAGE_ID
from tests.support.certs import self_signed
from tests.support.clients import free_port
from tests.support.delayproxy import delay_proxy
from tests.support.twistd import ROOT, server_env

pytestmark = pytest.mark.e2e

REPLY_LINE = re.compile(rb"^Server received: (.*)  \((\d+\.\d{3}) ms\)$")


def client(
    *args: str, input: bytes | None = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "chatlog.client", *args],
        input=input,
        capture_output=True,
        cwd=ROOT,
        env=server_env(),
        timeout=timeout,
    )


def without_header(stderr: bytes) -> bytes:
    """A load run's stderr after its header line (``Running 10 s @ ...``), which must be first."""
    header, _, rest = stderr.partition(b"\n")
    assert re.fullmatch(rb"Running .* @ .*", header), stderr
    return rest


def summary_of(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    # A load run's one header line (as wrk's "Running 10s test @ ..."), nothing else.
    assert re.fullmatch(rb"(Running [^\n]* @ [^\n]*\n)?", result.stderr), result.stderr
    lines = result.stdout.split(b"\n")
    assert len(lines) == 2 and lines[1] == b"", "stdout holds exactly one JSON object"
    data: dict[str, Any] = json.loads(lines[0])
    return data


def check_schema(data: dict[str, Any]) -> None:
    for key in ("messages", "errors", "connections"):
        assert isinstance(data[key], int) and data[key] >= 0
    for key in ("duration_s", "throughput_msgs_per_s"):
        assert isinstance(data[key], float) and data[key] > 0
    assert set(data["rtt_ms"]) == {"min", "mean", "p50", "p90", "p99", "p999", "max"}
    rtt = data["rtt_ms"]
    assert 0 < rtt["min"] <= rtt["p50"] <= rtt["p90"] <= rtt["p99"] <= rtt["p999"] <= rtt["max"]
    assert rtt["min"] <= rtt["mean"] <= rtt["max"]


def server_ids(records: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [
        match.groups()
        for record in records
        if record.startswith(b"Message Received: ")
        and (match := MESSAGE_ID.search(record.rpartition(b" - ")[2])) is not None
    ]


def test_messages_are_answered_with_their_round_trip(chatlog_server: Any) -> None:
    """Everyday use: each message's reply is printed with its RTT, in order, exit 0."""
    server = chatlog_server()
    result = client("--host", server.host, "--port", str(server.port), "Hello, Server!", "second")
    assert result.returncode == 0, result.stderr
    # A load run's one header line (as wrk's "Running 10s test @ ..."), nothing else.
    assert re.fullmatch(rb"(Running [^\n]* @ [^\n]*\n)?", result.stderr), result.stderr
    lines = result.stdout.split(b"\n")
    assert lines[-1] == b""
    matches = [REPLY_LINE.match(line) for line in lines[:-1]]
    assert [m.group(1) for m in matches if m] == [b"Hello, Server!", b"second"]
    assert all(0 < float(m.group(2)) < 1000 for m in matches if m)


def test_piped_stdin_lines_are_sent(chatlog_server: Any) -> None:
    """No messages and a pipe: each line of stdin is sent, the last even without a newline."""
    server = chatlog_server()
    result = client("--port", str(server.port), input=b"one\ntwo\r\nthree")
    assert result.returncode == 0, result.stderr
    replies = [REPLY_LINE.match(line) for line in result.stdout.split(b"\n")[:-1]]
    assert [m.group(1) for m in replies if m] == [b"one", b"two", b"three"]


def test_refused_connection_is_one_line_and_exit_1() -> None:
    """Nothing listening: one clear line on stderr, exit status 1, nothing on stdout."""
    port = free_port()
    result = client("--port", str(port), "hello")
    assert result.returncode == 1
    assert result.stdout == b""
    assert (
        result.stderr
        == f"chatlog.client: cannot connect to 127.0.0.1:{port}: connection refused\n".encode()
    )
    load = client("--port", str(port), "--connections", "3", "--messages", "2")
    assert load.returncode == 1
    rest = without_header(load.stderr)
    assert rest.count(b"\n") == 1 and b"connection refused" in rest


class SilentListener:
    """A plain socket that accepts connections, reads what they send, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.received = b""
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # the listening socket closed: the test is over
            conn, _ = self.sock.accept()
            self._conns.append(conn)
            while chunk := conn.recv(65536):
                self.received += chunk

    def close(self) -> None:
        # shutdown wakes the blocked accept() or recv(), close alone does not.
        for sock in [self.sock, *self._conns]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def silent_listener() -> Iterator[SilentListener]:
    listener = SilentListener()
    try:
        yield listener
    finally:
        listener.close()


NO_REPLY = b"chatlog.client: 127.0.0.1:%d: message 1: no reply within 1 s (--timeout)\n"


@pytest.mark.parametrize("how", ["arguments", "pipe"])
def test_silent_server_times_out(how: str) -> None:
    """A server that accepts and never answers: after --timeout, one line naming the wait, exit 1."""
    with silent_listener() as server:
        args = ["--port", str(server.port), "--timeout", "1"]
        if how == "arguments":
            result = client(*args, "hello", "never sent", timeout=30)
        else:
            result = client(*args, input=b"hello\nnever sent\n", timeout=30)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr == NO_REPLY % server.port
    assert server.received == b"hello\n"  # the client waited for the first reply only


def test_silent_server_times_out_at_the_prompt() -> None:
    """Standard input a terminal: a typed line gets no reply, and --timeout ends the wait."""
    primary, secondary = pty.openpty()
    try:
        with silent_listener() as server:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chatlog.client",
                    "--port",
                    str(server.port),
                    "--timeout",
                    "1",
                ],
                stdin=secondary,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
                env=server_env(),
            )
            try:
                os.write(primary, b"hello\n")
                stdout, stderr = proc.communicate(timeout=30)
            finally:
                proc.kill()
                proc.wait()
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 1
    assert stdout == b"> \n"
    assert stderr == NO_REPLY % server.port
    assert server.received == b"hello\n"


def test_dropped_connection_is_one_line_and_exit_1(chatlog_server: Any) -> None:
    """The server closes (a line over --max-line): the error reply is shown, then one line on stderr."""
    server = chatlog_server("--max-line", "8")
    result = client("--port", str(server.port), "ok", "far too long", "never sent")
    assert result.returncode == 1
    out = result.stdout.split(b"\n")
    assert REPLY_LINE.match(out[0]) and out[1].startswith(b"ERROR line too long")
    assert result.stderr.count(b"\n") == 1
    assert result.stderr.startswith(
        f"chatlog.client: connection to 127.0.0.1:{server.port} lost".encode()
    )


def test_load_log_and_server_log_are_complete(chatlog_server: Any, tmp_path: Path) -> None:
    """A load run: the JSON summary, one Sent and one Received record per message, every id in the server log."""
    server = chatlog_server()
    log = tmp_path / "client.log"
    result = client(
        "--port",
        str(server.port),
        "--connections",
        "3",
        "--messages",
        "50",
        "--pipeline",
        "8",
        "--size",
        "24",
        "--logfile",
        str(log),
        "--json",
    )
    data = summary_of(result)
    check_schema(data)
    assert (data["messages"], data["errors"], data["connections"]) == (150, 0, 3)
    records = log.read_bytes().split(b"\n")
    assert records[-1] == b""
    sent = [r for r in records if r.startswith(b"Message Sent: ")]
    received = [r for r in records if r.startswith(b"Message Received: ")]
    assert len(sent) == len(received) == 150 and len(records) == 301
    expected = {(str(c).encode(), str(s).encode()) for c in (1, 2, 3) for s in range(1, 51)}
    sent_ids = [MESSAGE_ID.search(r).groups() for r in sent]  # type: ignore[union-attr]
    assert sorted(sent_ids) == sorted(expected)
    # --size 24 counts the newline: every message is 23 bytes of text.
    assert {len(r.rsplit(b" - ", 1)[1]) for r in sent} == {23}
    assert all(
        re.search(rb" - Server received: c\d+-s\d+-x+ \(rtt \d+\.\d+ ms\)$", r) for r in received
    )
    assert all(len(MESSAGE_ID.search(r).group(0)) <= 24 for r in sent)  # type: ignore[union-attr]
    # The server acknowledged each message only once it was logged: all 150 are there.
    ids = server_ids(server.records())
    assert len(ids) == 150 and set(ids) == expected


def test_p50_shows_a_known_reply_delay(chatlog_server: Any) -> None:
    """Through a proxy that holds every reply 50 ms, the reported p50 is 50 ms (and no RTT is less)."""
    server = chatlog_server()
    with delay_proxy(server.address, delay=0.05) as proxy:
        data = summary_of(
            client("--port", str(proxy.port), "--connections", "4", "--messages", "10", "--json")
        )
    check_schema(data)
    assert data["messages"] == 40
    rtt = data["rtt_ms"]
    assert rtt["min"] >= 49.9
    assert 50.0 <= rtt["p50"] <= 60.0
    assert data["duration_s"] == pytest.approx(0.5, rel=0.3)  # 10 round trips of 50 ms


def test_open_loop_stall_reaches_the_p99(chatlog_server: Any) -> None:
    """--rate: a one-off 300 ms stall delays every message due during it, and the p99 shows it."""
    server = chatlog_server()
    with delay_proxy(server.address, stall_after=0.5, stall_for=0.3) as proxy:
        data = summary_of(
            client(
                "--port",
                str(proxy.port),
                "--connections",
                "4",
                "--rate",
                "200",
                "--duration",
                "2",
                "--json",
            )
        )
    check_schema(data)
    assert data["messages"] == 400
    rtt = data["rtt_ms"]
    # 60 of the 400 messages were due during the stall, waiting 300 ms down to 0:
    # the slowest 1% (4 messages) waited over 280 ms.  A client that timed from
    # its actual send would have seen one slow message per connection.
    assert rtt["p99"] >= 250.0
    assert 290.0 <= rtt["max"] <= 400.0
    assert rtt["p50"] < 50.0


def test_procs_merge_histograms(chatlog_server: Any) -> None:
    """--procs 2: two worker processes, one summary, connection ids unique across them."""
    server = chatlog_server()
    data = summary_of(
        client(
            "--port",
            str(server.port),
            "--connections",
            "4",
            "--messages",
            "20",
            "--procs",
            "2",
            "--json",
        )
    )
    check_schema(data)
    assert (data["messages"], data["connections"], data["procs"]) == (80, 4, 2)
    ids = server_ids(server.records())
    assert set(ids) == {
        (str(c).encode(), str(s).encode()) for c in range(1, 5) for s in range(1, 21)
    }


def test_tls_with_a_trusted_certificate(chatlog_server: Any, tmp_path: Path) -> None:
    """--tls --ca: talks to an ssl: server; without --ca the self-signed certificate is refused."""
    self_signed(tmp_path)
    server = chatlog_server(port="ssl:0:interface=127.0.0.1:privateKey=key.pem:certKey=cert.pem")
    ca = str(tmp_path / "cert.pem")
    result = client("--port", str(server.port), "--tls", "--ca", ca, "Hello, TLS!")
    assert result.returncode == 0, result.stderr
    match = REPLY_LINE.match(result.stdout.split(b"\n")[0])
    assert match and match.group(1) == b"Hello, TLS!"
    load = summary_of(
        client(
            "--port",
            str(server.port),
            "--tls",
            "--ca",
            ca,
            "--connections",
            "2",
            "--messages",
            "10",
            "--json",
        )
    )
    assert load["messages"] == 20
    untrusted = client("--port", str(server.port), "--tls", "Hello")
    assert untrusted.returncode == 1
    assert untrusted.stderr.count(b"\n") == 1 and untrusted.stderr.startswith(b"chatlog.client: ")
