"""The log writer on real files: batching, ack after write, reopen, errors, torn records."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from chatlog.log import TORN_MARK, LogReader, LogWriter, make_formatter
from chatlog.log.files import NotALogFile
from chatlog.log.writer import REOPEN_MAX_RETRY


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


@pytest.mark.parametrize(
    "tail",
    [b"Message Rece", b"Message Received: 2026-11-22 07:35:45.000000 - 127.0.0.1:1 #1 - hel"],
    ids=["garbage", "believable"],
)
def test_torn_last_line_is_marked_not_mended(tmp_path: Path, clock: Clock, tail: bytes) -> None:
    """After a crash mid-record, the torn line is marked torn and the next record starts afresh."""
    path = tmp_path / "chat.log"
    path.write_bytes(b"Message Received: 2026-11-22 07:35:45.000000 - 127.0.0.1:1 #1 - m0\n" + tail)
    writer = writer_for(path, clock)
    writer(message(1))
    writer.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == tail + TORN_MARK
    assert lines[2].startswith(b"Message Received: ") and lines[3] == b""
    # "hel" was never sent: the reader reports the line as torn, not as a message.
    reader = LogReader(path, utc=True)
    assert [e["msg"] for e in reader] == [b"m0", b"m1"]
    assert reader.torn == 1 and reader.unparsed == 0


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


# -- acknowledging only after the write ----------------------------------------------------


class FileWaiter:
    """A waiter that looks, when it is called back, at what the file holds then."""

    def __init__(self, path: Path, synced: list[int] | None = None) -> None:
        self.path = path
        self.synced = synced
        self.seen: list[tuple[bool, bytes, int]] = []

    def logWritten(self, ok: bool) -> None:
        self.seen.append((ok, self.path.read_bytes(), len(self.synced or [])))


def test_ack_comes_after_the_records_are_in_the_file(tmp_path: Path, clock: Clock) -> None:
    """When a waiter is told its records are written, they are in the file already."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    waiter = FileWaiter(path)
    for n in range(3):
        writer(message(n))
    writer.ackAfterWrite(waiter)
    clock.advance(0)
    [(ok, content, _)] = waiter.seen
    assert ok and content.count(b"\n") == 3 and content.endswith(b"#1 - m2\n")


def test_fsync_ack_comes_after_fdatasync(tmp_path: Path, clock: Clock, monkeypatch) -> None:
    """With fsync, a waiter is told only once the batch was fdatasync'ed."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock, fsync=True)
    waiter = FileWaiter(path, synced)
    writer(message(1))
    writer.ackAfterWrite(waiter)
    writer.flush()
    assert waiter.seen == [(True, path.read_bytes(), 1)]


# -- counting logged and refused apart -----------------------------------------------------


def test_logged_and_refused_are_counted_apart(tmp_path: Path, clock: Clock, disk: Disk) -> None:
    """Messages of written batches count as logged, those of failed ones as refused."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    writer(message(1))
    writer({"event": "connect", "time": clock.seconds(), "ip": "127.0.0.1", "port": 1, "conn": 2})
    writer.flush()
    disk.space = 0
    for n in (2, 3):
        writer(message(n))
        writer.flush()
    writer({"event": "connect", "time": clock.seconds(), "ip": "127.0.0.1", "port": 1, "conn": 3})
    writer.flush()
    disk.space = None
    writer(message(4))
    writer.flush()
    assert (writer.messages_logged, writer.messages_refused) == (2, 2)
    assert (writer.records_lost, writer.write_errors, writer.refused_left) == (1, 3, 0)
    logged = [e for e in LogReader(path, utc=True) if e["event"] == "message"]
    assert len(logged) == writer.messages_logged


# -- what a failed batch leaves behind -------------------------------------------------------


def eio(*args: Any) -> None:
    raise OSError(5, "Input/output error")


