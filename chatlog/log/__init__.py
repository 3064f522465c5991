"""The message log: its events, its formats both ways, the batching writer, the reader.

Everything outside this package imports these names from ``chatlog.log``
only; the modules inside are free to change.  Where each thing lives:

- :mod:`~chatlog.log.events`: the table of events (names, fields, the words
  of each), from which the text formats both write and read them;
  :mod:`~chatlog.log.templates`, the typed text templates it is written in.
- :mod:`~chatlog.log.escaping`: :func:`escape_text` / :func:`unescape_text`,
  the reversible escaping that keeps client bytes inside one record.
- :mod:`~chatlog.log.timestamps`: timestamps written and read back.
- :mod:`~chatlog.log.record`: what a format is (a :class:`Formatter` and a
  parser); :mod:`~chatlog.log.event_format`, :mod:`~chatlog.log.dash_format`,
  :mod:`~chatlog.log.json_format`: each format's formatter and parser side
  by side; :mod:`~chatlog.log.formats`: them by name (``make_formatter("event")``,
  :class:`RecordParser`).
- :mod:`~chatlog.log.writer`: :class:`LogWriter` stages records and writes
  them in batches, calling back each connection once its records are in the file;
  :mod:`~chatlog.log.files`, the system calls it makes on the file (which
  files may be a log, a durable directory entry, cutting a failed batch back).
- :mod:`~chatlog.log.reader`: :class:`LogReader` reads a file of any format
  back into event dicts; a torn line (:data:`TORN_MARK`, :func:`is_torn`)
  is counted, never read as a record.
"""

from chatlog.log.escaping import escape_text, unescape_text
from chatlog.log.events import EVENT_NAMES, EVENTS, Event, EventType, Parsed, UnparsedRecord
from chatlog.log.formats import FORMATS, RecordParser, make_formatter
from chatlog.log.reader import (
    LogReader,
    detect,
    format_at_end,
    open_log,
    parse_lines,
    records_of,
    sniff_format,
)
from chatlog.log.record import PLAIN_LINES, TORN_MARK, Formatter, is_torn
from chatlog.log.timestamps import TimeParser, Timestamps
from chatlog.log.writer import LogWriter, WriteWaiter

__all__ = [
    "EVENTS",
    "EVENT_NAMES",
    "FORMATS",
    "Event",
    "EventType",
    "Formatter",
    "LogReader",
    "LogWriter",
    "Parsed",
    "RecordParser",
    "PLAIN_LINES",
    "TORN_MARK",
    "TimeParser",
    "Timestamps",
    "UnparsedRecord",
    "WriteWaiter",
    "detect",
    "escape_text",
    "format_at_end",
    "is_torn",
    "make_formatter",
    "open_log",
    "parse_lines",
    "records_of",
    "sniff_format",
    "unescape_text",
]
