"""Round-trip figures: an HdrHistogram fed in batches, and the run's summary.

Round trips are measured in nanoseconds on ``time.perf_counter_ns`` and
recorded in microseconds in an :class:`~hdrh.histogram.HdrHistogram` shaped
by :mod:`chatlog.latency` (1 µs to 60 s, 3 significant digits), as the
report's are.  ``HdrHistogram.record_value`` costs about a microsecond in
Python, as much as the rest of a round trip's work in the client, so the hot
path appends to a plain list and :meth:`Recorder.fold` records each distinct
value once with its count, a few times a second.

A :class:`Recorder` folds into the histogram of the current *interval*;
closing an interval adds it to the run's total.  The total is therefore
exactly the sum of the intervals, which is what ``--hlog`` writes.

:class:`Summary` is what a run reports: the ``--json`` object (plus the
histograms' base64 encodings, so that ``--procs`` and the bench can merge
runs), or a few lines of text.  It also carries the client's own figures:
how late it sent against its schedule, and how busy its CPU was, so that a
run whose limit was the client says so.
"""

from __future__ import annotations

import io
import json
import resource
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from chatlog import latency
from chatlog.client.display import field_lines
from chatlog.latency import add_into, new_histogram

#: A client process busier than this (share of one core) is taken to be the limit.
CPU_LIMIT = 0.9
#: Without an SLO, a p99 send lateness above this many ms makes the client the limit.
LATE_LIMIT_MS = 5.0


def decode_histogram(encoded: str | bytes) -> HdrHistogram:
    histogram = new_histogram()
    histogram.decode_and_add(encoded.encode() if isinstance(encoded, str) else encoded)
    return histogram


