"""End-to-end: the connection layer against a hostile world, on the real ``twistd -n chatlog``.

Each test is one thing an adversary (or bad luck) does to the listening
side: forged or malformed PROXY headers on an ``haproxy:`` port, a thousand
clients that send and never read, a server stopped for seconds while its
clients keep talking, and a process out of file descriptors.  Every test
waits for events (replies, log records, twistd's own lines) with a deadline,
and reads the log as bytes split on ``b"\\n"``.  Figures are printed: run
with ``-s`` to see them.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from chatlog.log import RecordParser
from chatlog.server.command import twistd_command
from tests.support.clients import REPLY
from tests.support.process import raise_nofile, rss_kib
from tests.support.twistd import ROOT, RunningServer, launch, server_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

LOOPBACK = "tcp:0:interface=127.0.0.1"


def figures(name: str, **values: object) -> None:
    """Print measured figures in one greppable line."""
    print(f"\nFIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def parsed(server: RunningServer) -> list[dict]:
    """Every record of the (event-format) log, parsed by the log's own reader."""
    parser = RecordParser("event")
    return [parser.parse(record) for record in server.records()]


# --------------------------------------------------------------------------
# PROXY headers on an haproxy: port
# --------------------------------------------------------------------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, addresses: bytes) -> bytes:
    """A version 2 header: signature, version 2 and ``command``, ``family``, the address block."""
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(addresses)) + addresses


#: Headers a client or a broken balancer may send first, each refused.
REFUSED = {
    "forged line": b"PROXY TCP4 1.2.3.4\nForged\tline 127.0.0.1 5555 80\r\n",
    "escape": b"PROXY TCP4 1.2.3.4\x1b[31m 127.0.0.1 5555 80\r\n",
    "raw CR": b"PROXY TCP4 1.2.3.4\r5 127.0.0.1 5555 80\r\n",
    "line separator": "PROXY TCP6 ::1\u2028 ::1 5555 80\r\n".encode(),
    "bidi override": "PROXY TCP4 \u202e1.2.3.4 127.0.0.1 5555 80\r\n".encode(),
    "negative port": b"PROXY TCP4 1.2.3.4 127.0.0.1 -1 80\r\n",
    "huge port": b"PROXY TCP4 1.2.3.4 127.0.0.1 99999999999999999999 80\r\n",
    "port 65536": b"PROXY TCP4 1.2.3.4 127.0.0.1 65536 80\r\n",
    "port abc": b"PROXY TCP4 1.2.3.4 127.0.0.1 abc 80\r\n",
    "port with leading zero": b"PROXY TCP4 1.2.3.4 127.0.0.1 080 80\r\n",
    "non-UTF-8 address": b"PROXY TCP4 \xff\xfe.1.2.3 127.0.0.1 5555 80\r\n",
    "IPv6 address for TCP4": b"PROXY TCP4 ::1 127.0.0.1 5555 80\r\n",
    "hostname": b"PROXY TCP4 localhost 127.0.0.1 5555 80\r\n",
    "unknown family": b"PROXY UDP4 1.2.3.4 127.0.0.1 5555 80\r\n",
    "LF only": b"PROXY TCP4 1.2.3.4 127.0.0.1 5555 80\n",
    "no header": b"hello\n",
    "v2 version 3": V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),
    "v2 short address block": v2(1, 0x11, bytes(8)),
}