def test_failed_cut_back_is_said_and_its_torn_line_marked(
    tmp_path: Path, clock: Clock, disk: Disk, monkeypatch
) -> None:
    """A partial write that cannot be cut back: its whole records are counted, its torn one marked."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    writer(message(0))
    writer.flush()
    record = len(path.read_bytes())
    monkeypatch.setattr(os, "ftruncate", eio)
    disk.space = 2 * record + 20  # two records and part of a third, then ENOSPC
    waiter = Waiter()
    for n in range(1, 5):
        writer(message(n))
    writer.ackAfterWrite(waiter)
    writer.flush()
    assert waiter.results == [False]
    assert (writer.messages_refused, writer.refused_left) == (4, 2)
    disk.space = None
    writer(message(5))
    writer.flush()
    lines = path.read_bytes().split(b"\n")
    assert lines[3].endswith(TORN_MARK) and lines[3].startswith(b"Message Received:")
    assert lines[4].endswith(
        b"4 messages refused, 0 other records lost; "
        b"up to 2 refused messages may remain above (cannot cut back)"
    )
    assert lines[5].endswith(b"#1 - m5") and lines[6] == b""
    reader = LogReader(path, utc=True)
    assert [e["msg"] for e in reader if e["event"] == "message"] == [b"m0", b"m1", b"m2", b"m5"]
    assert reader.torn == 1


def test_failed_fdatasync_and_cut_back_say_every_refused_may_remain(
    tmp_path: Path, clock: Clock, monkeypatch
) -> None:
    """EIO on fdatasync and on ftruncate: the Log Error record says the refused may all be above."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock, fsync=True)
    monkeypatch.setattr(os, "fdatasync", eio)
    monkeypatch.setattr(os, "ftruncate", eio)
    waiter = Waiter()
    for n in range(3):
        writer(message(n))
    writer.ackAfterWrite(waiter)
    writer.flush()
    assert waiter.results == [False]
    assert (writer.messages_logged, writer.messages_refused, writer.refused_left) == (0, 3, 3)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)
    writer(message(3))
    writer.flush()
    records = path.read_bytes().split(b"\n")[:-1]
    assert len(records) == 5
    assert b"3 messages refused" in records[3]
    assert records[3].endswith(b"up to 3 refused messages may remain above (cannot cut back)")


def test_a_cut_back_that_cannot_be_synced_is_said_not_marked(
    tmp_path: Path, clock: Clock, disk: Disk, monkeypatch
) -> None:
    """--fsync, part of a batch written, cut back but not synced: said to remain, no torn mark."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock, fsync=True)
    monkeypatch.setattr(os, "fdatasync", eio)
    disk.space = 30  # part of the first record, then ENOSPC
    writer(message(1))
    writer(message(2))
    writer.flush()
    assert path.read_bytes() == b""  # cut back, though the cut is not on disk for sure
    assert (writer.messages_refused, writer.refused_left) == (2, 0)
    disk.space = None
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)
    writer(message(3))
    writer.flush()
    records = path.read_bytes().split(b"\n")
    assert records[0].startswith(b"Log Error: ") and records[1].endswith(b"#1 - m3")
    assert records[2:] == [b""]


def test_whole_records_cut_back_but_not_synced_may_come_back(
    tmp_path: Path, clock: Clock, monkeypatch
) -> None:
    """--fsync, a whole batch written, its fdatasync and the cut's fail: it may remain, says Log Error."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock, fsync=True)
    monkeypatch.setattr(os, "fdatasync", eio)
    writer(message(1))
    writer.flush()
    assert path.read_bytes() == b"" and writer.refused_left == 1
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)
    writer(message(2))
    writer.flush()
    first = path.read_bytes().split(b"\n")[0]
    assert first.endswith(
        b"1 message refused, 0 other records lost; "
        b"up to 1 refused message may remain above (cannot cut back)"
    )


def test_outage_record_left_in_the_file_is_not_told_twice(
    tmp_path: Path, clock: Clock, disk: Disk, monkeypatch
) -> None:
    """A Log Error record that stays in the file (no cut back) is not repeated by the next one."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    disk.space = 0
    writer(message(1))
    writer.flush()  # refused, nothing written
    monkeypatch.setattr(os, "ftruncate", eio)
    disk.space = 200  # the Log Error record, then ENOSPC in the next message
    writer(message(2))
    writer.flush()
    disk.space = None
    writer(message(3))
    writer.flush()
    outages = [e for e in LogReader(path, utc=True) if e["event"] == "log_error"]
    assert [(e["refused"], e.get("left", 0)) for e in outages] == [(1, 0), (1, 0)]
    assert writer.messages_refused == 2


# -- which files can be a log -------------------------------------------------------------------


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, clock: Clock) -> None:
    """A FIFO (with no reader, which would block an open) is refused with a clear error."""
    path = tmp_path / "chat.fifo"
    os.mkfifo(path)
    writer = LogWriter(str(path), make_formatter("event"), clock)
    with pytest.raises(NotALogFile, match="a FIFO cannot be the log.*--logfile -"):
        writer.open()
    assert writer.fd is None


def test_a_fifo_with_a_reader_is_refused(tmp_path: Path, clock: Clock) -> None:
    """A FIFO someone reads is refused too: what a failed write left there could not be taken back."""
    path = tmp_path / "chat.fifo"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(NotALogFile, match="a FIFO"):
            LogWriter(str(path), make_formatter("event"), clock).open()
    finally:
        os.close(reader)


def test_a_socket_is_refused(tmp_path: Path, clock: Clock) -> None:
    """A UNIX socket's path is refused with what it is, not ENXIO."""
    path = tmp_path / "chat.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(NotALogFile, match="a socket cannot be the log"):
            LogWriter(str(path), make_formatter("event"), clock).open()


