"""``python -m chatlog.report``: turn server and client logs into numbers and pictures.

Usage::

    python -m chatlog.report SERVER_LOG [CLIENT_LOG ...] [-o DIR] [--utc] [--bench FILE]

Every file is read in one streaming pass (:mod:`chatlog.log.reader`); its
format (event, dash, json) and role (a server's or a client's log) are
detected, so the order of the files does not matter and rotated or
per-worker logs can simply be listed together.  The events of all server
files are merged by time, and so are those of all client files, and each
merged stream is folded into counters whose size grows with the seconds and
the connections of the run, never with the messages.

Output: a summary table on stdout, and in ``DIR`` (``report/`` by default)
``summary.json``, PNG plots and ``report.html``, one self-contained page
(plots embedded) that shows them all.

Round trips come from client logs (``reply`` events with ``rtt_ms``) and are
counted in an HdrHistogram (1 microsecond to 60 s, 3 significant digits),
like the client's own summary, so the two agree within the histogram's
precision.

``--bench FILE`` adds the plots of a benchmark: a JSON list of rows, one per
server and load, as written by ``python -m chatlog.bench``::

    [{"server": "chatlog", "connections": 100, "msgs_per_s": 41250.0,
      "p99_ms": 3.1, "p50_ms": 1.2, "mode": "closed"}, ...]

``server``, ``connections``, ``msgs_per_s`` and ``p99_ms`` are required;
``mode`` (``closed``, ``pipelined``, ``open``...) separates curves of one
server when several modes are present; other keys are ignored.  An object
``{"rows": [...]}`` is accepted too.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import html
import json
import math
import operator
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from chatlog.log import LogReader, Parsed
from chatlog.wire import REPLY_PREFIX, format_address

DEFAULT_OUTPUT = "report"
# HdrHistogram range and precision, in microseconds: the client's own.
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 60_000_000
HDR_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
# Timelines drawn with more points than this are averaged over wider bins.
MAX_PLOT_POINTS = 2000


# --------------------------------------------------------------------------
# Server side: connections, messages, limits
# --------------------------------------------------------------------------


class ServerStats:
    """Fold a time-ordered stream of server events into counters."""

    def __init__(self) -> None:
        self.connections = 0
        self.messages = 0
        self.first: float | None = None
        self.last: float | None = None
        self.messages_per_second: Counter[int] = Counter()
        self.message_span: list[float] = []  # first and last message time
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
        self.log_errors = {"events": 0, "refused": 0, "lost": 0, "seconds": 0.0}
        self.starts = 0
        self.stops = 0
        self.reported = {"connections": 0, "messages": 0}
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

    def _on_message(self, event: Parsed, when: float) -> None:
        self.messages += 1
        self.messages_per_second[int(when)] += 1
        if not self.message_span:
            self.message_span = [when, when]
        self.message_span[1] = when
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
        errors["seconds"] += float(event.get("seconds", 0.0))

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


# --------------------------------------------------------------------------
# Client side: round trips
# --------------------------------------------------------------------------

# Round trips over time are kept as sparse log-scale buckets (1 % wide) per
# time slot: a full HdrHistogram per second would cost a quarter of a
# megabyte each.
_BUCKETS_PER_E = 1 / math.log(1.01)


def _bucket(micros: float) -> int:
    return 0 if micros < 1 else int(math.log(micros) * _BUCKETS_PER_E) + 1


def _bucket_top_ms(bucket: int) -> float:
    """The upper edge of a bucket, in ms (like HdrHistogram's highest equivalent value)."""
    return 0.001 if bucket == 0 else math.exp(bucket / _BUCKETS_PER_E) / 1000


@dataclass
class _Slot:
    counts: Counter[int] = field(default_factory=Counter)
    count: int = 0
    maximum: float = 0.0

    def merge(self, other: _Slot) -> None:
        self.counts.update(other.counts)
        self.count += other.count
        self.maximum = max(self.maximum, other.maximum)

    def percentiles(self) -> dict[str, float]:
        targets = [(name, math.ceil(self.count * p / 100) or 1) for name, p in PERCENTILES]
        out: dict[str, float] = {}
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            while targets and seen >= targets[0][1]:
                out[targets.pop(0)[0]] = min(_bucket_top_ms(bucket), self.maximum)
        return out


class RttTimeline:
    """Round-trip percentiles per time slot, in bounded memory.

    Slots start one second wide; when a run outlasts ``max_slots`` of them,
    neighbours are merged and the width doubles, so a run of any length has
    at most ``max_slots`` slots.
    """

    def __init__(self, max_slots: int = 600) -> None:
        self.max_slots = max_slots
        self.width = 1
        self.origin: int | None = None
        self.slots: dict[int, _Slot] = {}

    def add(self, when: float, rtt_ms: float) -> None:
        if self.origin is None:
            self.origin = int(when)
        index = int((when - self.origin) // self.width)
        while index >= self.max_slots:
            self._coarsen()
            index = int((when - self.origin) // self.width)
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots[index] = _Slot()
        slot.counts[_bucket(rtt_ms * 1000)] += 1
        slot.count += 1
        if rtt_ms > slot.maximum:
            slot.maximum = rtt_ms

    def _coarsen(self) -> None:
        merged: dict[int, _Slot] = {}
        for index, slot in self.slots.items():
            target = merged.get(index // 2)
            if target is None:
                merged[index // 2] = slot
            else:
                target.merge(slot)
        self.slots = merged
        self.width *= 2

    def rows(self) -> list[dict[str, float]]:
        """One row per slot: start (epoch s), count, p50..p999 and max in ms."""
        assert self.origin is not None or not self.slots
        rows = []
        for index in sorted(self.slots):
            slot = self.slots[index]
            row: dict[str, float] = {"start": (self.origin or 0) + index * self.width}
            row["count"] = slot.count
            row.update(slot.percentiles())
            row["max"] = slot.maximum
            rows.append(row)
        return rows


#: What every good reply starts with (the wire protocol).


class ClientStats:
    """Fold a time-ordered stream of client events: sends, replies, round trips.

    Each reply is checked against the message sent before it on the same
    connection (replies come back in order), like the client itself does; a
    reply that is not ``Server received: <that message>`` is an error and
    its round trip is not counted.  Only messages in flight are remembered.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.replies = 0
        self.errors = 0
        self.first: float | None = None
        self.last: float | None = None
        self.histogram = new_histogram()
        # One more per client log, to compare runs (e.g. 10 against 100 connections).
        self.by_source: dict[int, HdrHistogram] = {}
        # HdrHistogram.record_value costs a microsecond in Python: round trips
        # are counted here per log and folded in once per distinct value.
        self._pending: dict[int, Counter[int]] = {}
        self.timeline = RttTimeline()
        self.replies_per_second: Counter[int] = Counter()
        self.reply_span: list[float] = []  # first and last reply time
        self.in_flight: dict[tuple[int, int], deque[bytes]] = {}
        self.other: Counter[str] = Counter()

    def add(self, event: Parsed) -> None:
        when = event["time"]
        if self.first is None:
            self.first = when
        self.last = when
        kind = event["event"]
        if kind == "reply":
            self._on_reply(event, when)
        elif kind == "sent":
            self.sent += 1
            key = (event.get("source", 0), event.get("conn", 0))
            queue = self.in_flight.get(key)
            if queue is None:
                queue = self.in_flight[key] = deque()
            queue.append(event.get("msg", b""))
        else:
            self.other[kind] += 1

    def _on_reply(self, event: Parsed, when: float) -> None:
        self.replies += 1
        self.replies_per_second[int(when)] += 1
        if not self.reply_span:
            self.reply_span = [when, when]
        self.reply_span[1] = when
        if not self._good_reply(event):
            self.errors += 1
            return
        rtt = event.get("rtt_ms")
        if rtt is None:
            return
        # The client records floor(nanoseconds / 1000); the log's milliseconds
        # are rounded to 6 decimals (json) or 3 (text): floor them the same way.
        micros = min(max(int(float(rtt) * 1000 + 1e-6), HDR_LOWEST_US), HDR_HIGHEST_US)
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
            for micros, count in pending.items():
                per_source.record_value(micros, count)
                self.histogram.record_value(micros, count)
        self._pending = {}

    def rtt_summary(self) -> dict[str, float | int]:
        self.fold()
        return rtt_summary(self.histogram)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_DIGITS)


def rtt_summary(h: HdrHistogram) -> dict[str, float | int]:
    """Like the client's ``--json`` ``rtt_ms`` (min, mean, p50, p90, p99, p999, max),
    computed the same way from the same kind of histogram, plus ``count``."""
    count = h.get_total_count()
    if not count:
        return {"count": 0}
    values = h.get_percentile_to_value_dict([p for _, p in PERCENTILES])
    out: dict[str, float | int] = {
        "count": count,
        "min": _ms(h.get_min_value()),
        "mean": _ms(h.get_mean_value()),
    }
    for name, p in PERCENTILES:
        out[name] = _ms(values[p])
    out["max"] = _ms(h.get_max_value())
    return out


def _ms(micros: float) -> float:
    return round(micros / 1000, 3)


# --------------------------------------------------------------------------
# Reading the files
# --------------------------------------------------------------------------


def _tagged(events: Iterable[Parsed], source: int) -> Iterator[Parsed]:
    for event in events:
        event["source"] = source
        yield event


def open_streams(
    readers: Sequence[LogReader],
) -> tuple[list[Iterator[Parsed]], list[Iterator[Parsed]]]:
    """Each file's events, split into (server streams, client streams).

    A file's role is known once its first records are read, so each stream
    is started, its first event taken and put back in front.
    """
    servers: list[Iterator[Parsed]] = []
    clients: list[Iterator[Parsed]] = []
    for source, reader in enumerate(readers):
        events = iter(reader)
        first = next(events, None)
        if first is None:
            continue
        stream = _tagged(_chain_one(first, events), source)
        (clients if reader.client else servers).append(stream)
    return servers, clients


def _chain_one(first: Parsed, rest: Iterator[Parsed]) -> Iterator[Parsed]:
    yield first
    yield from rest


def merged(streams: list[Iterator[Parsed]]) -> Iterator[Parsed]:
    """The events of several files in time order (each file is nearly in order)."""
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=operator.itemgetter("time"))


# --------------------------------------------------------------------------
# The summary
# --------------------------------------------------------------------------


@dataclass
class Report:
    """Everything the outputs are made of: the summary and the raw series."""

    summary: dict[str, Any]
    server: ServerStats
    client: ClientStats
    readers: list[LogReader]
    utc: bool = False


def build_report(paths: Sequence[str | Path], *, utc: bool = False, top: int = 10) -> Report:
    """Read every log once and summarise it."""
    readers = [LogReader(path, utc=utc) for path in paths]
    server, client = ServerStats(), ClientStats()
    server_streams, client_streams = open_streams(readers)
    for event in merged(server_streams):
        server.add(event)
    for event in merged(client_streams):
        client.add(event)
    client.fold()
    summary = summarize(server, client, readers, top=top, utc=utc)
    return Report(summary, server, client, readers, utc)


def _stamp(when: float | None, utc: bool) -> str | None:
    if when is None:
        return None
    parts = time.gmtime(when) if utc else time.localtime(when)
    micros = int(round((when % 1) * 1_000_000)) % 1_000_000
    return time.strftime("%Y-%m-%d %H:%M:%S", parts) + f".{micros:06d}"


def _rate(per_second: Counter[int], span: list[float], total: int) -> dict[str, Any]:
    """Mean rate over the span from the first to the last event, and the busiest second.

    The mean divides by the real span (the client's own ``duration_s`` is
    measured the same way), not by the number of calendar seconds touched,
    which would make a 0.3 s run look like a 2 s one.
    """
    if not per_second or not span:
        return {"mean": 0.0, "span_s": 0.0, "peak": 0, "peak_at": None}
    seconds = span[1] - span[0]
    peak_second, peak = max(per_second.items(), key=operator.itemgetter(1))
    return {
        "mean": total / seconds if seconds > 0 else float(total),
        "span_s": seconds,
        "peak": peak,
        "peak_at": peak_second,
    }


def summarize(
    server: ServerStats,
    client: ClientStats,
    readers: Sequence[LogReader],
    *,
    top: int = 10,
    utc: bool = False,
) -> dict[str, Any]:
    """The content of ``summary.json``."""
    rate = _rate(server.messages_per_second, server.message_span, server.messages)
    rate["peak_at"] = _stamp(rate["peak_at"], utc)
    return {
        "files": [_file_row(reader) for reader in readers],
        "time": {
            "zone": "UTC" if utc else "local",
            "first": _stamp(server.first, utc),
            "last": _stamp(server.last, utc),
            "seconds": _span(server.first, server.last),
        },
        "connections": {
            "total": server.connections,
            "peak_concurrent": server.peak_concurrent,
            "peak_at": _stamp(server.peak_time, utc),
            "open_at_end": len(server.live),
            "mean_seconds": server.connected_seconds / max(sum(server.disconnections.values()), 1),
            "longest_seconds": server.longest_connection,
        },
        "messages": {"total": server.messages, "per_s": rate},
        "clients": {
            "addresses": len(server.connections_by_ip),
            "ports": len(server.messages_by_address),
            "top": top,
            "by_ip": [
                {"ip": ip, "messages": n, "connections": server.connections_by_ip[ip]}
                for ip, n in _top(server.messages_by_ip, server.connections_by_ip, top)
            ],
            "by_address": [
                {"address": format_address(ip, port), "messages": n}
                for (ip, port), n in server.messages_by_address.most_common(top)
            ],
        },
        "disconnections": {
            "clean": server.disconnections["clean"],
            "lost": server.disconnections["lost"],
            "closed": server.disconnections["closed"],
            **{
                k: v
                for k, v in server.disconnections.items()
                if k not in ("clean", "lost", "closed")
            },
            "without_connect": server.unmatched_disconnects,
        },
        "limits": {
            "line_too_long": server.line_too_long,
            "timeout": dict(server.timeouts),
            "rejected": dict(server.rejected),
            "log_error": server.log_errors,
        },
        "server_runs": {
            "starts": server.starts,
            "stops": server.stops,
            "reported_at_stop": server.reported,
        },
        "client": _client_summary(client, readers, utc),
        "unparsed": _unparsed(readers),
    }


def _span(first: float | None, last: float | None) -> float:
    return last - first if first is not None and last is not None else 0.0


def _top(messages: Counter[str], connections: Counter[str], top: int) -> list[tuple[str, int]]:
    # An address that connected but sent nothing still belongs in the table.
    everyone = Counter({ip: 0 for ip in connections})
    everyone.update(messages)
    return everyone.most_common(top)


def _file_row(reader: LogReader) -> dict[str, Any]:
    return {
        "path": reader.path,
        "format": reader.format,
        "role": "client" if reader.client else "server",
        "records": reader.records,
        "unparsed": reader.unparsed,
    }


def _client_summary(client: ClientStats, readers: Sequence[LogReader], utc: bool) -> dict[str, Any]:
    rate = _rate(client.replies_per_second, client.reply_span, client.replies)
    rate["peak_at"] = _stamp(rate["peak_at"], utc)
    rows = client.timeline.rows()
    for row in rows:
        row["start"] = _stamp(row["start"], utc)  # type: ignore[assignment]
    return {
        "sent": client.sent,
        "replies": client.replies,
        "errors": client.errors,
        "unanswered": client.unanswered,
        "first": _stamp(client.first, utc),
        "last": _stamp(client.last, utc),
        "replies_per_s": rate,
        "rtt_ms": client.rtt_summary(),
        "rtt_ms_by_file": [
            {"path": readers[source].path, **rtt_summary(histogram)}
            for source, histogram in sorted(client.by_source.items())
        ],
        "rtt_over_time": {"interval_s": client.timeline.width, "rows": rows},
    }


def _unparsed(readers: Sequence[LogReader]) -> dict[str, Any]:
    examples = [
        {"file": reader.path, "line": number, "text": text.decode("utf-8", "backslashreplace")}
        for reader in readers
        for number, text in reader.examples
    ]
    return {"count": sum(reader.unparsed for reader in readers), "examples": examples[:10]}


# --------------------------------------------------------------------------
# The summary as rows of text (console table and HTML)
# --------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(section, what, value) rows: the headline numbers of the summary."""
    conns, msgs, disc = summary["connections"], summary["messages"], summary["disconnections"]
    limits, client = summary["limits"], summary["client"]
    rows = [
        ("run", "first record", _fmt(summary["time"]["first"])),
        ("run", "last record", _fmt(summary["time"]["last"])),
        ("run", "seconds", _fmt(summary["time"]["seconds"])),
        ("connections", "total", _fmt(conns["total"])),
        ("connections", "peak concurrent", _fmt(conns["peak_concurrent"])),
        ("connections", "mean duration (s)", _fmt(conns["mean_seconds"])),
        ("messages", "total", _fmt(msgs["total"])),
        ("messages", "per second, mean", _fmt(msgs["per_s"]["mean"])),
        ("messages", "per second, peak", _fmt(msgs["per_s"]["peak"])),
        (
            "clients",
            "addresses / ports",
            f"{summary['clients']['addresses']:,} / {summary['clients']['ports']:,}",
        ),
        (
            "disconnections",
            "clean / lost / closed",
            f"{disc['clean']:,} / {disc['lost']:,} / {disc['closed']:,}",
        ),
        ("limits", "line too long", _fmt(limits["line_too_long"])),
        ("limits", "timeouts", _counts(limits["timeout"])),
        ("limits", "rejected", _counts(limits["rejected"])),
        (
            "limits",
            "log errors",
            f"{limits['log_error']['events']:,} "
            f"({limits['log_error']['refused']:,} refused, "
            f"{limits['log_error']['lost']:,} lost)",
        ),
    ]
    if client["sent"] or client["replies"]:
        rows += [
            (
                "client",
                "sent / replies / errors",
                f"{client['sent']:,} / {client['replies']:,} / {client['errors']:,}",
            ),
            ("client", "replies per second, mean", _fmt(client["replies_per_s"]["mean"])),
        ]
        rtt = client["rtt_ms"]
        if rtt.get("count"):
            rows += [
                ("round trip (ms)", name, _fmt(rtt[name]))
                for name in ("min", "mean", "p50", "p90", "p99", "p999", "max")
            ]
    rows.append(("records", "unparsed", _fmt(summary["unparsed"]["count"])))
    return rows


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "0"
    return ", ".join(f"{key}: {value:,}" for key, value in sorted(counts.items()))


def print_summary(summary: dict[str, Any], out: Any = None) -> None:
    """The summary as a table on ``out`` (stdout)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="chatlog report")
    table.add_column("section", style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    previous = None
    for section, what, value in summary_rows(summary):
        table.add_row(section if section != previous else "", what, value)
        previous = section
    console = Console(file=out or sys.stdout, width=100)
    console.print(table)
    for example in summary["unparsed"]["examples"][:3]:
        console.print(
            f"unparsed {example['file']}:{example['line']}: {example['text']!r}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


# --------------------------------------------------------------------------
# Bench results
# --------------------------------------------------------------------------


def load_bench(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a bench result file (see the module docstring)."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("rows", [])
    rows = [
        row
        for row in data
        if isinstance(row, dict) and {"server", "connections", "msgs_per_s", "p99_ms"} <= row.keys()
    ]
    if not rows:
        raise ValueError(f"{path}: no rows with server, connections, msgs_per_s and p99_ms")
    return rows


# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------


def write_report(
    report: Report, outdir: str | Path, bench: list[dict[str, Any]] | None = None
) -> dict[str, Path]:
    """Write summary.json, the plots and report.html into ``outdir``; return their paths."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    plots = draw_all(report, out, bench)
    report.summary["plots"] = [path.name for path in plots.values()]
    if bench is not None:
        report.summary["bench"] = bench
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(report.summary, indent=2) + "\n")
    html_path = out / "report.html"
    html_path.write_text(render_html(report.summary, plots))
    return {"summary": summary_path, "html": html_path, **plots}


# --------------------------------------------------------------------------
# Plots (matplotlib's object API with the Agg canvas: no pyplot, no display)
# --------------------------------------------------------------------------


def _figure(rows: int = 1, cols: int = 1, height: float = 4.5) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, height), dpi=100, layout="constrained")
    return fig, fig.subplots(rows, cols)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _binned(
    values: dict[int, float], first: int, last: int, how: str = "mean"
) -> tuple[Any, Any, int]:
    """Per-second values as arrays over [first, last], averaged (or max) over bins
    wide enough to keep a plot under MAX_PLOT_POINTS points; also the bin width."""
    import numpy as np

    width = max(1, math.ceil((last - first + 1) / MAX_PLOT_POINTS))
    bins = (last - first) // width + 1
    seconds = np.fromiter(values.keys(), dtype=np.int64, count=len(values))
    amounts = np.fromiter(values.values(), dtype=np.float64, count=len(values))
    index = (seconds - first) // width
    out = np.zeros(bins)
    if how == "max":
        np.maximum.at(out, index, amounts)
    else:
        np.add.at(out, index, amounts)
        out /= width
    return np.arange(bins) * width, out, width


def _step(ax: Any, xs: Any, ys: Any, width: float, label: str) -> None:
    """A step line whose last step, like the others, lasts its whole bin."""
    xs, ys = list(xs), list(ys)
    ax.step([*xs, xs[-1] + width], [*ys, ys[-1]], where="post", label=label)


def _time_axis(ax: Any, base: int, utc: bool) -> None:
    zone = "UTC" if utc else "local time"
    ax.set_xlabel(f"time since {(_stamp(base, utc) or '')[:19]} {zone} (s)")
    ax.grid(True, alpha=0.3)


def _base_second(report: Report) -> int:
    starts = [t for t in (report.server.first, report.client.first) if t is not None]
    return int(min(starts)) if starts else 0


def plot_messages(report: Report, path: Path) -> Path | None:
    """Messages per second (server) and replies per second (client) over time."""
    series = [
        ("server: messages received", report.server.messages_per_second),
        ("client: replies received", report.client.replies_per_second),
    ]
    series = [(label, counts) for label, counts in series if counts]
    if not series:
        return None
    base = _base_second(report)
    last = max(max(counts) for _, counts in series)
    fig, ax = _figure()
    width = 1
    for label, counts in series:
        first = min(counts)
        xs, ys, width = _binned(dict(counts), first, last)
        _step(ax, xs + (first - base), ys, width, label=label)
    mean = report.summary["messages"]["per_s"]["mean"]
    if mean:
        ax.axhline(mean, linestyle="--", color="grey", label=f"server mean {mean:,.0f}/s")
    per = "per second" if width == 1 else f"per second (mean over {width} s)"
    ax.set_title(f"Messages {per}")
    ax.set_ylabel("messages / s")
    ax.set_ylim(bottom=0)
    _time_axis(ax, base, report.utc)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_connections(report: Report, path: Path) -> Path | None:
    """Concurrent connections over time: the highest count of each second."""
    per_second = report.server.concurrency
    if not per_second:
        return None
    import numpy as np

    base = _base_second(report)
    first, last = min(per_second), max(per_second)
    # A second without events keeps the count the previous second ended with.
    filled = np.zeros(last - first + 1)
    current = 0
    for offset in range(last - first + 1):
        entry = per_second.get(first + offset)
        if entry is None:
            filled[offset] = current
        else:
            filled[offset], current = entry
    xs, ys, width = _binned(
        dict(zip(range(first, last + 1), filled, strict=True)), first, last, how="max"
    )
    fig, ax = _figure()
    _step(ax, xs + (first - base), ys, width, label="concurrent connections")
    peak = report.server.peak_concurrent
    ax.axhline(peak, linestyle="--", color="grey", label=f"peak {peak:,}")
    per = "second" if width == 1 else f"{width} s"
    ax.set_title(f"Concurrent connections (highest in each {per})")
    ax.set_ylabel("open connections")
    ax.set_ylim(bottom=0, top=max(peak * 1.1, 1))
    _time_axis(ax, base, report.utc)
    ax.legend(loc="best")
    return _save(fig, path)


def _recorded(histogram: HdrHistogram) -> tuple[list[float], list[int]]:
    values, counts = [], []
    for item in histogram.get_recorded_iterator():
        values.append(item.value_iterated_to / 1000)
        counts.append(item.count_added_in_this_iter_step)
    return values, counts


def plot_rtt(report: Report, path: Path) -> Path | None:
    """Round-trip histogram (log time axis) and the percentile curve."""
    histogram = report.client.histogram
    count = histogram.get_total_count()
    if not count:
        return None
    import numpy as np

    values, counts = _recorded(histogram)
    fig, (left, right) = _figure(1, 2)
    low, high = min(values), max(values)
    if high <= low * 1.01:
        low, high = low * 0.9, high * 1.1
    left.hist(values, bins=np.geomspace(low, high, 60), weights=counts)
    left.set_xscale("log")
    left.set_title(f"Round-trip time histogram ({count:,} replies)")
    left.set_xlabel("round-trip time (ms)")
    left.set_ylabel("replies")
    left.grid(True, alpha=0.3)
    # Percentile curve on the usual "nines" axis: x = 1 / (1 - p).
    nines = min(6.0, math.log10(count)) if count > 1 else 1.0
    wanted = [100 * (1 - 10**-k) for k in np.linspace(0, nines, 120)]
    at = histogram.get_percentile_to_value_dict(wanted)
    ps = sorted(at)
    right.plot([1 / (1 - p / 100) for p in ps], [at[p] / 1000 for p in ps], label="percentile")
    rtt = report.summary["client"]["rtt_ms"]
    for name, p in PERCENTILES:
        x = 1 / (1 - p / 100)
        if x <= 10**nines:
            right.plot(
                [x], [rtt[name]], "o", label=f"{name.replace('p999', 'p99.9')} {rtt[name]:.3f} ms"
            )
    right.set_xscale("log")
    ticks = [10**k for k in range(int(nines) + 1)]
    right.set_xticks(ticks, [f"{100 * (1 - 1 / t):g}%" for t in ticks])
    right.set_title("Round-trip percentiles")
    right.set_xlabel("percentile")
    right.set_ylabel("round-trip time (ms)")
    right.set_ylim(bottom=0)
    right.grid(True, alpha=0.3)
    right.legend(loc="upper left")
    return _save(fig, path)


def plot_rtt_over_time(report: Report, path: Path) -> Path | None:
    """Round-trip percentiles per time slot."""
    rows = report.client.timeline.rows()
    if not rows:
        return None
    base = _base_second(report)
    width = report.client.timeline.width
    xs = [row["start"] - base for row in rows]
    fig, ax = _figure()
    for name in ("p50", "p90", "p99", "p999", "max"):
        _step(
            ax,
            xs,
            [row.get(name, math.nan) for row in rows],
            width,
            label="p99.9" if name == "p999" else name,
        )
    top = max(row["max"] for row in rows)
    median = min(row.get("p50", top) for row in rows)
    if median > 0 and top / median > 50:
        ax.set_yscale("log")
    ax.set_title(f"Round-trip percentiles over time (per {width} s)")
    ax.set_ylabel("round-trip time (ms)")
    _time_axis(ax, base, report.utc)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_bench(rows: list[dict[str, Any]], path: Path) -> Path:
    """Throughput and p99 against the number of connections (closed loop), one line per server.

    chatlog and the seeds' threaded design are drawn bold, side by side; the
    other reference servers thin and dashed.  Points of other modes
    (pipelined, open loop) are not a function of the connection count and
    are left to the bench's table.
    """
    closed = [row for row in rows if row.get("mode", "closed") == "closed"]
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in closed:
        curves.setdefault(str(row["server"]), []).append(row)
    fig, (left, right) = _figure(1, 2)
    for label, points in sorted(curves.items(), key=lambda item: _bench_order(item[0])):
        points.sort(key=operator.itemgetter("connections"))
        xs = [p["connections"] for p in points]
        main = label in ("chatlog", "threaded")
        style = {"linewidth": 2.5 if main else 1.2, "linestyle": "-" if main else "--"}
        left.plot(xs, [p["msgs_per_s"] for p in points], marker="o", label=label, **style)
        right.plot(xs, [p["p99_ms"] for p in points], marker="o", label=label, **style)
    left.set_title("Throughput against connections (closed loop)")
    left.set_ylabel("messages / s")
    left.set_ylim(bottom=0)
    right.set_title("p99 round trip against connections (closed loop)")
    right.set_ylabel("p99 round-trip time (ms)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent connections")
        ax.grid(True, alpha=0.3)
    left.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def _bench_order(server: str) -> tuple[int, str]:
    """chatlog first, the threaded design second, the other references after."""
    first = {"chatlog": 0, "threaded": 1}
    return first.get(server, 2), server


def draw_all(report: Report, out: Path, bench: list[dict[str, Any]] | None) -> dict[str, Path]:
    """Every plot there is data for: name -> PNG path."""
    drawn: dict[str, Path | None] = {
        "messages": plot_messages(report, out / "messages_per_second.png"),
        "connections": plot_connections(report, out / "connections.png"),
        "rtt": plot_rtt(report, out / "rtt.png"),
        "rtt_over_time": plot_rtt_over_time(report, out / "rtt_over_time.png"),
    }
    if bench:
        drawn["bench"] = plot_bench(bench, out / "bench.png")
    return {name: path for name, path in drawn.items() if path is not None}


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:.2em .8em;border-bottom:1px solid #eee}
th{text-align:left;background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0} code{background:#f4f4f4}
"""

_PLOT_TITLES = {
    "messages": "Messages per second",
    "connections": "Concurrent connections",
    "rtt": "Round-trip time: histogram and percentiles",
    "rtt_over_time": "Round-trip percentiles over time",
    "bench": "Benchmark: throughput and p99 against connections",
}


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_fmt(v)}</td>'
            if isinstance(v, int | float)
            else f"<td>{html.escape(_fmt(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(summary: dict[str, Any], plots: dict[str, Path]) -> str:
    """One self-contained page: the summary tables and every plot, embedded."""
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>chatlog report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>chatlog report</h1>",
        f"<p>Times are {summary['time']['zone']} time.</p>",
        "<h2>Summary</h2>",
        _table(["section", "what", "value"], summary_rows(summary)),
    ]
    for name, path in plots.items():
        title = _PLOT_TITLES.get(name, name)
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(
            f'<img src="{_data_uri(path)}" alt="{html.escape(title)}" '
            f'title="{html.escape(path.name)}" data-file="{html.escape(path.name)}">'
        )
    clients = summary["clients"]
    parts.append(f"<h2>Clients (top {clients['top']})</h2>")
    parts.append(
        _table(
            ["address", "connections", "messages"],
            [(r["ip"], r["connections"], r["messages"]) for r in clients["by_ip"]],
        )
    )
    parts.append(
        _table(
            ["address:port", "messages"],
            [(r["address"], r["messages"]) for r in clients["by_address"]],
        )
    )
    if summary["client"]["rtt_ms"].get("count"):
        names = ["count", "p50", "p90", "p99", "p999", "max"]
        parts.append("<h2>Round trips per client log (ms)</h2>")
        parts.append(
            _table(
                ["client log", *names],
                [
                    (r["path"], *(r.get(n) for n in names))
                    for r in summary["client"]["rtt_ms_by_file"]
                ],
            )
        )
        timeline = summary["client"]["rtt_over_time"]
        parts.append("<h2>Round trips over time (ms)</h2>")
        parts.append(f"<p>Per interval of {timeline['interval_s']} s.</p>")
        parts.append(
            _table(
                ["start", *names],
                [(r["start"], *(r.get(n) for n in names)) for r in timeline["rows"]],
            )
        )
    if "bench" in summary:
        parts.append("<h2>Benchmark rows</h2>")
        parts.append(
            _table(
                ["server", "mode", "connections", "msgs/s", "p99 (ms)"],
                [
                    (r["server"], r.get("mode", ""), r["connections"], r["msgs_per_s"], r["p99_ms"])
                    for r in summary["bench"]
                ],
            )
        )
    parts.append("<h2>Files</h2>")
    parts.append(
        _table(
            ["path", "format", "role", "records", "unparsed"],
            [
                (f["path"], f["format"], f["role"], f["records"], f["unparsed"])
                for f in summary["files"]
            ],
        )
    )
    if summary["unparsed"]["examples"]:
        parts.append("<h2>Unparsed records (first few)</h2>")
        parts.append(
            _table(
                ["file", "line", "text"],
                [(e["file"], e["line"], e["text"]) for e in summary["unparsed"]["examples"]],
            )
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chatlog.report",
        description="Summarise chatlog server and client logs: a table, summary.json, "
        "PNG plots and report.html.",
    )
    parser.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="server logs and client logs, any format, in any order "
        "(rotated and per-worker logs may be listed together)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help="where to write summary.json, the plots and report.html (default: %(default)s)",
    )
    parser.add_argument(
        "--utc",
        action="store_true",
        help="text-format timestamps are UTC (the server ran with --utc)",
    )
    parser.add_argument(
        "--bench",
        metavar="FILE",
        help="bench results (JSON rows from python -m chatlog.bench) to plot",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="how many clients to list (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [path for path in args.logs if not Path(path).is_file()]
    if missing:
        print(f"chatlog.report: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        bench = load_bench(args.bench) if args.bench else None
    except (OSError, ValueError) as e:
        print(f"chatlog.report: --bench: {e}", file=sys.stderr)
        return 2
    report = build_report(args.logs, utc=args.utc, top=args.top)
    written = write_report(report, args.output, bench)
    print_summary(report.summary)
    print(f"wrote {written['summary']} and {written['html']}")
    return 0

