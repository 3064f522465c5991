"""End-to-end: ``--fsync`` and ``--utc`` change what the real server does, seen from outside.

``--fsync`` is checked in the server's system calls (strace attached to the
running twistd): with it, a reply leaves only after an ``fdatasync`` of the
log that follows its record's ``write``; without it, the server makes no sync
call at all.  ``--utc`` is checked by running the server in a time zone 12 h
45 min east of UTC and comparing its timestamps with the test's own clock.
"""

from __future__ import annotations

import datetime
import json
import signal
import time
from pathlib import Path

import pytest

from tests.support.clients import LineClient
from tests.support.logfile import MESSAGE_HEAD
from tests.support.syscalls import Syscall, SyscallWatch, fd_of, have_strace
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

#: Every way a process can ask for its writes to reach the disk.
SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "syncfs", "sync")
#: Where a record or a reply can leave the process.
WRITE_CALLS = ("write", "writev", "sendto", "sendmsg")


def _index(calls: list[Syscall], fd: int, text: str, what: str) -> int:
    """The position of the one write-like call on ``fd`` whose data contains ``text``."""
    found = [
        i
        for i, call in enumerate(calls)
        if call.name in WRITE_CALLS and call.first_arg == str(fd) and text in call.text
    ]
    assert len(found) == 1, f"{what}: {len(found)} calls on fd {fd} carry {text!r}"
    return found[0]


@pytest.mark.skipif(not have_strace(), reason="strace is not installed")
@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "no-fsync"])
def test_fsync_syncs_the_log_between_record_and_reply(
    chatlog_server, tmp_path: Path, fsync: bool
) -> None:
    """--fsync: every reply follows write(record) then fdatasync(log); without it, no sync call."""
    server = chatlog_server(*(["--fsync"] if fsync else []))
    pid = server.serving_pid()
    log_fd = fd_of(pid, server.log_path)
    messages = [b"sync-%d" % i for i in range(20)]
    watch = SyscallWatch(pid, [*WRITE_CALLS, *SYNC_CALLS], tmp_path / "strace.out")
    with watch, LineClient(server.address) as client:
        # Round trips until strace shows one: from then on it sees every call.
        wait_until(
            lambda: client.round_trip(b"marker") and watch.shows('"Server received: marker\\n"'),
            10,
            "strace to see a round trip",
        )
        for message in messages:
            client.round_trip(message)
        calls = watch.stop()
    syncs = [c for c in calls if c.name in SYNC_CALLS]
    if not fsync:
        assert syncs == [], f"sync calls without --fsync: {syncs[:3]}"
    for message in messages:
        text = message.decode()
        record = _index(calls, log_fd, f" - {text}\\n", "the record's write")
        replies = [
            i
            for i, call in enumerate(calls)
            if call.name in WRITE_CALLS and f'"Server received: {text}\\n"' in call.text
        ]
        assert len(replies) == 1, f"{text}: {len(replies)} replies sent"
        assert record < replies[0], f"{text}: reply sent before the record was written"
        between = [c.name for c in calls[record + 1 : replies[0]] if c.first_arg == str(log_fd)]
        if fsync:
            assert "fdatasync" in between, f"{text}: no fdatasync of the log before its reply"
    if fsync:
        assert all(c.first_arg == str(log_fd) for c in syncs), syncs
        assert len(syncs) >= len(messages)
    assert server.stop() == -signal.SIGTERM


#: A POSIX TZ rule (no time-zone database needed): 12 h 45 min east of UTC, no summer time.
FAR_ZONE = "XYZ-12:45"
FAR_OFFSET = datetime.timedelta(hours=12, minutes=45)


def _message_stamp(records: list[bytes], fmt: str) -> tuple[datetime.datetime, str | None]:
    """The one message record's wall-clock time (naive) and, for json, its written offset."""
    if fmt == "json":
        [event] = [e for e in map(json.loads, records) if e["event"] == "message"]
        stamp = datetime.datetime.fromisoformat(event["ts"])
        return stamp.replace(tzinfo=None), event["ts"][-6:]
    [record] = [r for r in records if r.startswith(MESSAGE_HEAD)]
    text = record[len(MESSAGE_HEAD) :].split(b" - ", 1)[0].decode()
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f"), None


@pytest.mark.parametrize("fmt", ["event", "json"])
@pytest.mark.parametrize("utc", [True, False], ids=["utc", "local"])
def test_utc_stamps_utc_and_local_stamps_local(chatlog_server, fmt: str, utc: bool) -> None:
    """In a zone 12:45 east of UTC, --utc records carry UTC; without it, that zone's time."""
    server = chatlog_server("--format", fmt, *(["--utc"] if utc else []), env={"TZ": FAR_ZONE})
    before = time.time()
    with LineClient(server.address) as client:
        client.round_trip(b"what time is it")
    after = time.time()
    assert server.stop() == -signal.SIGTERM
    wall, written_offset = _message_stamp(server.records(), fmt)
    offset = datetime.timedelta(0) if utc else FAR_OFFSET
    instant = (wall - offset).replace(tzinfo=datetime.UTC).timestamp()
    # The record's time is when the server read the line: between the test's
    # two clock readings (to the microsecond it keeps).
    assert before - 1e-6 <= instant <= after, (
        f"record at {wall} (offset {offset}) is {instant - before:+.3f} s from the send"
    )
    if fmt == "json":
        assert written_offset == ("+00:00" if utc else "+12:45"), written_offset
