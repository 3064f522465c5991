"""Read chatlog logs back into event dicts: the inverse of :mod:`chatlog.log.records`.

The report (:mod:`chatlog.report`) needs the same events the server and the
client described when they wrote their logs.  This module turns one record
(one line of bytes) of any of the three formats back into a dict shaped like
the one :mod:`chatlog.log.records` formatted::

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

The ``event`` and ``dash`` formats carry local time without an offset (or UTC
when the server ran with ``--utc``): they are read as local time unless
``utc=True``.  ``json`` records carry their offset and need no hint.
"""

from __future__ import annotations

import calendar
import datetime
import gzip
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from chatlog.log.records import EVENT_NAMES, unescape_text

Parsed = dict[str, Any]

FORMAT_NAMES = ("event", "dash", "json")

#: Event-format name -> json name.  "Message Received" is the server's
#: ``message`` in a server log and the client's ``reply`` in a client log.
_KIND_OF_NAME: dict[bytes, str] = {
    name.encode(): kind for kind, name in EVENT_NAMES.items() if kind != "reply"
}
_CLIENT_EVENTS = frozenset({"sent", "reply"})
_SERVER_ONLY = frozenset({"start", "log_error", "stop"})

# How many leading records decide a file's format and role.
_SNIFF_LINES = 2000
# How many unparseable lines are kept as examples per file.
_MAX_EXAMPLES = 5


class UnparsedRecord(ValueError):
    """A line that is not a record of the expected format."""


# --------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------

_TS = rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{6})"


class TimeParser:
    """Turn ``2026-11-22 14:35:45`` + microseconds into epoch seconds, cheaply.

    Records of one second share their date; converting a date is the slow
    part, so the last second seen is remembered (logs are nearly in order).
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


# --------------------------------------------------------------------------
# The human text of non-message events (the inverse of records.describe)
# --------------------------------------------------------------------------


def _s(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.S)


_DESCRIBED: dict[str, tuple[re.Pattern[str], Callable[[re.Match[str]], dict[str, Any]]]] = {
    "connect": (_s(r"connected"), lambda m: {}),
    "disconnect": (
        _s(r"([a-z_]+), (\d+) messages?, (\d+(?:\.\d+)?) s"),
        lambda m: {"how": m[1], "messages": int(m[2]), "seconds": float(m[3])},
    ),
    "line_too_long": (
        _s(r"line longer than (\d+) bytes, connection closed"),
        lambda m: {"limit": int(m[1])},
    ),
    "rejected": (
        _s(r"(.*) \(limit (\d+)\), connection refused"),
        lambda m: {"reason": m[1], "limit": int(m[2])},
    ),
    "start": (
        _s(r"listening on (.*) \((.*)\), pid (\d+), chatlog (\S+)"),
        lambda m: {"listen": m[1], "endpoint": m[2], "pid": int(m[3]), "version": m[4]},
    ),
    "log_error": (
        _s(
            r"log unavailable for (\d+(?:\.\d+)?) s \((.*)\): "
            r"(\d+) messages? refused, (\d+) other records? lost"
        ),
        lambda m: {
            "seconds": float(m[1]),
            "error": m[2],
            "refused": int(m[3]),
            "lost": int(m[4]),
        },
    ),
    "stop": (
        _s(r"(\d+) connections?, (\d+) messages?"),
        lambda m: {"connections": int(m[1]), "messages": int(m[2])},
    ),
}
_TIMEOUT_IDLE = _s(r"idle for (\S+) s, connection closed")
_TIMEOUT_LINE = _s(r"line not finished within (\S+) s, connection closed")


def parse_description(kind: str, text: bytes) -> dict[str, Any]:
    """The extras of a non-message event from its text (see ``records.describe``)."""
    words = text.decode("utf-8")
    if kind == "timeout":
        for timeout_kind, pattern in (("idle", _TIMEOUT_IDLE), ("line", _TIMEOUT_LINE)):
            match = pattern.fullmatch(words)
            if match:
                return {"kind": timeout_kind, "seconds": float(match[1])}
        raise UnparsedRecord(f"not a timeout description: {words!r}")
    pattern, extras = _DESCRIBED[kind]
    match = pattern.fullmatch(words)
    if match is None:
        raise UnparsedRecord(f"not a {kind} description: {words!r}")
    return extras(match)


# --------------------------------------------------------------------------
# Message text
# --------------------------------------------------------------------------

_RTT_SUFFIX = re.compile(rb"(.*) \(rtt (\d+(?:\.\d+)?) ms\)", re.S)


def unescape(text: bytes) -> bytes:
    """The client's bytes from the escaped text of a text-format record."""
    if b"\\" not in text:
        # Nothing was escaped: the record holds the client's bytes as they came.
        return text
    return unescape_text(text.decode("utf-8"))


