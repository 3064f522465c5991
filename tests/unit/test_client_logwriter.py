"""The client log's writer process waits for the run's end before it formats anything."""

from __future__ import annotations

import marshal
import os
import tempfile
from collections.abc import Iterator

import pytest

from chatlog.client import logwriter
from chatlog.client.clientlog import FRAME
from chatlog.client.logwriter import SpoolReader


@pytest.fixture
def spool() -> Iterator[int]:
    """An empty spool file's descriptor."""
    with tempfile.TemporaryFile() as f:
        yield f.fileno()


def frame(fd: int, obj: object = None) -> None:
    """Append a frame (``None``: the end frame)."""
    data = b"" if obj is None else marshal.dumps(obj)
    os.write(fd, FRAME.pack(len(data)) + data)


def alive(fd: int, backlog: int = logwriter.BACKLOG) -> SpoolReader:
    """A reader whose client is still running (our own parent stands for it)."""
    return SpoolReader(fd, os.getppid(), backlog)


def test_writer_waits_for_the_end_of_the_spool(spool: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the client runs and the spool is short, due() only looks, and returns at its end."""
    frame(spool, {"format": "event"})
    frame(spool, (0, [], []))
    reader = alive(spool)
    looks: list[float] = []

    def sleep(seconds: float) -> None:
        looks.append(seconds)
        if len(looks) == 3:
            frame(spool)  # the run is over

    monkeypatch.setattr(logwriter.time, "sleep", sleep)
    reader.due()
    assert looks == [logwriter.POLL_S] * 3
    assert reader.over and reader.offset == 0  # nothing was read to be formatted yet
    assert reader.frame() == {"format": "event"}
    assert reader.frame() == (0, [], [])
    assert reader.frame() is None


def test_writer_formats_during_the_run_past_the_backlog(spool: int) -> None:
    """A spool more than ``backlog`` bytes ahead is formatted without waiting for its end."""
    frame(spool, {"format": "event"})
    frame(spool, (0, [(1, 2, 3, 4)] * 50, []))
    reader = alive(spool, backlog=100)
    reader.due()  # returns: 100 bytes are exceeded
    assert not reader.over
    assert reader.frame() == {"format": "event"}
    reader.due()
    assert reader.frame() == (0, [(1, 2, 3, 4)] * 50, [])


def test_writer_formats_what_a_dead_client_spooled(spool: int) -> None:
    """A client gone without ending the spool: what it spooled is due at once."""
    frame(spool, {"format": "event"})
    reader = SpoolReader(spool, client=-1)
    reader.due()
    assert reader.over
    assert reader.frame() == {"format": "event"}
    assert reader.frame() is None
