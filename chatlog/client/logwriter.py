"""The writer process of the client's log: formats and writes it off the measuring loop.

``python -m chatlog.client.logwriter SPOOL_FD LOG_FD CLIENT_PID``, started by
:class:`chatlog.client.clientlog.Spool` with both descriptors inherited.  It
reads the spool's frames as the client appends them (a header, then batches
of compact records with their watermark, then an empty frame at the end),
formats them with :class:`chatlog.client.clientlog.Book` and appends the
lines to the log.

It runs at the lowest CPU priority (``SCHED_IDLE``, else ``nice 19``): the
client and the server it measures always come first, and the log is written
with the CPU they leave, at the latest once the run is over.  If the client
dies without ending the spool, what it spooled is still written.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from chatlog.client.clientlog import FRAME, Book, write_all

#: How long to wait for the client to add to the spool before looking again.
POLL_S = 0.02


def lowest_priority() -> None:
    """Run only on CPU time that nothing else wants."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


class SpoolReader:
    """The spool's frames, read at this process's own offset as they are appended."""

    def __init__(self, fd: int, client: int) -> None:
        self.fd = fd
        self.offset = 0
        # Given, not read with getppid(): the client may be gone before we start.
        self.client = client

    def _read(self, size: int) -> bytes | None:
        """``size`` bytes at the offset; None once the client is gone and they never came."""
        while True:
            data = os.pread(self.fd, size, self.offset)
            if len(data) == size:
                self.offset += size
                return data
            # A frame being written is seen in part: wait for the rest, unless
            # the client is gone (we were handed to another parent).
            if os.getppid() != self.client:
                return None
            time.sleep(POLL_S)

    def frame(self) -> Any:
        """The next frame's object; None at the end of the spool."""
        head = self._read(FRAME.size)
        if head is None:
            return None
        (length,) = FRAME.unpack(head)
        if length == 0:
            return None
        body = self._read(length)
        return None if body is None else marshal.loads(body)


def main(argv: Sequence[str]) -> int:
    spool_fd, log_fd, client = (int(arg) for arg in argv[:3])
    lowest_priority()
    spool = SpoolReader(spool_fd, client)
    header = spool.frame()
    if header is None:
        return 0  # nothing was logged
    book = Book(header)
    while (frame := spool.frame()) is not None:
        watermark, records, replies = frame
        write_all(log_fd, book.feed(watermark, records, replies))
    write_all(log_fd, book.drain())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
