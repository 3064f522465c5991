"""The events chatlog logs: one table of their names, their fields and their words.

The protocol (and the client, for its own log) describes what happened as a
plain ``dict``, an *event*::

    {"event": "message", "time": 1763800545.123456, "ip": "127.0.0.1",
     "port": 53122, "conn": 17, "seq": 4, "msg": b"Hello, Server!"}

``event`` is the event's json name; ``time`` is wall-clock seconds; events of
a connection carry ``ip``, ``port`` and ``conn``; a line of a connection
carries ``seq`` and the client's bytes in ``msg``; the rest are the fields its
text names.

:data:`EVENTS` says, for each event, everything the formats need: the json
name, the name the text formats write (``Disconnection``), whose event it is,
and the :mod:`~chatlog.log.templates` template of its text, from which the
text formats both write it (:func:`event_text`) and read it back
(:func:`parse_text`).  Adding an event here gives it both directions in every
format at once.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatlog.log.templates import Alternatives, Template, Text, Variants

#: An event as formatters take it.
Event = Mapping[str, Any]
#: An event as parsers give it back.
Parsed = dict[str, Any]


class UnparsedRecord(ValueError):
    """A line that is not a record of the expected format."""


class Scope(enum.Enum):
    """Whose event it is, which says the fields it carries besides its text's."""

    #: The server's own (start, stop, log errors): no address.
    SERVER = "server"
    #: One connection's: ``ip``, ``port`` and ``conn``.
    CONNECTION = "connection"
    #: One line of a connection: ``ip``, ``port``, ``conn``, ``seq`` and ``msg``.
    LINE = "line"


@dataclass(frozen=True)
class EventType:
    """One row of the table: what an event is called and what its text says."""

    #: The json name, the ``event`` key of the dict.
    kind: str
    #: The name in the text formats (``Message Received``).
    name: str
    scope: Scope
    #: The words of the text formats, after the address; the client's text for a line.
    text: Text
    #: The client's own log (``python -m chatlog.client --logfile``) has it, a server's does not.
    client: bool = False
    #: The last record of its connection (text formats may forget the connection then).
    ends_connection: bool = False
    #: ``name`` as bytes, for the formatters.
    name_bytes: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name_bytes", self.name.encode())


