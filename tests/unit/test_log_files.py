"""The log file's system calls: ``write_all`` on short and failed writes, the page recycler.

Short and failed writes are made by standing in for ``os.write`` and
``os.writev`` with functions that take fewer bytes than asked (through the
real calls, into a real file) or fail after some; the file's bytes then say
whether every record landed once, in order.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from chatlog.log import files
from chatlog.log.files import IOV_MAX, WRITEV_PIECE, PageRecycler, WriteFailed, write_all

Buffers = Sequence[bytes | memoryview]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    path = tmp_path / "chatlog.log"
    fd, _readable = files.open_log_file(str(path))
    try:
        yield fd, path
    finally:
        os.close(fd)


class Calls:
    """Stands in for ``os.write`` / ``os.writev``: records each call, takes at most ``most`` bytes.

    After ``fail_after`` bytes in all, a call raises ``OSError(fail)`` instead.
    """

    def __init__(self, most: int, fail_after: int | None = None, fail: int = errno.ENOSPC):
        self.most = most
        self.fail_after = fail_after
        self.fail = fail
        self.taken = 0
        self.write_calls: list[int] = []
        #: Per writev call: (how many buffers, whether the first was a memoryview).
        self.writev_calls: list[tuple[int, bool]] = []
        self._write = os.write

    def _take(self, fd: int, data: bytes) -> int:
        if self.fail_after is not None and self.taken >= self.fail_after:
            raise OSError(self.fail, os.strerror(self.fail))
        room = self.most
        if self.fail_after is not None:
            room = min(room, self.fail_after - self.taken)
        took = self._write(fd, data[:room])
        self.taken += took
        return took

    def write(self, fd: int, data: Any) -> int:
        self.write_calls.append(len(data))
        return self._take(fd, bytes(data))

    def writev(self, fd: int, buffers: Buffers) -> int:
        self.writev_calls.append((len(buffers), isinstance(buffers[0], memoryview)))
        assert len(buffers) <= IOV_MAX, "writev(2) takes at most IOV_MAX buffers"
        return self._take(fd, b"".join(bytes(b) for b in buffers))


def install(monkeypatch: pytest.MonkeyPatch, calls: Calls) -> None:
    monkeypatch.setattr(files.os, "write", calls.write)
    monkeypatch.setattr(files.os, "writev", calls.writev)


def records(count: int, size: int) -> list[bytes]:
    """``count`` distinct records of ``size`` bytes, each ending in a newline."""
    out = []
    for n in range(count):
        head = b"%d:" % n
        out.append(head + b"x" * (size - len(head) - 1) + b"\n")
    return out


# -- write_all ---------------------------------------------------------------------------------


def test_small_records_are_joined_and_short_writes_looped(
    log: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small records go in one joined buffer; a write that takes 7 bytes is called until all landed."""
    fd, path = log
    pieces = records(20, 40)
    calls = Calls(most=7)
    install(monkeypatch, calls)
    write_all(fd, pieces, 800)
    assert path.read_bytes() == b"".join(pieces)
    assert calls.writev_calls == []
    assert calls.write_calls[0] == 800 and len(calls.write_calls) == -(-800 // 7)
    # Each call is given what is left, not the whole batch again.
    assert calls.write_calls == [800 - 7 * i for i in range(len(calls.write_calls))]


def test_one_record_is_written_as_it_is(
    log: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of one record, however big, goes by write(2), looping on short writes."""
    fd, path = log
    (piece,) = records(1, 3 * WRITEV_PIECE)
    calls = Calls(most=5000)
    install(monkeypatch, calls)
    write_all(fd, [piece], len(piece))
    assert path.read_bytes() == piece
    assert calls.writev_calls == [] and len(calls.write_calls) == 3


def test_big_records_go_by_writev_beyond_iov_max(log: tuple[int, Path]) -> None:
    """More big records than one writev(2) takes: all land, in order, with the real calls."""
    fd, path = log
    pieces = records(2 * IOV_MAX + 3, WRITEV_PIECE)
    write_all(fd, pieces, sum(map(len, pieces)))
    assert path.read_bytes() == b"".join(pieces)


def test_writev_groups_resume_mid_record_after_a_short_write(
    log: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short writevs over > IOV_MAX records: each next call starts where the last stopped, mid-record."""
    fd, path = log
    pieces = records(2 * IOV_MAX + 3, WRITEV_PIECE)
    total = sum(map(len, pieces))
    # An odd size, so that most calls end inside a record.
    calls = Calls(most=3 * WRITEV_PIECE + 123)
    install(monkeypatch, calls)
    write_all(fd, pieces, total)
    assert path.read_bytes() == b"".join(pieces)
    assert calls.write_calls == []
    assert len(calls.writev_calls) == -(-total // calls.most)
    assert calls.writev_calls[0] == (IOV_MAX, False)
    assert any(starts_mid for _count, starts_mid in calls.writev_calls[1:])


def test_a_small_iov_max_splits_the_batch(
    log: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With IOV_MAX of 4, eleven records go in groups of at most 4, whole writes or not."""
    fd, path = log
    monkeypatch.setattr(files, "IOV_MAX", 4)
    pieces = records(11, WRITEV_PIECE)
    seen: list[int] = []
    real = os.writev

    def writev(fd: int, buffers: Buffers) -> int:
        seen.append(len(buffers))
        assert len(buffers) <= 4
        return real(fd, buffers)

    monkeypatch.setattr(files.os, "writev", writev)
    write_all(fd, pieces, sum(map(len, pieces)))
    assert path.read_bytes() == b"".join(pieces)
    assert seen == [4, 4, 3]


def test_a_batch_of_megabytes_is_never_joined(
    log: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small records adding up to WRITEV_BATCH go by writev from where they lie."""
    fd, path = log
    pieces = records(files.WRITEV_BATCH // 512 + 1, 512)
    calls = Calls(most=1 << 30)
    install(monkeypatch, calls)
    write_all(fd, pieces, sum(map(len, pieces)))
    assert path.read_bytes() == b"".join(pieces)
    assert calls.write_calls == [] and calls.writev_calls


@pytest.mark.parametrize(
    ("size", "count", "most", "fail_after"),
    [
        (40, 20, 7, 300),  # joined, failing mid-way
        (40, 20, 7, 0),  # joined, failing at once
        (WRITEV_PIECE, 5, 1 << 30, 2 * WRITEV_PIECE + 10),  # one writev, then the rest
        (WRITEV_PIECE, IOV_MAX + 7, 3 * WRITEV_PIECE, 5 * WRITEV_PIECE + 1),  # groups
    ],
)
def test_a_failed_write_says_how_much_landed(
    log: tuple[int, Path],
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    count: int,
    most: int,
    fail_after: int,
) -> None:
    """WriteFailed carries the error and exactly the bytes that reached the file before it."""
    fd, path = log
    pieces = records(count, size)
    calls = Calls(most=most, fail_after=fail_after)
    install(monkeypatch, calls)
    with pytest.raises(WriteFailed) as failed:
        write_all(fd, pieces, sum(map(len, pieces)))
    assert failed.value.error.errno == errno.ENOSPC
    assert failed.value.written == fail_after == path.stat().st_size
    assert path.read_bytes() == b"".join(pieces)[:fail_after]


@pytest.mark.parametrize("size", [40, WRITEV_PIECE])
def test_a_write_that_takes_nothing_fails_rather_than_spins(
    log: tuple[int, Path], monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """A call that returns 0 is an error (EIO), after what the earlier calls took."""
    fd, _path = log
    pieces = records(8, size)
    took = iter([size, 0])

    def nothing(fd: int, data: Any) -> int:
        return next(took)

    monkeypatch.setattr(files.os, "write", nothing)
    monkeypatch.setattr(files.os, "writev", nothing)
    with pytest.raises(WriteFailed) as failed:
        write_all(fd, pieces, 8 * size)
    assert failed.value.error.errno == errno.EIO
    assert failed.value.written == size


# -- PageRecycler ------------------------------------------------------------------------------


class Later:
    """A stand-in for a thread pool: keeps each call until told to run it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[[int], None], int]] = []

    def __call__(self, function: Callable[[int], None], fd: int) -> None:
        self.calls.append((function, fd))

    def run_all(self) -> None:
        calls, self.calls = self.calls, []
        for function, fd in calls:
            function(fd)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as error:
        assert error.errno == errno.EBADF
        return False
    return True


def test_a_step_every_n_bytes(log: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run at once: a step (one fadvise DONTNEED of the whole file) each time ``every`` bytes add up."""
    fd, _path = log
    advice: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, how: int) -> None:
        advice.append((offset, length, how))
        real(fd, offset, length, how)

    monkeypatch.setattr(files.os, "posix_fadvise", fadvise)
    pages = PageRecycler(100)
    for _ in range(9):
        pages.wrote(fd, 10)
    assert pages.steps == 0 and advice == []
    pages.wrote(fd, 10)  # 100 bytes
    assert pages.steps == 1 and advice == [(0, 0, os.POSIX_FADV_DONTNEED)]
    pages.wrote(fd, 99)
    assert pages.steps == 1
    pages.wrote(fd, 250)  # one step, however far past ``every``
    assert pages.steps == 2
    pages.wrote(fd, 100)
    assert pages.steps == 3 and not pages.busy
    assert is_open(fd)


def test_no_step_while_one_is_under_way(log: tuple[int, Path]) -> None:
    """While a step runs elsewhere the next waits; the bytes meanwhile still count."""
    fd, _path = log
    later = Later()
    pages = PageRecycler(100, later)
    pages.wrote(fd, 100)
    assert pages.steps == 1 and pages.busy and len(later.calls) == 1
    pages.wrote(fd, 1000)
    assert pages.steps == 1 and len(later.calls) == 1  # busy: skipped
    later.run_all()
    assert not pages.busy
    pages.wrote(fd, 1)  # 1001 bytes since the last step
    assert pages.steps == 2 and len(later.calls) == 1


def test_each_step_has_its_own_descriptor_and_closes_it(log: tuple[int, Path]) -> None:
    """The step works on a dup of the log's descriptor, closed when it is done; the log's stays open."""
    fd, _path = log
    later = Later()
    pages = PageRecycler(10, later)
    pages.wrote(fd, 10)
    ((_function, mine),) = later.calls
    assert mine != fd and is_open(mine)
    assert os.path.sameopenfile(mine, fd)
    later.run_all()
    assert not is_open(mine) and is_open(fd)


def test_failed_advice_still_closes_and_frees(
    log: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses the advice loses nothing: the dup is closed, the next step runs."""
    fd, _path = log

    def refuse(fd: int, offset: int, length: int, how: int) -> None:
        raise OSError(errno.ESPIPE, "no advice here")

    monkeypatch.setattr(files.os, "posix_fadvise", refuse)
    later = Later()
    pages = PageRecycler(10, later)
    pages.wrote(fd, 10)
    ((_function, mine),) = later.calls
    later.run_all()
    assert not is_open(mine) and not pages.busy
    pages.wrote(fd, 10)
    assert pages.steps == 2


def test_no_step_when_the_descriptor_cannot_be_duplicated(log: tuple[int, Path]) -> None:
    """A descriptor that cannot be dup'd (EMFILE, closed) skips the step and keeps counting."""
    fd, _path = log
    spare = os.dup(fd)
    os.close(spare)  # a number that names no open file
    later = Later()
    pages = PageRecycler(10, later)
    pages.wrote(spare, 10)
    assert pages.steps == 0 and not pages.busy and later.calls == []
    pages.wrote(fd, 0)  # the bytes written before still count
    assert pages.steps == 1
    later.run_all()
