"""End-to-end: a SIGHUP relayed to a worker that is still starting is held, not fatal.

SIGHUP's default action kills a process.  A worker installs chatlog's handler
as it starts, so a relay that arrives before then would kill it; the pool
holds the signal until the worker says it is ready, and relays it then.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.support.process import children, wait_gone
from tests.support.twistd import RunningServer
from tests.support.waiting import wait_until

HUP_EVERY = 0.1  # seconds: a storm, as a logrotate run per worker start would not be
STORM = 4.0  # seconds: longer than a worker's restart delay plus its start-up


@pytest.mark.e2e
def test_sighup_storm_does_not_kill_a_starting_worker(
    chatlog_server: Callable[..., RunningServer],
) -> None:
    """SIGHUP at 10 Hz while a killed worker restarts: it starts once, and reopens its log."""
    server = chatlog_server("--workers", "2")
    server.wait_output(rb"\[worker 1\] .*listening on")
    [worker] = children(server.proc.pid)
    os.kill(worker, signal.SIGKILL)
    assert wait_gone(worker)
    deadline = time.monotonic() + STORM
    while time.monotonic() < deadline:
        server.send_signal(signal.SIGHUP)
        time.sleep(HUP_EVERY)  # the storm's pace, not a wait for anything
    server.wait_output_count(b"listening on", 3)  # worker 0, worker 1, worker 1 again
    ended = [line for line in server.output if b"chatlog worker 1 ended" in line]
    assert len(ended) == 1, ended  # the SIGKILL only, never a SIGHUP
    # The restarted worker rotates like any other: move its log, HUP, a new file appears.
    worker_log = server.log_path.with_name(server.log_path.name + ".w1")
    worker_log.rename(worker_log.with_name(worker_log.name + ".old"))
    server.send_signal(signal.SIGHUP)
    wait_until(worker_log.exists, 10, "worker 1 to reopen its log")
    assert server.stop() == -signal.SIGTERM
    # Nothing more ended while the storm's last signals were relayed.
    assert [line for line in server.output if b"chatlog worker 1 ended" in line] == ended
