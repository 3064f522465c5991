"""End-to-end: ``--workers N`` shares the port, one log per worker, no orphans."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from chatlog.server.command import twistd_command
from tests.support.process import children, wait_gone
from tests.support.twistd import server_env
from tests.support.waiting import wait_until


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
    wait_until(
        lambda: pidfile.exists() and b"[worker 1]" in twistd_log.read_bytes(),
        15,
        "the pidfile and worker 1 in twistd's log",
    )
    parent = int(pidfile.read_text())
    [worker] = children(parent)
    os.kill(parent, signal.SIGTERM)
    assert wait_gone(parent) and wait_gone(worker)
    assert not pidfile.exists()
    for name in ("chat.log.w0", "chat.log.w1"):
        assert (tmp_path / name).read_bytes().split(b"\n")[-2].startswith(b"Server Stopped:")
