"""The ``event`` format, both ways: the seed's ``[Event_Type]: [Timestamp] - [Message]``.

::

    Message Received: 2026-11-22 14:35:45.123456 - 127.0.0.1:53122 #17 - Hello, Server!
    Disconnection: 2026-11-22 14:35:46.000001 - 127.0.0.1:53122 #17 - clean, 1 message, 1.000001 s
    Server Stopped: 2026-11-22 14:40:00.000000 - 1 connection, 1 message

The event's name, its timestamp, the peer (``ip:port #conn``; an IPv6
address in brackets) for an event of a connection, then the event's text
from :data:`~chatlog.log.events.EVENTS` (the client's escaped text for a line).
"""

from __future__ import annotations

import re
from typing import Any

from chatlog.log.escaping import TEXT_KEEP, escape_text, is_plain, unescape_text
from chatlog.log.events import (
    EVENTS,
    Event,
    Parsed,
    Scope,
    UnparsedRecord,
    name_pattern,
    parse_text,
)
from chatlog.log.record import Formatter, Parser
from chatlog.log.timestamps import TEXT_STAMP, Timestamps


def peer(event: Event) -> bytes:
    """``127.0.0.1:53122``, or ``[::1]:53122``: bracketed so the port stays unambiguous."""
    ip = event["ip"]
    if ":" in ip:
        return b"[%s]:%d" % (ip.encode(), event["port"])
    return b"%s:%d" % (ip.encode(), event["port"])


class PeerLabels:
    """``127.0.0.1:53122 #17 - `` per connection, made once rather than per record.

    A label is dropped with its connection's last record (``disconnect``, or
    ``rejected`` for a connection refused at once), so a server's cache holds
    its open connections.  It is also capped at :attr:`limit` labels, for logs
    that never record a connection's end (a client's own log) and for
    whatever else goes missing: when full it starts again empty, which costs
    only a label to remake per open connection.
    """

    limit = 16384

    def __init__(self) -> None:
        self._labels: dict[int, tuple[str, int, bytes]] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def __call__(self, event: Event) -> bytes:
        conn, ip, port = event["conn"], event["ip"], event["port"]
        cached = self._labels.get(conn)
        if cached is not None and cached[0] == ip and cached[1] == port:
            return cached[2]
        if len(self._labels) >= self.limit:
            self._labels.clear()
        label = b"%s #%d - " % (peer(event), conn)
        self._labels[conn] = (ip, port, label)
        return label

    def forget(self, conn: int) -> None:
        self._labels.pop(conn, None)


class EventFormatter(Formatter):
    """``Message Received: 2026-11-22 14:35:45.123456 - 127.0.0.1:53122 #17 - Hello``"""

    name = "event"
    # kind -> (b"Name: ", has a peer, ends its connection, writes its text)
    _KINDS = {
        kind: (
            event.name_bytes + b": ",
            event.scope is not Scope.SERVER,
            event.ends_connection,
            event.text.format,
        )
        for kind, event in EVENTS.items()
    }
    _MESSAGE_HEAD = _KINDS["message"][0]

    def __init__(self, stamps: Timestamps, node: str | None = None) -> None:
        super().__init__(stamps, node)
        self.labels = PeerLabels()

    def __call__(self, event: Event) -> bytes:
        head, has_peer, ends_connection, text = self._KINDS[event["event"]]
        head += self.stamps.text(event["time"]) + b" - "
        if not has_peer:
            return head + text(event) + b"\n"
        record = head + self.labels(event) + text(event) + b"\n"
        if ends_connection:
            self.labels.forget(event["conn"])
        return record

    def messages(self, fields: Event, lines: list[bytes]) -> bytes:
        # Every record of a read shares all but the text: build that lead once.
        lead = self._MESSAGE_HEAD + self.stamps.text(fields["time"]) + b" - " + self.labels(fields)
        if len(lines) == 1:
            text = lines[0]
            if text.translate(TEXT_KEEP) != text:
                text = escape_text(text)[0]
            return lead + text + b"\n"
        if not lines:
            return b""
        texts = lines
        # One check for the whole read (a join is a memcpy; a check per line
        # would cost a call per line): plain text goes in as it is.
        if not is_plain(b"".join(lines)):
            texts = [escape_text(text)[0] for text in lines]
        # One copy of the texts into the records, then one into the result.
        return b"".join((lead, (b"\n" + lead).join(texts), b"\n"))

    def plain_lines(self, fields: Event, body: bytes, count: int) -> bytes:
        lead = self._MESSAGE_HEAD + self.stamps.text(fields["time"]) + b" - " + self.labels(fields)
        # Nothing to escape: the records are the lines with the lead put before each.
        return b"".join((lead, body.replace(b"\n", b"\n" + lead), b"\n"))


_PEER = rb"(?:\[([^\]]*)\]|([^\s\[\]:]+)):(\d+) #(\d+)"
_CONNECTION_RECORD = re.compile(
    name_pattern({Scope.CONNECTION, Scope.LINE})
    + b": "
    + TEXT_STAMP
    + b" - "
    + _PEER
    + rb" - (.*)",
    re.S,
)
_SERVER_RECORD = re.compile(name_pattern({Scope.SERVER}) + b": " + TEXT_STAMP + rb" - (.*)", re.S)


class EventParser(Parser):
    """Reads ``event``-format records back into event dicts (no ``seq``: the format has none)."""

    name = "event"

    @staticmethod
    def looks_like(line: bytes) -> bool:
        return bool(_CONNECTION_RECORD.fullmatch(line) or _SERVER_RECORD.fullmatch(line))

    def parse(self, line: bytes) -> Parsed:
        match = _CONNECTION_RECORD.fullmatch(line)
        if match is not None:
            name, second, micros, ip6, ip, port, conn, text = match.groups()
            kind = self.kinds[name]
            event: dict[str, Any] = {
                "event": kind,
                "time": self.times.text(second, micros),
                "ip": self.ip(ip6 or ip),
                "port": int(port),
                "conn": int(conn),
            }
            if kind == "message":  # the common case, inline
                event["msg"] = text if b"\\" not in text else unescape_text(text.decode("utf-8"))
            else:
                event.update(parse_text(kind, text))
            return event
        match = _SERVER_RECORD.fullmatch(line)
        if match is None:
            raise UnparsedRecord("not an event-format record")
        name, second, micros, text = match.groups()
        kind = self.kinds[name]
        return {"event": kind, "time": self.times.text(second, micros), **parse_text(kind, text)}
