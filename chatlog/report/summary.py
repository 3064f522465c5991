"""Read the logs, fold them, summarise: :func:`build_report` and ``summary.json``.

:func:`summarize` turns the folds of :mod:`chatlog.report.stats` into the
plain dict that is written as ``summary.json`` and that every output (the
console table, the plots' annotations, the HTML page) is drawn from.  Its
keys are what users' scripts read: change them only with care.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from chatlog.latency import rtt_ms
from chatlog.log import LogReader
from chatlog.report.inputs import merged, open_streams
from chatlog.report.nodes import SILENT_S, NodeFold, nodes_summary
from chatlog.report.stats import ClientStats, PerSecond, ServerStats
from chatlog.report.text import stamp
from chatlog.wire import format_address


@dataclass
class Report:
    """Everything the outputs are made of: the summary and the raw series."""

    summary: dict[str, Any]
    server: ServerStats
    client: ClientStats
    readers: list[LogReader]
    utc: bool = False
    nodes: NodeFold | None = None


def build_report(
    paths: Sequence[str | Path],
    *,
    utc: bool = False,
    top: int = 10,
    health_check: bytes | None = None,
    silent_after: float = SILENT_S,
) -> Report:
    """Read every log once and summarise it; ``health_check`` is the line a load
    balancer's health check sends (counted apart in the per-node view), and a
    node whose records end ``silent_after`` seconds before the fleet's went silent."""
    readers = [LogReader(path, utc=utc) for path in paths]
    server, client, nodes = ServerStats(), ClientStats(), NodeFold(health_check, silent_after)
    server_streams, client_streams = open_streams(readers)
    for event in merged(server_streams):
        server.add(event)
        nodes.add(event)
    for event in merged(client_streams):
        client.add(event)
    client.fold()
    summary = summarize(server, client, readers, top=top, utc=utc)
    summary["nodes"] = nodes_summary(nodes, utc)
    return Report(summary, server, client, readers, utc, nodes)


def summarize(
    server: ServerStats,
    client: ClientStats,
    readers: Sequence[LogReader],
    *,
    top: int = 10,
    utc: bool = False,
) -> dict[str, Any]:
    """The content of ``summary.json``."""
    return {
        "files": [_file_row(reader) for reader in readers],
        "time": {
            "zone": "UTC" if utc else "local",
            "first": stamp(server.first, utc),
            "last": stamp(server.last, utc),
            "seconds": _span(server.first, server.last),
        },
        "connections": {
            "total": server.connections,
            "peak_concurrent": server.peak_concurrent,
            "peak_at": stamp(server.peak_time, utc),
            "open_at_end": len(server.live),
            "mean_seconds": server.connected_seconds / max(sum(server.disconnections.values()), 1),
            "longest_seconds": server.longest_connection,
        },
        "messages": {
            "total": server.messages,
            "per_s": _rate(server.message_rate, server.messages, utc),
        },
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
            "log_reopen": server.log_reopens,
            "throttled": _throttled(server.throttles, top),
        },
        "server_runs": {
            "starts": server.starts,
            "stops": server.stops,
            "reported_at_stop": server.reported,
        },
        "client": _client_summary(client, readers, utc),
        "unparsed": _unparsed(readers),
        "torn": sum(reader.torn for reader in readers),
    }


def _throttled(throttles: dict[str, Any], top: int) -> dict[str, Any]:
    """Throttle episodes by reason, their time, and the addresses most often throttled."""
    addresses: Counter[str] = throttles["addresses"]
    return {
        "events": dict(throttles["events"]),
        "seconds": throttles["seconds"],
        "paused_seconds": throttles["paused_seconds"],
        "held": throttles["held"],
        "addresses": len(addresses),
        "by_address": [{"address": a, "episodes": n} for a, n in addresses.most_common(top)],
    }


def rtt_summary(histogram: HdrHistogram) -> dict[str, Any]:
    """The round trips' ``count``, then what the client's ``--json`` calls ``rtt_ms``
    (min, mean, p50, p90, p99, p999, max), computed by the same code."""
    count = histogram.get_total_count()
    if not count:
        return {"count": 0}
    return {"count": count, **rtt_ms(histogram)}


def _rate(rate: PerSecond, total: int, utc: bool) -> dict[str, Any]:
    """Mean rate over the span from the first to the last event, and the busiest second.

    The mean divides by the real span (the client's own ``duration_s`` is
    measured the same way), not by the number of calendar seconds touched,
    which would make a 0.3 s run look like a 2 s one.
    """
    if rate.first is None or rate.last is None:
        return {"mean": 0.0, "span_s": 0.0, "peak": 0, "peak_at": None}
    seconds = rate.last - rate.first
    peak_second, peak = max(rate.counts.items(), key=operator.itemgetter(1))
    return {
        "mean": total / seconds if seconds > 0 else float(total),
        "span_s": seconds,
        "peak": peak,
        "peak_at": stamp(peak_second, utc),
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
        "torn": reader.torn,
    }


def _client_summary(client: ClientStats, readers: Sequence[LogReader], utc: bool) -> dict[str, Any]:
    client.fold()
    rows = client.timeline.rows()
    for row in rows:
        row["start"] = stamp(row["start"], utc)  # type: ignore[assignment]
    return {
        "sent": client.sent,
        "replies": client.replies,
        "errors": client.errors,
        "unanswered": client.unanswered,
        "first": stamp(client.first, utc),
        "last": stamp(client.last, utc),
        "replies_per_s": _rate(client.reply_rate, client.replies, utc),
        "rtt_ms": rtt_summary(client.histogram),
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
