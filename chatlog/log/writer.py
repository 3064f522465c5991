"""The message log: a batching ``O_APPEND`` writer that makes "ack implies logged" cheap.

:class:`LogWriter` is an :class:`~twisted.logger.ILogObserver`: the protocol
calls it with event dicts (see :mod:`chatlog.log.events`) and it formats each one
into a staged record at once.  Nothing is written then.  Instead the first
record of a reactor turn schedules :meth:`LogWriter.flush` with
``callLater(0)``, which runs at the start of the next turn and

1. writes every staged record with one ``write(2)`` (looping on short writes),
   plus ``fdatasync`` when ``fsync`` is on (group commit);
2. then tells every connection that asked (:meth:`LogWriter.ackAfterWrite`)
   whether its records reached the kernel, so it can send its replies, or
   ``ERROR log unavailable`` when they did not.

So a reply never leaves before its record was handed to the kernel, and a
busy server writes thousands of records per system call.

A failed write (disk full, EIO, ``/dev/full``) is not fatal: the batch is
refused, the failure is reported once on twistd's log, every later batch tries
again, and the first batch that succeeds begins with a ``Log Error`` record
saying how long the log was unavailable and how much was refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from chatlog.log.events import Event
from chatlog.log.record import Formatter

log = Logger()


class WriteWaiter(Protocol):
    """What :meth:`LogWriter.ackAfterWrite` calls back: a connection with replies."""

    def logWritten(self, ok: bool) -> None:
        """Called once after the batch holding this waiter's records was written."""


