"""Round-trip figures: an HdrHistogram fed in batches, and the run's summary.

Round trips are measured in nanoseconds on ``time.perf_counter_ns`` and
recorded in microseconds in an :class:`~hdrh.histogram.HdrHistogram` shaped
by :mod:`chatlog.latency` (1 µs to 60 s, 3 significant digits), as the
report's are.  ``HdrHistogram.record_value`` costs about a microsecond in
Python, as much as the rest of a round trip's work in the client, so the hot
path appends to a plain list and :meth:`Recorder.fold` records each distinct
value once with its count, a few times a second.

:class:`Summary` is what a run reports: the ``--json`` object (plus the
histogram's base64 encoding, so that ``--procs`` and the bench can merge
runs), or a few lines of text.
"""

from __future__ import annotations

import json
import resource
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from chatlog import latency
from chatlog.latency import new_histogram


def decode_histogram(encoded: str | bytes) -> HdrHistogram:
    histogram = new_histogram()
    histogram.decode_and_add(encoded.encode() if isinstance(encoded, str) else encoded)
    return histogram


def cpu_seconds() -> float:
    """User + system CPU time this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """Round trips in microseconds: appended cheaply, folded into the histogram."""

    def __init__(self) -> None:
        self.histogram = new_histogram()
        #: Microseconds not yet in the histogram; protocols append to it directly.
        self.pending: list[int] = []

    def fold(self) -> None:
        if not self.pending:
            return
        counts = Counter(self.pending)
        # Cleared in place: the protocols hold this list's bound append.
        self.pending.clear()
        latency.record_counts(self.histogram, counts)


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

    @property
    def throughput(self) -> float:
        return self.messages / self.duration_s if self.duration_s > 0 else 0.0

    def rtt_ms(self) -> dict[str, float | None]:
        return latency.rtt_ms(self.histogram)

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
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(
            messages=data["messages"],
            errors=data["errors"],
            duration_s=data["duration_s"],
            connections=data["connections"],
            histogram=decode_histogram(data["histogram"]),
            cpu_s=data.get("client_cpu_s", 0.0),
            procs=data.get("procs", 1),
            problems=list(data.get("problems", [])),
        )

    @classmethod
    def merge(cls, parts: list[Summary]) -> Summary:
        """Runs that happened side by side (``--procs``): sums, and the longest window."""
        histogram = new_histogram()
        for part in parts:
            histogram.add(part.histogram)
        return cls(
            messages=sum(p.messages for p in parts),
            errors=sum(p.errors for p in parts),
            duration_s=max((p.duration_s for p in parts), default=0.0),
            connections=sum(p.connections for p in parts),
            histogram=histogram,
            cpu_s=sum(p.cpu_s for p in parts),
            procs=sum(p.procs for p in parts),
            problems=[q for p in parts for q in p.problems],
        )

    def json_line(self) -> str:
        return json.dumps(self.to_json())

    def text(self) -> str:
        rtt = self.rtt_ms()
        lines = [
            f"messages    {self.messages}  errors {self.errors}  connections {self.connections}"
            + (f"  processes {self.procs}" if self.procs > 1 else ""),
            f"duration    {self.duration_s:.3f} s  throughput {self.throughput:.1f} msgs/s"
            f"  client CPU {self.cpu_s:.2f} s",
        ]
        if rtt["min"] is None:
            lines.append("rtt ms      (no replies)")
        else:
            lines.append(
                "rtt ms      "
                + "  ".join(
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
            )
        return "\n".join(lines)
