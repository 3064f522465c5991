"""End-to-end: the client on a terminal, as issue 14's first hour met it.

The client runs as a subprocess against ``twistd chatlog``, with a pty where
a person has a terminal: the prompt's line editing and history, the progress
bar (with ``--procs``, during ``--warmup``), the summary at 60 columns; and
with pipes, the header on stderr beside a clean ``--json``, durations with
units and ``--percentiles``.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from typing import Any

import pytest

from chatlog.client.stats import decode_histogram
from tests.e2e.test_client import client
from tests.support.twistd import ROOT, server_env

pytestmark = pytest.mark.e2e

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def open_terminal(columns: int = 100) -> tuple[int, int]:
    """A pty (primary, secondary) of ``columns`` columns."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return primary, secondary


def read_until(fd: int, seen: bytearray, wanted: bytes, timeout: float = 20) -> None:
    """Read ``fd`` into ``seen`` until ``wanted`` is in it (or the end, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not chunk:
                return
            seen += chunk


def spawn(args: list[str], **fds: Any) -> subprocess.Popen[bytes]:
    env = server_env({"TERM": "xterm"})
    env.pop("COLUMNS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "chatlog.client", *args], cwd=ROOT, env=env, **fds
    )


def test_prompt_edits_lines_and_keeps_a_history(chatlog_server: Any) -> None:
    """At the prompt, arrow keys edit the line and recall the last one (readline)."""
    server = chatlog_server()
    primary, secondary = open_terminal()
    seen = bytearray()
    try:
        proc = spawn(
            ["--port", str(server.port)], stdin=secondary, stdout=secondary, stderr=subprocess.PIPE
        )
        try:
            read_until(primary, seen, b"> ")
            os.write(primary, b"abc\x1b[D\x1b[DX\r")  # left twice, then X: aXbc
            read_until(primary, seen, b"Server received: aXbc")
            read_until(primary, seen, b"\n> ")
            shown, seen = bytes(seen), bytearray()
            os.write(primary, b"\x1b[A\r")  # up: the last line again
            read_until(primary, seen, b"Server received: aXbc")
            read_until(primary, seen, b"\n> ")
            shown += bytes(seen)
            os.write(primary, b"\x04")  # Ctrl-D
            proc.wait(timeout=20)
        finally:
            proc.kill()
            proc.wait()
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 0, shown
    assert shown.count(b"Server received: aXbc  (") == 2, shown
    received = [r for r in server.records() if b"aXbc" in r or b"\x1b" in r]
    assert len(received) == 2 and all(b"\x1b" not in r for r in received), received


def run_on_a_terminal(args: list[str]) -> tuple[int, bytes, bytes]:
    """The client with stderr on a terminal: (status, stdout, what the terminal showed)."""
    primary, secondary = open_terminal()
    shown = bytearray()
    try:
        proc = spawn(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary)
        os.close(secondary)
        secondary = -1
        read_until(primary, shown, b"\x00never")  # to the end
        stdout = proc.stdout.read() if proc.stdout else b""
        proc.wait(timeout=30)
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    return proc.returncode, stdout, bytes(shown)


def test_procs_draw_a_progress_bar(chatlog_server: Any) -> None:
    """--procs on a terminal: a progress bar fed by the workers, as one process has."""
    server = chatlog_server()
    status, stdout, shown = run_on_a_terminal(
        ["--port", str(server.port), "--connections", "2", "--procs", "2", "--duration", "2"]
    )
    assert status == 0, shown
    assert re.search(rb"load .* [\d,]+ msgs  [\d,]+ msgs/s", ANSI.sub(b"", shown)), shown
    assert stdout.startswith(b"messages ")


@pytest.mark.parametrize("procs", ["1", "2"])
def test_warmup_says_warming_up(chatlog_server: Any, procs: str) -> None:
    """During --warmup the bar says warming up, not 0 msgs 0 msgs/s."""
    server = chatlog_server()
    status, _, shown = run_on_a_terminal(
        ["--port", str(server.port), "--connections", "2", "--procs", procs]
        + ["--warmup", "1.5", "--duration", "1"]
    )
    assert status == 0, shown
    text = ANSI.sub(b"", shown)
    assert b"warming up" in text
    assert not re.search(rb"\b0 msgs  0 msgs/s", text), text


def test_summary_fits_a_60_column_terminal(chatlog_server: Any) -> None:
    """On a 60-column terminal the summary breaks between fields, never inside a number."""
    server = chatlog_server()
    primary, secondary = open_terminal(columns=60)
    shown = bytearray()
    try:
        proc = spawn(
            ["--port", str(server.port), "--connections", "2", "--duration", "1"],
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=subprocess.PIPE,
        )
        os.close(secondary)
        secondary = -1
        read_until(primary, shown, b"\x00never")
        proc.wait(timeout=30)
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert proc.returncode == 0, shown
    lines = bytes(shown).decode().replace("\r", "").splitlines()
    assert lines and max(len(line) for line in lines) <= 60, lines
    text = " ".join(lines)
    for label in ("min", "mean", "p50", "p90", "p99", "p99.9", "max"):
        assert re.search(rf"\b{re.escape(label)} \d+\.\d{{3}}\b", text), label
    assert re.search(r"throughput \d+\.\d msgs/s", text)


def test_header_on_stderr_json_alone_on_stdout(chatlog_server: Any) -> None:
    """A load run says what it runs on stderr; --json stays one object on stdout."""
    server = chatlog_server()
    result = client("--port", str(server.port), "--connections", "2", "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode() == (
        f"Running 0.5 s @ 127.0.0.1:{server.port}: 2 connections, closed loop (pipeline 1)\n"
    )
    result = client(
        "--port", str(server.port), "--messages", "20", "--json", "--percentiles", "--timeout", "5s"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(b"Running 20 messages per connection @ ")
    data = json.loads(result.stdout)
    assert data["messages"] == 20
    assert data["errors_by_kind"] == {"refused": 0, "timeout": 0, "error_reply": 0, "dropped": 0}
    spectrum = io.BytesIO()
    decode_histogram(data["histogram"]).output_percentile_distribution(spectrum, 1000)
    assert data["percentile_distribution"] == spectrum.getvalue().decode()


def test_percentiles_print_hdrh_spectrum_after_the_summary(chatlog_server: Any) -> None:
    """--percentiles: the summary, then HdrHistogram's percentile distribution."""
    server = chatlog_server()
    result = client("--port", str(server.port), "--messages", "50", "--percentiles")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert out.startswith("messages    50  errors 0")
    assert "Value     Percentile TotalCount 1/(1-Percentile)" in out
    assert re.search(r"#\[Max     = +\d+\.\d{3}, TotalCount     = +50\.000\]", out)
