"""The client's own log (``--logfile``): one record per message sent and per reply.

The hot path only appends a small tuple to :attr:`ClientLog.pending`; the
records are formatted by :func:`chatlog.log.make_formatter` (the server's
three formats) and written with one ``os.write`` per :meth:`ClientLog.flush`,
which the client calls a few times a second and at the end.  Formatting and
writing in batches keeps the log from making the client the bottleneck.

Times are taken on the monotonic clock (``time.perf_counter_ns``) like the
round trips, and turned into wall-clock time at flush with one offset, so a
``Message Received`` record is exactly its round trip after its
``Message Sent`` record.
"""

from __future__ import annotations

import os
import time
from typing import Any

from chatlog.log import make_formatter

#: A pending record: ("sent", perf_ns, conn, seq, payload, 0)
#: or ("reply", perf_ns, conn, seq, reply_line, rtt_ns).
Pending = tuple[str, int, int, int, bytes, int]


class ClientLog:
    """Append formatted records to ``path`` (``O_APPEND``), in batches."""

    def __init__(
        self, path: str, format_name: str = "event", utc: bool = False, ip: str = "", port: int = 0
    ) -> None:
        self.path = path
        self.format = make_formatter(format_name, utc)
        self.ip = ip
        self.port = port
        self.pending: list[Pending] = []
        self.records = 0
        # One pair of readings fixes the wall-clock time of every monotonic reading.
        self._wall0 = time.time()
        self._perf0 = time.perf_counter_ns()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def wall_time(self, perf_ns: int) -> float:
        return self._wall0 + (perf_ns - self._perf0) / 1e9

    def events(self, pending: list[Pending]) -> list[dict[str, Any]]:
        """The event dicts of ``pending`` records, as :mod:`chatlog.log.events` describes them."""
        ip, port, wall_time = self.ip, self.port, self.wall_time
        out: list[dict[str, Any]] = []
        for kind, when, conn, seq, msg, rtt_ns in pending:
            event = {
                "event": kind,
                "time": wall_time(when),
                "ip": ip,
                "port": port,
                "conn": conn,
                "seq": seq,
                "msg": msg,
            }
            if kind == "reply":
                event["rtt_ms"] = round(rtt_ns / 1e6, 6)
            out.append(event)
        return out

    def flush(self) -> None:
        """Format what is pending and write it with one ``write`` (looping on short writes)."""
        if not self.pending:
            return
        pending = self.pending[:]
        # Cleared in place: the protocols hold this list's bound append.
        self.pending.clear()
        data = memoryview(b"".join(map(self.format, self.events(pending))))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        self.records += len(pending)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1