def _message_fields(kind: str, text: bytes) -> dict[str, Any]:
    """``msg`` (and ``rtt_ms`` for a client's reply) from a record's text."""
    if kind == "reply":
        match = _RTT_SUFFIX.fullmatch(text)
        if match is None:
            raise UnparsedRecord("reply without its round-trip time")
        return {"msg": unescape(match[1]), "rtt_ms": float(match[2])}
    return {"msg": unescape(text)}


# --------------------------------------------------------------------------
# The three formats
# --------------------------------------------------------------------------

_PEER = rb"(?:\[([^\]]*)\]|([^\s\[\]:]+)):(\d+) #(\d+)"
_EVENT_CONN = re.compile(
    rb"(Connection|Message Received|Message Sent|Disconnection|Line Too Long|Timeout|Rejected): "
    + _TS
    + rb" - "
    + _PEER
    + rb" - (.*)",
    re.S,
)
_EVENT_SERVER = re.compile(
    rb"(Server Started|Log Error|Server Stopped): " + _TS + rb" - (.*)", re.S
)

_DASH_CONN = re.compile(rb"(\S+) - (\d+) - " + _TS + rb" - (.*)", re.S)
_DASH_TAGGED = re.compile(
    rb"\[(Connection|Message Received|Message Sent|Disconnection|Line Too Long|Timeout|Rejected)\]"
    rb" #(\d+) (.*)",
    re.S,
)
_DASH_SERVER = re.compile(
    rb"- - - - " + _TS + rb" - \[(Server Started|Log Error|Server Stopped)\] (.*)", re.S
)


# json.loads on bytes first guesses their encoding; records are ASCII text.
_JSON_DECODE = json.JSONDecoder().raw_decode


class RecordParser:
    """Parse the records of one file, of one format, for one role.

    ``client`` says the file is a client's log: there, the event format's
    ``Message Received`` is the client's ``reply`` (with its round trip),
    not the server's ``message``.
    """

    def __init__(self, fmt: str, *, client: bool = False, utc: bool = False) -> None:
        if fmt not in FORMAT_NAMES:
            raise ValueError(f"unknown log format {fmt!r}")
        self.format = fmt
        self.client = client
        self.times = TimeParser(utc)
        self.parse: Callable[[bytes], Parsed] = getattr(self, "_parse_" + fmt)
        self._kinds = dict(_KIND_OF_NAME)
        if client:
            self._kinds[b"Message Received"] = "reply"
        self._ips: dict[bytes, str] = {}

    def _ip(self, raw: bytes) -> str:
        # Few addresses, many records: decode each address once.
        ip = self._ips.get(raw)
        if ip is None:
            if len(self._ips) > 100_000:
                self._ips.clear()
            ip = self._ips[raw] = raw.decode("utf-8")
        return ip

    def _parse_event(self, line: bytes) -> Parsed:
        match = _EVENT_CONN.fullmatch(line)
        if match is not None:
            name, second, micros, ip6, ip, port, conn, text = match.groups()
            kind = self._kinds[name]
            event: Parsed = {
                "event": kind,
                "time": self.times.text(second, micros),
                "ip": self._ip(ip6 or ip),
                "port": int(port),
                "conn": int(conn),
            }
            if kind == "message":  # the common case, inline
                event["msg"] = text if b"\\" not in text else unescape_text(text.decode("utf-8"))
            else:
                event.update(self._text_fields(kind, text))
            return event
        match = _EVENT_SERVER.fullmatch(line)
        if match is None:
            raise UnparsedRecord("not an event-format record")
        name, second, micros, text = match.groups()
        kind = _KIND_OF_NAME[name]
        return {
            "event": kind,
            "time": self.times.text(second, micros),
            **parse_description(kind, text),
        }

    def _text_fields(self, kind: str, text: bytes) -> dict[str, Any]:
        if kind in ("message", "sent", "reply"):
            return _message_fields(kind, text)
        return parse_description(kind, text)

    def _parse_dash(self, line: bytes) -> Parsed:
        match = _DASH_CONN.fullmatch(line)
        if match is None:
            return self._parse_dash_server(line)
        ip, port, second, micros, rest = match.groups()
        event: Parsed = {
            "event": "message",
            "time": self.times.text(second, micros),
            "ip": self._ip(ip),
            "port": int(port),
        }
        if rest[:1] != b"[":
            # A server's message: the one record without a tag (a message
            # that starts with "[" has it escaped, so it cannot pass for one).
            if self.client:
                raise UnparsedRecord("an untagged message in a client log")
            event["msg"] = unescape(rest)
            return event
        tagged = _DASH_TAGGED.fullmatch(rest)
        if tagged is None:
            raise UnparsedRecord("unknown tag in a dash-format record")
        name, conn, text = tagged.groups()
        kind = "reply" if name == b"Message Received" else _KIND_OF_NAME[name]
        event["event"] = kind
        event["conn"] = int(conn)
        event.update(self._text_fields(kind, text))
        return event

    def _parse_dash_server(self, line: bytes) -> Parsed:
        match = _DASH_SERVER.fullmatch(line)
        if match is None:
            raise UnparsedRecord("not a dash-format record")
        second, micros, name, text = match.groups()
        kind = _KIND_OF_NAME[name]
        return {
            "event": kind,
            "time": self.times.text(second, micros),
            **parse_description(kind, text),
        }

    def _parse_json(self, line: bytes) -> Parsed:
        text = line.decode("utf-8")
        record, end = _JSON_DECODE(text)
        if end != len(text) or not isinstance(record, dict):
            raise UnparsedRecord("a json value that is not an object")
        kind = record.get("event")
        if kind not in EVENT_NAMES:
            raise UnparsedRecord(f"unknown event {kind!r}")
        stamp = record.pop("ts")
        event: Parsed = {"event": kind, "time": self.times.iso(stamp)}
        del record["event"]
        if "msg" in record:
            text = record["msg"]
            if record.pop("utf8", True) is False:
                record["msg"] = unescape_text(text)
            else:
                record["msg"] = text.encode("utf-8")
        event.update(record)
        return event


