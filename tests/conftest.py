"""Shared fixtures: a running twistd chatlog server for end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import RunningServer, start_server


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
