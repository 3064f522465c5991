"""Round-trip figures: the client and the report count and summarise them the same way."""

from __future__ import annotations

import ast
import random
from pathlib import Path

from hdrh.histogram import HdrHistogram

from chatlog import latency
from chatlog.client.stats import Recorder, Summary
from chatlog.report.summary import rtt_summary


def sample_histogram() -> tuple[list[int], HdrHistogram]:
    """Log-normal round trips (µs) and a histogram of them."""
    rng = random.Random(7)
    values = [int(rng.lognormvariate(5, 1.2)) + 1 for _ in range(20_000)]
    histogram = latency.new_histogram()
    for value in values:
        histogram.record_value(value)
    return values, histogram


def test_settings_are_one_microsecond_to_a_minute_at_three_digits() -> None:
    """The histogram's range and precision are the documented ones."""
    histogram = latency.new_histogram()
    assert (latency.LOWEST_US, latency.HIGHEST_US, latency.SIGNIFICANT_DIGITS) == (
        1,
        60_000_000,
        3,
    )
    assert histogram.lowest_trackable_value == 1
    assert histogram.highest_trackable_value == 60_000_000
    assert histogram.significant_figures == 3


def test_rtt_ms_is_the_histograms_own_percentiles_in_ms() -> None:
    """Each figure is HdrHistogram's value for it, in ms to the microsecond."""
    values, histogram = sample_histogram()
    got = latency.rtt_ms(histogram)
    assert list(got) == ["min", "mean", "p50", "p90", "p99", "p999", "max"]
    for key, percentile in latency.PERCENTILES.items():
        assert got[key] == round(histogram.get_value_at_percentile(percentile) / 1000, 3)
    assert got["min"] == round(histogram.get_min_value() / 1000, 3)
    assert got["max"] == round(histogram.get_max_value() / 1000, 3)
    assert got["mean"] == round(histogram.get_mean_value() / 1000, 3)
    assert got["min"] <= got["p50"] <= got["p999"] <= got["max"]
    assert abs(got["max"] - max(values) / 1000) <= max(values) / 1000 * 0.001


def test_empty_histogram_gives_none_not_zero() -> None:
    """No replies: every figure is None (the client's --json), the report says count 0."""
    empty = latency.new_histogram()
    assert latency.rtt_ms(empty) == dict.fromkeys(latency.RTT_KEYS, None)
    assert rtt_summary(empty) == {"count": 0}


def test_out_of_range_values_are_clamped_not_dropped() -> None:
    """A round trip under 1 µs or over a minute still counts, at the range's edge."""
    histogram = latency.new_histogram()
    latency.record_counts(histogram, {0: 2, 500: 3, 600_000_000: 1})
    assert histogram.get_total_count() == 6
    assert histogram.get_min_value() == 1
    assert histogram.get_max_value() == histogram.get_highest_equivalent_value(60_000_000)


def test_client_and_report_summaries_agree() -> None:
    """The client's summary and the report's of the same round trips are the same numbers."""
    values, histogram = sample_histogram()
    recorder = Recorder()
    recorder.pending.extend(values)
    client = Summary(messages=len(values), errors=0, duration_s=1.0, connections=1)
    client.histogram = recorder.total()
    report = rtt_summary(histogram)
    assert report == {"count": len(values), **client.rtt_ms()}


def test_latency_depends_on_no_other_chatlog_module() -> None:
    """Client and report both import it: it must pull in neither side (nor the server)."""
    tree = ast.parse(Path(latency.__file__).read_text())
    modules = [
        node.module or "" if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert [m for m in modules if m.startswith("chatlog")] == []