# --------------------------------------------------------------------------
# Detecting a file's format and role
# --------------------------------------------------------------------------


def sniff_format(line: bytes) -> str | None:
    """The format a single record looks like, or None."""
    if line[:1] == b"{":
        return "json"
    if _EVENT_CONN.fullmatch(line) or _EVENT_SERVER.fullmatch(line):
        return "event"
    if _DASH_CONN.fullmatch(line) or _DASH_SERVER.fullmatch(line):
        return "dash"
    return None


def detect(lines: list[bytes], utc: bool = False) -> tuple[str | None, bool]:
    """(format, is a client log) from a file's first records.

    The format is the one most of them parse as.  A file is a client's log
    when its first message-like record is a ``sent`` or ``reply``; in the
    event format that is a ``Message Sent``, since a client sends first.
    """
    scores: dict[str, int] = {}
    for fmt in FORMAT_NAMES:
        parser = RecordParser(fmt, utc=utc)
        scores[fmt] = sum(1 for line in lines if _try(parser.parse, line) is not None)
    best = max(FORMAT_NAMES, key=lambda fmt: scores[fmt])
    if scores[best] == 0:
        return None, False
    parser = RecordParser(best, utc=utc)
    for line in lines:
        event = _try(parser.parse, line)
        if event is None:
            continue
        if event["event"] in _CLIENT_EVENTS:
            return best, True
        if event["event"] == "message":
            return best, False
    return best, False


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
    acknowledged, says the contract): it goes to ``on_torn``, not out.
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
    are known as soon as iteration begins, ``records``, ``unparsed`` and
    ``examples`` once it ends.  An unterminated last record (``torn``) is
    counted as unparsed.
    """

    def __init__(self, path: str | Path, *, utc: bool = False, fmt: str | None = None) -> None:
        self.path = str(path)
        self.utc = utc
        self.format: str | None = fmt
        self.client = False
        self.records = 0
        self.unparsed = 0
        self.examples: list[tuple[int, bytes]] = []
        self.torn: bytes | None = None
        self._started = False

    def __iter__(self) -> Iterator[Parsed]:
        if self._started:
            raise RuntimeError(f"{self.path} is being read already")
        self._started = True
        with open_log(self.path) as f:
            yield from self._events(records_of(f, self._set_torn))
        if self.torn is not None:
            self._bad(self.records + 1, self.torn)

    def _set_torn(self, line: bytes) -> None:
        self.torn = line

    def _events(self, records: Iterator[bytes]) -> Iterator[Parsed]:
        head = list(itertools.islice(records, _SNIFF_LINES))
        detected, self.client = detect(head, self.utc)
        if self.format is None:
            self.format = detected
        if self.format is None:
            # Nothing parses in the first records: count the whole file as unparsed.
            for number, line in enumerate(itertools.chain(head, records), 1):
                if line:
                    self._bad(number, line)
            return
        parse = RecordParser(self.format, client=self.client, utc=self.utc).parse
        number = 0
        for number, line in enumerate(itertools.chain(head, records), 1):  # noqa: B007
            if not line:
                continue  # a blank line holds no record, and is harmless
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


def parse_lines(
    lines: Iterable[bytes], fmt: str | None = None, *, utc: bool = False, client: bool | None = None
) -> list[Parsed]:
    """Parse records given as lines (for tests and small inputs); unparseable ones are skipped."""
    records = [line for line in records_of(lines) if line]
    detected, is_client = detect(records[:_SNIFF_LINES], utc)
    fmt = fmt or detected
    if fmt is None:
        return []
    parser = RecordParser(fmt, client=is_client if client is None else client, utc=utc)
    return [event for event in map(lambda line: _try(parser.parse, line), records) if event]