def _open_append(path: str) -> int:
    """Open ``path`` for appending (``O_APPEND``: every write lands at the end)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _ends_mid_record(path: str) -> bool:
    """True if the file is non-empty and does not end with a newline (a torn record)."""
    try:
        with open(path, "rb") as file:
            if file.seek(0, os.SEEK_END) == 0:
                return False
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"
    except OSError:
        # Unreadable, or not a regular file (/dev/full, a pipe): nothing to mend.
        return False


@implementer(ILogObserver)
class LogWriter:
    """Stage records, write them in batches, and call back who waits for them."""

    def __init__(
        self,
        path: str,
        format_record: Formatter,
        clock: IReactorTime,
        fsync: bool = False,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """
        :param path: the log file; ``-`` means standard output.
        :param format_record: a :class:`~chatlog.log.record.Formatter` of any format.
        :param clock: schedules the flush at the start of the next turn and
            timestamps log errors.
        :param fsync: ``fdatasync`` every batch before acknowledging it.
        :param on_batch: called with (bytes written, seconds taken) after each
            successful batch, for metrics.
        """
        self.path = path
        self.format_record = format_record
        self.clock = clock
        self.fsync = fsync
        self.on_batch = on_batch
        self.fd: int | None = None
        self._staged: list[bytes] = []
        # What the staged bytes hold, to say what a failed write refused.
        self._staged_messages = 0
        self._staged_others = 0
        self._waiters: list[WriteWaiter] = []
        self._flush_call: IDelayedCall | None = None
        # The file may end mid-record: after a crash, or after a failed write
        # that got part of a batch out.  The next write then starts with "\n".
        self._torn = False
        # While writes fail: when it started, the last error, what was refused.
        self.failing_since: float | None = None
        self.last_error = ""
        self._refused = 0
        self._lost = 0
        # Totals, for metrics and the Server Stopped record.
        self.write_errors = 0

    # -- opening and closing ------------------------------------------------

    def open(self) -> None:
        """Open (or create) the log for appending; mend a torn last record."""
        if self.path == "-":
            self.fd = 1
            return
        self.fd = _open_append(self.path)
        self._torn = self._torn or _ends_mid_record(self.path)

    def reopen(self) -> None:
        """Write what is staged to the old file, then continue in a new one.

        This is logrotate's move-then-SIGHUP: the renamed file keeps every
        record written so far, the fresh file at ``path`` gets every record
        from now on, and nothing is written twice or dropped in between.
        """
        self.flush()
        if self.path == "-":
            return
        new_fd = _open_append(self.path)
        old_fd, self.fd = self.fd, new_fd
        self._torn = _ends_mid_record(self.path)
        if old_fd is not None:
            os.close(old_fd)

    def close(self) -> None:
        """Flush what is staged and close the file."""
        self.flush()
        if self.fd is not None and self.path != "-":
            os.close(self.fd)
        self.fd = None

    # -- staging --------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Stage one event as a record; it is written at the next flush."""
        self._staged.append(self.format_record(event))
        if event["event"] == "message":
            self._staged_messages += 1
        else:
            self._staged_others += 1
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def stageMessages(self, fields: Event, lines: list[bytes]) -> None:
        """Stage the records of lines read together, in one piece.

        ``fields`` are the first line's message event without ``msg``; the
        lines follow it with consecutive ``seq``.  Equivalent to one
        ``__call__`` per line, and the protocol's hot path.
        """
        self._staged.append(self.format_record.messages(fields, lines))
        self._staged_messages += len(lines)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def ackAfterWrite(self, waiter: WriteWaiter) -> None:
        """Call ``waiter.logWritten(ok)`` once the records staged so far are written."""
        self._waiters.append(waiter)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    # -- writing --------------------------------------------------------------

    def flush(self) -> None:
        """Write every staged record with one write, then call back the waiters."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        records, self._staged = self._staged, []
        messages, self._staged_messages = self._staged_messages, 0
        others, self._staged_others = self._staged_others, 0
        waiters, self._waiters = self._waiters, []
        ok = True
        if records:
            ok = self._write_batch(records, messages, others)
        for waiter in waiters:
            waiter.logWritten(ok)

    def _write_batch(self, records: list[bytes], messages: int, others: int) -> bool:
        if self.failing_since is not None:
            # Say first, in the log itself, what the outage cost.
            records.insert(0, self._outage_record())
        if self._torn:
            records.insert(0, b"\n")
        data = b"".join(records)
        started = time.perf_counter()
        written = 0
        try:
            if self.fd is None:
                raise OSError("log file is not open")
            view = memoryview(data)
            while written < len(data):
                written += os.write(self.fd, view[written:])
            if self.fsync:
                os.fdatasync(self.fd)
        except OSError as error:
            self._write_failed(error, written, data, messages, others)
            return False
        self._torn = False
        if self.failing_since is not None:
            log.info("chatlog: log {path} writable again", path=self.path)
            self.failing_since = None
            self._refused = self._lost = 0
        if self.on_batch is not None:
            self.on_batch(len(data), time.perf_counter() - started)
        return True

    def _write_failed(
        self, error: OSError, written: int, data: bytes, messages: int, others: int
    ) -> None:
        self.write_errors += 1
        if written and not self._take_back(written) and data[written - 1 : written] != b"\n":
            self._torn = True
        self.last_error = str(error)
        self._refused += messages
        self._lost += others
        if self.failing_since is None:
            self.failing_since = self.clock.seconds()
            log.error(
                "chatlog: cannot write log {path}: {error}; "
                "answering ERROR log unavailable until it is writable again",
                path=self.path,
                error=self.last_error,
            )

    def _take_back(self, written: int) -> bool:
        """Remove the part of a failed batch that did reach the file.

        Its messages are answered ``ERROR log unavailable``, so their records
        must not stay (a client that retries would be logged twice), and a
        half-written record would break "one record per line".  This writer
        is the only one appending to its file, so the batch is the last
        ``written`` bytes.  Returns False when the file cannot be cut (a pipe,
        /dev/full, EIO): the caller then ends the torn line instead.
        """
        assert self.fd is not None
        try:
            end = os.lseek(self.fd, 0, os.SEEK_END)
            os.ftruncate(self.fd, end - written)
        except OSError:
            return False
        return True

    def _outage_record(self) -> bytes:
        assert self.failing_since is not None
        now = self.clock.seconds()
        return self.format_record(
            {
                "event": "log_error",
                "time": now,
                "error": self.last_error,
                "seconds": round(now - self.failing_since, 6),
                "refused": self._refused,
                "lost": self._lost,
            }
        )
