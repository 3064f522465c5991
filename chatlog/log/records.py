"""Log records: the event dictionaries chatlog emits and the pure formatters.

The protocol describes what happened as a plain ``dict`` (an *event*); this
module turns one event into one line of bytes in one of the three formats of
the contract (``event``, ``dash``, ``json``).  Nothing here does I/O or reads
a clock, so every formatter can be tested with plain dicts.

An event has these keys (``msg`` only for messages, extras per event type)::

    {"event": "message", "time": 1763800545.123456, "ip": "127.0.0.1",
     "port": 53122, "conn": 17, "seq": 4, "msg": b"Hello, Server!"}

The one rule every formatter keeps: *one record per line*.  Client bytes are
escaped so that they can never end a record, start a new one, or rewrite a
field the server knows (address, port, time, ids, event type).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

Event = Mapping[str, Any]

#: json name -> event-format name, in the order of the contract.
EVENT_NAMES: dict[str, str] = {
    "start": "Server Started",
    "connect": "Connection",
    "message": "Message Received",
    "disconnect": "Disconnection",
    "line_too_long": "Line Too Long",
    "timeout": "Timeout",
    "rejected": "Rejected",
    "log_error": "Log Error",
    "stop": "Server Stopped",
    # The client's own log (python -m chatlog.client --logfile) uses these.
    "sent": "Message Sent",
    "reply": "Message Received",
}

#: Events that belong to one connection (they carry ip, port and conn).
CONNECTION_EVENTS = frozenset(
    {"connect", "message", "disconnect", "line_too_long", "timeout", "rejected", "sent", "reply"}
)

# --------------------------------------------------------------------------
# Escaping
# --------------------------------------------------------------------------

# Bytes that need no escaping in a text record: printable ASCII except the
# backslash (the escape character itself).  Most messages are exactly this,
# and a C-level regex search makes the common case cost next to nothing.
_TEXT_UNSAFE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")
# For JSON the double quote must be escaped too.
_JSON_UNSAFE = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that is not valid UTF-8, smuggled through by surrogateescape.
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if ch.isprintable():
        return ch
    # C1 controls, U+2028/2029, bidi overrides, unassigned code points...
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_text(raw: bytes) -> tuple[bytes, bool]:
    """Escape client bytes for a text record; also say whether they were UTF-8.

    Printable characters stay as they are (UTF-8 encoded); a backslash
    becomes ``\\\\``; C0 controls and DEL become ``\\xNN``; an invalid UTF-8
    byte becomes ``\\xNN`` (always >= ``\\x80``, so never confused with C0);
    any other non-printable character (C1, U+2028/2029, format characters)
    becomes ``\\uNNNN``.  The result never contains a control byte, so it can
    never end or split a record, and the escaping can be undone exactly.
    """
    if _TEXT_UNSAFE.search(raw) is None:
        return raw, True
    text = raw.decode("utf-8", "surrogateescape")
    valid = not any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text)
    return "".join(map(_escape_char, text)).encode("utf-8"), valid


_UNESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|(\\))")


def unescape_text(escaped: str) -> bytes:
    """Undo :func:`escape_text`: give back the exact bytes the client sent."""
    out = bytearray()
    pos = 0
    for match in _UNESCAPE.finditer(escaped):
        out += escaped[pos : match.start()].encode("utf-8")
        byte_hex, u4, u8, backslash = match.groups()
        if backslash:
            out += b"\\"
        elif byte_hex:
            # \xNN below 0x80 is a control character; at or above it, a raw
            # byte that was not valid UTF-8.  Both are that single byte.
            out.append(int(byte_hex, 16))
        else:
            out += chr(int(u4 or u8, 16)).encode("utf-8", "surrogatepass")
        pos = match.end()
    out += escaped[pos:].encode("utf-8")
    return bytes(out)


# --------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------


class Timestamps:
    """Format wall-clock seconds with microseconds, cheaply.

    Formatting a date is the most expensive part of a record; all records of
    one second share the same prefix, so the prefix is computed once per
    second and only the microseconds are formatted per record.
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


