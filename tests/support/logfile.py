"""Reading the server's message log from the outside, as bytes, for end-to-end checks.

The log is read as the file on disk, split on ``b"\\n"`` only, without
chatlog's own reader: what the tests and soak runs check (every acknowledged
message logged, and exactly once; which events were written; which process
serves) must not depend on the code under test.  Only the event format is
parsed here.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from pathlib import Path

MESSAGE_HEAD = b"Message Received: "
_PID = re.compile(rb"^Server Started: .* pid (\d+),")


def read_records(path: Path) -> list[bytes]:
    """The log's records, split on ``\\n`` only; a torn last line is kept as the last item."""
    data = path.read_bytes()
    records = data.split(b"\n")
    if records and records[-1] == b"":
        records.pop()
    return records


def message_text(record: bytes) -> bytes | None:
    """The client text of a ``Message Received`` record (event format), else None."""
    if not record.startswith(MESSAGE_HEAD):
        return None
    # "Message Received: <time> - <ip>:<port> #<conn> - <text>": neither the
    # time nor the peer contains " - ", so the text is what follows the second.
    parts = record.split(b" - ", 2)
    return parts[2] if len(parts) == 3 else None


def logged_messages(*paths: Path) -> collections.Counter[bytes]:
    """How many times each message text appears in the given logs (missing files count as empty)."""
    counts: collections.Counter[bytes] = collections.Counter()
    for path in paths:
        if not path.exists():
            continue
        for record in read_records(path):
            text = message_text(record)
            if text is not None:
                counts[text] += 1
    return counts


def missing_and_doubled(
    acked: Iterable[bytes], counts: collections.Counter[bytes]
) -> tuple[list[bytes], list[bytes]]:
    """The acknowledged messages never logged, and those logged more than once, per ``counts``."""
    acked = list(acked)
    return [m for m in acked if counts[m] == 0], [m for m in acked if counts[m] > 1]


def kinds(records: Iterable[bytes]) -> list[bytes]:
    """The event name of each record (``b"Message Received"``, ``b"Timeout"``...)."""
    return [r.split(b":", 1)[0] for r in records]


def server_pid(log_path: Path, fallback: int) -> int:
    """The pid in the last ``Server Started`` record: the process that really serves.

    The process a test started may be a wrapper (a shim script) rather than
    twistd itself; the server writes its own pid into the log.
    """
    pid = fallback
    for record in read_records(log_path):
        match = _PID.match(record)
        if match:
            pid = int(match.group(1))
    return pid
