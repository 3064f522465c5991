"""The three log formats by name: their formatters and parsers.

``event`` (:mod:`~chatlog.log.event_format`), ``dash``
(:mod:`~chatlog.log.dash_format`) and ``json`` (:mod:`~chatlog.log.json_format`),
in this order (the order ``--format`` lists them and format detection prefers
them in a tie).
"""

from __future__ import annotations

from collections.abc import Callable

from chatlog.log.dash_format import DashFormatter, DashParser
from chatlog.log.event_format import EventFormatter, EventParser
from chatlog.log.events import Parsed
from chatlog.log.json_format import JsonFormatter, JsonParser
from chatlog.log.record import Formatter, Parser
from chatlog.log.timestamps import TimeParser, Timestamps

FORMATS: dict[str, type[Formatter]] = {
    formatter.name: formatter for formatter in (EventFormatter, DashFormatter, JsonFormatter)
}

PARSERS: dict[str, type[Parser]] = {
    parser.name: parser for parser in (EventParser, DashParser, JsonParser)
}


def make_formatter(name: str, utc: bool = False, node: str | None = None) -> Formatter:
    """The formatter for format ``name`` (``event``, ``dash`` or ``json``), for node ``node``."""
    try:
        factory = FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown log format {name!r}; choose one of {', '.join(FORMATS)}"
        ) from None
    return factory(Timestamps(utc=utc), node)


class RecordParser:
    """Parse the records of one file, of one format, for one role.

    ``client`` says the file is a client's log: there, the event format's
    ``Message Received`` is the client's ``reply`` (with its round trip),
    not the server's ``message``.  ``utc`` says text timestamps are UTC, not
    local time.  ``parse(line)`` gives the event of one record (without its
    newline) or raises a :class:`ValueError`.
    """

    def __init__(self, fmt: str, *, client: bool = False, utc: bool = False) -> None:
        if fmt not in PARSERS:
            raise ValueError(f"unknown log format {fmt!r}")
        self.format = fmt
        self.client = client
        self.times = TimeParser(utc)
        self.parse: Callable[[bytes], Parsed] = PARSERS[fmt](self.times, client).parse
