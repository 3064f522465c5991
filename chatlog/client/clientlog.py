"""The client's own log (``--logfile``): one record per message sent and per reply.

The log must not change what it measures.  Formatting a record costs a few
microseconds, as much as a round trip's whole work in the client, so none of
it happens on the measuring loop.  The hot path appends one small tuple of
numbers (a *compact record*, below) per reply, or per write in the open loop;
every 5 ms :meth:`ClientLog.flush` hands the batch on in bulk.  In a load
run it goes, serialised with ``marshal``, to a spool file read by a separate
writer process (:mod:`chatlog.client.logwriter`) that formats it once the run
is over (a writer formatting alongside, even at the lowest CPU priority,
still changed what a 2-core machine measured), and the client exits only
when the log is complete.  The conversation's few records are formatted in
place.

Compact records (times are ``time.perf_counter_ns`` readings)::

    (REPLY, conn, seq, start_ns, now_ns)             the expected reply to message seq
    (REPLY_LINE, conn, seq, start_ns, now_ns, line)  any other line (seq 0: none was due)
    (SENT, conn, first_seq, count, now_ns)           load messages sent with one write
    (SENT_LINE, conn, seq, now_ns, line)             a line of the conversation

The hot paths' records, an expected reply and (open loop) a write of load
messages, are no Python objects at all: ``(conn, seq, start_ns, now_ns)``
packed with :data:`REPLY_RECORD` onto a bytearray of their own
(:attr:`ClientLog.replies`), and ``(conn, first_seq, count, now_ns)`` with
:data:`SENT_RECORD` onto another (:attr:`ClientLog.sends`).  Packing costs
what a tuple did (~110 ns a record, timed with its share of the hand-over),
but a hand-over is then one copy of bytes instead of marshalling and freeing
hundreds of tuples while the measuring loop waits, and a held record takes 32
bytes, not ~150.

A load message's text is known from its connection and number
(:func:`~chatlog.client.plan.payload`), so it is not carried.  In the closed
loop a reply's ``start_ns`` is its message's send time, so no ``SENT`` record
is needed (``derive_sent``): its ``Message Sent`` record is made from the
reply, and records are put back in time order with a *watermark* (the send
time of the oldest message still in flight) given with each batch.  Records
are formatted by :func:`chatlog.log.make_formatter` (the server's three
formats); monotonic readings are turned into wall-clock time with one pair of
readings, so a ``Message Received`` record is exactly its round trip after
its ``Message Sent`` record.
"""

from __future__ import annotations

import marshal
import operator
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from chatlog.client.plan import payload
from chatlog.log import make_formatter
from chatlog.wire import REPLY_PREFIX

REPLY, REPLY_LINE, SENT, SENT_LINE = range(4)
#: A pending record: one of the compact tuples above.
Pending = tuple[Any, ...]
#: An expected reply, packed: conn, seq, start_ns, now_ns.
REPLY_RECORD = struct.Struct("=QQqq")
#: Load messages sent with one write, packed: conn, first_seq, count, now_ns.
SENT_RECORD = struct.Struct("=QQQq")
#: A spool frame: its length, then marshal data; length 0 ends the spool.
FRAME = struct.Struct("<I")
#: Seconds between hand-overs of the records while a load runs: each pauses
#: the measuring loop as long as its batch takes (about 60 ns a record to
#: marshal, and as much to free), so batches are kept small: every 20 ms
#: (2,400 records in the closed loop over 100 connections) raised its p99
#: from 1.5 to 1.9-2.0 ms; every 2 ms cost throughput in timer calls.
HAND_OVER = 0.005
_NEVER = 1 << 62


