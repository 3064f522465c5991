"""End-to-end: chatlog on a Twisted whose internals moved, and with --no-fastpath.

The fast path reaches into Twisted's private internals.  A release that
renames one must not break the server: it has to notice at start, say so in
one line, and serve every message on Twisted's stock code paths.  To test
that for real, the server here runs on a Twisted whose source is rewritten as
it is imported (a ``sitecustomize`` on ``PYTHONPATH`` renames an internal
throughout ``twisted.*``), exactly as a new release would look.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.twistd import RunningServer, server_env

#: Installed as sitecustomize.py: rename Twisted internals in every twisted.* module
#: as it is imported (compiled from source, so no renamed bytecode is cached).
RENAMING_SITECUSTOMIZE = """
import importlib.abc
import importlib.machinery
import os
import sys

RENAMES = [pair.split("=") for pair in os.environ["CHATLOG_TEST_RENAME"].split(",")]


class RenamingLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):
        source = self.get_data(self.path).decode("utf-8")
        for old, new in RENAMES:
            source = source.replace(old, new)
        return compile(source, self.path, "exec", dont_inherit=True)


class RenamingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("twisted."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = RenamingLoader(fullname, spec.origin)
        return spec


sys.meta_path.insert(0, RenamingFinder())
"""

CONNECTIONS = 10
MESSAGES = 300  # per connection


def run_client(server: RunningServer, *options: str) -> dict[str, object]:
    """Drive ``server`` with the load client (in the same environment) and return its summary."""
    done = subprocess.run(
        [
            sys.executable, "-m", "chatlog.client", "--host", server.host,
            "--port", str(server.port), "--connections", str(CONNECTIONS),
            "--messages", str(MESSAGES), "--pipeline", "4", "--json", *options,
        ],
        env=server_env(), capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def assert_every_message_answered_and_logged(server: RunningServer) -> None:
    summary = run_client(server)
    assert summary["messages"] == CONNECTIONS * MESSAGES
    assert summary["errors"] == 0
    assert server.stop() == -signal.SIGTERM  # twistd ends by the signal it was stopped with
    records = server.records()
    logged = [r for r in records if r.startswith(b"Message Received: ")]
    assert len(logged) == CONNECTIONS * MESSAGES
    assert records[-1].startswith(b"Server Stopped: ")
    assert b"%d messages" % (CONNECTIONS * MESSAGES) in records[-1]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "renames, named",
    [
        ("_tempDataLen=_pendingLength", "FileDescriptor has no _tempDataLen"),
        ("_poller=_epollObject", "EPollReactor has no _poller"),
        ("_doReadOrWrite=_dispatchOne", "EPollReactor has no _doReadOrWrite"),
    ],
)
def test_renamed_internal_falls_back_to_the_stock_paths(
    chatlog_server: Callable[..., RunningServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    renames: str,
    named: str,
) -> None:
    """A Twisted that renamed an internal: one warning line, then every message answered and logged."""
    site = tmp_path / "renamed-twisted"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RENAMING_SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("CHATLOG_TEST_RENAME", renames)
    server = chatlog_server()
    warning = server.wait_output(rb"fast path off")
    assert named.encode() in warning
    assert b"serving on Twisted's stock code paths" in warning
    assert_every_message_answered_and_logged(server)


@pytest.mark.e2e
def test_no_fastpath_serves_on_the_stock_paths(
    chatlog_server: Callable[..., RunningServer],
) -> None:
    """--no-fastpath: said in twistd's log, and every message answered and logged."""
    server = chatlog_server("--no-fastpath")
    server.wait_output(rb"fast path off \(--no-fastpath\)")
    assert_every_message_answered_and_logged(server)
    assert not any(b"fast path off (the" in line for line in server.output)
