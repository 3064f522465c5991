"""The factory's process-wide memory settings, where the C library has them."""

from __future__ import annotations

import platform
import sys

import pytest

from chatlog.server.factory import keep_big_buffers_in_the_heap


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_big_buffers_are_kept_in_the_heap_under_glibc() -> None:
    """Under glibc both malloc thresholds are set (mallopt accepts each)."""
    assert keep_big_buffers_in_the_heap()