def exchange(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Connect, send ``data``, read until the server closes: (our port, what came back)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        port = sock.getsockname()[1]
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return port, received


def test_proxy_headers_are_validated(chatlog_server) -> None:
    """Behind an haproxy: port, only a valid header admits a client; the rest is one record each.

    A header whose address or port is not what its family allows is refused
    with a ``Bad Header`` record that names the balancer's real address and
    port; nothing of it reaches the log, and twistd's own log has no
    traceback.  ``PROXY UNKNOWN`` and v2 ``LOCAL`` (health checks) are served
    with the connection's own address; a peer that sends no header is
    refused after the idle timeout, in a record the reader can read.
    """
    server = chatlog_server("--idle-timeout", "1", port=f"haproxy:{LOOPBACK}")
    address = server.address
    silent = socket.create_connection(address, timeout=10)
    silent_port = silent.getsockname()[1]
    refused = {name: exchange(address, header + b"hello\n") for name, header in REFUSED.items()}
    for name, (_, received) in refused.items():
        assert received == b"", f"{name}: the server answered {received!r}"
    served = {
        "v1 TCP4": b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 5000\r\n",
        "v1 TCP6": b"PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 4000 5000\r\n",
        "v1 UNKNOWN": b"PROXY UNKNOWN\r\n",
        "v1 UNKNOWN with addresses": b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n",
        "v2 TCP4": v2(1, 0x11, socket.inet_aton("198.51.100.2") + bytes(4) + b"\x1f\x90\x13\x88"),
        "v2 LOCAL": v2(0, 0x00, b""),
    }
    answers = {
        name: exchange(address, header + b"hi " + name.encode() + b"\n")
        for name, header in served.items()
    }
    for name, (_, received) in answers.items():
        assert received == REPLY + b"hi " + name.encode() + b"\n", name
    assert silent.recv(100) == b""  # refused after the idle timeout, nothing sent
    silent.close()
    wait_until(
        lambda: sum(r.startswith(b"Bad Header: ") for r in server.records()) == len(REFUSED) + 1,
        10,
        "a Bad Header record per refused connection",
    )
    assert server.stop() == -signal.SIGTERM
    records = parsed(server)  # every record parses: none was split or forged
    bad = {r["port"]: r for r in records if r["event"] == "bad_header"}
    for name, (port, _) in refused.items():
        assert port in bad, f"{name}: no Bad Header record"
        assert bad[port]["ip"] == "127.0.0.1", name
    assert silent_port in bad and "no complete PROXY header" in bad[silent_port]["reason"]
    messages = {(r["ip"], r["port"], r["msg"]) for r in records if r["event"] == "message"}
    assert messages == {
        ("203.0.113.7", 56324, b"hi v1 TCP4"),
        ("2001:db8::7", 4000, b"hi v1 TCP6"),
        ("127.0.0.1", answers["v1 UNKNOWN"][0], b"hi v1 UNKNOWN"),
        ("127.0.0.1", answers["v1 UNKNOWN with addresses"][0], b"hi v1 UNKNOWN with addresses"),
        ("198.51.100.2", 8080, b"hi v2 TCP4"),
        ("127.0.0.1", answers["v2 LOCAL"][0], b"hi v2 LOCAL"),
    }
    log = server.log_bytes()
    for forbidden in (b"Forged", b"\x1b", b"99999999999999999999", b":-1 "):
        assert forbidden not in log
    twistd_log = b"".join(server.output)
    assert b"Traceback" not in twistd_log and b"Unhandled" not in twistd_log, twistd_log


def test_proxy_headers_with_workers(chatlog_server, tmp_path: Path) -> None:
    """``--workers 2`` on an haproxy: port: both workers read the header, strictly."""
    server = chatlog_server("--workers", "2", "--format", "json", port=f"haproxy:{LOOPBACK}")
    server.wait_output(rb"\[worker 1\] .*listening on")
    for n in range(40):
        header = b"PROXY TCP4 198.51.100.%d 10.0.0.1 %d 5000\r\n" % (n, 1000 + n)
        assert exchange(server.address, header + b"w%d\n" % n)[1] == REPLY + b"w%d\n" % n
    refused = exchange(server.address, REFUSED["huge port"] + b"x\n")
    assert refused[1] == b""
    assert server.stop() == -signal.SIGTERM
    logs = [tmp_path / "chatlog.log.w0", tmp_path / "chatlog.log.w1"]
    records = [json.loads(r) for path in logs for r in path.read_bytes().split(b"\n")[:-1]]
    messages = sorted((r["ip"], r["port"], r["msg"]) for r in records if r["event"] == "message")
    assert messages == sorted((f"198.51.100.{n}", 1000 + n, f"w{n}") for n in range(40))
    assert [(r["ip"], r["port"]) for r in records if r["event"] == "bad_header"] == [
        ("127.0.0.1", refused[0])
    ]
    for path in logs:  # both workers served
        assert b'"event": "message"' in path.read_bytes(), path.name


# --------------------------------------------------------------------------
# Clients that send and never read
# --------------------------------------------------------------------------

NON_READERS = 1000


def flood_without_reading(socks: list[socket.socket], timeout: float) -> int:
    """Send empty lines on every socket, never reading, until the server reads none of them.

    Returns the bytes sent.  "Reads none of them" is the server's
    backpressure seen from outside: no socket has become writable for 0.5 s.
    """
    chunk = b"\n" * 4096
    sent = 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_WRITE)
        while True:
            ready = selector.select(0.5)
            if not ready:
                return sent
            if time.monotonic() > deadline:
                raise AssertionError(f"the server still reads clients that read nothing ({sent} B)")
            for key, _ in ready:
                with contextlib.suppress(BlockingIOError):
                    sent += key.fileobj.send(chunk)  # type: ignore[union-attr]


