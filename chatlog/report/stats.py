"""Folding events into counters: the server's connections, messages and limits,
the client's sends, replies and round trips.

Each fold takes one time-ordered stream of events (:mod:`chatlog.report.inputs`
merges the files) and keeps counters whose size grows with the seconds and
the connections of the run, never with its messages, so a log of any length
is read in bounded memory.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from hdrh.histogram import HdrHistogram

from chatlog.latency import new_histogram, record_counts
from chatlog.log import Parsed
from chatlog.report.timeline import RttTimeline
from chatlog.wire import REPLY_PREFIX


class PerSecond:
    """Events counted per calendar second, and the time of the first and the last."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.first: float | None = None
        self.last: float | None = None

    def add(self, when: float) -> None:
        self.counts[int(when)] += 1
        if self.first is None:
            self.first = when
        self.last = when


class _Fold:
    """A stream of events folded by kind: ``add`` calls ``_on_<event>``.

    Kinds without a handler are only counted, in ``other``.
    """

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.other: Counter[str] = Counter()

    def add(self, event: Parsed) -> None:
        when = event["time"]
        if self.first is None:
            self.first = when
        self.last = when
        handler = getattr(self, "_on_" + event["event"], None)
        if handler is None:
            self.other[event["event"]] += 1
        else:
            handler(event, when)


