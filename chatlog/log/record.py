"""What a log format is: a formatter that writes events as records and a parser that reads them back.

A *record* is one line of the log.  Each format (:mod:`~chatlog.log.event_format`,
:mod:`~chatlog.log.dash_format`, :mod:`~chatlog.log.json_format`) keeps its
:class:`Formatter` and its :class:`Parser` side by side in one module;
:mod:`~chatlog.log.formats` names them.

The one rule every formatter keeps: *one record per line*.  Client bytes are
escaped so that they can never end a record, start a new one, or rewrite a
field the server knows (address, port, time, ids, event type).  Formatters
do no I/O and read no clock, so they can be tested with plain dicts.

A line a crash or a failed write cut short (a *torn* line) is never
acknowledged.  It is never mended into a record either: when the writer
finds one at the end of the file it ends it with :data:`TORN_MARK` before
its newline, and readers report such a line as torn, not as a record.
"""

from __future__ import annotations

from typing import ClassVar

from chatlog.log.escaping import TEXT_SAFE
from chatlog.log.events import Event, Parsed, kinds_by_name
from chatlog.log.timestamps import TimeParser, Timestamps

#: The bytes of a read whose complete lines go to :meth:`Formatter.plain_lines`
#: whole: those a text record takes as they are, and the newlines between lines.
PLAIN_LINES = TEXT_SAFE + b"\n"

#: What ends a torn line, before its newline.  It begins with a raw TAB,
#: which no formatter ever writes (the text formats escape it as ``\\x09``,
#: json as ``\\t``), so no record, whatever a client sent, can end with it.
TORN_MARK = b"\t[torn, never acknowledged]"


def is_torn(line: bytes) -> bool:
    """Whether ``line`` (without its newline) is a torn line the writer marked."""
    return line.endswith(TORN_MARK)


class Formatter:
    """Turns events into records of one format.

    ``formatter(event)`` is one record.  ``formatter.messages(fields, lines)``
    is the records of several lines of one read (same time, same connection,
    ``fields["seq"]`` the first line's): the protocol's hot path, which a
    format can make cheaper than one event per line.
    """

    name: ClassVar[str]

    def __init__(self, stamps: Timestamps, node: str | None = None) -> None:
        self.stamps = stamps
        #: This server's name in a fleet (``--node``): json puts it in every
        #: record; the text formats name it in ``Server Started`` only.
        self.node = node

    def __call__(self, event: Event) -> bytes:
        raise NotImplementedError

    def messages(self, fields: Event, lines: list[bytes]) -> bytes:
        first = fields["seq"]
        return b"".join(
            self({**fields, "seq": seq, "msg": line}) for seq, line in enumerate(lines, first)
        )

    def plain_lines(self, fields: Event, body: bytes, count: int) -> bytes:
        """The records of ``count`` lines joined by ``\\n`` in ``body``, all of :data:`PLAIN_LINES`.

        The same bytes as ``messages(fields, body.split(b"\\n"))``.  The
        protocol hands a read's complete lines over whole like this when no
        byte of them needs escaping: a format can then build the records from
        ``body`` with a few passes of C (``bytes.replace``), without a list of
        lines (``bytes.split`` looks at every byte in a loop of its own).
        """
        return self.messages(fields, body.split(b"\n"))


class Parser:
    """Reads records of one format back into event dicts, for a server's log or a client's.

    ``client`` says the file is a client's log: there, a name two events share
    (``Message Received``) is the client's event (``reply``), not the server's.
    """

    name: ClassVar[str]

    def __init__(self, times: TimeParser, client: bool = False) -> None:
        self.times = times
        self.client = client
        self.kinds = kinds_by_name(client)
        self._ips: dict[bytes, str] = {}

    def parse(self, line: bytes) -> Parsed:
        """The event of one record (without its newline); raises ValueError if it is none."""
        raise NotImplementedError

    @staticmethod
    def looks_like(line: bytes) -> bool:
        """Whether ``line`` has this format's shape (its fields are not read)."""
        raise NotImplementedError

    def ip(self, raw: bytes) -> str:
        """The address as text; few addresses, many records: each is decoded once."""
        ip = self._ips.get(raw)
        if ip is None:
            if len(self._ips) > 100_000:
                self._ips.clear()
            ip = self._ips[raw] = raw.decode("utf-8")
        return ip
