"""End-to-end: ``--workers N`` shares the port, one log per worker, no orphans.

Also the pool's two duties to its workers: a SIGHUP to twistd reaches every
worker (each reopens its own log, and every record lands in the old file or
the new one, exactly once), and a worker that dies is started again and
serves, on the socket its predecessor had.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from chatlog.server.command import twistd_command
from tests.support.clients import REPLY
from tests.support.load import Load
from tests.support.logfile import logged_messages, missing_and_doubled, read_records
from tests.support.process import children, wait_gone
from tests.support.twistd import server_env
from tests.support.waiting import wait_until

_CONN = re.compile(rb" #(\d+) - ")
_PID = re.compile(rb"^Server Started: .* pid (\d+),")


def _served_conns(path: Path) -> set[int]:
    """The connection ids a worker's log shows as connected."""
    return {
        int(_CONN.search(r).group(1)) for r in read_records(path) if r.startswith(b"Connection: ")
    }


def _messages(path: Path) -> list[bytes]:
    return [
        r.split(b" - ", 2)[2] for r in read_records(path) if r.startswith(b"Message Received: ")
    ]


@pytest.mark.e2e
def test_two_workers_share_the_port(chatlog_server, tmp_path: Path) -> None:
    """Connections spread over both workers; each logs to its own file; ids stay unique."""
    server = chatlog_server("--workers", "2")
    server.wait_output(rb"\[worker 1\] .*listening on")
    socks = [server.connect() for _ in range(40)]
    for n, sock in enumerate(socks):
        sock.sendall(b"hello %d\n" % n)
    for n, sock in enumerate(socks):
        assert sock.recv(100) == b"Server received: hello %d\n" % n
        sock.close()
    [worker] = children(server.proc.pid)
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM
    assert wait_gone(worker)
    logs = [tmp_path / "chatlog.log.w0", tmp_path / "chatlog.log.w1"]
    assert not (tmp_path / "chatlog.log").exists()
    ids: list[int] = []
    messages = 0
    for path in logs:
        records = path.read_bytes().split(b"\n")[:-1]
        assert records[0].startswith(b"Server Started:")
        assert records[-1].startswith(b"Server Stopped:")
        connects = [r for r in records if r.startswith(b"Connection:")]
        assert connects, f"{path.name} served no connection"
        ids += [int(re.search(rb" #(\d+) - ", r).group(1)) for r in connects]
        messages += sum(r.startswith(b"Message Received:") for r in records)
    assert messages == 40
    assert len(ids) == len(set(ids)) == 40


@pytest.mark.e2e
def test_workers_end_with_a_killed_parent(chatlog_server) -> None:
    """kill -9 of the parent leaves no orphan: the worker sees its stdin close and stops."""
    server = chatlog_server("--workers", "2")
    server.wait_output(rb"\[worker 1\] .*listening on")
    [worker] = children(server.proc.pid)
    server.stop(signal.SIGKILL)
    assert wait_gone(worker)
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2).close()


@pytest.mark.e2e
def test_workers_in_daemon_mode(tmp_path: Path) -> None:
    """A daemon with --workers: one pidfile; SIGTERM stops every worker and removes it."""
    pidfile = tmp_path / "chatlog.pid"
    twistd_log = tmp_path / "twistd.log"
    subprocess.run(
        [*twistd_command(), "--pidfile", str(pidfile), "--logfile", str(twistd_log),
         "chatlog", "--port", "tcp:0:interface=127.0.0.1", "--logfile", "chat.log",
         "--workers", "2"],
        cwd=tmp_path, env=server_env(), check=True, timeout=30,
    )  # fmt: skip
    # Worker 1 listening, not just starting: a worker stopped before it has
    # written Server Started has an empty log.
    wait_until(
        lambda: (
            pidfile.exists() and re.search(rb"\[worker 1\] .*listening on", twistd_log.read_bytes())
        ),
        15,
        "the pidfile and worker 1 listening, in twistd's log",
    )
    parent = int(pidfile.read_text())
    [worker] = children(parent)
    os.kill(parent, signal.SIGTERM)
    assert wait_gone(parent) and wait_gone(worker)
    assert not pidfile.exists()
    for name in ("chat.log.w0", "chat.log.w1"):
        assert (tmp_path / name).read_bytes().split(b"\n")[-2].startswith(b"Server Stopped:")