_TABLE = (
    EventType(
        "start",
        "Server Started",
        Scope.SERVER,
        Alternatives(
            "listening on {listen:text} ({endpoint:text}), pid {pid:int}, chatlog {version:word}"
            ", node {node:word}",
            "listening on {listen:text} ({endpoint:text}), pid {pid:int}, chatlog {version:word}",
        ),
    ),
    EventType("connect", "Connection", Scope.CONNECTION, Template("connected")),
    EventType("message", "Message Received", Scope.LINE, Template("{msg:message}")),
    EventType(
        "disconnect",
        "Disconnection",
        Scope.CONNECTION,
        Template("{how:name}, {messages:int} message(s), {seconds:decimal} s"),
        ends_connection=True,
    ),
    EventType(
        "line_too_long",
        "Line Too Long",
        Scope.CONNECTION,
        Template("line longer than {limit:int} bytes, connection closed"),
    ),
    EventType(
        "timeout",
        "Timeout",
        Scope.CONNECTION,
        Variants(
            "kind",
            {
                "idle": "idle for {seconds:number} s, connection closed",
                "line": "line not finished within {seconds:number} s, connection closed",
            },
        ),
    ),
    EventType(
        "rejected",
        "Rejected",
        Scope.CONNECTION,
        Template("{reason:text} (limit {limit:int}), connection refused"),
        # Refused before it began: a rejected connection has no disconnect.
        ends_connection=True,
    ),
    EventType(
        "bad_header",
        "Bad Header",
        Scope.CONNECTION,
        # Behind an haproxy: port, a PROXY header that is not valid: the
        # connection is closed, and the address is the balancer's own.
        Template("PROXY header refused ({reason:text}), connection closed"),
        ends_connection=True,
    ),
    EventType(
        "throttled",
        "Throttled",
        # An address's, not one connection's: all its connections share its quota.
        Scope.SERVER,
        Variants(
            "state",
            {
                "paused": "{address:word} over its {reason:name} limit "
                "({limit:int}/s, burst {burst:int}), reading paused",
                "released": "{address:word} released from its {reason:name} limit after "
                "{seconds:decimal} s ({paused:decimal} s not read), "
                "{held:int} message(s) held back",
            },
        ),
    ),
    EventType(
        "log_error",
        "Log Error",
        Scope.SERVER,
        Alternatives(
            # ``left``: refused messages whose records could not be cut back
            # off the file (an upper bound), only when there are any.
            "log unavailable for {seconds:decimal} s ({error:text}): "
            "{refused:int} message(s) refused, {lost:int} other record(s) lost; "
            "up to {left:int} refused message(s) may remain above (cannot cut back)",
            "log unavailable for {seconds:decimal} s ({error:text}): "
            "{refused:int} message(s) refused, {lost:int} other record(s) lost",
        ),
    ),
    EventType(
        "log_reopen",
        "Log Reopen",
        Scope.SERVER,
        # A reopen (SIGHUP) that failed, written to the file open before;
        # then, first in the new file, how late the reopen succeeded.
        Variants(
            "state",
            {
                "failed": "cannot open the log anew ({error:text}): "
                "records go on here until a retry succeeds",
                "done": "opened anew {seconds:decimal} s late, after {attempts:int} failed "
                "attempt(s): the records in between are in the file open before",
            },
        ),
    ),
    EventType(
        "stop",
        "Server Stopped",
        Scope.SERVER,
        Alternatives(
            "{connections:int} connection(s), {messages:int} message(s) logged, "
            "{refused:int} refused",
            # Written before refused messages were counted apart: then
            # ``messages`` counted every message received, logged or refused.
            "{connections:int} connection(s), {messages:int} message(s)",
        ),
    ),
    EventType("sent", "Message Sent", Scope.LINE, Template("{msg:message}"), client=True),
    EventType(
        "reply",
        "Message Received",
        Scope.LINE,
        Template("{msg:message} (rtt {rtt_ms:decimal} ms)"),
        client=True,
    ),
)

#: json name -> :class:`EventType`, in the order of the table.
EVENTS: dict[str, EventType] = {event.kind: event for event in _TABLE}

#: json name -> the name the text formats write.
EVENT_NAMES: dict[str, str] = {event.kind: event.name for event in _TABLE}

#: Events that belong to one connection (they carry ip, port and conn).
CONNECTION_EVENTS = frozenset(event.kind for event in _TABLE if event.scope is not Scope.SERVER)


def kinds_by_name(client: bool) -> dict[bytes, str]:
    """Text-format name -> json name, in a client's log or a server's.

    Two events may share a name: ``Message Received`` is the server's
    ``message`` in a server's log and the client's ``reply`` in a client's.
    """
    kinds: dict[bytes, str] = {}
    for event in _TABLE:
        if event.name_bytes not in kinds or event.client == client:
            kinds[event.name_bytes] = event.kind
    return kinds


def name_pattern(scopes: set[Scope]) -> bytes:
    """A regex group matching the text-format name of any event of these scopes."""
    names = dict.fromkeys(e.name_bytes for e in _TABLE if e.scope in scopes)
    return b"(" + b"|".join(map(re.escape, names)) + b")"


def event_text(event: Event) -> bytes:
    """The words of ``event`` in the text formats; client text in it is escaped."""
    return EVENTS[event["event"]].text.format(event)


def parse_text(kind: str, text: bytes) -> Parsed:
    """The fields of a ``kind`` event from its words: the inverse of :func:`event_text`."""
    fields = EVENTS[kind].text.parse(text)
    if fields is None:
        raise UnparsedRecord(f"not a {kind} text: {text[:80]!r}")
    return fields
