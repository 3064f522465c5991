"""The log writer on real files: batching, ack after write, reopen, errors, torn records."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from chatlog.log import LogWriter, make_formatter


class Waiter:
    def __init__(self) -> None:
        self.results: list[bool] = []

    def logWritten(self, ok: bool) -> None:
        self.results.append(ok)


def message(n: int, when: float = 1795332945.0) -> dict[str, Any]:
    return {
        "event": "message",
        "time": when,
        "ip": "127.0.0.1",
        "port": 1,
        "conn": 1,
        "seq": n,
        "msg": b"m%d" % n,
    }


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1795332945.0)
    return clock


class Disk:
    """os.write with a disk that can fill up: ``space`` bytes left, None for plenty."""

    def __init__(self) -> None:
        self.space: int | None = None
        self._write = os.write

    def write(self, fd: int, data: Any) -> int:
        if self.space is None:
            return self._write(fd, data)
        if self.space == 0:
            raise OSError(28, "No space left on device")
        written = self._write(fd, bytes(data[: self.space]))
        self.space -= written
        return written


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    disk = Disk()
    monkeypatch.setattr(os, "write", disk.write)
    return disk


def writer_for(path: Path, clock: Clock, **kwargs: Any) -> LogWriter:
    writer = LogWriter(str(path), make_formatter("event", utc=True), clock, **kwargs)
    writer.open()
    return writer


def test_one_write_per_turn_then_ack(tmp_path: Path, clock: Clock, monkeypatch) -> None:
    """All records staged in one turn go out in one write(2), before any ack."""
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    waiter = Waiter()
    for n in range(100):
        writer(message(n))
    writer.ackAfterWrite(waiter)
    assert path.read_bytes() == b"" and waiter.results == []
    clock.advance(0)
    assert len(writes) == 1
    assert waiter.results == [True]
    assert path.read_bytes().count(b"\n") == 100


def test_short_writes_are_continued(tmp_path: Path, clock: Clock, monkeypatch) -> None:
    """A short write(2) is followed by another until the batch is all written."""
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    for n in range(10):
        writer(message(n))
    writer.flush()
    assert path.read_bytes().split(b"\n")[:-1] == [
        b"Message Received: 2026-11-22 07:35:45.000000 - 127.0.0.1:1 #1 - m%d" % n
        for n in range(10)
    ]


def test_appends_to_existing_log(tmp_path: Path, clock: Clock) -> None:
    """An existing log is appended to, never truncated."""
    path = tmp_path / "chat.log"
    path.write_bytes(b"old record\n")
    writer = writer_for(path, clock)
    writer(message(1))
    writer.close()
    assert path.read_bytes().startswith(b"old record\nMessage Received:")


def test_torn_last_record_is_ended_before_new_ones(tmp_path: Path, clock: Clock) -> None:
    """After a crash mid-record, the next record starts on a fresh line."""
    path = tmp_path / "chat.log"
    path.write_bytes(b"complete\nMessage Rece")
    writer = writer_for(path, clock)
    writer(message(1))
    writer.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[:2] == [b"complete", b"Message Rece"]
    assert lines[2].startswith(b"Message Received: ")


def test_reopen_moves_on_without_loss_or_duplicates(tmp_path: Path, clock: Clock) -> None:
    """logrotate's move then SIGHUP: staged records go to the old file, new ones to the new."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    writer(message(1))
    writer.flush()
    writer(message(2))  # staged, not yet written, when the file is moved
    path.rename(tmp_path / "chat.log.1")
    writer.reopen()
    writer(message(3))
    writer.close()
    old = (tmp_path / "chat.log.1").read_bytes()
    new = path.read_bytes()
    assert old.count(b"\n") == 2 and b"#1 - m1\n" in old and b"#1 - m2\n" in old
    assert new.count(b"\n") == 1 and new.endswith(b"#1 - m3\n")