class ServerStats(_Fold):
    """Fold a time-ordered stream of server events into counters."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0
        self.messages = 0
        self.message_rate = PerSecond()
        # Concurrency: the live connections (address -> source file), and per
        # second the highest count seen and the count when the second ended.
        self.live: dict[tuple[str, int], int] = {}
        self.peak_concurrent = 0
        self.peak_time: float | None = None
        self.concurrency: dict[int, list[int]] = {}
        self.unmatched_disconnects = 0
        self.messages_by_ip: Counter[str] = Counter()
        self.connections_by_ip: Counter[str] = Counter()
        self.messages_by_address: Counter[tuple[str, int]] = Counter()
        self.disconnections: Counter[str] = Counter()
        self.connected_seconds = 0.0
        self.longest_connection = 0.0
        self.line_too_long = 0
        self.timeouts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.log_errors = {"events": 0, "refused": 0, "lost": 0, "left": 0, "seconds": 0.0}
        self.log_reopens = {"failed": 0, "late_seconds": 0.0}
        # Per-client quotas: throttle episodes by reason (counted when they
        # begin), and what the records of their ends say.
        self.throttles: dict[str, Any] = {
            "events": Counter(),
            "seconds": 0.0,
            "paused_seconds": 0.0,
            "held": 0,
            "addresses": Counter(),
        }
        self.starts = 0
        self.stops = 0
        # What the Server Stopped records say.  Before refused messages were
        # counted apart, such a record had no "refused" and its "messages"
        # counted every message received, refused ones too.
        self.reported = {"connections": 0, "messages": 0, "refused": 0}

    def _on_message(self, event: Parsed, when: float) -> None:
        self.messages += 1
        self.message_rate.add(when)
        ip = event["ip"]
        self.messages_by_ip[ip] += 1
        self.messages_by_address[ip, event["port"]] += 1

    def _on_connect(self, event: Parsed, when: float) -> None:
        self.connections += 1
        self.connections_by_ip[event["ip"]] += 1
        self.live[event["ip"], event["port"]] = event.get("source", 0)
        self._concurrency_changed(when)

    def _on_disconnect(self, event: Parsed, when: float) -> None:
        self.disconnections[event.get("how", "unknown")] += 1
        seconds = float(event.get("seconds", 0.0))
        self.connected_seconds += seconds
        self.longest_connection = max(self.longest_connection, seconds)
        if self.live.pop((event["ip"], event["port"]), None) is None:
            # Its connect is in a log we were not given (rotated away).
            self.unmatched_disconnects += 1
        self._concurrency_changed(when)

    def _concurrency_changed(self, when: float) -> None:
        live = len(self.live)
        if live > self.peak_concurrent:
            self.peak_concurrent, self.peak_time = live, when
        second = self.concurrency.get(int(when))
        if second is None:
            self.concurrency[int(when)] = [live, live]
        else:
            second[0] = max(second[0], live)
            second[1] = live

    def _on_line_too_long(self, event: Parsed, when: float) -> None:
        self.line_too_long += 1

    def _on_timeout(self, event: Parsed, when: float) -> None:
        self.timeouts[event.get("kind", "unknown")] += 1

    def _on_rejected(self, event: Parsed, when: float) -> None:
        self.rejected[event.get("reason", "unknown")] += 1

    def _on_log_error(self, event: Parsed, when: float) -> None:
        errors = self.log_errors
        errors["events"] += 1
        errors["refused"] += int(event.get("refused", 0))
        errors["lost"] += int(event.get("lost", 0))
        errors["left"] += int(event.get("left", 0))
        errors["seconds"] += float(event.get("seconds", 0.0))

    def _on_log_reopen(self, event: Parsed, when: float) -> None:
        if event.get("state") == "failed":
            self.log_reopens["failed"] += 1
        else:
            self.log_reopens["late_seconds"] += float(event.get("seconds", 0.0))

    def _on_throttled(self, event: Parsed, when: float) -> None:
        throttles = self.throttles
        if event.get("state") == "paused":
            throttles["events"][event.get("reason", "unknown")] += 1
            throttles["addresses"][event.get("address", "")] += 1
        else:
            throttles["seconds"] += float(event.get("seconds", 0.0))
            throttles["paused_seconds"] += float(event.get("paused", 0.0))
            throttles["held"] += int(event.get("held", 0))

    def _on_start(self, event: Parsed, when: float) -> None:
        self.starts += 1
        # A (re)started server has no connections: those of a crashed run
        # in the same file never logged their disconnection.
        source = event.get("source", 0)
        stale = [key for key, src in self.live.items() if src == source]
        for key in stale:
            del self.live[key]
        if stale:
            self._concurrency_changed(when)

    def _on_stop(self, event: Parsed, when: float) -> None:
        self.stops += 1
        self.reported["connections"] += int(event.get("connections", 0))
        self.reported["messages"] += int(event.get("messages", 0))
        self.reported["refused"] += int(event.get("refused", 0))


class ClientStats(_Fold):
    """Fold a time-ordered stream of client events: sends, replies, round trips.

    Each reply is checked against the message sent before it on the same
    connection (replies come back in order), like the client itself does; a
    reply that is not ``Server received: <that message>`` is an error and
    its round trip is not counted.  Only messages in flight are remembered.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.replies = 0
        self.errors = 0
        self.reply_rate = PerSecond()
        self.histogram = new_histogram()
        # One more per client log, to compare runs (e.g. 10 against 100 connections).
        self.by_source: dict[int, HdrHistogram] = {}
        # HdrHistogram.record_value costs a microsecond in Python: round trips
        # are counted here per log and folded in once per distinct value.
        self._pending: dict[int, Counter[int]] = {}
        self.timeline = RttTimeline()
        self.in_flight: dict[tuple[int, int], deque[bytes]] = {}

    def _on_sent(self, event: Parsed, when: float) -> None:
        self.sent += 1
        key = (event.get("source", 0), event.get("conn", 0))
        queue = self.in_flight.get(key)
        if queue is None:
            queue = self.in_flight[key] = deque()
        queue.append(event.get("msg", b""))

    def _on_reply(self, event: Parsed, when: float) -> None:
        self.replies += 1
        self.reply_rate.add(when)
        if not self._good_reply(event):
            self.errors += 1
            return
        rtt = event.get("rtt_ms")
        if rtt is None:
            return
        # The client records floor(nanoseconds / 1000); the log's milliseconds
        # are rounded to 6 decimals (json) or 3 (text): floor them the same way.
        micros = int(float(rtt) * 1000 + 1e-6)
        source = event.get("source", 0)
        pending = self._pending.get(source)
        if pending is None:
            pending = self._pending[source] = Counter()
        pending[micros] += 1
        if len(pending) > 100_000:
            self.fold()
        self.timeline.add(when, float(rtt))

    def _good_reply(self, event: Parsed) -> bool:
        key = (event.get("source", 0), event.get("conn", 0))
        queue = self.in_flight.get(key)
        msg = event.get("msg", b"")
        if not queue:
            # Its message is in a log we were not given: judge the reply alone.
            return bool(msg.startswith(REPLY_PREFIX))
        sent = queue.popleft()
        if not queue:
            del self.in_flight[key]
        return bool(msg == REPLY_PREFIX + sent)

    @property
    def unanswered(self) -> int:
        return sum(len(queue) for queue in self.in_flight.values())

    def fold(self) -> None:
        """Put the pending round trips into the histograms (done before reading them)."""
        for source, pending in self._pending.items():
            per_source = self.by_source.get(source)
            if per_source is None:
                per_source = self.by_source[source] = new_histogram()
            record_counts(per_source, pending)
            record_counts(self.histogram, pending)
        self._pending = {}
