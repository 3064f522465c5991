"""Load runs without sockets: refusals, Ctrl-C, --expect, the client's own lateness, intervals.

As in test_client.py, every time is a ``task.Clock``'s, so each figure is
known exactly.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hdrh.log import HistogramLogReader
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport

from chatlog import latency
from chatlog.client import run as client_run
from chatlog.client.interrupt import Interrupts
from chatlog.client.intervals import (
    Interval,
    IntervalClock,
    IntervalMerger,
    hlog_sink,
    live_line,
)
from chatlog.client.load import LoadPlan, LoadRun
from chatlog.client.stats import Summary
from chatlog.wire import ERROR_SERVER_BUSY
from tests.unit.test_client import PREFIX, accept, answer, clock_ns, sent_lines, start_run


def test_a_refused_connection_counts_once_as_refused() -> None:
    """ERROR server busy: one refused connection, its messages neither errors nor lost."""
    clock, run, transports = start_run(LoadPlan(connections=3, messages=4, pipeline=2))
    refused = run.protocols[2]
    refused.dataReceived(ERROR_SERVER_BUSY)
    assert transports[2].disconnecting
    refused.connectionLost()  # the server closes after its refusal
    while not run.finished.called:
        clock.advance(0.001)
        answer(run, transports, only={0, 1})
    summary = run.summary()
    assert (summary.messages, summary.errors, summary.refused) == (8, 0, 1)
    assert summary.problems == ["1 connection refused by the server: ERROR server busy"]
    assert not any("lost" in p for p in summary.problems)


def test_open_loop_share_of_a_refused_connection_is_not_an_error() -> None:
    """Open loop: messages due on a refused connection are not counted as errors."""
    clock, run, transports = start_run(LoadPlan(connections=2, rate=1000, messages=5))
    run.protocols[1].dataReceived(ERROR_SERVER_BUSY)
    run.protocols[1].connectionLost()
    while not run.finished.called:
        clock.advance(0.001)
        answer(run, transports, only={0})
    summary = run.summary()
    assert (summary.messages, summary.errors, summary.refused) == (5, 0, 1)


def test_interrupt_counts_messages_in_flight_as_unanswered() -> None:
    """Ctrl-C: the run ends at once, in-flight messages unanswered (not errors), no connection lost."""
    clock, run, transports = start_run(LoadPlan(connections=3, duration=60, pipeline=4))
    for _ in range(5):
        clock.advance(0.002)
        answer(run, transports)
    run.interrupt()
    assert run.finished.called
    assert all(t.disconnected for t in transports)  # aborted by us
    for proto in run.protocols:
        proto.connectionLost()  # the aborts complete: not a loss
    summary = run.summary()
    assert summary.interrupted
    assert (summary.messages, summary.errors, summary.unanswered) == (60, 0, 12)
    assert summary.problems == []
    assert "interrupted" in summary.text()


def test_interrupted_load_run_exits_130_with_its_partial_summary() -> None:
    """run(): Ctrl-C mid-run prints the partial summary, says interrupted, exit status 130."""
    reactor = MemoryReactorClock()
    stdout, stderr = io.StringIO(), io.StringIO()
    interrupts = Interrupts(reactor)
    from twisted.internet.defer import Deferred

    status = Deferred.fromCoroutine(
        client_run(
            reactor,
            ["--port", "5000", "--connections", "1", "--duration", "30", "--json"],
            stdout=stdout,
            stderr=stderr,
            interrupts=interrupts,
        )
    )
    proto, transport = accept(reactor)
    reactor.advance(0.001)
    line = transport.value().rstrip(b"\n")
    transport.clear()
    proto.dataReceived(PREFIX + line + b"\n")  # one answered; the next is in flight
    interrupts.trigger()
    assert status.result == 130
    assert '"interrupted": true' in stdout.getvalue()
    assert '"unanswered": 1' in stdout.getvalue()
    assert stderr.getvalue() == (
        "Running 30 s @ 127.0.0.1:5000: 1 connection, closed loop (pipeline 1)\n"
        "chatlog.client: interrupted: 1 unanswered\n"
    )


def test_expect_sets_what_a_reply_is() -> None:
    """--expect: another server's prefix is a good reply, chatlog's is then an error."""
    plan = LoadPlan(connections=1, messages=2, size=8, expect=b"echo: ")
    clock, run, transports = start_run(plan)
    clock.advance(0.001)
    (line,) = sent_lines(transports[0])
    run.protocols[0].dataReceived(b"echo: " + line + b"\n")
    clock.advance(0.001)
    (line,) = sent_lines(transports[0])
    run.protocols[0].dataReceived(PREFIX + line + b"\n")
    summary = run.summary()
    assert (summary.messages, summary.errors) == (1, 1)


def test_open_loop_measures_how_late_the_client_sent() -> None:
    """A client busy for 30 ms sends its due messages late: its lateness shows, apart from the RTT."""
    step = 1 / 1000
    clock, run, transports = start_run(LoadPlan(connections=1, rate=1000, duration=0.1))
    for _ in range(10):
        clock.advance(step)
        answer(run, transports)
    clock.advance(0.030)  # the client was busy: 30 messages fell due meanwhile
    answer(run, transports)
    while not run.finished.called:
        clock.advance(step)
        answer(run, transports)
    summary = run.summary()
    assert summary.late is not None and summary.late.get_total_count() == 100
    # Message 11 was due at 11 ms and left at 40 ms: 29 ms late; most left on time.
    assert summary.late.get_max_value() == pytest.approx(29_000, rel=1e-3)
    assert summary.late.get_value_at_percentile(50) <= 1
    assert summary.to_json()["send_late_ms"]["max"] == pytest.approx(29.0, rel=1e-3)


def test_client_limits_name_cpu_and_lateness() -> None:
    """A busy client process, or lateness over half the budget, makes the client the limit."""
    late = latency.new_histogram()
    late.record_value(6000, 100)  # every message 6 ms late
    quiet = Summary(10, 0, 1.0, 1, cpu_fraction=0.4)
    busy = Summary(10, 0, 1.0, 1, cpu_fraction=0.97)
    behind = Summary(10, 0, 1.0, 1, cpu_fraction=0.4, late=late, offered=100.0)
    assert quiet.client_limits() == [] and not quiet.to_json()["client_limited"]
    assert busy.client_limits() == ["client CPU 97% of a core"]
    assert busy.to_json()["client_limited"]
    p99 = latency.rtt_ms(late)["p99"]
    assert behind.client_limits(budget_ms=10.0) == [f"sent p99 {p99:.3f} ms behind schedule"]
    assert behind.client_limits(budget_ms=20.0) == []


def test_merged_summary_keeps_the_busiest_process_and_all_lateness() -> None:
    """--procs: CPU is judged per process (the busiest), lateness histograms add up."""
    a, b = latency.new_histogram(), latency.new_histogram()
    a.record_value(100, 3)
    b.record_value(200, 1)
    merged = Summary.merge(
        [
            Summary(1, 0, 1.0, 1, late=a, cpu_fraction=0.5, offered=50.0),
            Summary(1, 0, 1.0, 1, late=b, cpu_fraction=0.95, offered=50.0),
            Summary(0, 0, 1.0, 1),  # an empty part must not zero the minimum
        ]
    )
    assert merged.cpu_fraction == 0.95 and merged.offered == 100.0
    assert merged.late is not None and merged.late.get_total_count() == 4
    again = Summary.from_json(merged.to_json())
    assert again.late is not None and again.late.get_total_count() == 4
    assert again.cpu_fraction == 0.95


def test_intervals_add_up_to_the_run_and_read_back_as_an_hlog(tmp_path: Path) -> None:
    """--hlog: one histogram per interval; hdrh's reader gives back the run's own histogram."""
    clock = Clock()
    path = tmp_path / "run.hlog"
    hlog = latency.HlogWriter(path, start_wall=clock.seconds())
    seen: list[Interval] = []
    run = LoadRun(LoadPlan(connections=2, duration=2.5, warmup=0.5), clock, now_ns=clock_ns(clock))
    IntervalClock(run, 1.0, [hlog_sink(hlog), seen.append], wall=clock.seconds)
    transports = []
    for proto in run.build_protocols():
        transports.append(StringTransport())
        proto.makeConnection(transports[-1])
    run.start()
    delay = 0.001
    while not run.finished.called:
        clock.advance(delay)
        answer(run, transports)
        delay = 0.003 if delay == 0.001 else 0.001  # two round trip times
    hlog.close()
    summary = run.summary()
    assert [i.number for i in seen] == [1, 2, 3]  # 1 s, 1 s, then the last half second
    assert [i.end - i.start for i in seen] == pytest.approx([1.0, 1.0, 0.5], abs=0.005)
    reader = HistogramLogReader(str(path), latency.new_histogram())
    total = latency.new_histogram()
    count = 0
    while (interval := reader.get_next_interval_histogram()) is not None:
        latency.add_into(total, interval)
        count += 1
    reader.close()
    assert count == 3
    assert total.get_total_count() == summary.messages == summary.histogram.get_total_count()
    assert latency.rtt_ms(total) == summary.rtt_ms()


def test_interval_merger_adds_the_workers_intervals_number_by_number() -> None:
    """--procs: interval n goes out once every running worker has given its n."""
    out: list[Interval] = []
    merger = IntervalMerger(2, [out.append])

    def part(n: int, value: int) -> Interval:
        histogram = latency.new_histogram()
        histogram.record_value(value)
        return Interval(n, 100.0 + n, 101.0 + n, histogram, errors=1)

    merger.add(0, part(1, 1000))
    assert out == []
    merger.add(1, part(1, 3000))
    merger.add(0, part(2, 1000))
    assert [(i.number, i.histogram.get_total_count(), i.errors) for i in out] == [(1, 2, 2)]
    merger.ended(1)  # worker 2 ended without an interval 2: worker 1's goes out alone
    assert [i.number for i in out] == [1, 2]


def test_live_line_shows_rate_percentiles_and_errors() -> None:
    """--interval: one line with the interval's rate, p50, p99 and errors."""
    histogram = latency.new_histogram()
    histogram.record_value(400, 1000)
    histogram.record_value(2000, 20)
    line = live_line(Interval(3, 10.0, 10.5, histogram, errors=2), elapsed=1.5, label="[5,000/s] ")
    assert line == ("[5,000/s] [    1.5 s]      2,040 msgs/s  p50 0.400 ms  p99 2.000 ms  errors 2")


def test_interrupted_conversation_counts_the_awaited_reply_as_unanswered(tmp_path: Any) -> None:
    """Everyday use: Ctrl-C while a reply is awaited ends with exit 130, one unanswered."""
    from twisted.internet.defer import Deferred

    reactor = MemoryReactorClock()
    stdout, stderr = io.StringIO(), io.StringIO()
    interrupts = Interrupts(reactor)
    status = Deferred.fromCoroutine(
        client_run(
            reactor,
            ["--port", "5000", "--json", "first", "second"],
            stdout=stdout,
            stderr=stderr,
            interrupts=interrupts,
        )
    )
    proto, transport = accept(reactor)
    proto.dataReceived(b"Server received: first\n")
    interrupts.trigger()
    assert status.result == 130
    assert '"messages": 1' in stdout.getvalue() and '"unanswered": 1' in stdout.getvalue()
    assert stderr.getvalue() == "chatlog.client: interrupted: 1 unanswered\n"
    assert transport.disconnected
