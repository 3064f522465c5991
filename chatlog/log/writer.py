"""The message log: a batching ``O_APPEND`` writer that makes "ack implies logged" cheap.

:class:`LogWriter` is an :class:`~twisted.logger.ILogObserver`: the protocol
calls it with event dicts (see :mod:`chatlog.log.events`) and it formats each one
into a staged record at once.  Nothing is written then.  Instead the first
record of a reactor turn schedules :meth:`LogWriter.flush` with
``callLater(0)``, which runs at the start of the next turn and

1. writes every staged record with one ``write(2)`` (looping on short writes),
   plus ``fdatasync`` when ``fsync`` is on (group commit); big records go
   with ``writev(2)`` from where they lie instead of being joined first, up
   to 1024 (IOV_MAX) per call;
2. then tells every connection that asked (:meth:`LogWriter.ackAfterWrite`)
   whether its records reached the kernel, so it can send its replies, or
   ``ERROR log unavailable`` when they did not.

So a reply never leaves before its record was handed to the kernel, and a
busy server writes thousands of records per system call.

A failed write (disk full, EIO, ``/dev/full``) is not fatal: the batch is
refused, the failure is reported once on twistd's log, every later batch tries
again, and the first batch that succeeds begins with a ``Log Error`` record
saying how long the log was unavailable and how much was refused.  What a
refused batch got into the file is cut back off; when even that fails, the
``Log Error`` record says how many refused messages may remain, and a line
left unfinished is ended with :data:`~chatlog.log.record.TORN_MARK`, never
mended into a record (a torn line found when the file is opened is marked the
same way).  The writer counts the messages it logged and those it refused
apart, for metrics and the ``Server Stopped`` record.

A reopen (SIGHUP, after logrotate moved the file) that fails goes on writing
to the file open before, says so on twistd's log and in a ``Log Reopen``
record there, and is retried with backoff until it succeeds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from chatlog.log.events import Event
from chatlog.log.files import (
    PageRecycler,
    WriteFailed,
    cut_back,
    ends_mid_line,
    is_regular,
    open_log_file,
    sync_directory,
    write_all,
)
from chatlog.log.record import TORN_MARK, Formatter

log = Logger()

#: Bytes written between two steps of the log's :class:`~chatlog.log.files.PageRecycler`.
RECYCLE_BYTES = 16 << 20

#: Seconds before the first retry of a failed reopen; each failure doubles it, up to the cap.
REOPEN_FIRST_RETRY = 0.1
REOPEN_MAX_RETRY = 5.0


class WriteWaiter(Protocol):
    """What :meth:`LogWriter.ackAfterWrite` calls back: a connection with replies."""

    def logWritten(self, ok: bool) -> None:
        """Called once after the batch holding this waiter's records was written."""