class LogFollower:
    """Counts the records that contain ``needle`` in a growing log, reading each byte once."""

    def __init__(self, file: BinaryIO, needle: bytes) -> None:
        self.file = file
        self.needle = needle
        self.seen = 0
        self.tail = b""

    def count(self) -> int:
        while chunk := self.file.read(1 << 24):
            *records, self.tail = (self.tail + chunk).split(b"\n")
            self.seen += sum(self.needle in record for record in records)
        return self.seen


def test_clients_that_never_read_cannot_grow_the_server(chatlog_server, tmp_path: Path) -> None:
    """1,000 clients sending empty lines and reading nothing grow the server < 64 MiB, given back.

    An empty line's reply is 18 times its size, and one read can hold tens of
    thousands of lines: each connection may hold only a small, fixed amount
    (replies queued plus lines read but not answered) before the server stops
    reading it.  Once they have all gone, less than half of the growth stays.
    """
    if raise_nofile(NON_READERS + 200) < NON_READERS + 200:
        pytest.skip("open-file limit too low for 1,000 clients")
    server = chatlog_server(
        "--max-per-ip", "0", "--format", "dash", port=f"{LOOPBACK}:backlog=1024"
    )
    pid = server.serving_pid()
    with socket.create_connection(server.address, timeout=10) as warm:
        warm.sendall(b"warm\n")
        assert warm.recv(100) == REPLY + b"warm\n"
    baseline = rss_kib(pid)
    socks = []
    try:
        for _ in range(NON_READERS):
            sock = socket.socket()
            # Small client buffers: the server's own holding is what fills up.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.connect(server.address)
            sock.setblocking(False)
            socks.append(sock)
        started = time.monotonic()
        sent = flood_without_reading(socks, timeout=40)
        flood_s = time.monotonic() - started
        held = rss_kib(pid)
    finally:
        for sock in socks:
            sock.close()
    # The log grows by hundreds of MB here: follow it rather than read it again and again.
    with server.log_path.open("rb") as log:
        disconnections = LogFollower(log, b"[Disconnection]")
        wait_until(
            lambda: disconnections.count() >= NON_READERS,
            30,
            "every non-reading client's disconnection",
        )
    growth_kib = held - baseline

    def given_back() -> int:
        # The server hands freed memory back a second after most clients went.
        after = rss_kib(pid)
        return after if after - baseline < growth_kib / 2 else 0

    try:
        after = wait_until(given_back, 5, "the server to give back what the clients cost")
    except AssertionError:
        after = rss_kib(pid)
    growth_mib, kept_mib = growth_kib / 1024, (after - baseline) / 1024
    figures(
        "non-readers",
        clients=NON_READERS,
        sent_mb=round(sent / 1e6, 1),
        flood_s=round(flood_s, 2),
        rss_baseline_mib=round(baseline / 1024, 1),
        rss_held_mib=round(held / 1024, 1),
        rss_after_close_mib=round(after / 1024, 1),
        per_client_kib=round(growth_kib / NON_READERS, 1),
    )
    server.log_path.unlink()  # hundreds of MB of empty lines: not worth keeping
    assert growth_mib < 64, f"server RSS grew {growth_mib:.0f} MiB for {NON_READERS} non-readers"
    assert kept_mib < growth_mib / 2, f"{kept_mib:.0f} of {growth_mib:.0f} MiB kept after they left"


# --------------------------------------------------------------------------
# A stalled server
# --------------------------------------------------------------------------


#: epoll_wait, epoll_pwait, epoll_pwait2 by machine, as /proc/PID/syscall numbers them.
EPOLL_WAITS = {"x86_64": {232, 281, 441}, "aarch64": {22, 441}}


def stop_outside_epoll_wait(pid: int, log: Path, attempts: int = 200) -> None:
    """SIGSTOP ``pid`` while it is busy, not waiting in epoll.

    A process stopped inside ``epoll_wait`` resumes by returning the events
    that arrived meanwhile, so its reads come first by chance; stopped while
    it works, it resumes with its timers due before any poll, which is what
    a stall under load is.  After a miss, the next try waits for the server
    to have written more of its ``log``: to be at work.
    """
    waits = EPOLL_WAITS.get(os.uname().machine)
    for _ in range(attempts):
        os.kill(pid, signal.SIGSTOP)
        wait_until(
            lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T",
            5,
            "the server to stop",
        )
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        if waits is None or syscall == "running" or int(syscall) not in waits:
            return
        size = log.stat().st_size
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda n=size: log.stat().st_size > n, 5, "the server to go on writing its log")
    raise AssertionError(f"the server was waiting in epoll every one of {attempts} times")


