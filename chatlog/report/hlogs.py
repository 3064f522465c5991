"""Interval logs (``.hlog``): latency against offered load, and percentiles over time.

``python -m chatlog.client --hlog FILE`` writes one HdrHistogram per interval
(:class:`chatlog.latency.HlogWriter`); a sweep adds a note per step (its
offered rate, its times, its verdict) and its answer.  This module reads
such files with :func:`chatlog.latency.read_hlog` (hdrh's own reader) and
summarises each one: its percentiles over time, interval by interval, and
its *load points*: for each step of a sweep (or for a whole ``--rate`` run)
the offered and achieved rates and the round-trip percentiles of the
intervals it spans.  Values are microseconds, as chatlog records them.

The result goes into ``summary.json`` under ``hlog`` and is drawn by
:mod:`chatlog.report.loadplots`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatlog.latency import Hlog, is_hlog, read_hlog, rtt_ms

__all__ = ["is_hlog", "load_hlogs", "summarize_hlog"]


def load_hlogs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each file's summary (see :func:`summarize_hlog`), in the order given."""
    return [summarize_hlog(read_hlog(path)) for path in paths]


def summarize_hlog(hlog: Hlog) -> dict[str, Any]:
    """One interval log as plain data: settings, intervals, load points, answer."""
    settings: dict[str, Any] = {}
    steps: list[dict[str, Any]] = []
    answer: dict[str, Any] = {}
    for note in hlog.notes:
        if "step" in note:
            steps.append(note)
        elif "max_rate_msgs_per_s" in note:
            answer = note
        elif "mode" in note:
            settings = note
    total = hlog.total()
    points = [_step_point(hlog, step) for step in sorted(steps, key=lambda s: s["offered"])]
    if not steps and settings.get("offered") and total.get_total_count():
        # A --rate run: the whole run is one point.
        length = sum(i.end - i.start for i in hlog.intervals)
        points.append(
            _point(
                total,
                offered=settings["offered"],
                achieved=total.get_total_count() / length if length > 0 else None,
            )
        )
    return {
        "path": hlog.path,
        "label": Path(hlog.path).stem,
        "mode": settings.get("mode"),
        "connections": settings.get("connections"),
        "procs": settings.get("procs"),
        "slo_p99_ms": settings.get("slo_p99_ms"),
        "start": hlog.start,
        "count": total.get_total_count(),
        "rtt_ms": rtt_ms(total),
        "intervals": [
            {
                "start": round(i.start - hlog.start, 6),
                "end": round(i.end - hlog.start, 6),
                "count": i.histogram.get_total_count(),
                **rtt_ms(i.histogram),
            }
            for i in hlog.intervals
        ],
        "steps": [
            {
                **p,
                "start": round(p["start"] - hlog.start, 6),
                "end": round(p["end"] - hlog.start, 6),
            }
            if "start" in p
            else p
            for p in points
        ],
        "max_rate_msgs_per_s": answer.get("max_rate_msgs_per_s"),
        "limited_by": answer.get("limited_by"),
    }


def _step_point(hlog: Hlog, step: dict[str, Any]) -> dict[str, Any]:
    histogram = hlog.total(step.get("start", -math.inf), step.get("end", math.inf))
    point = _point(histogram, offered=step["offered"], achieved=step.get("achieved"))
    point.update(
        step=step["step"],
        phase=step.get("phase"),
        ok=step.get("ok"),
        client_limited=step.get("client_limited", False),
        start=step.get("start", hlog.start),
        end=step.get("end", hlog.start),
    )
    return point


def _point(histogram: Any, *, offered: float, achieved: float | None) -> dict[str, Any]:
    return {
        "offered_msgs_per_s": offered,
        "achieved_msgs_per_s": round(achieved, 1) if achieved is not None else None,
        "count": histogram.get_total_count(),
        "rtt_ms": rtt_ms(histogram),
    }
