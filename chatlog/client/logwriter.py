"""The writer process of the client's log: formats and writes it off the measuring loop.

``python -m chatlog.client.logwriter SPOOL_FD LOG_FD CLIENT_PID``, started by
:class:`chatlog.client.clientlog.Spool` with both descriptors inherited.  It
reads the spool's frames (a header, then batches
of compact records with their watermark, then an empty frame at the end),
formats them with :class:`chatlog.client.clientlog.Book` and appends the
lines to the log.

It formats nothing while the run is on: it waits for the spool's end (or
the client's), looking only at the frames' lengths, and then writes the whole
log.  Measured on a 2-core machine, a writer that formatted as the records
came, even at ``SCHED_IDLE``, took the closed loop over 100 connections from
p99 1.5 to 4.7 ms and 128k to 100k msgs/s; one that waits leaves them as
they were.  Only a spool more than :data:`BACKLOG` bytes behind (minutes of
the fastest load) is formatted during the run, enough of it to bound the
disk it takes.  It runs at the lowest CPU priority (``SCHED_IDLE``, else
``nice 19``) all the same.  If the client dies without ending the spool,
what it spooled is still written.
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
#: Spooled bytes not yet formatted beyond which the writer formats during the run.
BACKLOG = 1 << 30


def lowest_priority() -> None:
    """Run only on CPU time that nothing else wants."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


class SpoolReader:
    """The spool's frames, read at this process's own offset as they are appended."""

    def __init__(self, fd: int, client: int, backlog: int = BACKLOG) -> None:
        self.fd = fd
        self.offset = 0
        # Given, not read with getppid(): the client may be gone before we start.
        self.client = client
        self.backlog = backlog
        #: Where the first frame not yet looked at begins; the run is over.
        self.scanned = 0
        self.over = False

    def client_gone(self) -> bool:
        # We were handed to another parent.
        return os.getppid() != self.client

    def due(self) -> None:
        """Wait until the next frame may be formatted: the run is over (the spool
        has ended, or the client is gone), or the spool is more than
        ``backlog`` bytes ahead of what was formatted."""
        while not self.over and self.scanned - self.offset <= self.backlog:
            if not self._scan():
                if self.client_gone():
                    self.over = True
                else:
                    time.sleep(POLL_S)

    def _scan(self) -> bool:
        """Step over the frames spooled since the last look; True if there were any."""
        size = os.fstat(self.fd).st_size
        moved = False
        while not self.over and self.scanned + FRAME.size <= size:
            (length,) = FRAME.unpack(os.pread(self.fd, FRAME.size, self.scanned))
            self.over = length == 0
            self.scanned += FRAME.size + length
            moved = True
        return moved

    def _read(self, size: int) -> bytes | None:
        """``size`` bytes at the offset; None once the client is gone and they never came."""
        while True:
            data = os.pread(self.fd, size, self.offset)
            if len(data) == size:
                self.offset += size
                return data
            # A frame being written is seen in part: wait for the rest, unless
            # the client is gone.
            if self.client_gone():
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
    spool.due()
    header = spool.frame()
    if header is None:
        return 0  # nothing was logged
    book = Book(header)
    while True:
        spool.due()
        frame = spool.frame()
        if frame is None:
            break
        watermark, records, replies, sends = frame
        write_all(log_fd, book.feed(watermark, records, replies, sends))
    write_all(log_fd, book.drain())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
