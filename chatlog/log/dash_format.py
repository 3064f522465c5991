"""The ``dash`` format, both ways: the seed's ``IP - Port - Timestamp - Message``.

::

    127.0.0.1 - 53122 - 2026-11-22 14:35:45.123456 - Hello, Server!
    127.0.0.1 - 53122 - 2026-11-22 14:35:46.000001 - [Disconnection] #17 clean, 1 message, 1.000001 s
    - - - - 2026-11-22 14:40:00.000000 - [Server Stopped] 1 connection, 1 message

One message per line, with the client's port.  Other events put their name in
square brackets where the message would be, then ``#conn`` for an event of a
connection, then the event's text from :data:`~chatlog.log.events.EVENTS`; the
address fields are ``- -`` for the server's own events.  A client message that
itself begins with ``[`` has that bracket escaped as ``\\x5b``, so a message
can never pass for an event.
"""

from __future__ import annotations

import re

from chatlog.log.escaping import TEXT_KEEP, escape_text, is_plain, unescape
from chatlog.log.events import (
    EVENTS,
    Event,
    Parsed,
    Scope,
    UnparsedRecord,
    kinds_by_name,
    name_pattern,
    parse_text,
)
from chatlog.log.record import Formatter, Parser
from chatlog.log.timestamps import TEXT_STAMP, TimeParser


class DashFormatter(Formatter):
    """``127.0.0.1 - 53122 - 2026-11-22 14:35:45.123456 - Hello, Server!``"""

    name = "dash"
    # kind -> (b"[Name] ", has a peer, writes its text)
    _KINDS = {
        kind: (b"[" + event.name_bytes + b"] ", event.scope is not Scope.SERVER, event.text.format)
        for kind, event in EVENTS.items()
    }

    def __call__(self, event: Event) -> bytes:
        kind = event["event"]
        if kind == "message":
            return self.messages(event, [event["msg"]])
        tag, has_peer, text = self._KINDS[kind]
        stamp = self.stamps.text(event["time"])
        if has_peer:
            return b"%s - %d - %s - %s#%d %s\n" % (
                event["ip"].encode(),
                event["port"],
                stamp,
                tag,
                event["conn"],
                text(event),
            )
        return b"- - - - " + stamp + b" - " + tag + text(event) + b"\n"

    def messages(self, fields: Event, lines: list[bytes]) -> bytes:
        lead = b"%s - %d - %s - " % (
            fields["ip"].encode(),
            fields["port"],
            self.stamps.text(fields["time"]),
        )
        if len(lines) == 1:
            text = lines[0]
            if text.translate(TEXT_KEEP) != text or text[:1] == b"[":
                text = _dash_text(text)
            return lead + text + b"\n"
        if not lines:
            return b""
        separator = b"\n" + lead
        # One check for the whole read, as the event format does.
        if is_plain(b"".join(lines)):
            body = separator.join(lines)
            # A plain line holds no "\n", so "\n" + lead + "[" in the body
            # is exactly a line after the first that begins with "[".
            if lines[0][:1] != b"[" and separator + b"[" not in body:
                return b"".join((lead, body, b"\n"))
        texts = [_dash_text(text) for text in lines]
        return b"".join((lead, separator.join(texts), b"\n"))

    def plain_lines(self, fields: Event, body: bytes, count: int) -> bytes:
        # "[" alone first: memchr; a two-byte needle is searched byte by byte
        # (12 us in 16 KiB of lines against 0.2, on 3.11).  find: see json_format.
        if body[:1] == b"[" or (body.find(b"[") >= 0 and body.find(b"\n[") >= 0):
            # A line that begins with "[" has it escaped: line by line.
            return self.messages(fields, body.split(b"\n"))
        lead = b"%s - %d - %s - " % (
            fields["ip"].encode(),
            fields["port"],
            self.stamps.text(fields["time"]),
        )
        return b"".join((lead, body.replace(b"\n", b"\n" + lead), b"\n"))


def _dash_text(raw: bytes) -> bytes:
    """The escaped text, with a leading ``[`` as ``\\x5b`` so it cannot pass for an event's tag."""
    text = escape_text(raw)[0]
    if text[:1] == b"[":
        return b"\\x5b" + text[1:]
    return text


_CONNECTION_RECORD = re.compile(rb"(\S+) - (\d+) - " + TEXT_STAMP + rb" - (.*)", re.S)
_TAGGED = re.compile(
    rb"\[" + name_pattern({Scope.CONNECTION, Scope.LINE}) + rb"\] #(\d+) (.*)", re.S
)
_SERVER_RECORD = re.compile(
    rb"- - - - " + TEXT_STAMP + rb" - \[" + name_pattern({Scope.SERVER}) + rb"\] (.*)", re.S
)


class DashParser(Parser):
    """Reads ``dash``-format records back into event dicts (a message has no ``conn``)."""

    name = "dash"

    def __init__(self, times: TimeParser, client: bool = False) -> None:
        super().__init__(times, client)
        # The server's messages are the untagged records, so a tagged
        # "Message Received" is always the client's reply, in any log.
        self._tagged_kinds = kinds_by_name(client=True)

    @staticmethod
    def looks_like(line: bytes) -> bool:
        return bool(_CONNECTION_RECORD.fullmatch(line) or _SERVER_RECORD.fullmatch(line))

    def parse(self, line: bytes) -> Parsed:
        match = _CONNECTION_RECORD.fullmatch(line)
        if match is None:
            return self._parse_server(line)
        ip, port, second, micros, rest = match.groups()
        event: Parsed = {
            "event": "message",
            "time": self.times.text(second, micros),
            "ip": self.ip(ip),
            "port": int(port),
        }
        if rest[:1] != b"[":
            # A server's message: the one record without a tag (a message
            # that starts with "[" has it escaped, so it cannot pass for one).
            if self.client:
                raise UnparsedRecord("an untagged message in a client log")
            event["msg"] = unescape(rest)
            return event
        tagged = _TAGGED.fullmatch(rest)
        if tagged is None:
            raise UnparsedRecord("unknown tag in a dash-format record")
        name, conn, text = tagged.groups()
        kind = self._tagged_kinds[name]
        event["event"] = kind
        event["conn"] = int(conn)
        event.update(parse_text(kind, text))
        return event

    def _parse_server(self, line: bytes) -> Parsed:
        match = _SERVER_RECORD.fullmatch(line)
        if match is None:
            raise UnparsedRecord("not a dash-format record")
        second, micros, name, text = match.groups()
        kind = self.kinds[name]
        return {"event": kind, "time": self.times.text(second, micros), **parse_text(kind, text)}