# --------------------------------------------------------------------------
# What each event says, in words (event and dash formats)
# --------------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def describe(event: Event) -> bytes:
    """The human text of a non-message event; never contains client bytes."""
    kind = event["event"]
    if kind == "start":
        return (
            f"listening on {event['listen']} ({event['endpoint']}), "
            f"pid {event['pid']}, chatlog {event['version']}"
        ).encode()
    if kind == "connect":
        return b"connected"
    if kind == "disconnect":
        return (
            f"{event['how']}, {_plural(event['messages'], 'message')}, {event['seconds']:.6f} s"
        ).encode()
    if kind == "line_too_long":
        return f"line longer than {event['limit']} bytes, connection closed".encode()
    if kind == "timeout":
        if event["kind"] == "idle":
            return f"idle for {event['seconds']:g} s, connection closed".encode()
        return f"line not finished within {event['seconds']:g} s, connection closed".encode()
    if kind == "rejected":
        return f"{event['reason']} (limit {event['limit']}), connection refused".encode()
    if kind == "log_error":
        return (
            f"log unavailable for {event['seconds']:.6f} s ({event['error']}): "
            f"{_plural(event['refused'], 'message')} refused, "
            f"{_plural(event['lost'], 'other record')} lost"
        ).encode()
    if kind == "stop":
        return (
            f"{_plural(event['connections'], 'connection')}, "
            f"{_plural(event['messages'], 'message')}"
        ).encode()
    raise ValueError(f"unknown event type {kind!r}")


def _message_text(event: Event) -> bytes:
    """The escaped client text of a message, plus the round trip for replies."""
    text, _ = escape_text(event["msg"])
    if event["event"] == "reply":
        text += b" (rtt %.6f ms)" % event["rtt_ms"]
    return text


def _peer(event: Event) -> bytes:
    ip = event["ip"]
    if ":" in ip:  # IPv6: bracket it so the port stays unambiguous
        return b"[%s]:%d" % (ip.encode(), event["port"])
    return b"%s:%d" % (ip.encode(), event["port"])


# --------------------------------------------------------------------------
# The three formats
# --------------------------------------------------------------------------


class Formatter:
    """Turns events into records of one format; subclasses give ``record``.

    ``formatter(event)`` is one record.  ``formatter.messages(fields, lines)``
    is the records of several lines of one read (same time, same connection,
    ``fields["seq"]`` the first line's): the protocol's hot path, which a
    format can make cheaper than one event per line.
    """

    name: ClassVar[str]

    def __init__(self, stamps: Timestamps) -> None:
        self.stamps = stamps

    def __call__(self, event: Event) -> bytes:
        raise NotImplementedError

    def messages(self, fields: Event, lines: list[bytes]) -> bytes:
        first = fields["seq"]
        return b"".join(
            self({**fields, "seq": seq, "msg": line}) for seq, line in enumerate(lines, first)
        )


class _PeerLabels:
    """``127.0.0.1:53122 #17 - `` per connection, made once rather than per record.

    Entries are dropped when their connection's ``disconnect`` is formatted,
    so the cache holds at most the open connections.
    """

    def __init__(self) -> None:
        self._labels: dict[int, tuple[str, int, bytes]] = {}

    def __call__(self, event: Event) -> bytes:
        conn, ip, port = event["conn"], event["ip"], event["port"]
        cached = self._labels.get(conn)
        if cached is not None and cached[0] == ip and cached[1] == port:
            return cached[2]
        label = b"%s #%d - " % (_peer(event), conn)
        self._labels[conn] = (ip, port, label)
        return label

    def forget(self, conn: int) -> None:
        self._labels.pop(conn, None)


class EventFormatter(Formatter):
    """``Message Received: 2026-11-22 14:35:45.123456 - 127.0.0.1:53122 #17 - Hello``"""

    name = "event"
    _HEADS = {kind: name.encode() + b": " for kind, name in EVENT_NAMES.items()}

    def __init__(self, stamps: Timestamps) -> None:
        super().__init__(stamps)
        self.labels = _PeerLabels()

    def __call__(self, event: Event) -> bytes:
        kind = event["event"]
        head = self._HEADS[kind] + self.stamps.text(event["time"]) + b" - "
        if kind in ("message", "sent", "reply"):
            return head + self.labels(event) + _message_text(event) + b"\n"
        if kind in CONNECTION_EVENTS:
            record = head + self.labels(event) + describe(event) + b"\n"
            if kind == "disconnect":
                self.labels.forget(event["conn"])
            return record
        return head + describe(event) + b"\n"

    def messages(self, fields: Event, lines: list[bytes]) -> bytes:
        # Every record of a read shares all but the text: build that lead once.
        lead = (
            self._HEADS["message"] + self.stamps.text(fields["time"]) + b" - " + self.labels(fields)
        )
        texts = lines
        for line in lines:
            if _TEXT_UNSAFE.search(line) is not None:
                texts = [escape_text(text)[0] for text in lines]
                break
        return lead + (b"\n" + lead).join(texts) + b"\n"


