"""End-to-end: what the log file says after the log failed, and which paths can be a log.

The real ``twistd -n chatlog`` runs as a subprocess; its log is read as bytes
(:mod:`tests.support.logfile`), not with chatlog's own reader, except where the
reader's own verdict (a torn line is no record) is what is tested.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from chatlog.log import TORN_MARK, LogReader
from chatlog.server.command import twistd_command
from tests.support.clients import REPLY, LineClient
from tests.support.logfile import logged_messages, message_text, read_records
from tests.support.twistd import server_env

pytestmark = pytest.mark.e2e

_STOPPED = re.compile(
    rb"^Server Stopped: .* - (\d+) connections?, (\d+) messages? logged, (\d+) refused$"
)


def test_a_fifo_is_refused_at_start(tmp_path: Path) -> None:
    """--logfile on a FIFO: one line naming the problem and exit 1, not a server that blocks or lies."""
    fifo = tmp_path / "chatlog.fifo"
    os.mkfifo(fifo)
    done = subprocess.run(
        [*twistd_command(), "-n", "--pidfile=", "chatlog",
         "--port", "tcp:0:interface=127.0.0.1", "--logfile", str(fifo)],
        cwd=tmp_path, env=server_env(), capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1, done
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(f"chatlog: cannot open log {fifo}: a FIFO cannot be the log"), line
    assert "--logfile -" in line


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError:
            pass


def test_server_stopped_counts_logged_and_refused_apart(small_tmpfs: Path, chatlog_server) -> None:
    """After a disk-full outage, Server Stopped's logged count is the log's messages, refused the errors."""
    log_path = small_tmpfs / "chatlog.log"
    server = chatlog_server(logfile=str(log_path))
    acked: list[bytes] = []
    errors = 0
    with LineClient(server.address) as client:
        client.round_trip(b"before")
        acked.append(b"before")
        filler = small_tmpfs / "filler"
        _fill(filler)
        # The log's last page may still have room for a few records.
        for n in range(500):
            message = b"while-full-%d-" % n + b"x" * 200
            client.send(message + b"\n")
            reply = client.line()
            if reply == REPLY + message:
                acked.append(message)
            else:
                assert reply == b"ERROR log unavailable", reply
                errors += 1
                break
        client.send(b"".join(b"refused-%d\n" % n for n in range(30)))
        assert client.lines(30) == [b"ERROR log unavailable"] * 30
        errors += 30
        filler.unlink()
        for n in range(3):
            client.round_trip(b"after-%d" % n)
            acked.append(b"after-%d" % n)
    assert errors == 31
    assert server.stop() == -signal.SIGTERM
    records = read_records(log_path)
    logged = sum(message_text(r) is not None for r in records)
    assert logged == len(acked)
    stopped = _STOPPED.match(records[-1])
    assert stopped is not None, records[-1]
    assert (int(stopped[2]), int(stopped[3])) == (logged, errors)
    assert [int(n) for n in re.findall(rb"(\d+) messages? refused", b"\n".join(records))] == [
        errors
    ]


def test_a_torn_line_is_marked_never_mended(tmp_path: Path, chatlog_server) -> None:
    """A log left ending mid-record is ended with the torn mark: the fragment never reads as a message."""
    log_path = tmp_path / "chatlog.log"
    fragment = b"Message Received: 2026-11-22 07:35:45.123456 - 127.0.0.1:4000 #3 - hel"
    log_path.write_bytes(
        b"Message Received: 2026-11-22 07:35:45.000001 - 127.0.0.1:4000 #3 - first\n" + fragment
    )
    server = chatlog_server()
    with LineClient(server.address) as client:
        client.round_trip(b"after restart")
    assert server.stop() == -signal.SIGTERM
    records = read_records(log_path)
    assert records[1] == fragment + TORN_MARK
    assert records[2].startswith(b"Server Started: ")
    reader = LogReader(log_path)
    messages = [e["msg"] for e in reader if e["event"] == "message"]
    assert messages == [b"first", b"after restart"]
    assert reader.torn == 1 and reader.unparsed == 0


def _lowest_free_fd(pid: int) -> int:
    taken = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return min(set(range(len(taken) + 1)) - taken)


def test_a_failed_reopen_is_retried_until_it_succeeds(tmp_path: Path, chatlog_server) -> None:
    """Out of file descriptors at SIGHUP: records go on to the moved file, and the log comes back."""
    server = chatlog_server()
    moved = server.log_path.with_name("chatlog.log.1")
    pid = server.serving_pid()
    with LineClient(server.address) as client:
        client.round_trip(b"before")
        limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # The next file the server opens would be over its limit: EMFILE.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (_lowest_free_fd(pid), limits[1]))
        try:
            server.log_path.rename(moved)
            server.send_signal(signal.SIGHUP)
            server.wait_output(rb"cannot reopen log .*Too many open files")
            client.round_trip(b"during")
            assert not server.log_path.exists()
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        server.wait_output(rb"reopened log \S+ after \d+ failed attempts")
        client.round_trip(b"after")
    assert server.stop() == -signal.SIGTERM
    old, new = read_records(moved), read_records(server.log_path)
    assert [message_text(r) for r in old if message_text(r)] == [b"before", b"during"]
    assert any(r.startswith(b"Log Reopen: ") and b"Too many open files" in r for r in old)
    assert new[0].startswith(b"Log Reopen: ") and b"failed attempt" in new[0]
    assert [message_text(r) for r in new if message_text(r)] == [b"after"]
    counts = logged_messages(moved, server.log_path)
    assert all(counts[m] == 1 for m in (b"before", b"during", b"after"))