@pytest.mark.e2e
def test_sighup_reaches_every_worker_and_splits_each_log_once(
    chatlog_server, tmp_path: Path
) -> None:
    """Move both worker logs, SIGHUP twistd: each worker reopens; each ack in exactly one file."""
    server = chatlog_server("--workers", "2")
    server.wait_output(rb"\[worker 1\] .*listening on")
    logs = [tmp_path / "chatlog.log.w0", tmp_path / "chatlog.log.w1"]
    # 16 connections: the kernel spreads them by address hash; all on one
    # worker would happen once in 30,000 runs, and is checked below.
    load = Load(server.address, connections=16, pipeline=4, tag="hup")
    load.start()
    load.wait_acked(2000)
    assert all(_served_conns(path) for path in logs), "a worker got no connection"
    rotated = [path.with_name(path.name + ".1") for path in logs]
    for path, old in zip(logs, rotated, strict=True):
        path.rename(old)
    server.send_signal(signal.SIGHUP)
    server.wait_output(rb"reopened log .*chatlog\.log\.w0$")  # twistd itself is worker 0
    server.wait_output(rb"\[worker 1\] .*reopened log .*chatlog\.log\.w1$")
    wait_until(
        lambda: all(path.exists() and _messages(path) for path in logs),
        10,
        "both workers to write messages into their new files",
    )
    load.wait_acked(len(load.acked) + 2000)
    load.finish()
    assert server.stop() == -signal.SIGTERM
    assert server.proc.poll() is not None
    files = [*rotated, *logs]
    counts = logged_messages(*files)
    missing, doubled = missing_and_doubled(load.acked, counts)
    assert not missing and not doubled, (missing[:3], doubled[:3])
    assert not [m for m, n in counts.items() if n > 1], "a record written twice"
    for old, new in zip(rotated, logs, strict=True):
        # One worker's messages: the old file has each connection's first ones,
        # the new file the rest; nothing of before the HUP comes after it.
        assert _messages(old) and _messages(new), (old.name, new.name)
        assert read_records(new)[-1].startswith(b"Server Stopped: ")
        assert not any(r.startswith(b"Server Stopped: ") for r in read_records(old))
        last_old: dict[bytes, int] = {}
        for message in _messages(old):
            conn, seq = message.rsplit(b"-m", 1)
            last_old[conn] = int(seq)
        for message in _messages(new):
            conn, seq = message.rsplit(b"-m", 1)
            assert int(seq) > last_old.get(conn, 0), f"{message!r} in {new.name} after the HUP"


@pytest.mark.e2e
def test_a_killed_worker_is_restarted_and_serves(chatlog_server, tmp_path: Path) -> None:
    """kill -9 of worker 1: twistd says so, starts a new worker, and that one serves its socket."""
    server = chatlog_server("--workers", "2")
    server.wait_output(rb"\[worker 1\] .*listening on")
    [worker] = children(server.proc.pid)
    os.kill(worker, signal.SIGKILL)
    assert wait_gone(worker)
    server.wait_output(rb"chatlog worker 1 ended .*starting it again")
    # Clients that come while worker 1 is down: those the kernel puts on its
    # socket wait in the backlog twistd keeps open, for the new worker.
    socks = [server.connect() for _ in range(20)]
    for n, sock in enumerate(socks):
        sock.sendall(b"meanwhile %d\n" % n)
    server.wait_output_count(b"listening on", 3)  # worker 0, worker 1, worker 1 again
    [new_worker] = children(server.proc.pid)
    assert new_worker != worker
    for n, sock in enumerate(socks):
        assert sock.recv(100) == REPLY + b"meanwhile %d\n" % n
        sock.close()
    assert server.stop() == -signal.SIGTERM
    assert wait_gone(new_worker)
    records = read_records(tmp_path / "chatlog.log.w1")
    starts = [i for i, r in enumerate(records) if r.startswith(b"Server Started: ")]
    assert len(starts) == 2, "worker 1 should have started twice"
    assert [int(_PID.match(records[i]).group(1)) for i in starts] == [worker, new_worker]
    served_after = _messages_in(records[starts[1] :])
    served_by_0 = _messages(tmp_path / "chatlog.log.w0")
    assert served_after, "the new worker 1 served none of the 20 connections"
    assert sorted(served_after + served_by_0) == sorted(b"meanwhile %d" % n for n in range(20))


def _messages_in(records: list[bytes]) -> list[bytes]:
    return [r.split(b" - ", 2)[2] for r in records if r.startswith(b"Message Received: ")]