def test_standard_output_stays_allowed(clock: Clock) -> None:
    """``-`` is standard output, whatever it is (a pipe to a log shipper): never refused."""
    writer = LogWriter("-", make_formatter("event"), clock)
    writer.open()
    assert writer.fd == 1


# -- a durable directory entry ------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(st_dev, st_ino) of each directory os.fsync is called on."""
    calls: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            calls.append((info.st_dev, info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "no-fsync"])
def test_directory_is_synced_when_the_log_is_opened(
    tmp_path: Path, clock: Clock, fsyncs: list[tuple[int, int]], fsync: bool
) -> None:
    """Opening and reopening the log fsyncs its directory, so a new file survives a power cut."""
    here = os.stat(tmp_path)
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock, fsync=fsync)
    assert fsyncs == [(here.st_dev, here.st_ino)]
    path.rename(tmp_path / "chat.log.1")
    assert writer.reopen()
    assert fsyncs == [(here.st_dev, here.st_ino)] * 2
    writer.close()


def test_directory_sync_failure_fails_the_open_with_fsync(
    tmp_path: Path, clock: Clock, monkeypatch
) -> None:
    """With --fsync, a directory that cannot be synced is an error; without, only a warning."""
    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OSError, match="Input/output error"):
        writer_for(tmp_path / "chat.log", clock, fsync=True)
    writer_for(tmp_path / "other.log", clock).close()


# -- a reopen that fails is retried ---------------------------------------------------------


class FailingOpen:
    """os.open that fails with EMFILE for ``path`` while ``failing``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.failing = True
        self.attempts = 0
        self._open = os.open

    def __call__(self, path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if str(path) == self.path:
            self.attempts += 1
            if self.failing:
                raise OSError(24, "Too many open files")
        return self._open(path, flags, mode, **kwargs)


def test_failed_reopen_goes_on_in_the_old_file_and_is_retried(
    tmp_path: Path, clock: Clock, monkeypatch
) -> None:
    """EMFILE on SIGHUP: records go on to the moved file, retries back off, then the new file."""
    path, moved = tmp_path / "chat.log", tmp_path / "chat.log.1"
    writer = writer_for(path, clock)
    writer(message(1))
    writer.flush()
    path.rename(moved)
    failing = FailingOpen(path)
    monkeypatch.setattr(os, "open", failing)
    assert writer.reopen() is False
    assert writer.reopen_pending and writer.reopen_errors == 1
    writer(message(2))
    writer.flush()
    delays = []
    for _ in range(3):
        [retry] = clock.getDelayedCalls()
        delays.append(round(retry.getTime() - clock.seconds(), 3))
        clock.advance(delays[-1])
    assert delays == [0.1, 0.2, 0.4] and writer.reopen_errors == 4
    failing.failing = False
    clock.advance(0.8)
    assert not writer.reopen_pending and path.exists()
    writer(message(3))
    writer.close()
    old = list(LogReader(moved, utc=True))
    new = list(LogReader(path, utc=True))
    assert [e["event"] for e in old] == ["message", "log_reopen", "message"]
    assert old[1]["state"] == "failed" and "Too many open files" in old[1]["error"]
    assert [e.get("msg") for e in old if e["event"] == "message"] == [b"m1", b"m2"]
    assert [e["event"] for e in new] == ["log_reopen", "message"]
    assert new[0]["state"] == "done" and new[0]["attempts"] == 4
    assert new[0]["seconds"] == pytest.approx(1.5)
    assert new[1]["msg"] == b"m3"


def test_backoff_is_capped_and_close_stops_retrying(
    tmp_path: Path, clock: Clock, monkeypatch
) -> None:
    """Retries never wait more than the cap, a new SIGHUP tries at once, close cancels them."""
    path = tmp_path / "chat.log"
    writer = writer_for(path, clock)
    path.rename(tmp_path / "chat.log.1")
    failing = FailingOpen(path)
    monkeypatch.setattr(os, "open", failing)
    writer.reopen()
    writer.flush()  # the Log Reopen record, into the moved file
    for _ in range(10):
        [retry] = clock.getDelayedCalls()
        assert retry.getTime() - clock.seconds() <= REOPEN_MAX_RETRY
        clock.advance(retry.getTime() - clock.seconds())
    attempts = failing.attempts
    assert writer.reopen() is False and failing.attempts == attempts + 1
    writer.close()
    assert clock.getDelayedCalls() == [] and not writer.reopen_pending
