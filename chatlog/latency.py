"""Round-trip latency as chatlog counts it: one histogram shape, one summary.

The client records its round trips in an HdrHistogram made by
:func:`new_histogram`, and the report re-reads them from client logs into
histograms of the same shape; both summarise with :func:`rtt_ms`.  Sharing
the settings and the summary is what makes ``python -m chatlog.client
--json`` and ``python -m chatlog.report`` agree to the histogram's precision.

Values are microseconds, from 1 µs to 60 s, at 3 significant digits (each
value is kept to within 0.1 %); longer or shorter round trips are clamped to
the range rather than dropped.

A run's histograms over time are kept as an HdrHistogram interval log
(``.hlog``, the format of HdrHistogram's ``HistogramLogWriter``), written by
``python -m chatlog.client --hlog`` and read by the report: :class:`HlogWriter`
and :func:`read_hlog` sit side by side here so that the two cannot drift.
Both go through hdrh's own ``HistogramLogWriter`` / ``HistogramLogReader``;
what chatlog adds (the offered rate of a sweep's step, the run's settings)
travels in comment lines, ``#[chatlog {...JSON...}]``, which any other reader
skips.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader, HistogramLogWriter

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3

#: The percentiles of a summary: key (as in ``--json``'s ``rtt_ms``) -> percentile.
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
#: The keys of :func:`rtt_ms`, in order.
RTT_KEYS = ("min", "mean", *PERCENTILES, "max")


def new_histogram() -> HdrHistogram:
    """An empty histogram of microseconds with chatlog's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_counts(histogram: HdrHistogram, counts: Mapping[int, int]) -> None:
    """Record each value (µs) with its count: one call per distinct value.

    ``HdrHistogram.record_value`` costs about a microsecond in Python, so
    callers count round trips first and record them here in batches.
    """
    record = histogram.record_value
    for micros, count in counts.items():
        # Out-of-range values would be dropped silently: clamp them instead.
        record(min(max(micros, LOWEST_US), HIGHEST_US), count)


def rtt_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """min, mean, p50, p90, p99, p999 and max in ms (to the µs); all None when empty."""
    if not histogram.get_total_count():
        return dict.fromkeys(RTT_KEYS, None)
    # One pass over the counts for all the percentiles; the same values as
    # get_value_at_percentile, which walks them once per percentile.
    at = histogram.get_percentile_to_value_dict(list(PERCENTILES.values()))
    out: dict[str, float | None] = {
        "min": _ms(histogram.get_min_value()),
        "mean": _ms(histogram.get_mean_value()),
    }
    for key, percentile in PERCENTILES.items():
        out[key] = _ms(at[percentile])
    out["max"] = _ms(histogram.get_max_value())
    return out


def _ms(micros: float) -> float:
    return round(micros / 1000, 3)


def add_into(total: HdrHistogram, part: HdrHistogram) -> None:
    """``total.add(part)``, except for an empty ``part``.

    hdrh's ``add`` takes the smaller of the two minimums, and an empty
    histogram's minimum reads as 0: adding one would make ``total``'s
    minimum 0.
    """
    if part.get_total_count():
        total.add(part)


# -- interval logs (.hlog) ----------------------------------------------------------

#: Comment lines that carry chatlog's own metadata in an interval log.
HLOG_TAG = "[chatlog "


class HlogWriter:
    """An HdrHistogram interval log: a header, then one histogram per interval.

    Interval times are seconds since the log's start (its ``StartTime`` and
    ``BaseTime``), as HdrHistogram's Java writer and log processor have them.
    """

    def __init__(self, path: str | Path, start_wall: float | None = None) -> None:
        self.path = str(path)
        self.start_wall = time.time() if start_wall is None else start_wall
        # Line-buffered: each interval reaches the file when it is written,
        # so a long run can be followed (or survives an interrupted client).
        # Open for the run's whole length, closed in close(): no with-block fits.
        self._file: TextIO = open(self.path, "w", encoding="ascii", buffering=1)  # noqa: SIM115
        self._writer = HistogramLogWriter(self._file)
        self._writer.output_log_format_version()
        # hdrh 0.10.8's output_start_time cannot run (it calls datetime's
        # nonexistent iso_format): this is its line, in its words.
        stamp = datetime.fromtimestamp(self.start_wall).isoformat(" ")
        self._writer.output_comment(
            f"[StartTime: {self.start_wall:f} (seconds since epoch), {stamp}]"
        )
        self._writer.output_base_time(self.start_wall * 1000.0)
        self._writer.base_time = self.start_wall * 1000.0  # msec, as the writer counts
        self._writer.output_legend()
        self.intervals = 0

    def note(self, **fields: Any) -> None:
        """A chatlog comment line: ``#[chatlog {"key": value, ...}]``."""
        self._writer.output_comment(HLOG_TAG + json.dumps(fields, sort_keys=True) + "]")

    def interval(self, histogram: HdrHistogram, start_wall: float, end_wall: float) -> None:
        """One interval's histogram, from ``start_wall`` to ``end_wall`` (epoch seconds)."""
        histogram.set_start_time_stamp(start_wall * 1000.0)
        histogram.set_end_time_stamp(max(end_wall, start_wall) * 1000.0)
        # The interval line's max column in ms: the values are µs.
        self._writer.output_interval_histogram(histogram, max_value_unit_ratio=1000.0)
        self.intervals += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


@dataclass
class HlogInterval:
    """One interval of a log: its histogram (µs) and its times (epoch seconds)."""

    start: float
    end: float
    histogram: HdrHistogram


@dataclass
class Hlog:
    """An interval log as read: its intervals, in order, and chatlog's notes."""

    path: str
    start: float
    intervals: list[HlogInterval] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)

    def total(self, start: float = -math.inf, end: float = math.inf) -> HdrHistogram:
        """All intervals that start within [start, end), added up."""
        histogram = new_histogram()
        for interval in self.intervals:
            if start <= interval.start < end:
                add_into(histogram, interval.histogram)
        return histogram


def read_hlog(path: str | Path) -> Hlog:
    """Read an interval log with hdrh's ``HistogramLogReader``; chatlog's notes beside.

    Raises ``ValueError`` when the file holds no interval and no chatlog note
    (it is not an interval log).
    """
    reader = HistogramLogReader(str(path), new_histogram())
    intervals: list[HlogInterval] = []
    try:
        while True:
            histogram = reader.get_next_interval_histogram()
            if histogram is None:
                break
            intervals.append(
                HlogInterval(
                    histogram.get_start_time_stamp() / 1000.0,
                    histogram.get_end_time_stamp() / 1000.0,
                    histogram,
                )
            )
        start = reader.get_start_time_sec()
    finally:
        reader.close()
    notes: list[dict[str, Any]] = []
    with open(path, encoding="ascii", errors="replace") as lines:
        for line in lines:
            if line.startswith("#" + HLOG_TAG):
                try:
                    notes.append(json.loads(line[1 + len(HLOG_TAG) :].rstrip().removesuffix("]")))
                except ValueError:
                    continue  # a damaged note: the intervals still count
    if not intervals and not notes:
        raise ValueError(f"{path}: not an HdrHistogram interval log")
    return Hlog(str(path), start, intervals, notes)


def is_hlog(path: str | Path) -> bool:
    """Whether ``path`` starts like an interval log (a ``#[`` header line)."""
    try:
        with open(path, "rb") as file:
            return file.read(2) == b"#["
    except OSError:
        return False
