"""A run's figures interval by interval: for ``--hlog`` and the live lines of ``--interval``.

Every ``S`` seconds of the measured window (after ``--warmup``) the run's
current interval histogram is closed (:meth:`chatlog.client.stats.Recorder.close_interval`)
and handed to each *sink*: the interval log (``--hlog``), a live line on
stderr (``--interval``), or, in a ``--procs`` worker, a JSON line for the
parent, which merges the workers' intervals (:class:`IntervalMerger`) before
handing them to its own sinks.  The last, shorter interval is closed when
the run ends, so the intervals add up to the run's whole histogram.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from hdrh.histogram import HdrHistogram
from twisted.internet.task import LoopingCall

from chatlog.client.stats import decode_histogram
from chatlog.latency import HlogWriter, add_into, new_histogram, rtt_ms

if TYPE_CHECKING:
    from chatlog.client.load import LoadRun


@dataclass
class Interval:
    """One interval: its number, wall-clock times (epoch s), round trips (µs) and errors."""

    number: int
    start: float
    end: float
    histogram: HdrHistogram
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "interval": self.number,
            "start": self.start,
            "end": self.end,
            "histogram": self.histogram.encode().decode("ascii"),
            "errors": self.errors,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interval:
        return cls(
            data["interval"],
            data["start"],
            data["end"],
            decode_histogram(data["histogram"]),
            data["errors"],
        )


Sink = Callable[[Interval], None]


class IntervalClock:
    """Close ``run``'s interval every ``every`` seconds of its measured window."""

    def __init__(
        self,
        run: LoadRun,
        every: float,
        sinks: list[Sink],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.run = run
        self.every = every
        self.sinks = sinks
        self.wall = wall
        self.number = 0
        self.started = False
        self._last_wall = 0.0
        self._last_errors = 0
        self._loop: LoopingCall | None = None
        run.on_measure = self.start
        run.on_end = self.stop

    def start(self, run: LoadRun) -> None:
        self.started = True
        self._last_wall = self.wall()
        # Warm-up errors are not the measured window's.
        self._last_errors = run.errors()
        self._loop = LoopingCall(self.close)
        self._loop.clock = run.clock
        self._loop.start(self.every, now=False)

    def close(self) -> None:
        now = self.wall()
        errors = self.run.errors()
        self.number += 1
        interval = Interval(
            self.number,
            self._last_wall,
            now,
            self.run.recorder.close_interval(),
            errors - self._last_errors,
        )
        self._last_wall, self._last_errors = now, errors
        for sink in self.sinks:
            sink(interval)

    def stop(self, run: LoadRun) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.started:
            self.started = False
            self.close()


class IntervalMerger:
    """``--procs``: the workers' intervals, merged number by number, to the parent's sinks."""

    def __init__(self, workers: int, sinks: list[Sink]) -> None:
        self.sinks = sinks
        self.running = set(range(workers))
        self.parts: dict[int, list[Interval]] = {}
        self.latest = dict.fromkeys(range(workers), 0)
        self.emitted = 0

    def add(self, worker: int, interval: Interval) -> None:
        self.parts.setdefault(interval.number, []).append(interval)
        self.latest[worker] = interval.number
        self._emit(min((self.latest[w] for w in self.running), default=None))

    def ended(self, worker: int) -> None:
        self.running.discard(worker)
        self._emit(min((self.latest[w] for w in self.running), default=None))

    def flush(self) -> None:
        self._emit(None)

    def _emit(self, upto: int | None) -> None:
        """Hand on every interval up to ``upto`` (None: all) that every worker has given."""
        for number in sorted(self.parts):
            if upto is not None and number > upto:
                break
            parts = self.parts.pop(number)
            histogram = new_histogram()
            for part in parts:
                add_into(histogram, part.histogram)
            merged = Interval(
                number,
                min(p.start for p in parts),
                max(p.end for p in parts),
                histogram,
                sum(p.errors for p in parts),
            )
            self.emitted += 1
            for sink in self.sinks:
                sink(merged)


def hlog_sink(hlog: HlogWriter) -> Sink:
    def write(interval: Interval) -> None:
        hlog.interval(interval.histogram, interval.start, interval.end)

    return write


def live_sink(out: TextIO, label: str = "") -> Sink:
    """``--interval``: one line per interval on ``out`` (stderr)."""
    first: list[float] = []

    def show(interval: Interval) -> None:
        if not first:
            first.append(interval.start)
        out.write(live_line(interval, interval.end - first[0], label) + "\n")
        out.flush()

    return show


def live_line(interval: Interval, elapsed: float, label: str = "") -> str:
    """``[  12.0 s]  20,004 msgs/s  p50 0.412 ms  p99 1.930 ms  errors 0``."""
    length = interval.end - interval.start
    count = interval.histogram.get_total_count()
    rate = count / length if length > 0 else 0.0
    rtt = rtt_ms(interval.histogram)
    figures = (
        f"p50 {rtt['p50']:.3f} ms  p99 {rtt['p99']:.3f} ms"
        if rtt["p50"] is not None
        else "no replies"
    )
    return f"{label}[{elapsed:7.1f} s] {rate:>10,.0f} msgs/s  {figures}  errors {interval.errors}"


def worker_sink(out: TextIO) -> Sink:
    """A ``--procs`` worker: each interval as a JSON line on stdout, for the parent."""

    def send(interval: Interval) -> None:
        out.write(json.dumps(interval.to_json()) + "\n")
        out.flush()

    return send