def cpu_seconds() -> float:
    """User + system CPU time this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """Round trips in microseconds: appended cheaply, folded into interval histograms."""

    def __init__(self) -> None:
        #: Every closed interval, added up.
        self.histogram = new_histogram()
        #: The interval being filled.
        self.interval = new_histogram()
        #: Microseconds not yet in a histogram; protocols append to it directly.
        self.pending: list[int] = []

    def fold(self) -> None:
        if not self.pending:
            return
        counts = Counter(self.pending)
        # Cleared in place: the protocols hold this list's bound append.
        self.pending.clear()
        latency.record_counts(self.interval, counts)

    def close_interval(self) -> HdrHistogram:
        """Fold, end the current interval and return it (already added to the total)."""
        self.fold()
        closed, self.interval = self.interval, new_histogram()
        add_into(self.histogram, closed)
        return closed

    def total(self) -> HdrHistogram:
        """Everything recorded so far (the current interval is closed first)."""
        self.close_interval()
        return self.histogram


#: The kinds of error a summary counts, as ``--json`` names them and the text shows them.
ERROR_KINDS = {
    "refused": "refused",  # connections the server refused (ERROR server busy...)
    "timeout": "timeout",  # messages without a reply within --timeout
    "error_reply": "error reply",  # replies that were not the expected one
    "dropped": "dropped",  # messages in flight (or due) on a connection that was lost
}


def error_kinds(**counts: int) -> dict[str, int]:
    """Every kind of :data:`ERROR_KINDS`, 0 where not given."""
    return {kind: counts.get(kind, 0) for kind in ERROR_KINDS}


def percentile_spectrum(histogram: HdrHistogram) -> str:
    """The standard HdrHistogram percentile distribution, in ms, as ``hdrh`` prints it."""
    out = io.BytesIO()
    # Recorded in µs: a scaling ratio of 1000 prints ms (hdrh leaves StdDeviation in µs).
    histogram.output_percentile_distribution(out, 1000)
    return out.getvalue().decode("ascii")


def late_ms(histogram: HdrHistogram | None) -> dict[str, float | None] | None:
    """p50, p99 and max of send lateness in ms; None for a run without a schedule."""
    if histogram is None:
        return None
    rtt = latency.rtt_ms(histogram)
    return {"p50": rtt["p50"], "p99": rtt["p99"], "max": rtt["max"]}


@dataclass
class Summary:
    """What a run measured."""

    messages: int
    errors: int
    duration_s: float
    connections: int
    histogram: HdrHistogram = field(default_factory=new_histogram)
    cpu_s: float = 0.0
    procs: int = 1
    problems: list[str] = field(default_factory=list)
    #: Connections the server refused (``ERROR server busy`` and the like).
    refused: int = 0
    #: The errors by kind (:data:`ERROR_KINDS`), refused connections included.
    by_kind: dict[str, int] = field(default_factory=error_kinds)
    #: Messages in flight when the run was interrupted: not errors, not answered.
    unanswered: int = 0
    interrupted: bool = False
    #: Open loop: the schedule's rate (msgs/s); None in closed loop.
    offered: float | None = None
    #: Open loop: how late each counted message left against its schedule (µs).
    late: HdrHistogram | None = None
    #: The busiest client process's CPU over the measured window, as a share of a core.
    cpu_fraction: float | None = None

    @property
    def throughput(self) -> float:
        return self.messages / self.duration_s if self.duration_s > 0 else 0.0

    def rtt_ms(self) -> dict[str, float | None]:
        return latency.rtt_ms(self.histogram)

    def client_limits(self, budget_ms: float | None = None) -> list[str]:
        """Why the client (not the server) may have been the limit; empty if it was not.

        The client is the limit when its process was busier than
        :data:`CPU_LIMIT` of a core, or when it sent so late against its
        schedule that the lateness alone takes half of ``budget_ms`` (the
        SLO; without one, :data:`LATE_LIMIT_MS` is the limit).
        """
        reasons = []
        if self.cpu_fraction is not None and self.cpu_fraction >= CPU_LIMIT:
            reasons.append(f"client CPU {self.cpu_fraction:.0%} of a core")
        late = late_ms(self.late)
        limit = LATE_LIMIT_MS if budget_ms is None else budget_ms / 2
        if late is not None and late["p99"] is not None and late["p99"] > limit:
            reasons.append(f"sent p99 {late['p99']:.3f} ms behind schedule")
        return reasons

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object's keys, then extras: histogram (base64 HdrHistogram, µs), client CPU."""
        return {
            "messages": self.messages,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 6),
            "throughput_msgs_per_s": round(self.throughput, 1),
            "connections": self.connections,
            "rtt_ms": self.rtt_ms(),
            "histogram": self.histogram.encode().decode("ascii"),
            "histogram_unit": "us",
            "client_cpu_s": round(self.cpu_s, 3),
            "procs": self.procs,
            "problems": self.problems,
            "refused": self.refused,
            "errors_by_kind": dict(self.by_kind),
            "unanswered": self.unanswered,
            "interrupted": self.interrupted,
            "offered_msgs_per_s": self.offered,
            "send_late_ms": late_ms(self.late),
            "send_late_histogram": (
                self.late.encode().decode("ascii") if self.late is not None else None
            ),
            "client_cpu_fraction": (
                round(self.cpu_fraction, 3) if self.cpu_fraction is not None else None
            ),
            "client_limited": bool(self.client_limits()),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        late = data.get("send_late_histogram")
        return cls(
            messages=data["messages"],
            errors=data["errors"],
            duration_s=data["duration_s"],
            connections=data["connections"],
            histogram=decode_histogram(data["histogram"]),
            cpu_s=data.get("client_cpu_s", 0.0),
            procs=data.get("procs", 1),
            problems=list(data.get("problems", [])),
            refused=data.get("refused", 0),
            by_kind=error_kinds(**data.get("errors_by_kind", {})),
            unanswered=data.get("unanswered", 0),
            interrupted=data.get("interrupted", False),
            offered=data.get("offered_msgs_per_s"),
            late=decode_histogram(late) if late else None,
            cpu_fraction=data.get("client_cpu_fraction"),
        )

    @classmethod
    def merge(cls, parts: list[Summary]) -> Summary:
        """Runs that happened side by side (``--procs``): sums, and the longest window."""
        histogram = new_histogram()
        for part in parts:
            add_into(histogram, part.histogram)
        lates = [p.late for p in parts if p.late is not None]
        late = None
        if lates:
            late = new_histogram()
            for one in lates:
                add_into(late, one)
        offered = [p.offered for p in parts if p.offered is not None]
        fractions = [p.cpu_fraction for p in parts if p.cpu_fraction is not None]
        return cls(
            messages=sum(p.messages for p in parts),
            errors=sum(p.errors for p in parts),
            duration_s=max((p.duration_s for p in parts), default=0.0),
            connections=sum(p.connections for p in parts),
            histogram=histogram,
            cpu_s=sum(p.cpu_s for p in parts),
            procs=sum(p.procs for p in parts),
            problems=[q for p in parts for q in p.problems],
            refused=sum(p.refused for p in parts),
            by_kind={kind: sum(p.by_kind.get(kind, 0) for p in parts) for kind in ERROR_KINDS},
            unanswered=sum(p.unanswered for p in parts),
            interrupted=any(p.interrupted for p in parts),
            offered=sum(offered) if offered else None,
            late=late,
            # Each process is limited by its own core: the busiest one tells.
            cpu_fraction=max(fractions) if fractions else None,
        )

    def json_line(self) -> str:
        return json.dumps(self.to_json())

    def text(self, width: int | None = None) -> str:
        """A few labelled lines; with ``width``, each broken between fields to fit it."""
        rtt = self.rtt_ms()
        counts = [str(self.messages), f"errors {self.errors}", f"connections {self.connections}"]
        if self.procs > 1:
            counts.append(f"processes {self.procs}")
        if self.unanswered:
            counts.append(f"unanswered {self.unanswered}")
        lines = [
            ("messages", counts),
            (
                "duration",
                [
                    f"{self.duration_s:.3f} s",
                    f"throughput {self.throughput:.1f} msgs/s",
                    f"client CPU {self.cpu_s:.2f} s",
                ],
            ),
        ]
        if self.errors or self.refused or any(self.by_kind.values()):
            kinds = dict(self.by_kind, refused=self.refused)
            lines.append(
                ("errors", [f"{label} {kinds[kind]}" for kind, label in ERROR_KINDS.items()])
            )
        if rtt["min"] is None:
            lines.append(("rtt ms", ["(no replies)"]))
        else:
            lines.append(("rtt ms", rtt_text(rtt).split("  ")))
        late = late_ms(self.late)
        if late is not None and late["p99"] is not None:
            lines.append(
                (
                    "schedule",
                    [
                        f"{self.offered or 0:.1f} msgs/s offered, sent late ms",
                        f"p50 {late['p50']:.3f}",
                        f"p99 {late['p99']:.3f}",
                        f"max {late['max']:.3f}",
                    ],
                )
            )
        limits = self.client_limits()
        if limits:
            lines.append(
                (
                    "client",
                    [
                        "the client, not the server, was the limit ("
                        + ", ".join(limits)
                        + "): more --procs"
                    ],
                )
            )
        text = [row for label, fields in lines for row in field_lines(label, fields, width)]
        if self.interrupted:
            text.append("interrupted (partial figures)")
        return "\n".join(text)


def rtt_text(rtt: dict[str, float | None]) -> str:
    """``min 0.072  mean 0.493  p50 ...  max 9.111``."""
    return "  ".join(
        f"{label} {rtt[key]:.3f}"
        for label, key in [
            ("min", "min"),
            ("mean", "mean"),
            ("p50", "p50"),
            ("p90", "p90"),
            ("p99", "p99"),
            ("p99.9", "p999"),
            ("max", "max"),
        ]
    )
