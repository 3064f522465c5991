"""Shared fixtures: a running twistd chatlog server for end-to-end tests."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.twistd import RunningServer, start_server


def pytest_configure(config: pytest.Config) -> None:
    """Let the servers the tests start take Ctrl-C, as from a terminal.

    A shell starts a background job with SIGINT ignored, and an ignored
    signal stays ignored across exec: twistd would then never see SIGINT
    (Twisted installs its handler only over Python's default one), and the
    SIGINT tests would fail for the way the suite was started, not for
    chatlog.  A handled signal is reset to its default in a child.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def chatlog_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start ``twistd -n chatlog`` with the given options; every server is stopped after the test."""
    started: list[RunningServer] = []

    def start(*options: str, **kwargs: Any) -> RunningServer:
        server = start_server(tmp_path, *options, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs to fill up (disk-full tests); skipped where mounting is not allowed."""
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield where
    finally:
        # Lazy: the server may still hold the log open if the test failed early.
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=10)
