"""Run the real ``twistd -n chatlog`` as a subprocess on loopback, for end-to-end tests.

The server listens on ``tcp:0`` and says where in twistd's log
(``chatlog ... listening on 127.0.0.1:PORT``); :func:`start_server` waits for
that line, so no test picks a port that may be taken, and none sleeps.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from chatlog.server.command import twistd_command
from tests.support.logfile import server_pid

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"listening on (\S+):(\d+), logging to")


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a server: the checkout first on the path, plus ``extra`` (e.g. ``TZ``)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class RunningServer:
    """A twistd chatlog process and where it listens and logs."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int, log_path: Path) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.log_path = log_path
        self.output: list[bytes] = []  # twistd's own log, line by line
        self._lines: queue.Queue[bytes | None] = queue.Queue()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(self.address, timeout=timeout)

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_output(self, pattern: bytes, timeout: float = 10.0) -> bytes:
        """Wait for a line of twistd's log matching ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        for line in self.output:
            if regex.search(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line matching {pattern!r} in: {self.output!r}")
            line = self._read_line(remaining, pattern)
            if line is not None and regex.search(line):
                return line

    def wait_output_count(self, needle: bytes, count: int, timeout: float = 10.0) -> None:
        """Wait until twistd's own log has ``count`` lines containing ``needle``."""
        deadline = time.monotonic() + timeout
        while sum(needle in line for line in self.output) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"fewer than {count} lines with {needle!r}: {self.output!r}")
            self._read_line(min(remaining, 0.1), needle)

    def _read_line(self, timeout: float, awaited: bytes) -> bytes | None:
        """Move twistd's next log line into ``output`` and return it; None if none came in time."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            raise RuntimeError(f"twistd exited before {awaited!r}: {self.output!r}")
        self.output.append(line)
        return line

    def serving_pid(self) -> int:
        """The pid of the process that really serves, from the log (``proc`` may be a wrapper)."""
        return server_pid(self.log_path, self.proc.pid)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``signum`` and wait for the process to exit; return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def log_bytes(self) -> bytes:
        return self.log_path.read_bytes()

    def records(self) -> list[bytes]:
        """The log's records: split on ``\\n`` only, never on other line breaks."""
        data = self.log_bytes()
        assert data == b"" or data.endswith(b"\n"), f"log ends mid-record: {data[-80:]!r}"
        return data.split(b"\n")[:-1]


def start_server(
    workdir: Path,
    *options: str,
    port: str = "tcp:0:interface=127.0.0.1",
    logfile: str = "chatlog.log",
    twistd_options: Sequence[str] = ("-n", "--pidfile="),
    timeout: float = 20.0,
    env: Mapping[str, str] | None = None,
) -> RunningServer:
    """Start ``twistd -n chatlog --port PORT --logfile LOGFILE OPTIONS``; wait until it listens.

    ``env`` adds to (or overrides) the server's environment.
    """
    log_path = workdir / logfile
    cmd = [
        *twistd_command(),
        *twistd_options,
        "chatlog",
        "--port",
        port,
        "--logfile",
        str(log_path),
        *options,
    ]
    return launch(cmd, workdir, log_path, timeout, env)


def launch(
    cmd: list[str],
    cwd: Path,
    log_path: Path,
    timeout: float = 20.0,
    env: Mapping[str, str] | None = None,
) -> RunningServer:
    """Run a whole twistd command line in the foreground and wait until it listens."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=server_env(env)
    )
    server = RunningServer(proc, "", 0, log_path)
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            server._lines.put(line)
        server._lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        line = server.wait_output(LISTENING.pattern, timeout=timeout)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    match = LISTENING.search(line)
    assert match is not None
    server.host = match.group(1).decode().strip("[]")
    server.port = int(match.group(2))
    return server