def test_a_stall_does_not_time_out_busy_clients(chatlog_server) -> None:
    """A server stopped 2 s (SIGSTOP) with 1 s timeouts: busy clients keep their connections.

    Twenty connections of ``python -m chatlog.client`` keep lines in flight;
    while the server is stopped their lines wait in the kernel.  On SIGCONT
    those lines are read before any deadline is judged, so no busy client is
    closed, and the client that really was silent still is.
    """
    server = chatlog_server("--idle-timeout", "1", "--line-timeout", "1")
    pid = server.serving_pid()
    load = subprocess.Popen(
        [sys.executable, "-m", "chatlog.client", "--port", str(server.port),
         "--connections", "20", "--pipeline", "16", "--duration", "4", "--json"],
        cwd=ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(
            lambda: server.log_path.stat().st_size > 1_000_000 or load.poll() is not None,
            10,
            "the load to be under way",
        )
        assert load.poll() is None, load.communicate()[1].decode()
        silent = socket.create_connection(server.address, timeout=10)
        stop_outside_epoll_wait(pid, server.log_path)
        try:
            time.sleep(2)  # the stall itself: what is under test, not a wait for an event
        finally:
            os.kill(pid, signal.SIGCONT)
        with silent:
            assert silent.recv(100) == b"ERROR timeout\n"
        out, err = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["errors"] == 0 and summary["connections"] == 20, summary
    assert server.stop() == -signal.SIGTERM
    timeouts = [r for r in server.records() if r.startswith(b"Timeout: ")]
    assert len(timeouts) == 1, timeouts[:3]
    figures("stall", messages=summary["messages"], rtt_ms_max=summary["rtt_ms"]["max"])


# --------------------------------------------------------------------------
# Out of file descriptors
# --------------------------------------------------------------------------


def test_out_of_file_descriptors_drops_no_connection_silently(tmp_path: Path) -> None:
    """With 64 descriptors and 150 clients at once, every client is served, none dropped unseen.

    Twisted's own answer to EMFILE is to accept every waiting connection and
    close it at once, with no chatlog record; chatlog instead stops accepting
    while no descriptor is free (the clients wait in the listen backlog) and
    starts again as soon as a connection closes, saying so on twistd's log.
    """
    clients = 150
    log_path = tmp_path / "chatlog.log"
    cmd = [
        "prlimit", "--nofile=64:64", "--",
        *twistd_command(), "-n", "--pidfile=", "chatlog",
        "--port", f"{LOOPBACK}:backlog=256", "--logfile", str(log_path),
    ]  # fmt: skip
    server = launch(cmd, tmp_path, log_path)
    try:
        socks = {}
        for index in range(clients):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(server.address)
            socks[sock] = [b"fd-%d\n" % index, b""]
        served = dropped = 0
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as selector:
            for sock in socks:
                selector.register(sock, selectors.EVENT_WRITE)
            while served + dropped < clients:
                assert time.monotonic() < deadline, f"{served} served, {dropped} dropped"
                for key, events in selector.select(0.1):
                    sock = key.fileobj  # type: ignore[assignment]
                    line, received = socks[sock]
                    if events & selectors.EVENT_WRITE:
                        sock.send(line)
                        selector.modify(sock, selectors.EVENT_READ)
                        continue
                    try:
                        chunk = sock.recv(4096)
                    except ConnectionResetError:
                        chunk = b""
                    socks[sock][1] = received = received + chunk
                    if chunk and not received.endswith(b"\n"):
                        continue
                    # Answered (then close, freeing a descriptor), or closed unanswered.
                    if received == REPLY + line:
                        served += 1
                    else:
                        dropped += 1
                    selector.unregister(sock)
                    sock.close()
        assert dropped == 0, f"{dropped} of {clients} connections closed without a reply"
        wait_until(
            lambda: server.log_bytes().count(b"\nDisconnection: ") == clients,
            10,
            "every disconnection",
        )
        assert server.proc.poll() is None
    finally:
        assert server.stop() == -signal.SIGTERM
    twistd_log = b"".join(server.output)
    assert b"EMFILE" not in twistd_log, twistd_log
    assert server.log_bytes().count(b"Message Received: ") == clients
