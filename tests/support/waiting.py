"""Waiting on a condition with a deadline, for tests that drive real processes.

End-to-end tests wait for events (a log line, a count of records, a process
gone), never for a fixed time; every wait has a deadline, so a server bug
fails the test with a message saying what never happened instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.01) -> T:
    """Poll ``condition`` until it returns something true, and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