def test_write_failure_refuses_then_recovers(tmp_path: Path, clock: Clock, disk: Disk) -> None:
    """ENOSPC: the batch is refused; when writes work again a Log Error record says so."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    disk.space = 0
    waiter = Waiter()
    writer(message(1))
    writer(message(2))
    writer({"event": "connect", "time": clock.seconds(), "ip": "127.0.0.1", "port": 1, "conn": 2})
    writer.ackAfterWrite(waiter)
    writer.flush()
    assert waiter.results == [False]
    assert writer.failing_since == clock.seconds()
    clock.advance(3)
    disk.space = None
    writer(message(3))
    writer.ackAfterWrite(waiter)
    writer.flush()
    assert waiter.results == [False, True]
    records = path.read_bytes().split(b"\n")[:-1]
    assert records[0].startswith(
        b"Log Error: 2026-11-22 07:35:48.000000 - log unavailable for 3.000000 s"
    )
    assert b"2 messages refused, 1 other record lost" in records[0]
    assert records[1].endswith(b"#1 - m3")
    assert writer.failing_since is None and writer.write_errors == 1


def test_dev_full_refuses_every_batch(clock: Clock) -> None:
    """/dev/full: every batch is refused, none is acknowledged."""
    writer = writer_for(Path("/dev/full"), clock)
    waiter = Waiter()
    for n in range(3):
        writer(message(n))
        writer.ackAfterWrite(waiter)
        writer.flush()
    assert waiter.results == [False, False, False]
    writer.close()


def test_fsync_calls_fdatasync_per_batch(tmp_path: Path, clock: Clock, monkeypatch) -> None:
    """With fsync, each batch is fdatasync'ed once before its ack."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    writer = writer_for(tmp_path / "chat.log", clock, fsync=True)
    waiter = Waiter()
    for n in range(5):
        writer(message(n))
    writer.ackAfterWrite(waiter)
    writer.flush()
    assert synced == [writer.fd] and waiter.results == [True]


def test_batch_callback_reports_size(tmp_path: Path, clock: Clock) -> None:
    """on_batch gets the bytes written and the time taken, for metrics."""
    batches: list[tuple[int, float]] = []
    writer = writer_for(tmp_path / "chat.log", clock, on_batch=lambda n, s: batches.append((n, s)))
    writer(message(1))
    writer.flush()
    [(size, seconds)] = batches
    assert size == len((tmp_path / "chat.log").read_bytes())
    assert 0 <= seconds < 1


def test_partial_batch_is_taken_back(tmp_path: Path, clock: Clock, disk: Disk) -> None:
    """Disk full mid-batch: what reached the file is cut off, so no refused or torn record stays."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    waiter = Waiter()
    writer(message(1))
    writer.flush()
    before = path.read_bytes()
    disk.space = 30  # a short write, then ENOSPC
    writer(message(2))
    writer(message(3))
    writer.ackAfterWrite(waiter)
    writer.flush()
    assert waiter.results == [False]
    assert path.read_bytes() == before
    disk.space = None
    writer(message(4))
    writer.flush()
    records = path.read_bytes().split(b"\n")[:-1]
    assert [r.rsplit(b" - ", 1)[1] for r in records] == [
        b"m1",
        b"log unavailable for 0.000000 s ([Errno 28] No space left on device): "
        b"2 messages refused, 0 other records lost",
        b"m4",
    ]


def test_refused_counts_lines_staged_together(tmp_path: Path, clock: Clock, disk: Disk) -> None:
    """A failed batch counts every line of a read staged in one piece as a refused message."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    disk.space = 0
    fields = {
        "event": "message",
        "time": clock.seconds(),
        "ip": "127.0.0.1",
        "port": 1,
        "conn": 1,
        "seq": 1,
    }
    writer.stageMessages(fields, [b"a", b"b", b"c"])
    writer({"event": "connect", "time": clock.seconds(), "ip": "127.0.0.1", "port": 1, "conn": 2})
    writer.flush()
    disk.space = None
    writer(message(4))
    writer.flush()
    first = path.read_bytes().split(b"\n")[0]
    assert first.endswith(b"3 messages refused, 1 other record lost")