class Book:
    """Compact records in, formatted lines out, in time order up to each watermark."""

    def __init__(self, header: dict[str, Any]) -> None:
        self.format = make_formatter(header["format"], header["utc"])
        self.ip = header["ip"]
        self.port = header["port"]
        self.size = header["size"]
        self.expect = header["expect"]
        self.derive_sent = header["derive_sent"]
        self._wall0: float = header["wall0"]
        self._perf0: int = header["perf0"]
        #: (time_ns, kind, conn, seq, text, rtt_ns) not yet written: newer than the watermark.
        self.held: list[tuple[int, str, int, int, bytes, int]] = []
        self.records = 0

    def wall_time(self, perf_ns: int) -> float:
        return self._wall0 + (perf_ns - self._perf0) / 1e9

    def feed(
        self,
        watermark: int,
        records: Sequence[Pending],
        replies: bytes = b"",
        sends: bytes = b"",
    ) -> bytes:
        """Take the records, packed replies and sends; return the lines of those older than ``watermark``."""
        held = self.held
        add = held.append
        size, expect, derive = self.size, self.expect, self.derive_sent
        for conn, seq, start, now in REPLY_RECORD.iter_unpack(replies):
            text = payload(conn, seq, size)
            if derive:
                add((start, "sent", conn, seq, text, 0))
            add((now, "reply", conn, seq, expect + text, now - start))
        for conn, first, count, now in SENT_RECORD.iter_unpack(sends):
            for seq in range(first, first + count):
                add((now, "sent", conn, seq, payload(conn, seq, size), 0))
        for record in records:
            kind = record[0]
            if kind == REPLY:
                _, conn, seq, start, now = record
                text = payload(conn, seq, size)
                if derive:
                    add((start, "sent", conn, seq, text, 0))
                add((now, "reply", conn, seq, expect + text, now - start))
            elif kind == REPLY_LINE:
                _, conn, seq, start, now, line = record
                if derive and seq:
                    add((start, "sent", conn, seq, payload(conn, seq, size), 0))
                add((now, "reply", conn, seq, line, now - start if seq else 0))
            elif kind == SENT:
                _, conn, first, count, now = record
                for seq in range(first, first + count):
                    add((now, "sent", conn, seq, payload(conn, seq, size), 0))
            else:
                _, conn, seq, now, line = record
                add((now, "sent", conn, seq, line, 0))
        # Nearly sorted already: only the derived sends are out of place.
        held.sort(key=operator.itemgetter(0))
        cut = len(held)
        while cut and held[cut - 1][0] >= watermark:
            cut -= 1
        ready, self.held = held[:cut], held[cut:]
        self.records += len(ready)
        return self._lines(ready)

    def drain(self) -> bytes:
        """Every record still held (the run is over)."""
        return self.feed(_NEVER, [])

    def _lines(self, ready: list[tuple[int, str, int, int, bytes, int]]) -> bytes:
        ip, port, wall_time, fmt = self.ip, self.port, self.wall_time, self.format
        out = []
        for when, kind, conn, seq, text, rtt_ns in ready:
            event: dict[str, Any] = {
                "event": kind,
                "time": wall_time(when),
                "ip": ip,
                "port": port,
                "conn": conn,
                "seq": seq,
                "msg": text,
            }
            if kind == "reply":
                event["rtt_ms"] = round(rtt_ns / 1e6, 6)
            out.append(fmt(event))
        return b"".join(out)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ClientLog:
    """Append the client's records to ``path`` (``O_APPEND``), formatted off the measuring loop.

    ``background`` (load runs): formatting and writing happen in a writer
    process fed through a spool file; otherwise (the conversation) at
    :meth:`flush`, in this process.  A load run describes its messages
    (:meth:`describe`) before the first record.
    """

    def __init__(
        self,
        path: str,
        format_name: str = "event",
        utc: bool = False,
        ip: str = "",
        port: int = 0,
        *,
        background: bool = False,
    ) -> None:
        make_formatter(format_name, utc)  # an unknown format fails here, not in the writer
        self.path = path
        self.pending: list[Pending] = []
        #: Expected replies, the load's hot path: :data:`REPLY_RECORD` after another.
        self.replies = bytearray()
        #: Writes of load messages (open loop): :data:`SENT_RECORD` after another.
        self.sends = bytearray()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        # One pair of readings fixes the wall-clock time of every monotonic reading.
        self.header: dict[str, Any] = {
            "format": format_name,
            "utc": utc,
            "ip": ip,
            "port": port,
            "size": 0,
            "expect": REPLY_PREFIX,
            "derive_sent": False,
            "wall0": time.time(),
            "perf0": time.perf_counter_ns(),
        }
        self._book: Book | None = None
        #: Records older than this are complete (set by the load run as it goes).
        self.watermark = 0
        self._handing_over: LoopingCall | None = None
        # Started now, so that its start-up overlaps connecting.
        self._spool = Spool(self._fd) if background else None

    def describe(self, size: int, expect: bytes, derive_sent: bool) -> None:
        """A load run's messages: their size, the reply's prefix, and whether the
        replies' start times are the send times (closed loop)."""
        self.header.update(size=size, expect=expect, derive_sent=derive_sent)

    def flush(self, watermark: int = _NEVER) -> None:
        """Hand what is pending on; records older than ``watermark`` are complete."""
        if not self.pending and not self.replies and not self.sends:
            return
        # Copied and cleared in place: the protocols hold these lists' bound appends.
        batch = self.pending[:]
        self.pending.clear()
        replies = bytes(self.replies)
        self.replies.clear()
        sends = bytes(self.sends)
        self.sends.clear()
        if self._spool is not None:
            self._spool.send(self.header, watermark, batch, replies, sends)
        else:
            if self._book is None:
                self._book = Book(self.header)
            write_all(self._fd, self._book.feed(watermark, batch, replies, sends))

    def start_handing_over(self, clock: IReactorTime) -> None:
        """Flush every :data:`HAND_OVER` seconds, up to :attr:`watermark`, until stopped."""
        self._handing_over = LoopingCall(lambda: self.flush(self.watermark))
        self._handing_over.clock = clock
        self._handing_over.start(HAND_OVER, now=False)

    def stop_handing_over(self) -> None:
        if self._handing_over is not None and self._handing_over.running:
            self._handing_over.stop()

    def close(self) -> None:
        """Write everything, and wait for the writer process to finish the log."""
        if self._fd < 0:
            return
        try:
            self.flush()
            if self._spool is not None:
                self._spool.close()
            elif self._book is not None:
                write_all(self._fd, self._book.drain())
        finally:
            os.close(self._fd)
            self._fd = -1


class Spool:
    """The batches, marshalled into an unlinked temporary file that a writer process reads.

    The first frame is the log's header, sent with the first batch (a load
    run describes its messages after the log is opened).
    """

    def __init__(self, log_fd: int) -> None:
        # Kept open for the writer's whole life, closed in close(): no with-block fits.
        self._file = tempfile.TemporaryFile(prefix="chatlog-client-log-")  # noqa: SIM115
        self._fd = self._file.fileno()
        self._started = False
        # The writer imports the same chatlog as this process, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatlog.client.logwriter",
                str(self._fd),
                str(log_fd),
                str(os.getpid()),
            ],
            pass_fds=(self._fd, log_fd),
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def _frame(self, data: bytes) -> None:
        write_all(self._fd, FRAME.pack(len(data)) + data)

    def send(
        self,
        header: dict[str, Any],
        watermark: int,
        batch: list[Pending],
        replies: bytes,
        sends: bytes,
    ) -> None:
        if not self._started:
            self._started = True
            self._frame(marshal.dumps(header))
        self._frame(marshal.dumps((watermark, batch, replies, sends)))

    def close(self) -> None:
        try:
            write_all(self._fd, FRAME.pack(0))
            self.proc.wait()
        finally:
            self._file.close()
