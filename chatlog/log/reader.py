"""Reading log files back into event dicts: files, format detection, unparseable lines.

The report (:mod:`chatlog.report`) needs the same events the server and the
client described when they wrote their logs.  Each record (one line of bytes)
of any of the three formats is read back by that format's parser
(:mod:`~chatlog.log.formats`) into a dict shaped like the one it was written
from::

    {"event": "message", "time": 1763800545.123456, "ip": "127.0.0.1",
     "port": 53122, "conn": 17, "seq": 4, "msg": b"Hello, Server!"}

with the fields the format carries (the ``event`` format has no ``seq``, the
``dash`` format has no ``conn`` for a message) plus each event's extras
(``how``, ``messages``, ``seconds``, ``rtt_ms``...).  ``msg`` is the exact
bytes the client sent: the escaping is undone.

Files are read as bytes, one record per ``\\n`` and nothing else (client text
may hold U+2028 or ``\\x85``, which ``str.splitlines`` would split on), one
line at a time, so a log of any size is read in constant memory.  The format
(and whether the file is a server's or a client's log) is detected from the
first records of each file.  A record that cannot be parsed is counted and a
few examples are kept; it never stops the reading.

A *torn* line, one that a crash or a failed write cut short, was never
acknowledged and is not a record: the last line of a file when it has no
newline, and any line the writer ended with
:data:`~chatlog.log.record.TORN_MARK`.  Torn lines are counted apart, never
read as events.

The ``event`` and ``dash`` formats carry local time without an offset (or UTC
when the server ran with ``--utc``): they are read as local time unless
``utc=True``.  ``json`` records carry their offset and need no hint.
"""

from __future__ import annotations

import gzip
import itertools
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from chatlog.log.events import EVENTS, Parsed
from chatlog.log.formats import FORMATS, PARSERS, RecordParser
from chatlog.log.record import is_torn

# How many leading records decide a file's format and role.
_SNIFF_LINES = 2000
# How many unparseable lines are kept as examples per file.
_MAX_EXAMPLES = 5
# The formats, in the order detection prefers them in a tie.
_FORMAT_NAMES = tuple(FORMATS)
# The order a single record is tried in: json's test is one byte.
_SNIFF_ORDER = ("json", "event", "dash")


# --------------------------------------------------------------------------
# Detecting a file's format and role
# --------------------------------------------------------------------------


def sniff_format(line: bytes) -> str | None:
    """The format a single record looks like, or None."""
    for name in _SNIFF_ORDER:
        if PARSERS[name].looks_like(line):
            return name
    return None


def detect(lines: list[bytes], utc: bool = False) -> tuple[str | None, bool]:
    """(format, is a client log) from a file's first records.

    The format is the one most of them parse as.  A file is a client's log
    when its first message-like record is a ``sent`` or ``reply``; in the
    event format that is a ``Message Sent``, since a client sends first.
    """
    scores: dict[str, int] = {}
    for fmt in _FORMAT_NAMES:
        parser = RecordParser(fmt, utc=utc)
        scores[fmt] = sum(1 for line in lines if _try(parser.parse, line) is not None)
    best = max(_FORMAT_NAMES, key=lambda fmt: scores[fmt])
    if scores[best] == 0:
        return None, False
    parser = RecordParser(best, utc=utc)
    for line in lines:
        event = _try(parser.parse, line)
        if event is None:
            continue
        if EVENTS[event["event"]].client:
            return best, True
        if event["event"] == "message":
            return best, False
    return best, False


