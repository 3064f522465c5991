"""Record timestamps: written with microseconds and the right offset, read back to the same instant."""

from __future__ import annotations

import datetime
import time

import pytest

from chatlog.log import RecordParser, Timestamps, make_formatter
from chatlog.log.timestamps import TimeParser
from tests.unit.log_samples import PEER, WHEN, T


def test_timestamps_local_time_carries_the_offset() -> None:
    """Local ISO timestamps carry the machine's UTC offset; UTC ones carry +00:00."""
    offset = time.localtime(WHEN).tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    assert Timestamps().iso(WHEN).endswith(f".123456{sign}{hours:02d}:{minutes:02d}".encode())
    assert Timestamps(utc=True).iso(WHEN) == b"2026-11-22T07:35:45.123456+00:00"


def test_timestamps_cache_follows_the_second() -> None:
    """The per-second prefix cache never serves a stale second."""
    stamps = Timestamps(utc=True)
    assert stamps.text(WHEN) == b"2026-11-22 07:35:45.123456"
    assert stamps.text(WHEN + 1) == b"2026-11-22 07:35:46.123456"
    assert stamps.text(WHEN - 86400) == b"2026-11-21 07:35:45.123456"
    assert stamps.text(1795332945.0) == b"2026-11-22 07:35:45.000000"


def test_time_parser_reads_what_timestamps_write() -> None:
    """Both shapes read back to the instant they were written from, to the microsecond."""
    stamps, times = Timestamps(utc=True), TimeParser(utc=True)
    second, micros = stamps.text(WHEN).split(b".")
    assert times.text(second, micros) == pytest.approx(WHEN, abs=1e-6)
    assert times.iso(stamps.iso(WHEN).decode()) == pytest.approx(WHEN, abs=1e-6)
    assert times.iso("2026-11-22T07:35:45") == pytest.approx(int(WHEN))


@pytest.mark.parametrize("fmt", ("event", "dash"))
def test_text_timestamps_local_and_utc(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text formats are read as local time by default, as UTC with utc=True."""
    monkeypatch.setenv("TZ", "Asia/Bangkok")  # +07:00, no summer time
    time.tzset()
    try:
        event = {"event": "connect", "time": T, **PEER}
        local = make_formatter(fmt)(event)[:-1]
        utc = make_formatter(fmt, utc=True)(event)[:-1]
        assert local != utc
        assert RecordParser(fmt).parse(local)["time"] == pytest.approx(T, abs=1e-6)
        assert RecordParser(fmt, utc=True).parse(utc)["time"] == pytest.approx(T, abs=1e-6)
        assert RecordParser(fmt).parse(utc)["time"] == pytest.approx(T - 7 * 3600, abs=1e-6)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_json_offset_needs_no_hint() -> None:
    """A json timestamp carries its offset: the same instant whatever the hint."""
    line = b'{"ts": "2026-11-22T14:35:45.123456+07:00", "event": "stop", "connections": 0, "messages": 0}'
    want = datetime.datetime(2026, 11, 22, 7, 35, 45, 123456, tzinfo=datetime.UTC).timestamp()
    for utc in (False, True):
        assert RecordParser("json", utc=utc).parse(line)["time"] == pytest.approx(want, abs=1e-6)
