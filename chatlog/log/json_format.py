"""The ``json`` format, both ways: JSON Lines, ASCII only, no record separator.

::

    {"ts": "2026-11-22T14:35:45.123456+07:00", "event": "message", "ip": "127.0.0.1",
     "port": 53122, "conn": 17, "seq": 4, "msg": "Hello, Server!"}

(one line in the file).  ``ts`` is ISO 8601 with the UTC offset, ``event`` the
json name of :data:`~chatlog.log.events.EVENTS`; then ``ip``, ``port``,
``conn``, ``seq`` and ``msg`` when the event has them, then its other fields
as given.  ``msg`` is the client's text when it was valid UTF-8.  When it was
not, the record says ``"utf8": false`` and ``msg`` holds the text formats'
escaping of the bytes (``\\xNN`` for each invalid byte, ``\\\\`` for a
backslash), which :func:`~chatlog.log.escaping.unescape_text` turns back into
the exact bytes.
"""

from __future__ import annotations

import json

from chatlog.log.escaping import TEXT_SAFE, escape_text, keep_table, unescape_text
from chatlog.log.events import EVENTS, Event, Parsed, UnparsedRecord
from chatlog.log.record import Formatter, Parser
from chatlog.log.timestamps import Timestamps

_json_dumps = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": ")).encode

#: Bytes that go into a JSON string as they are: printable ASCII but the
#: backslash and the double quote (``ensure_ascii`` escapes all the others).
JSON_SAFE = TEXT_SAFE.replace(b'"', b"")
_JSON_KEEP = keep_table(JSON_SAFE)

# One record of a plain line: lead, seq, the line's bytes as they are.
_PLAIN_RECORD = b'%s%d, "msg": "%s"}\n'

# Keys every JSON record starts with, in this order; the rest follow as given.
_JSON_LEAD = ("time", "event", "ip", "port", "conn", "seq", "msg")


def is_json_plain(data: bytes) -> bool:
    """Whether every byte of ``data`` goes into a JSON string as it is (see ``JSON_SAFE``)."""
    return data.translate(_JSON_KEEP) == data


def _json_msg(raw: bytes) -> bytes:
    """``, "msg": ...`` for client bytes (plus ``"utf8": false`` when not UTF-8)."""
    if raw.translate(_JSON_KEEP) == raw:
        return b', "msg": "' + raw + b'"'
    try:
        return b', "msg": ' + _json_dumps(raw.decode("utf-8")).encode()
    except UnicodeDecodeError:
        escaped, _ = escape_text(raw)
        return b', "msg": ' + _json_dumps(escaped.decode("utf-8")).encode() + b', "utf8": false'


class JsonFormatter(Formatter):
    """``{"ts": "2026-11-22T14:35:45.123456+07:00", "event": "message", ...}``"""

    name = "json"

    def __init__(self, stamps: Timestamps, node: str | None = None) -> None:
        super().__init__(stamps, node)
        # ``, "node": "n1"`` after the event's name in every record, or nothing.
        self._node = b"" if node is None else b', "node": ' + _json_dumps(node).encode()

    def __call__(self, event: Event) -> bytes:
        dumps = _json_dumps
        stamps = self.stamps
        out = [
            b'{"ts": "',
            stamps.iso(event["time"]),
            b'", "event": "',
            event["event"].encode(),
            b'"',
            self._node,
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
            if key not in _JSON_LEAD and not (key == "node" and self._node):
                out.append(b", " + dumps(key).encode() + b": " + dumps(value).encode())
        out.append(b"}\n")
        return b"".join(out)

    def _lead(self, fields: Event) -> bytes:
        """What a read's message records share, up to their ``"seq": ``."""
        return b'{"ts": "%s", "event": "message"%s, "ip": %s, "port": %d, "conn": %d, "seq": ' % (
            self.stamps.iso(fields["time"]),
            self._node,
            _json_dumps(fields["ip"]).encode(),
            fields["port"],
            fields["conn"],
        )

    def messages(self, fields: Event, lines: list[bytes]) -> bytes:
        lead = self._lead(fields)
        first = fields["seq"]
        count = len(lines)
        if count == 1:
            line = lines[0]
            if line.translate(_JSON_KEEP) == line:
                return _PLAIN_RECORD % (lead, first, line)
        elif is_json_plain(b"".join(lines)):
            # One check and one formatting for the whole read, and the lines
            # copied once: the records' template repeated, its arguments laid
            # out by slice assignments rather than a loop.
            args: list[object] = [lead] * (3 * count)
            args[1::3] = range(first, first + count)
            args[2::3] = lines
            return (_PLAIN_RECORD * count) % tuple(args)
        return b"".join(
            b"%s%d%s}\n" % (lead, seq, _json_msg(line)) for seq, line in enumerate(lines, first)
        )

    def plain_lines(self, fields: Event, body: bytes, count: int) -> bytes:
        # find, not "in": in CPython 3.11 a bytes "in" first tries the needle
        # as an int and raises inside, about twice find's cost.
        if body.find(b'"') >= 0:
            # A double quote is escaped: line by line.
            return self.messages(fields, body.split(b"\n"))
        lead = self._lead(fields)
        # Each line's seq differs, so the records are one template, made by
        # putting the record's parts around the lines with bytes.replace,
        # filled in with one %-formatting (which finds its "%"s by memchr);
        # a "%" the text or the lead hold is doubled first, to stay itself.
        lead = lead.replace(b"%", b"%%") + b'%d, "msg": "'
        if body.find(b"%") >= 0:
            body = body.replace(b"%", b"%%")
        template = b"".join((lead, body.replace(b"\n", b'"}\n' + lead), b'"}\n'))
        first = fields["seq"]
        return template % tuple(range(first, first + count))


# json.loads on bytes first guesses their encoding; records are ASCII text.
_JSON_DECODE = json.JSONDecoder().raw_decode


class JsonParser(Parser):
    """Reads ``json`` records back into event dicts; ``ts`` becomes ``time``."""

    name = "json"

    @staticmethod
    def looks_like(line: bytes) -> bool:
        return line[:1] == b"{"

    def parse(self, line: bytes) -> Parsed:
        text = line.decode("utf-8")
        record, end = _JSON_DECODE(text)
        if end != len(text) or not isinstance(record, dict):
            raise UnparsedRecord("a json value that is not an object")
        kind = record.get("event")
        if kind not in EVENTS:
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
