"""The summary as text: how numbers and times are written, and the headline rows.

Shared by the console table (:mod:`chatlog.report.console`), the HTML page
(:mod:`chatlog.report.page`) and the summary's own timestamps, so the three
always print a number the same way.
"""

from __future__ import annotations

import time
from typing import Any

from chatlog.latency import RTT_KEYS


def fmt(value: Any) -> str:
    """A number with thousands separators (3 decimals below 1000), ``-`` for None."""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value)


def stamp(when: float | None, utc: bool) -> str | None:
    """An epoch time as the logs write it (local time or UTC, to the microsecond)."""
    if when is None:
        return None
    parts = time.gmtime(when) if utc else time.localtime(when)
    micros = int(round((when % 1) * 1_000_000)) % 1_000_000
    return time.strftime("%Y-%m-%d %H:%M:%S", parts) + f".{micros:06d}"


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(section, what, value) rows: the headline numbers of the summary."""
    conns, msgs, disc = summary["connections"], summary["messages"], summary["disconnections"]
    limits, client = summary["limits"], summary["client"]
    rows = [
        ("run", "first record", fmt(summary["time"]["first"])),
        ("run", "last record", fmt(summary["time"]["last"])),
        ("run", "seconds", fmt(summary["time"]["seconds"])),
        ("connections", "total", fmt(conns["total"])),
        ("connections", "peak concurrent", fmt(conns["peak_concurrent"])),
        ("connections", "mean duration (s)", fmt(conns["mean_seconds"])),
        ("messages", "total", fmt(msgs["total"])),
        ("messages", "per second, mean", fmt(msgs["per_s"]["mean"])),
        ("messages", "per second, peak", fmt(msgs["per_s"]["peak"])),
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
        ("limits", "line too long", fmt(limits["line_too_long"])),
        ("limits", "timeouts", _counts(limits["timeout"])),
        ("limits", "rejected", _counts(limits["rejected"])),
        (
            "limits",
            "log errors",
            f"{limits['log_error']['events']:,} "
            f"({limits['log_error']['refused']:,} refused, "
            f"{limits['log_error']['lost']:,} lost"
            + (
                f", up to {limits['log_error']['left']:,} refused left in the log)"
                if limits["log_error"].get("left")
                else ")"
            ),
        ),
    ]
    throttled = limits.get("throttled")
    if throttled and throttled["events"]:
        rows += [
            ("limits", "throttled", _counts(dict(throttled["events"]))),
            (
                "limits",
                "throttled s / not read s / held back",
                f"{fmt(throttled['seconds'])} / {fmt(throttled['paused_seconds'])} / "
                f"{throttled['held']:,}",
            ),
        ]
    if limits.get("log_reopen", {}).get("failed"):
        rows.append(("limits", "failed log reopens", fmt(limits["log_reopen"]["failed"])))
    if client["sent"] or client["replies"]:
        rows += [
            (
                "client",
                "sent / replies / errors",
                f"{client['sent']:,} / {client['replies']:,} / {client['errors']:,}",
            ),
            ("client", "replies per second, mean", fmt(client["replies_per_s"]["mean"])),
        ]
        rtt = client["rtt_ms"]
        if rtt.get("count"):
            rows += [("round trip (ms)", name, fmt(rtt[name])) for name in RTT_KEYS]
    rows.append(("records", "unparsed", fmt(summary["unparsed"]["count"])))
    # Lines a crash or a failed write cut short: never acknowledged, not records.
    rows.append(("records", "torn", fmt(summary.get("torn", 0))))
    return rows


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "0"
    return ", ".join(f"{key}: {value:,}" for key, value in sorted(counts.items()))


#: The columns of an interval log's table of load points (console and page alike).
HLOG_HEADERS = [
    "offered/s",
    "achieved/s",
    "count",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "verdict",
]


def hlog_rows(file: dict[str, Any]) -> list[list[Any]]:
    """An interval log's load points (a sweep's steps), as table rows."""
    rows = []
    for point in file["steps"]:
        rtt = point["rtt_ms"]
        if point.get("ok") is None:
            verdict = ""
        elif point["ok"]:
            verdict = "ok"
        else:
            verdict = "the client's limit" if point.get("client_limited") else "failed"
        rows.append(
            [
                point["offered_msgs_per_s"],
                point["achieved_msgs_per_s"],
                point["count"],
                *(rtt[key] for key in ("p50", "p90", "p99", "p999", "max")),
                verdict,
            ]
        )
    return rows


def hlog_answer(file: dict[str, Any]) -> str:
    """One line on an interval log: what run it was, and the sweep's answer."""
    rtt = file["rtt_ms"]
    text = f"{file['label']}: {file['count']:,} round trips in {len(file['intervals'])} intervals"
    if rtt["p99"] is not None:
        text += f", p99 {fmt(rtt['p99'])} ms overall"
    answer = file.get("max_rate_msgs_per_s")
    if file.get("mode") == "sweep":
        slo = f"p99 <= {file['slo_p99_ms']:g} ms"
        if answer is None:
            text += f"; no step met {slo}"
        elif file.get("limited_by") == "server":
            text += f"; the highest rate with {slo}: {fmt(float(answer))} msgs/s"
        else:
            text += f"; at least {fmt(float(answer))} msgs/s with {slo} (not the server's limit)"
    return text
