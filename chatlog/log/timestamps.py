"""Record timestamps, both ways: wall-clock seconds to text, and text back to seconds.

The text formats write ``2026-11-22 14:35:45.123456`` (local time, or UTC
with ``--utc``, without an offset); ``json`` writes ISO 8601 with the offset,
``2026-11-22T14:35:45.123456+07:00``.  Converting a date is the slow part in
both directions, and consecutive records nearly always share their second, so
each side remembers the last second it converted.
"""

from __future__ import annotations

import calendar
import datetime
import time

#: A text-format timestamp as a regex: groups (date and time to the second, microseconds).
TEXT_STAMP = rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{6})"


class Timestamps:
    """Format wall-clock seconds with microseconds, cheaply.

    All records of one second share the same prefix, so the prefix is
    computed once per second and only the microseconds are formatted per record.
    """

    def __init__(self, utc: bool = False) -> None:
        self.utc = utc
        self._second = -1
        self._text_prefix = b""
        self._iso_prefix = b""
        self._iso_offset = b""
        self._last_when = -1.0
        self._last_text = b""

    def _refresh(self, second: int) -> None:
        parts = time.gmtime(second) if self.utc else time.localtime(second)
        self._second = second
        self._text_prefix = time.strftime("%Y-%m-%d %H:%M:%S.", parts).encode()
        self._iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", parts).encode()
        offset = 0 if self.utc else parts.tm_gmtoff
        sign = "+" if offset >= 0 else "-"
        hours, minutes = divmod(abs(offset) // 60, 60)
        self._iso_offset = f"{sign}{hours:02d}:{minutes:02d}".encode()

    def _split(self, when: float) -> int:
        """Microseconds within the second; refreshes the prefixes on a new second."""
        micros = int(when * 1_000_000)
        second = micros // 1_000_000
        if second != self._second:
            self._refresh(second)
        return micros - second * 1_000_000

    def text(self, when: float) -> bytes:
        """``2026-11-22 14:35:45.123456`` (local time, or UTC with ``utc``)."""
        if when == self._last_when:
            # Every line of one read shares its arrival time.
            return self._last_text
        micros = self._split(when)  # first: it may refresh the prefix
        self._last_text = self._text_prefix + b"%06d" % micros
        self._last_when = when
        return self._last_text

    def iso(self, when: float) -> bytes:
        """``2026-11-22T14:35:45.123456+07:00``: ISO 8601 with the UTC offset."""
        micros = self._split(when)  # first: it may refresh the prefix
        return self._iso_prefix + b"%06d" % micros + self._iso_offset


class TimeParser:
    """Turn timestamps written by :class:`Timestamps` back into epoch seconds, cheaply.

    Text timestamps carry no offset: they are read as local time, or as UTC
    with ``utc``.  ISO timestamps carry their own offset.
    """

    def __init__(self, utc: bool = False) -> None:
        self.utc = utc
        self._last_text = b""
        self._last_epoch = 0
        self._last_iso = ""
        self._last_iso_epoch = 0

    def _epoch_of(self, text: bytes) -> int:
        parts = time.strptime(text.decode("ascii"), "%Y-%m-%d %H:%M:%S")
        if self.utc:
            return calendar.timegm(parts)
        # tm_isdst=-1: let the C library decide summer time; in the hour a
        # clock goes back twice, a naive local time is ambiguous anyway.
        return int(time.mktime(parts[:8] + (-1,)))

    def text(self, second: bytes, micros: bytes) -> float:
        """Epoch seconds of a text-format timestamp split as ``(second, micros)``."""
        if second != self._last_text:
            self._last_epoch = self._epoch_of(second)
            self._last_text = second
        return self._last_epoch + int(micros) / 1_000_000

    def iso(self, stamp: str) -> float:
        """Epoch seconds of ``2026-11-22T14:35:45.123456+07:00`` (json's ``ts``)."""
        # The fast path: the exact shape the json formatter writes.
        if len(stamp) == 32 and stamp[19] == "." and stamp[26] in "+-":
            key = stamp[:19] + stamp[26:]
            if key != self._last_iso:
                when = datetime.datetime.fromisoformat(stamp[:19] + stamp[26:])
                self._last_iso_epoch = int(when.timestamp())
                self._last_iso = key
            return self._last_iso_epoch + int(stamp[20:26]) / 1_000_000
        when = datetime.datetime.fromisoformat(stamp)
        if when.tzinfo is None and self.utc:
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