def format_at_end(path: str | Path, tail: int = 65536) -> str | None:
    """The format of the last complete record of the file at ``path`` (of the last 20
    lines, the last that is a record).

    None when there is no such regular file (a FIFO or a device is not
    read: that could block, or take what is not ours), it is empty, or none of
    those records parses: what a server about to append to ``path`` must agree with.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        size = os.lseek(fd, 0, os.SEEK_END)
        start = max(size - tail, 0)
        data = os.pread(fd, tail, start)
    except OSError:
        return None
    finally:
        os.close(fd)
    lines = data.split(b"\n")[:-1]  # the last piece: empty, or a torn line
    if start > 0:
        lines = lines[1:]  # read from the middle of a line
    for line in reversed(lines[-20:]):
        found = detect([line])[0]
        if found is not None:
            return found
    return None


_PARSE_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError)


def _try(parse: Callable[[bytes], Parsed], line: bytes) -> Parsed | None:
    try:
        return parse(line)
    except _PARSE_ERRORS:  # UnparsedRecord, json and unicode errors are ValueErrors
        return None


# --------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------


def open_log(path: str | Path) -> IO[bytes]:
    """Open a log for reading bytes; a rotated ``.gz`` log is decompressed."""
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def records_of(
    lines: Iterable[bytes], on_torn: Callable[[bytes], None] | None = None
) -> Iterator[bytes]:
    """Records from lines split on ``\\n`` only: the newline (and a stray CR) removed.

    Iterating a binary file splits on ``\\n`` alone, never on U+2028 or
    ``\\x85``, which may be inside client text.  No record contains a raw CR
    (the formats escape it), so one before the newline is a CRLF conversion.
    A last line without its newline is a record torn by a crash (never
    acknowledged): it goes to ``on_torn``, not out.  Lines the writer marked
    torn come out like any other (their line numbers count): see :func:`is_torn`.
    """
    for line in lines:
        if line[-1:] == b"\n":
            line = line[:-1]
        elif on_torn is not None:
            on_torn(line)
            return
        if line[-1:] == b"\r":
            line = line[:-1]
        yield line  # even when empty, so that line numbers stay right


class LogReader:
    """One log file: its detected format and role, its events, what did not parse.

    Iterate it (once) for the events in file order; ``format``, ``client``
    are known as soon as iteration begins, ``records``, ``unparsed``,
    ``torn`` and ``examples`` once it ends.  A torn line (an unterminated
    last line, or one marked torn) gives no event: it is counted in
    ``torn`` and the first few line numbers are kept in ``torn_lines``.
    """

    def __init__(self, path: str | Path, *, utc: bool = False, fmt: str | None = None) -> None:
        self.path = str(path)
        self.utc = utc
        self.format: str | None = fmt
        self.client = False
        self.records = 0
        self.unparsed = 0
        self.examples: list[tuple[int, bytes]] = []
        self.torn = 0
        self.torn_lines: list[int] = []
        self._unterminated: bytes | None = None
        self._started = False

    def __iter__(self) -> Iterator[Parsed]:
        if self._started:
            raise RuntimeError(f"{self.path} is being read already")
        self._started = True
        with open_log(self.path) as f:
            yield from self._events(records_of(f, self._set_unterminated))
        if self._unterminated is not None:
            self._torn(self.records + 1, self._unterminated)

    def _set_unterminated(self, line: bytes) -> None:
        self._unterminated = line

    def _events(self, records: Iterator[bytes]) -> Iterator[Parsed]:
        head = list(itertools.islice(records, _SNIFF_LINES))
        detected, self.client = detect([line for line in head if not is_torn(line)], self.utc)
        if self.format is None:
            self.format = detected
        parse = (
            RecordParser(self.format, client=self.client, utc=self.utc).parse
            if self.format is not None
            else None
        )
        number = 0
        for number, line in enumerate(itertools.chain(head, records), 1):  # noqa: B007
            if not line:
                continue  # a blank line holds no record, and is harmless
            if is_torn(line):
                self._torn(number, line)
                continue
            if parse is None:
                # Nothing parses in the first records: the whole file is unparsed.
                self._bad(number, line)
                continue
            try:
                event = parse(line)
            except _PARSE_ERRORS:
                self._bad(number, line)
                continue
            yield event
        self.records = number

    def _bad(self, number: int, line: bytes) -> None:
        self.records = number
        self.unparsed += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append((number, line[:200]))

    def _torn(self, number: int, line: bytes) -> None:
        self.records = number
        self.torn += 1
        if len(self.torn_lines) < _MAX_EXAMPLES:
            self.torn_lines.append(number)


def parse_lines(
    lines: Iterable[bytes], fmt: str | None = None, *, utc: bool = False, client: bool | None = None
) -> list[Parsed]:
    """Parse records given as lines (for tests and small inputs); unparseable ones are skipped."""
    records = [line for line in records_of(lines) if line and not is_torn(line)]
    detected, is_client = detect(records[:_SNIFF_LINES], utc)
    fmt = fmt or detected
    if fmt is None:
        return []
    parser = RecordParser(fmt, client=is_client if client is None else client, utc=utc)
    return [event for event in map(lambda line: _try(parser.parse, line), records) if event]