class DashFormatter(Formatter):
    """``127.0.0.1 - 53122 - 2026-11-22 14:35:45.123456 - Hello, Server!``

    The seed's format, one message per line.  Other events put their name in
    square brackets where the message would be (``[Connection] connected``),
    and the address fields are ``-`` for server events.  A client message that
    itself begins with ``[`` has that bracket escaped as ``\\x5b``, so a
    message can never pass for an event.
    """

    name = "dash"
    _TAGS = {kind: b"[" + name.encode() + b"] " for kind, name in EVENT_NAMES.items()}

    def __call__(self, event: Event) -> bytes:
        kind = event["event"]
        if kind == "message":
            return self.messages(event, [event["msg"]])
        if kind in CONNECTION_EVENTS:
            fields = b"%s - %d - " % (event["ip"].encode(), event["port"])
        else:
            fields = b"- - - - "
        fields += self.stamps.text(event["time"]) + b" - " + self._TAGS[kind]
        if kind in ("sent", "reply"):
            return fields + b"#%d " % event["conn"] + _message_text(event) + b"\n"
        if kind in CONNECTION_EVENTS:
            return fields + b"#%d " % event["conn"] + describe(event) + b"\n"
        return fields + describe(event) + b"\n"

    def messages(self, fields: Event, lines: list[bytes]) -> bytes:
        lead = b"%s - %d - %s - " % (
            fields["ip"].encode(),
            fields["port"],
            self.stamps.text(fields["time"]),
        )
        records = []
        for line in lines:
            text = escape_text(line)[0]
            if text[:1] == b"[":
                text = b"\\x5b" + text[1:]
            records.append(lead + text + b"\n")
        return b"".join(records)


_json_dumps = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": ")).encode

# Keys every JSON record starts with, in this order; the rest follow as given.
_JSON_LEAD = ("time", "event", "ip", "port", "conn", "seq", "msg")


class JsonFormatter(Formatter):
    """JSON Lines, ASCII only, no record separator.

    ``{"ts": "2026-11-22T14:35:45.123456+07:00", "event": "message", "ip":
    "127.0.0.1", "port": 53122, "conn": 17, "seq": 4, "msg": "Hello, Server!"}``

    ``msg`` is the client's text when it was valid UTF-8.  When it was not,
    the record says ``"utf8": false`` and ``msg`` holds the text-format
    escaping of the bytes (``\\xNN`` for each invalid byte, ``\\\\`` for a
    backslash), which :func:`unescape_text` turns back into the exact bytes.
    """

    name = "json"

    def __call__(self, event: Event) -> bytes:
        dumps = _json_dumps
        stamps = self.stamps
        out = [
            b'{"ts": "',
            stamps.iso(event["time"]),
            b'", "event": "',
            event["event"].encode(),
            b'"',
        ]
        if "ip" in event:
            out.append(
                b', "ip": %s, "port": %d, "conn": %d'
                % (dumps(event["ip"]).encode(), event["port"], event["conn"])
            )
        if "seq" in event:
            out.append(b', "seq": %d' % event["seq"])
        if "msg" in event:
            out.append(_json_msg(event["msg"]))
        for key, value in event.items():
            if key not in _JSON_LEAD:
                out.append(b", " + dumps(key).encode() + b": " + dumps(value).encode())
        out.append(b"}\n")
        return b"".join(out)

    def messages(self, fields: Event, lines: list[bytes]) -> bytes:
        lead = b'{"ts": "%s", "event": "message", "ip": %s, "port": %d, "conn": %d, "seq": ' % (
            self.stamps.iso(fields["time"]),
            _json_dumps(fields["ip"]).encode(),
            fields["port"],
            fields["conn"],
        )
        return b"".join(
            b"%s%d%s}\n" % (lead, seq, _json_msg(line))
            for seq, line in enumerate(lines, fields["seq"])
        )


def _json_msg(raw: bytes) -> bytes:
    """``, "msg": ...`` for client bytes (plus ``"utf8": false`` when not UTF-8)."""
    if _JSON_UNSAFE.search(raw) is None:
        return b', "msg": "' + raw + b'"'
    try:
        return b', "msg": ' + _json_dumps(raw.decode("utf-8")).encode()
    except UnicodeDecodeError:
        escaped, _ = escape_text(raw)
        return b', "msg": ' + _json_dumps(escaped.decode("utf-8")).encode() + b', "utf8": false'


FORMATS: dict[str, type[Formatter]] = {
    formatter.name: formatter for formatter in (EventFormatter, DashFormatter, JsonFormatter)
}


def make_formatter(name: str, utc: bool = False) -> Formatter:
    """The formatter for format ``name`` (``event``, ``dash`` or ``json``)."""
    try:
        factory = FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown log format {name!r}; choose one of {', '.join(FORMATS)}"
        ) from None
    return factory(Timestamps(utc=utc))
