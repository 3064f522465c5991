"""The message log: its formats, the batching writer that keeps it, the reader that reads it back.

Everything outside this package imports these names from ``chatlog.log``
only; the modules inside are free to change.

- Writing: a :class:`Formatter` (``make_formatter("event")``) turns an event
  dict into one record; :class:`LogWriter` stages records and writes them in
  batches, calling back each connection once its records are in the file.
- Reading: :class:`LogReader` reads a file of any format back into event dicts.
- Escaping: :func:`escape_text` / :func:`unescape_text`, the reversible
  escaping that keeps client bytes inside one record.
"""

from chatlog.log.reader import (
    LogReader,
    Parsed,
    RecordParser,
    UnparsedRecord,
    detect,
    open_log,
    parse_lines,
    records_of,
    sniff_format,
)
from chatlog.log.records import (
    EVENT_NAMES,
    FORMATS,
    Event,
    Formatter,
    Timestamps,
    escape_text,
    make_formatter,
    unescape_text,
)
from chatlog.log.writer import LogWriter, WriteWaiter

__all__ = [
    "EVENT_NAMES",
    "FORMATS",
    "Event",
    "Formatter",
    "LogReader",
    "LogWriter",
    "Parsed",
    "RecordParser",
    "Timestamps",
    "UnparsedRecord",
    "WriteWaiter",
    "detect",
    "escape_text",
    "make_formatter",
    "open_log",
    "parse_lines",
    "records_of",
    "sniff_format",
    "unescape_text",
]