class _ReopenPending:
    """A reopen that failed and is retried: since when, how many failures, the next try."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.attempts = 0
        self.delay = REOPEN_FIRST_RETRY
        self.retry: IDelayedCall | None = None

    def cancel(self) -> None:
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None


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
        :param clock: schedules the flush at the start of the next turn, the
            retries of a failed reopen, and timestamps log errors.
        :param fsync: ``fdatasync`` every batch before acknowledging it, and
            the directory whenever the file is opened (or the open fails).
        :param on_batch: called with (bytes written, seconds taken) after each
            successful batch, for metrics.
        """
        self.path = path
        self.format_record = format_record
        self.clock = clock
        self.fsync = fsync
        self.on_batch = on_batch
        self.fd: int | None = None
        # A file this writer opened and may cut back: not standard output,
        # which others may write to as well, nor a device.
        self._cuttable = False
        self._staged: list[bytes] = []
        # Keeps the log's pages in the page cache few (a file this writer may
        # cut back only: a regular file of its own), in a thread if the
        # clock is a reactor that has them.
        self._pages = PageRecycler(
            RECYCLE_BYTES, clock.callInThread if IReactorThreads.providedBy(clock) else None
        )
        # What the staged bytes hold, to say what a failed write refused.
        self._staged_messages = 0
        self._staged_others = 0
        self._waiters: list[WriteWaiter] = []
        self._flush_call: IDelayedCall | None = None
        # The file ends in an unfinished line: after a crash, or after a
        # failed write whose part in the file could not be cut back.  The
        # next write begins by marking that line torn and ending it.
        self._torn = False
        # While writes fail: when it started, the last error, what was refused
        # and lost, and how many refused messages may remain in the file.
        self.failing_since: float | None = None
        self.last_error = ""
        self._refused = 0
        self._lost = 0
        self._left = 0
        self._reopen: _ReopenPending | None = None
        #: Messages in batches that were written (with ``fsync``, and synced).
        self.messages_logged = 0
        #: Messages in batches that failed: answered ``ERROR log unavailable``.
        self.messages_refused = 0
        #: Of those, how many may remain in the file because it could not be
        #: cut back (an upper bound).
        self.refused_left = 0
        #: Other records (connections, limits...) in batches that failed.
        self.records_lost = 0
        #: Batches that failed.
        self.write_errors = 0
        #: Attempts to reopen the log that failed.
        self.reopen_errors = 0

    # -- opening and closing ------------------------------------------------

    def open(self) -> None:
        """Open (or create) the log for appending, noting a torn last line to mark.

        Raises :class:`OSError` when the log cannot be kept at ``path``
        (:class:`~chatlog.log.files.NotALogFile` for a FIFO, a socket or a
        terminal).
        """
        if self.path == "-":
            self.fd = 1
            return
        self.fd, self._torn, self._cuttable = self._open_file()

    def _open_file(self) -> tuple[int, bool, bool]:
        """A new descriptor for ``path``; whether it ends torn; whether it may be cut back."""
        fd, readable = open_log_file(self.path)
        try:
            regular = is_regular(fd)
            if regular:
                self._sync_directory()
        except BaseException:
            os.close(fd)
            raise
        return fd, readable and regular and ends_mid_line(fd), regular

    def _sync_directory(self) -> None:
        try:
            sync_directory(self.path)
        except OSError as error:
            if self.fsync:
                # --fsync promises records on disk: not in a file a power cut
                # could take back out of its directory.
                raise
            log.warn(
                "chatlog: cannot fsync the directory of {path}: {error}",
                path=self.path,
                error=str(error),
            )

    def reopen(self) -> bool:
        """Write what is staged to the old file, then continue in a new one.

        This is logrotate's move-then-SIGHUP: the renamed file keeps every
        record written so far, the fresh file at ``path`` gets every record
        from now on, and nothing is written twice or dropped in between.

        Returns False when the new file cannot be opened (out of file
        descriptors, say): then records go on to the old file, a ``Log
        Reopen`` record there says so, and the reopen is retried with backoff
        until it succeeds.
        """
        self.flush()
        if self.path == "-":
            return True
        if self._reopen is None:
            self._reopen = _ReopenPending(self.clock.seconds())
        return self._try_reopen(self._reopen)

    def _try_reopen(self, pending: _ReopenPending) -> bool:
        pending.cancel()
        try:
            new_fd, torn, cuttable = self._open_file()
        except OSError as error:
            self._reopen_failed(pending, error)
            return False
        old_fd, self.fd = self.fd, new_fd
        self._torn, self._cuttable = torn, cuttable
        if old_fd is not None:
            os.close(old_fd)
        self._reopen = None
        if pending.attempts:
            now = self.clock.seconds()
            log.info(
                "chatlog: reopened log {path} after {attempts} failed attempts ({seconds:.3f} s)",
                path=self.path,
                attempts=pending.attempts,
                seconds=now - pending.since,
            )
            self(
                {
                    "event": "log_reopen",
                    "time": now,
                    "state": "done",
                    "seconds": round(now - pending.since, 6),
                    "attempts": pending.attempts,
                }
            )
        return True

    def _reopen_failed(self, pending: _ReopenPending, error: OSError) -> None:
        self.reopen_errors += 1
        pending.attempts += 1
        if pending.attempts == 1:
            log.error(
                "chatlog: cannot reopen log {path}: {error}; "
                "records go on to the file open before, retrying",
                path=self.path,
                error=str(error),
            )
            # Into the file open before: whoever reads it learns why it kept
            # growing after it was moved.
            self(
                {
                    "event": "log_reopen",
                    "time": self.clock.seconds(),
                    "state": "failed",
                    "error": str(error),
                }
            )
        else:
            pending.delay = min(pending.delay * 2, REOPEN_MAX_RETRY)
        pending.retry = self.clock.callLater(pending.delay, self._retry_reopen)

    def _retry_reopen(self) -> None:
        if self._reopen is not None:
            self.flush()  # what is staged belongs to the file open before
            self._try_reopen(self._reopen)

    @property
    def reopen_pending(self) -> bool:
        """Whether a reopen failed and records still go to the file open before."""
        return self._reopen is not None

    def close(self) -> None:
        """Flush what is staged and close the file."""
        self.flush()
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self.failing_since is not None:
            log.error(
                "chatlog: log {path} still unavailable at close ({error}): {refused} "
                "messages refused and {lost} other records lost since it failed",
                path=self.path,
                error=self.last_error,
                refused=self._refused,
                lost=self._lost,
            )
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

    def stagePlainLines(self, fields: Event, body: bytes, count: int) -> None:
        """Stage the records of ``count`` lines read together, given joined by ``\\n``.

        Every byte of ``body`` but its newlines is one a text record takes as
        it is (:data:`~chatlog.log.record.PLAIN_LINES`): the records are those
        of :meth:`stageMessages` with ``body.split(b"\\n")``, made without
        the split (see :meth:`~chatlog.log.record.Formatter.plain_lines`).
        """
        self._staged.append(self.format_record.plain_lines(fields, body, count))
        self._staged_messages += count
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def ackAfterWrite(self, waiter: WriteWaiter) -> None:
        """Call ``waiter.logWritten(ok)`` once the records staged so far are written."""
        self._waiters.append(waiter)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    # -- writing --------------------------------------------------------------

    def flush(self) -> None:
        """Write every staged record (one system call for up to 1024), then call back the waiters."""
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
        own = 0  # where the batch's own records begin
        if self._torn or self.failing_since is not None:
            records[:0] = lead = self._lead()
            own = sum(map(len, lead))
        total = sum(map(len, records))
        started = time.perf_counter()
        try:
            if self.fd is None:
                raise WriteFailed(OSError("log file is not open"), 0)
            write_all(self.fd, records, total)
            if self.fsync:
                try:
                    os.fdatasync(self.fd)
                except OSError as error:
                    raise WriteFailed(error, total) from error
        except WriteFailed as failed:
            # Rare: only now are the records joined, to see what they left.
            data = b"".join(records)
            self._write_failed(failed.error, failed.written, data, own, messages, others)
            return False
        self._torn = False
        if self._cuttable:
            self._pages.wrote(self.fd, total)
        self.messages_logged += messages
        if self.failing_since is not None:
            log.info("chatlog: log {path} writable again", path=self.path)
            self.failing_since = None
            self._refused = self._lost = self._left = 0
        if self.on_batch is not None:
            self.on_batch(total, time.perf_counter() - started)
        return True

    def _lead(self) -> list[bytes]:
        """What goes before a batch: the end of a torn line, then what an outage cost."""
        lead = [TORN_MARK + b"\n"] if self._torn else []
        if self.failing_since is not None:
            lead.append(self._outage_record())
        return lead

    def _write_failed(
        self, error: OSError, written: int, data: bytes, own: int, messages: int, others: int
    ) -> None:
        """Count a refused batch; what of it stays in the file, say (whole lines) or mark (a torn one)."""
        self.write_errors += 1
        self.messages_refused += messages
        self.records_lost += others
        self.last_error = str(error)
        cut = durable = True
        if written:
            cut, durable = self._take_back(written)
        if not cut:
            if self.failing_since is not None and written >= own:
                # The Log Error record that led this batch is in the file and
                # tells the outage so far: the next one tells only the rest.
                self.failing_since = self.clock.seconds()
                self._refused = self._lost = self._left = 0
            self._torn = data[written - 1 : written] != b"\n"
        if not durable:
            # Its whole records stay in the file, or (cut, but the cut not
            # synced) may come back after a power cut.
            left = min(messages, data[own:written].count(b"\n"))
            self._left += left
            self.refused_left += left
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

    def _take_back(self, written: int) -> tuple[bool, bool]:
        """Cut off the part of a failed batch that did reach the file: (cut, and durably).

        Its messages are answered ``ERROR log unavailable``, so their records
        must not stay (a client that retries would be logged twice), and a
        half-written record would break "one record per line".  Standard
        output is never cut (others may write there too), nor a device.
        With ``fsync`` the cut is synced too, or refused records could come
        back after a power cut.
        """
        if not self._cuttable or self.fd is None:
            return False, False
        try:
            cut_back(self.fd, written)
        except OSError as error:
            self._cut_failed(error)
            return False, False
        if self.fsync:
            try:
                os.fdatasync(self.fd)
            except OSError as error:
                self._cut_failed(error)
                return True, False
        return True, True

    def _cut_failed(self, error: OSError) -> None:
        log.error(
            "chatlog: cannot cut refused records back off log {path}: {error}",
            path=self.path,
            error=str(error),
        )

    def _outage_record(self) -> bytes:
        assert self.failing_since is not None
        now = self.clock.seconds()
        event = {
            "event": "log_error",
            "time": now,
            "error": self.last_error,
            "seconds": round(now - self.failing_since, 6),
            "refused": self._refused,
            "lost": self._lost,
        }
        if self._left:
            event["left"] = self._left
        return self.format_record(event)
