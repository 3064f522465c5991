"""End-to-end: what a load run reports, against the real server and plain sockets.

Its interval log read back by hdrh itself, refused connections, Ctrl-C,
another server's replies (--expect), the live lines, and the client's own
log of an open-loop run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hdrh.log import HistogramLogReader

from chatlog import latency
from chatlog.client.load import MESSAGE_ID
from tests.e2e.test_client import without_header
from tests.support.twistd import ROOT, server_env

pytestmark = pytest.mark.e2e

LIVE_LINE = re.compile(
    r"^\[\s+\d+\.\d s\]\s+[\d,]+ msgs/s  p50 \d+\.\d{3} ms  p99 \d+\.\d{3} ms  errors \d+$"
)


def client(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "chatlog.client", *args],
        capture_output=True,
        cwd=ROOT,
        env=server_env(),
        timeout=timeout,
    )


def read_hlog(path: Path) -> tuple[int, latency.HdrHistogram]:
    """The intervals of ``path`` as hdrh's own reader gives them: (how many, their sum)."""
    reader = HistogramLogReader(str(path), latency.new_histogram())
    total = latency.new_histogram()
    count = 0
    try:
        while (interval := reader.get_next_interval_histogram()) is not None:
            latency.add_into(total, interval)
            count += 1
    finally:
        reader.close()
    return count, total


@pytest.mark.parametrize("procs", ["1", "2"])
def test_hlog_reads_back_as_the_json_says(chatlog_server: Any, tmp_path: Path, procs: str) -> None:
    """--hlog: hdrh's HistogramLogReader gives back the totals and percentiles of --json."""
    server = chatlog_server()
    hlog = tmp_path / "run.hlog"
    done = client(
        "--port", str(server.port), "--connections", "4", "--procs", procs,
        "--rate", "2000", "--warmup", "0.3", "--duration", "1.6",
        "--hlog", str(hlog), "--interval", "0.5", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    intervals, total = read_hlog(hlog)
    assert intervals >= 4  # 0.5 s each over 1.6 s, and the last, shorter one
    assert total.get_total_count() == data["messages"] == 3200
    assert latency.rtt_ms(total) == data["rtt_ms"]
    lines = without_header(done.stderr).decode().splitlines()
    assert len(lines) == intervals and all(LIVE_LINE.match(line) for line in lines), lines


def test_refused_connections_are_counted_once(chatlog_server: Any) -> None:
    """5 connections to a server that takes 2: refused 3, and not a single error."""
    server = chatlog_server("--max-connections", "2")
    done = client(
        "--port", str(server.port), "--connections", "5", "--duration", "0.5", "--json"
    )  # fmt: skip
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert (data["refused"], data["errors"]) == (3, 0)
    assert data["messages"] > 0
    assert without_header(done.stderr).decode() == (
        f"chatlog.client: 127.0.0.1:{server.port}: "
        "3 connections refused by the server: ERROR server busy\n"
    )


@pytest.mark.parametrize("procs", ["1", "2"])
def test_ctrl_c_ends_a_load_run_with_its_partial_summary(chatlog_server: Any, procs: str) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it): the partial summary,
    in-flight messages unanswered, 'interrupted', no lost connection, exit 130."""
    server = chatlog_server()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "chatlog.client", "--port", str(server.port),
            "--connections", "4", "--pipeline", "2", "--duration", "60", "--procs", procs,
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=server_env(),
        start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    data = json.loads(out)
    assert data["interrupted"] and data["messages"] > 0
    assert (data["errors"], data["procs"]) == (0, int(procs))
    assert 0 <= data["unanswered"] <= 8
    assert not any("lost" in problem for problem in data["problems"])
    assert without_header(err).decode().startswith("chatlog.client: interrupted")
    assert b"lost" not in err


class EchoServer:
    """A plain-socket server that echoes each line back unchanged (not chatlog's reply)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def test_expect_checks_another_servers_replies() -> None:
    """--expect '': an echo server's replies are right; with the default prefix they are errors."""
    echo = EchoServer()
    try:
        done = client(
            "--port", str(echo.port), "--messages", "50", "--pipeline", "4", "--expect", "", "--json"
        )  # fmt: skip
    finally:
        echo.close()
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["messages"], data["errors"]) == (50, 0)
    other = EchoServer()
    try:
        wrong = client("--port", str(other.port), "--messages", "5", "--json")
    finally:
        other.close()
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["errors"] == 5


def test_open_loop_log_has_every_message_in_time_order(chatlog_server: Any, tmp_path: Path) -> None:
    """--rate --logfile (json): a Sent and a Received record per message, in time order."""
    server = chatlog_server()
    log = tmp_path / "client.log"
    done = client(
        "--port", str(server.port), "--connections", "3", "--rate", "3000",
        "--messages", "200", "--logfile", str(log), "--format", "json", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["messages"] == 600
    records = [json.loads(line) for line in log.read_bytes().split(b"\n")[:-1]]
    assert len(records) == 1200
    stamps = [r["ts"] for r in records]
    assert stamps == sorted(stamps)
    sent = {(r["conn"], r["seq"]) for r in records if r["event"] == "sent"}
    replies = [r for r in records if r["event"] == "reply"]
    assert sent == {(r["conn"], r["seq"]) for r in replies}
    assert all(
        MESSAGE_ID.match(r["msg"].removeprefix("Server received: ").encode()) for r in replies
    )
