"""README's recipes, run as README writes them.

Each test takes a literal block out of README.rst by the words that
introduce it, and runs its commands in a fresh directory.  Only what a test
must change is changed, the same way each time: port 5000 becomes a free
port, ``twistd`` and ``python`` become this Python's, the system folders of
the daemon recipe become folders of the test, and a run's ``--duration``
is shortened.  A recipe that stops working, or a README that drifts from
what the programs print, turns a test red.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatlog.log import LogReader
from tests.support.process import wait_gone
from tests.support.twistd import ROOT, launch, server_env, twistd_command
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

README = ROOT / "README.rst"


def block_after(intro: str) -> list[str]:
    """The lines of the literal block after the paragraph that ends with ``intro`` + ``::``,
    backslash continuations joined."""
    text = README.read_text()
    start = text.index(intro + "::\n")
    lines: list[str] = []
    for line in text[start:].splitlines()[2:]:
        if line and not line.startswith("    "):
            break
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + line.strip()
        else:
            lines.append(line[4:])
    while lines and not lines[-1]:
        lines.pop()
    return lines


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Recipe:
    """Runs README command lines in ``workdir`` with the test's substitutions."""

    def __init__(self, workdir: Path, port: int, folders: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = port
        self.folders = folders or {}

    def words(self, line: str) -> list[str]:
        for old, new in self.folders.items():
            line = line.replace(old, new)
        line = re.sub(r"\b5000\b", str(self.port), line)
        words = shlex.split(line, comments=True)
        if words[0] == "twistd":
            words[:1] = twistd_command()
        elif words[0] == "python":
            words[0] = sys.executable
        return words

    def run(self, line: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.words(line),
            cwd=self.workdir,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def shell(self, line: str) -> subprocess.CompletedProcess[str]:
        """A line of shell (``kill "$(cat ...)"``), the folders substituted."""
        for old, new in self.folders.items():
            line = line.replace(old, new)
        return subprocess.run(
            ["bash", "-c", line], cwd=self.workdir, capture_output=True, text=True, timeout=30
        )


@pytest.fixture
def recipe(tmp_path: Path) -> Iterator[Recipe]:
    yield Recipe(tmp_path, free_port())


def test_quick_start(recipe: Recipe) -> None:
    """Set up and run, talk to it, read the log: the commands and the records README shows."""
    setup = block_after("Set up and run the server (Python 3.11+)")
    assert setup == ["pip install . && twistd -n chatlog --port 5000"]
    # pip install . is what .ci/run does before the tests; the server as written:
    server = launch(
        recipe.words(setup[0].split(" && ")[1]), recipe.workdir, recipe.workdir / "chatlog.log"
    )
    try:
        talk = block_after("works as well, where netcat is installed)")
        assert talk[0] == "$ python -m chatlog.client --port 5000 'Hello, Server!'"
        said = recipe.run(talk[0][2:])
        assert said.returncode == 0, said.stderr
        assert re.fullmatch(r"Server received: Hello, Server!  \(\d+\.\d{3} ms\)\n", said.stdout)
        assert talk[2] == "$ cat chatlog.log"
        wait_until(
            lambda: b"Disconnection" in (recipe.workdir / "chatlog.log").read_bytes(), 10, "the log"
        )
    finally:
        server.stop()
    shown = [line.split(":")[0] for line in talk[3:]]
    written = [
        line.split(":")[0] for line in (recipe.workdir / "chatlog.log").read_text().splitlines()
    ]
    assert written[: len(shown)] == shown == [
        "Server Started", "Connection", "Message Received", "Disconnection"
    ]  # fmt: skip


def test_the_report_recipe(recipe: Recipe) -> None:
    """Server in json to its own log, a load with a client log, the report of both."""
    lines = block_after("into numbers and pictures")
    assert lines[-1] == "xdg-open report/report.html"
    serve, load, report = lines[:3]
    assert "--duration 10" in load
    # The quick start's event log is there, as it would be after the quick start.
    (recipe.workdir / "chatlog.log").write_text(
        "Server Started: 2026-11-22 14:35:40.000512 - listening on 0.0.0.0:5000 (tcp:5000), "
        "pid 4242, chatlog 0.1.0\n"
    )
    server = launch(recipe.words(serve), recipe.workdir, recipe.workdir / "run.log")
    try:
        ran = recipe.run(load.replace("--duration 10", "--duration 1"))
        assert ran.returncode == 0, ran.stderr
    finally:
        server.stop()
    reported = recipe.run(report)
    assert reported.returncode == 0, reported.stderr
    assert reported.stdout.startswith("read run.log: server log, json format, ")
    assert "read client.log: client log, event format, " in reported.stdout
    assert reported.stderr == ""
    assert (recipe.workdir / "report" / "report.html").stat().st_size > 10_000


def test_without_systemd(tmp_path: Path) -> None:
    """The daemon recipe: folders, start detached, SIGHUP reopens, SIGTERM stops and removes the pid file."""
    root = tmp_path / "root"
    folders = {"/run/chatlog": str(root / "run"), "/var/log/chatlog": str(root / "log")}
    recipe = Recipe(tmp_path, free_port(), folders)
    mkdir, start, hup, stop = block_after("exist)")
    assert recipe.shell(mkdir).returncode == 0
    started = recipe.run(start)
    assert (started.returncode, started.stderr) == (0, ""), started
    pidfile = root / "run" / "chatlog.pid"
    log = root / "log" / "chatlog.log"
    wait_until(lambda: log.exists() and log.stat().st_size > 0, 15, "the daemon's log")
    pid = int(pidfile.read_text())
    try:
        log.rename(root / "log" / "chatlog.log.1")
        assert recipe.shell(hup).returncode == 0
        wait_until(log.exists, 10, "a new log after SIGHUP")
        assert recipe.shell(stop).returncode == 0
        assert wait_gone(pid), "the daemon did not stop"
    finally:
        if not wait_gone(pid, 0.1):
            os.kill(pid, signal.SIGKILL)
    assert not pidfile.exists()
    assert [e["event"] for e in LogReader(log)] == ["stop"]
    assert [e["event"] for e in LogReader(root / "log" / "chatlog.log.1")] == ["start"]


def test_every_mistake_is_the_line_readme_shows(tmp_path: Path) -> None:
    """Port in use, a FIFO as the log, an unknown format: exactly the stderr README quotes."""
    fifo = tmp_path / "chat.fifo"
    os.mkfifo(fifo)
    recipe = Recipe(tmp_path, free_port(), {"/run/chat.fifo": str(fifo)})
    lines = block_after("on stderr and a non-zero exit status")
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    assert len(pairs) == 3
    with socket.socket() as taken:
        taken.bind(("", recipe.port))
        taken.listen()
        for command, shown in pairs:
            assert command.startswith("$ ")
            result = recipe.run(command[2:])
            expected = shown.replace("/run/chat.fifo", str(fifo)).replace("5000", str(recipe.port))
            assert result.returncode != 0, command
            assert result.stderr.splitlines()[-1:] == [expected], command
